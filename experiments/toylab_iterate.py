"""Iterated online RLHF on the toy lab (Bai et al. 2022, §4.5): rounds of fresh comparisons from the
current policy → PM on everything so far → RL from the current policy.

    rlhfjax iterate --config experiments/toylab_iterate.py --workdir runs/toylab/iterate
    rlhfjax iterate --config experiments/toylab_iterate.py --config.iterate.method=superhf ...
    # the single offline round at the same label and RL budget:
    rlhfjax iterate --config experiments/toylab_iterate.py --workdir runs/toylab/offline \
        --config.iterate.rounds=1 --config.iterate.comparisons=2000 --config.methods.ppo.train.iterations=160
    rlhfjax iterate --config experiments/toylab_iterate.py:smoke --workdir /tmp/iterate_smoke  # needs nothing

Needs the SFT policy (`rlhfjax sft ... --workdir runs/toylab/sft`); the PM starts from it too. The
`pm` section is experiments/toylab_rm.py and `methods.<name>` are experiments/toylab_<name>.py, each
overridable (`--config.methods.ppo.kl.init_coef=0.05`); `iterate` fills in their data, tokenizer,
seed, policy, reference, reward model and PM steps per round (recipes/iterate.py says how).
"""

import os

import ml_collections

from rlhfjax.commands import iterate_methods
from rlhfjax.config import load_config_file
from rlhfjax.config_blocks import data_config, distributed_config, mesh_config, toy_model_config

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in ("", "smoke"):
        raise ValueError(f"unknown config variant {arg!r}; known: smoke")
    variant = f":{arg}" if arg else ""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = data_config("toylab")  # prompts: train split for training pairs, eval split for held-out ones
    c.data.max_prompt_len = 16
    c.data.max_response_len = 24  # generated tokens per response, for comparisons and RL alike
    c.data.eval_limit = 256  # held-out prompts: drawn for held-out pairs, and every RL eval samples them all
    c.tokenizer = ml_collections.ConfigDict({"path": ""})  # "" = the toy lab's (else the policy's)
    c.policy = ml_collections.ConfigDict()
    c.policy.init_from = "runs/toylab/sft/model"  # π_0: the first round's policy and everyone's KL anchor
    c.policy.dtype = "float32"

    it = c.iterate = ml_collections.ConfigDict()
    it.rounds = 4
    it.method = "ppo"  # ppo | superhf | rloo | grpo | any iterate method: RL of each round, by methods.<method>
    it.comparisons = 500  # labelled comparisons per round; the label budget is rounds × comparisons
    it.eval_comparisons = 200  # held-out pairs per round (and from the final policy): measure PMs, not trained on
    it.earlier_policy_frac = 0.0  # fraction of pairs whose second response is from a random earlier policy
    it.temperature = 1.0  # sampling temperature of the comparisons' responses
    it.batch_size = 32  # prompts per sampling / PM-scoring batch
    it.labeller = "simulated"  # simulated (toy-lab annotators) | external (export tasks, wait for labels)
    it.pool = "mixed"  # simulated annotator pool: helpful | harmless | mixed
    # Fraction of a round's tasks that may lack a usable label (none, or conflicting ones) and the round still go
    # on without them; above it the run waits as for a missing labels.jsonl. 0.0 waits for every task: a round
    # is frozen once its comparisons are written (later labels are never read), so a half-finished or half-synced
    # labels file must not start it; set e.g. 0.05 for labellers who may skip tasks they cannot judge.
    it.max_unlabelled_fraction = 0.0
    it.pm_init = "previous"  # previous: fine-tune last round's PM | base: from pm.model.init_from every round
    it.pm_epochs = 2.0  # PM epochs over all comparisons so far, each round (sets pm.train.steps)
    it.stop_at = 0  # > 0: stop after this many rounds; a re-run with a larger value continues

    c.pm = load_config_file(os.path.join(HERE, "toylab_rm.py") + variant)
    c.pm.model.init_from = ""  # "" = π_0's weights with a fresh head; or an LM / scalar PM directory
    c.methods = ml_collections.ConfigDict()
    for name in iterate_methods():  # every command that can be a round's RL stage, from its toylab_<name>.py
        c.methods[name] = load_config_file(os.path.join(HERE, f"toylab_{name}.py") + variant)
    c.methods.ppo.train.iterations = 40  # per round: 4 rounds = the 160 iterations of one offline round
    c.methods.ppo.kl.controller = "fixed"  # one β for every round, so rounds differ only by their PM
    c.methods.ppo.kl.init_coef = 0.05

    c.model = toy_model_config()  # only with policy.init_from="": a random π_0 (smoke runs)
    c.model.hidden_size = 32
    c.model.intermediate_size = 64
    c.mesh = mesh_config()
    c.distributed = distributed_config()  # multi-process runs: `rlhfjax.distributed`

    if arg == "smoke":  # 2 tiny rounds from a random policy: exercises every stage in seconds
        c.policy.init_from = ""
        c.data.max_response_len = 8
        c.data.limit = 64
        c.data.eval_limit = 32
        it.rounds = 2
        it.comparisons = 16
        it.eval_comparisons = 8
        it.batch_size = 8
        it.pm_epochs = 1.0
        c.methods.ppo.train.iterations = 2
    return c
