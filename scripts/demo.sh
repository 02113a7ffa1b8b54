#!/usr/bin/env bash
# The default job, offline on a 2-core CPU in about ten minutes: creates .venv if missing, installs
# rlhfjax, then runs the toy-lab pipeline
#   toy lab (seeded synthetic world) -> SFT policy -> reward model -> PPO against the reward model
# and prints gold and proxy reward vs KL, with plots in the run directory (default runs/demo;
# set WORKDIR to change it). Re-running resumes or skips finished stages.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh" ""
RUN="${WORKDIR:-runs/demo}"
LAB="--config.data.toylab_dir=$RUN/data"

stage() {  # stage NAME: skip a stage whose summary.json exists (delete it to redo the stage)
  if [ -f "$RUN/$1/summary.json" ]; then echo "== $1: done already ($RUN/$1)"; return 1; fi
  echo "== $1"
}

if stage sft; then
  rlhfjax sft --config experiments/toylab_sft.py --workdir "$RUN/sft" $LAB
fi
if stage rm; then
  rlhfjax rm --config experiments/toylab_rm.py --workdir "$RUN/rm" $LAB \
    --config.model.init_from="$RUN/sft/model"
fi
if stage ppo; then
  rlhfjax ppo --config experiments/toylab_ppo.py --workdir "$RUN/ppo" $LAB \
    --config.policy.init_from="$RUN/sft/model" --config.reward.init_from="$RUN/rm/model" \
    --config.train.iterations=300  # long enough to watch gold reward turn over while proxy keeps rising
fi

echo
echo "== reward vs KL (PPO against the learned reward model; gold = the toy lab's true reward)"
python -m rlhfjax.analysis.report "$RUN/ppo"
python - "$RUN" <<'PY'
import json, sys
run = sys.argv[1]
rm = json.load(open(f"{run}/rm/summary.json"))["final"]
print(f"reward model: held-out accuracy {rm['eval/accuracy']:.3f} vs annotators, "
      f"{rm.get('eval/gold_agreement', float('nan')):.3f} agreement with gold, ECE {rm['eval/ece']:.3f} "
      f"({run}/rm/calibration.png)")
PY
echo "run directory: $RUN (sft/, rm/, ppo/: config.json, metrics.jsonl, tb/, summary.json, model/)"
