#!/usr/bin/env bash
# Run one rlhfjax command on every worker of a Cloud TPU VM slice (v4-32, v5e-64, ...).
#
#   ZONE=us-central2-b scripts/launch_tpu_pod.sh TPU_NAME COMMAND CONFIG WORKDIR [--config.a.b=v ...]
#   ZONE=us-central2-b scripts/launch_tpu_pod.sh TPU_NAME setup          # clone/update + install, every worker
#
# JAX runs multi-controller: every worker runs the same command, `--config.distributed.mode=on` makes each
# join the slice (JAX finds the coordinator, process count and id from the TPU metadata), and XLA does the
# collectives. Process 0 writes metrics, summaries and exports; every process writes its checkpoint shards,
# so WORKDIR must be one directory all workers see (an NFS / Filestore or gcsfuse mount).
#
# Environment: ZONE (required); PROJECT (optional, else gcloud's default); REPO_DIR on the workers
# (default: rlhfjax, relative to the home directory); REPO_URL (for setup; default: this checkout's
# origin); DRY_RUN=1 prints the gcloud command instead of running it.
set -euo pipefail

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 2 ]] || usage
: "${ZONE:?set ZONE to the zone of the TPU, e.g. ZONE=us-central2-b}"
TPU=$1; COMMAND=$2; shift 2
REPO_DIR=${REPO_DIR:-rlhfjax}

if [[ $COMMAND == setup ]]; then
  REPO_URL=${REPO_URL:-$(git -C "$(dirname "$0")/.." remote get-url origin 2>/dev/null || true)}
  [[ -n $REPO_URL ]] || { echo "set REPO_URL: this checkout has no origin remote" >&2; exit 2; }
  remote="set -e; if [ -d $(printf %q "$REPO_DIR")/.git ]; then git -C $(printf %q "$REPO_DIR") pull --ff-only;"
  remote+=" else git clone $(printf %q "$REPO_URL") $(printf %q "$REPO_DIR"); fi; cd $(printf %q "$REPO_DIR");"
  remote+=" python3 -m venv .venv && .venv/bin/pip install -q -e . 'jax[tpu]'"
else
  [[ $# -ge 2 ]] || usage
  CONFIG=$1; WORKDIR=$2; shift 2
  args=$(printf ' %q' "$COMMAND" --config "$CONFIG" --workdir "$WORKDIR" --config.distributed.mode=on "$@")
  remote="set -e; cd $(printf %q "$REPO_DIR") && .venv/bin/rlhfjax${args}"
fi

cmd=(gcloud compute tpus tpu-vm ssh "$TPU" "--zone=$ZONE" --worker=all "--command=$remote")
[[ -n ${PROJECT:-} ]] && cmd+=("--project=$PROJECT")
if [[ -n ${DRY_RUN:-} ]]; then
  printf '%q ' "${cmd[@]}"; echo
else
  exec "${cmd[@]}"
fi
