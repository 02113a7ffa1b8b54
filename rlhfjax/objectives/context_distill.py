"""Context distillation (Askell et al. 2021, "A General Language Assistant as a Laboratory for Alignment"):
train the policy *without* a context to behave like frozen weights *with* it.

The teacher is a frozen copy of the initial weights, shown a fixed context before every prompt (a few
demonstrations of good answers: `prompt.context_file`); the student starts from the same weights and sees
the prompt alone. On responses y sampled from the prompted teacher (or taken from a dataset), the loss at
each response position t is the KL over the whole vocabulary

    KL_t = Σ_v p_teacher(v | context, x, y_<t) · (log p_teacher(v | …) − log p_student(v | x, y_<t))

summed over response tokens with the token count as denominator (DESIGN convention 10): the token-mean
KL(teacher ‖ student), the forward KL that Askell et al. minimise. It is 0 exactly when the student's
next-token distributions equal the teacher's, e.g. with an empty context and equal weights; its gradient
is the cross-entropy gradient towards the teacher's full distribution (the teacher's entropy is constant).

Both sequences end with the same N response slots (prompts are left-padded), so teacher and student
logits line up slot by slot (`models.api.policy_forward`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rlhfjax.models import ModelConfig, api
from rlhfjax.objectives.core import masked_mean, masked_sum

BATCH_KEYS = ("sequence_BxL", "sequence_mask_BxL", "teacher_sequence_BxL", "teacher_sequence_mask_BxL",
              "response_mask_BxN")


@dataclasses.dataclass(frozen=True)
class DistillLossConfig:
    model: ModelConfig
    num_response: int
    temperature: float = 1.0  # both distributions at softmax(logits / T); 1 = the models' own


def loss_fn(params, batch, *, frozen, config: DistillLossConfig, rng):
    """Σ_t KL(teacher ‖ student) over response tokens → (total, tokens, metrics).

    `params = {"policy": student}`; `frozen` = the teacher's params; `batch` (`BATCH_KEYS`): the student's
    sequence (plain prompt + response), the teacher's (context + prompt + response) and the response mask
    of the last N slots, shared by both."""
    del rng
    kw = dict(model_cfg=config.model, num_response=config.num_response, temperature=config.temperature)
    student = api.policy_forward(params["policy"], None, batch["sequence_BxL"], batch["sequence_mask_BxL"], **kw)
    frozen = jax.lax.stop_gradient(frozen)
    teacher = jax.lax.stop_gradient(api.policy_forward(
        frozen, None, batch["teacher_sequence_BxL"], batch["teacher_sequence_mask_BxL"], **kw))
    kl = api.response_vocab_kl(frozen, teacher, params["policy"], student, config.model,
                               temperature=config.temperature)
    mask = batch["response_mask_BxN"]
    total, count = masked_sum(kl, mask), mask.astype(bool).sum().astype(jnp.float32)
    metrics = {"distill/kl": masked_mean(kl, mask),
               # NLL of the teacher's sampled tokens under the student: what plain SFT on them would train
               "distill/student_nll": -masked_mean(student["logp_BxN"], mask),
               "policy/entropy": masked_mean(jax.lax.stop_gradient(student["entropy_BxN"]), mask),
               "distill/teacher_entropy": masked_mean(teacher["entropy_BxN"], mask)}
    return total, count, metrics
