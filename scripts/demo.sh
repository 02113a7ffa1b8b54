#!/usr/bin/env bash
# The default job, offline on a laptop CPU: creates .venv if missing, installs rlhfjax, then
# trains a tiny LM on the built-in synthetic language and prints samples (about a minute).
# Extra arguments are config overrides, e.g. `scripts/demo.sh --config.train.steps=50`.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh" ""
WORKDIR="${WORKDIR:-runs/demo}"
rlhfjax lm --config experiments/lm_tiny.py --workdir "$WORKDIR" "$@"
echo "demo finished: run directory $WORKDIR (config.json, metrics.jsonl, summary.json, model/)"
