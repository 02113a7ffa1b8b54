"""Models by role for online methods: policy, frozen reference, frozen reward model, optional value.

Each `Role` holds what a method needs to call or train that model: its `ModelConfig`, its params
placed on the mesh (fresh buffers per role, so a frozen copy never aliases the donated train
state), their shardings, its kind (`models.api.MODEL_KINDS`) and where it came from.

Config sections read (experiments/toylab_ppo.py documents them):
  policy.init_from, policy.dtype      initial policy, and the frozen reference (same weights)
  reference.init_from                 optional: a different frozen reference ("" = policy.init_from);
                                      iterated online RLHF starts each round from the current policy
                                      but keeps the KL anchor (and the √KL axis) at the first one
  reward.init_from                    frozen reward model (an HF *ForSequenceClassification dir)
  model                               only when policy.init_from / reward.init_from are empty: the
                                      preset of a random policy / RM (smoke runs that need nothing else)
  value.model, value.init_from        only when the method asks for a value model:
                                      "separate" (a scalar model, default init: the reward model)
                                      or "policy_head" (a zero-initialised head on the policy)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax

from rlhfjax import distributed
from rlhfjax.choices import VALUE_MODELS
from rlhfjax.errors import ConfigError
from rlhfjax.models import ModelConfig, api, init_params, init_scalar_params, init_value_head
from rlhfjax.models.factory import execution, preset_from_config
from rlhfjax.models.hf import load_pretrained, load_pretrained_scalar, save_pretrained



@dataclasses.dataclass
class Role:
    name: str
    kind: str  # models.api.MODEL_KINDS
    cfg: ModelConfig  # for a value head: the policy's config (the head reads its hidden states)
    params: Any  # placed on the mesh (a host reference: `load_roles(reference_on_host=True)`)
    shardings: Any
    init_from: str

    def device_params(self):
        """The params on the mesh: as they are, or host params placed now (fresh buffers, for one use)."""
        on_device = all(isinstance(x, jax.Array) for x in jax.tree.leaves(self.params))
        return self.params if on_device else api.place(self.params, self.shardings)


@dataclasses.dataclass
class Roles:
    policy: Role  # initial params; the trained ones live in the method's TrainState
    reference: Role
    reward: Role | None  # None: a method without a reward model (context distillation)
    value: Role | None = None  # None: the method has no value function

    @property
    def value_on_policy(self) -> bool:
        return self.value is not None and self.value.kind == "value_head"


def _random(config, vocab_size: int, kind: str, role: str):
    """(cfg, host params) of a random `config.model` preset: a policy, or an RM whose head is random too
    (a zero head would score everything 0). For runs that must work with nothing on disk (smoke)."""
    if "model" not in config:
        raise ConfigError(f"{role}.init_from is empty",
                          f"set {role}.init_from (e.g. runs/toylab/sft/model for the policy, runs/toylab/rm/model "
                          "for the reward model), or a `model` section for a random one")
    cfg = preset_from_config(config.model, vocab_size).replace(**_execution(config))
    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0 if kind == "lm" else 1)
    if kind == "lm":
        return cfg, init_params(cfg, rng)
    params = init_scalar_params(cfg, rng)
    kernel = params["head"]["kernel"]
    params["head"]["kernel"] = jax.random.normal(jax.random.fold_in(rng, 1), kernel.shape) / kernel.shape[0] ** 0.5
    return cfg, params


def _execution(config) -> dict:
    """How every role runs (not what it is): `factory.execution` of the `policy` section (scanned layers, remat,
    chunked logits), its dtype aside, which `load_roles` passes itself (a random preset keeps `model.dtype`)."""
    return {k: v for k, v in execution(config.policy).items() if k != "dtype"}


def load_roles(config, mesh, vocab_size: int, *, with_value: bool, reward_optional: bool = False,
               reference_on_host: bool = False) -> Roles:
    """Load every role from `config` and place it on `mesh` by its logical axes (`reward_optional` and an
    empty `reward.init_from`: no reward role). `reference_on_host`: the reference's params stay host arrays
    (its shardings are still given), for a method that places it only while it needs it (DPO's precomputed
    reference column)."""
    dtype = config.policy.dtype
    kw = {"dtype": dtype, **_execution(config)}
    policy_cfg, policy_host = (load_pretrained(config.policy.init_from, **kw) if config.policy.init_from
                               else _random(config, vocab_size, "lm", "policy"))
    no_reward = reward_optional and not config.reward.init_from
    reward_cfg, reward_host = ((None, None) if no_reward else load_pretrained_scalar(config.reward.init_from, **kw)
                               if config.reward.init_from else _random(config, vocab_size, "scalar", "reward"))

    def role(name, kind, cfg, host, init_from):
        shardings = api.param_shardings(cfg, mesh, kind)
        if reference_on_host and name == "reference":  # a random preset's params are device arrays
            return Role(name, kind, cfg, jax.device_get(host), shardings, init_from)
        return Role(name, kind, cfg, api.place(host, shardings), shardings, init_from)

    ref_from = config.reference.init_from if "reference" in config else ""
    if ref_from and ref_from != config.policy.init_from:
        ref_cfg, ref_host = load_pretrained(ref_from, **kw)
        if ref_cfg.vocab_size != policy_cfg.vocab_size:
            raise ConfigError(f"reference vocab_size {ref_cfg.vocab_size} != policy's {policy_cfg.vocab_size}",
                              "the reference must share the policy's tokenizer")
    else:
        ref_from, ref_cfg, ref_host = config.policy.init_from, policy_cfg, policy_host
    roles = Roles(policy=role("policy", "lm", policy_cfg, policy_host, config.policy.init_from),
                  reference=role("reference", "lm", ref_cfg, ref_host, ref_from),
                  reward=None if no_reward else role("reward", "scalar", reward_cfg, reward_host,
                                                     config.reward.init_from))
    if with_value:
        if config.value.model == "policy_head":
            if config.value.init_from:
                raise ConfigError("value.init_from is for value.model='separate'; a policy value head starts at zero")
            roles.value = role("value", "value_head", policy_cfg, init_value_head(policy_cfg), "")
        elif config.value.model == "separate":
            init_from = config.value.init_from or config.reward.init_from
            cfg, host = ((reward_cfg, reward_host) if init_from == config.reward.init_from
                         else load_pretrained_scalar(init_from, **kw))
            roles.value = role("value", "scalar", cfg, host, init_from)
        else:
            raise ConfigError(f"value.model must be one of {VALUE_MODELS}, got {config.value.model!r}")
    for r in (roles.policy, roles.reward, roles.value):
        if r is not None and r.cfg.vocab_size < vocab_size:
            raise ConfigError(f"{r.name} model has vocab_size {r.cfg.vocab_size} < tokenizer size {vocab_size}")
    return roles


def export_policy(cfg: ModelConfig, params, workdir: str, tokenizer, pad_id: int) -> str:
    """The trained policy as an HF checkpoint in `<workdir>/model` (with the tokenizer and its special token
    ids; written by process 0 once every process holds the params) → that path."""
    model_dir = os.path.join(workdir, "model")
    export_cfg = cfg.replace(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=pad_id)
    distributed.export(save_pretrained, export_cfg, params, model_dir, tokenizer=tokenizer)
    return model_dir
