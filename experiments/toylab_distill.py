"""Context distillation of the toy-lab SFT policy (Askell et al. 2021): the policy without the context learns
to match the same frozen weights prompted with a few demonstrations of good answers and refusals.

    rlhfjax distill --config experiments/toylab_distill.py --workdir runs/toylab/distill
    rlhfjax distill --config experiments/toylab_distill.py:smoke --workdir /tmp/distill_smoke
    rlhfjax distill --config experiments/toylab_distill.py --config.prompt.context_file=my_context.txt ...

Needs the SFT policy (`rlhfjax sft --config experiments/toylab_sft.py --workdir runs/toylab/sft`); the
reward model is optional (`--config.reward.init_from=runs/toylab/rm/model` adds the proxy reward to evals).
summary.json holds the prompted teacher's eval (`teacher_eval`) next to the student's curve.
"""

import os

import ml_collections

from rlhfjax.config_blocks import online_smoke, online_train_config, toylab_online_config

CONTEXT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "contexts", "toylab_hhh.txt")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = toylab_online_config(temperature=1.0)  # evals sample the student at T = 1, as the teacher is sampled
    c.prompt.context_file = CONTEXT  # three demonstrations: two good answers and a refusal (33 toy tokens)
    c.reward.init_from = ""  # optional here: the loss needs no reward model
    c.reward.normalise = True  # only with a reward model

    c.distill = ml_collections.ConfigDict()
    # teacher: responses sampled from the prompted teacher (Askell et al.); dataset: the demonstrations of the
    # data source (the toy lab's sft/ split data.train_split) — the teacher's distributions on given text
    c.distill.responses = "teacher"
    c.distill.temperature = 1.0  # the prompted teacher's sampling temperature (1: its own distribution)
    c.distill.loss_temperature = 1.0  # both distributions in the KL at softmax(logits / T)
    c.distill.epochs = 1  # passes over each iteration's teacher samples
    c.distill.num_minibatches = 2  # optimizer steps per epoch (train.batch_size divisible)

    c.optim.learning_rate = 3e-4
    c.optim.warmup_steps = 10
    # train.batch_size prompts per iteration, one teacher response each
    c.train = online_train_config(iterations=60, batch_size=64, eval_every=10)

    if arg == "smoke":  # a random tiny policy distilled from itself with the context
        online_smoke(c)
        c.reward.init_from = ""
        c.distill.num_minibatches = 2
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: smoke")
    return c
