#!/usr/bin/env bash
# The default job, offline on a 2-core CPU in under 8 minutes (docs/benchmarks.md has the measured time):
# creates .venv if missing, installs rlhfjax, then runs the toy-lab pipeline
#   toy lab (seeded synthetic world) -> SFT policy -> reward model -> PPO against the reward model
# and ends with one screen on what it measured (scripts/demo_summary.py): the RM's accuracy, PPO's gold
# and proxy reward vs √KL with Gao et al.'s fit, and whether gold turned over; plots in the run
# directory (default runs/demo; set WORKDIR to change it). Re-running resumes or skips finished stages.
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
python "$(dirname "${BASH_SOURCE[0]}")/demo_summary.py" "$RUN" "$SECONDS"
echo "run directory: $RUN (sft/, rm/, ppo/: config.json, metrics.jsonl, tb/, summary.json, model/);"
echo "the full reward-vs-KL table: python -m rlhfjax.analysis.report $RUN/ppo"
