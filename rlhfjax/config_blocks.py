"""Config sections that several experiment files share, each field documented where it is set.

Importing nothing but ml_collections (no jax), so an experiment file loads in a fraction of a second; the
modules that read a section (`parallel`, `distributed`, `train.optim`) take their defaults from here.
"""

from __future__ import annotations

import ml_collections

from rlhfjax import choices as C
from rlhfjax.choices import FIRST_RATIOS, OneOf


def mesh_config() -> ml_collections.ConfigDict:
    """`config.mesh` (`parallel.make_mesh`): how the devices form the (data, fsdp, tensor) mesh."""
    c = ml_collections.ConfigDict()
    c.strategy = "dp"  # "dp" | "fsdp" | "tp" | "custom" (use the sizes below as given)
    c.data = 1  # mesh axis sizes for "custom"; one may be -1 (fill with remaining devices)
    c.fsdp = 1
    c.tensor = 1
    return c


def distributed_config() -> ml_collections.ConfigDict:
    """`config.distributed` (`rlhfjax.distributed`): joining a multi-process run."""
    c = ml_collections.ConfigDict()
    c.mode = "auto"  # auto | on | off (rlhfjax.distributed's docstring)
    c.coordinator_address = ""  # host:port of process 0 ("" = JAX_COORDINATOR_ADDRESS or auto-detected)
    c.num_processes = 0  # 0 = JAX_NUM_PROCESSES or auto-detected
    c.process_id = -1  # -1 = JAX_PROCESS_ID or auto-detected
    c.local_device_ids = ""  # e.g. "0,1" for one process per GPU subset ("" = all local devices)
    c.cpu_collectives = "gloo"  # CPU backend collectives between processes (tests, CPU clusters)
    c.initialization_timeout = 300  # seconds to wait for every process to join
    return c


def optim_config() -> ml_collections.ConfigDict:
    """`config.optim` (`train.optim.make_optimizer`): clip → AdamW → LR schedule."""
    c = ml_collections.ConfigDict()
    c.learning_rate = 1e-5  # peak LR, reached at the end of warmup
    c.warmup_steps = 0  # linear warmup from 0 over this many optimizer steps
    c.schedule = "constant"  # after warmup: "constant" | "cosine" (to 0) | "linear" (to 0)
    c.total_steps = 1000  # optimizer steps (not micro-batches) the decay runs over, warmup included
    c.weight_decay = 0.0  # AdamW decoupled decay; applied to matrices only (not norms/biases)
    c.b1 = 0.9
    c.b2 = 0.95
    c.eps = 1e-8
    c.grad_clip_norm = 1.0  # clip by global norm before Adam; <= 0 disables clipping
    c.grad_accum_steps = 1  # >1: each update splits its batch into this many micro-batches (memory), exactly
    c.max_consecutive_nonfinite = 5  # host loop raises after this many skipped (NaN/Inf) steps in a row; 0 = never
    return c


def ratio_settings(section: ml_collections.ConfigDict) -> None:
    """The fields of a clipped-ratio method's section (ppo, rloo, grpo) that say how its first minibatch's
    ratio is exactly 1, with their defaults (`objectives.core.check_first_ratio`)."""
    # own_logp uses the loss's own log-probs (gradient stopped) as π_old on the update's first step (free);
    # remat instead makes the loss's forward the log-prob phase's XLA computation by rematerialising it (needs
    # remat=True; one extra forward per step: docs/benchmarks.md)
    section.first_ratio = FIRST_RATIOS[0]
    section.remat = False  # rematerialise the loss's forward in the backward (activation memory)


def data_config(source: str = "toylab") -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.source = source  # "toylab", an HF hub id (e.g. Anthropic/hh-rlhf), or a local json/jsonl/parquet path
    d.data_dir = ""  # hub/local subset, e.g. "helpful-base"; for toy-lab comparisons: the annotator pool
    d.train_split = "train"
    d.eval_split = "test"
    d.limit = 0  # rows read from the train split; 0 = all
    d.eval_limit = 400  # rows read from the eval split; 0 = all
    d.toylab_dir = "runs/toylab/data"  # built on first use (seeded, ~5 s) and shared by every stage
    d.toylab_seed = 0
    d.max_prompt_len = 16  # tokens; prompts are cut from the left, keeping the final Assistant turn
    d.max_response_len = 32  # tokens incl. EOS; responses are cut on the right
    d.template = "auto"  # "hh" plain transcript | "chat" tokenizer's template | "auto": chat if defined
    return d


def toy_model_config() -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.init_from = ""  # HF hub id or directory to start from; "" = random init of the preset below
    m.family = "llama"  # gpt2 | gpt_neox | llama | qwen2 (architecture switches of rlhfjax.models.preset)
    m.hidden_size = 64
    m.num_layers = 2
    m.num_heads = 4
    m.num_kv_heads = 2
    m.intermediate_size = 192
    m.max_position_embeddings = 64
    m.dtype = "float32"  # compute dtype; "bfloat16" on accelerators
    m.scan_layers = False  # True: one scanned block, params stacked on a `layers` axis (compile time ~ 1 layer)
    # per-block remat: none | nothing_saveable (keep block inputs only) | dots_saveable (keep matmul outputs) |
    # dots_with_no_batch_dims_saveable | everything_saveable
    m.remat_policy = "none"
    # LM head, log-softmax and entropy over this many positions at a time in teacher-forced losses, recomputed in
    # the backward: memory batch × chunk × vocab instead of batch × length × vocab; 0 = all at once
    m.logits_chunk = 0
    return m


def train_config(steps: int, batch_size: int, eval_every: int) -> ml_collections.ConfigDict:
    t = ml_collections.ConfigDict()
    t.steps = steps  # optimizer steps
    t.batch_size = batch_size  # examples per step, in all (split over processes and data-parallel devices)
    t.log_every = max(1, eval_every // 4)
    t.eval_every = eval_every
    t.save_every = eval_every  # checkpoint period (the last step is always saved)
    t.keep_checkpoints = 2
    t.progress = False  # tqdm bar; off by default because logs are line-based
    # > 0: stop after this step (online: iteration) with schedules still sized for the whole run; a
    # re-run with a larger value continues exactly (rlhfjax.api's "k more steps")
    t.stop_at = 0
    return t


def online_train_config(iterations: int, batch_size: int, eval_every: int) -> ml_collections.ConfigDict:
    """`train` of an online method (online.runner): iterations, not optimizer steps, logged every one."""
    t = train_config(steps=0, batch_size=batch_size, eval_every=eval_every)
    del t["steps"]
    t.iterations = iterations  # sample → score → update rounds
    t.batch_size = batch_size  # prompts per iteration, in all (split over processes and devices)
    # Held-out prompts per eval batch (and training prompts per reward-normaliser batch): one value for
    # every method, so all eval curves sample the same prompts with the same keys and every method fits
    # the same normaliser (the initial policy's eval is then identical across methods).
    t.eval_batch_size = 32
    t.log_every = 1
    return t


def prompt_config() -> ml_collections.ConfigDict:
    p = ml_collections.ConfigDict()
    # A text file the policy sees before every prompt it samples from, in training rollouts and evals
    # (Askell et al. 2021's prompted baseline; experiments/contexts/toylab_hhh.txt for the toy lab): its
    # tokens go after BOS and before the prompt's, never truncated; the reward model, the eval KL reference
    # and gold see the prompt without it (rlhfjax.data.batching, rlhfjax.harness.experience). "" = none.
    p.context_file = ""
    return p


def sample_config() -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    s.num_prompts = 64  # eval prompts sampled at each eval
    s.max_new_tokens = 32
    s.temperature = 1.0
    s.top_p = 1.0
    return s


def toylab_online_config(temperature: float) -> ml_collections.ConfigDict:
    """The sections every online method on the toy lab shares (`online.runner`, `harness.roles`): prompts,
    tokenizer, policy/reference, reward model + normaliser, rollout sampling, the random-model preset of
    smoke runs, mesh and optimizer. Each experiment file adds its method's section and `train`."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = data_config("toylab")  # prompts: <toylab_dir>/prompts (or any source load_prompts reads)
    c.data.max_prompt_len = 16
    c.data.max_response_len = 24  # = generated tokens per response, fixed (toy-lab responses fit in 24)
    c.tokenizer = ml_collections.ConfigDict({"path": ""})  # "" = the toy lab's tokenizer, else policy's
    c.prompt = prompt_config()

    c.policy = policy_config()
    # The frozen KL anchor: "" = policy.init_from (the usual case); `rlhfjax iterate` sets the first
    # round's policy here while later rounds start from the current one.
    c.reference = ml_collections.ConfigDict({"init_from": ""})
    c.reward = reward_config("runs/toylab/rm/model")

    c.rollout = ml_collections.ConfigDict()
    c.rollout.temperature = temperature  # log-probs and KL use the T-scaled policy (what is sampled)
    c.rollout.top_p = 1.0  # nucleus sampling; < 1 truncates (KL is still measured on the full T-scaled policy)

    _random_models_and_mesh(c)
    c.optim.total_steps = 0  # 0 = every optimizer step of the run (train.iterations × steps per iteration)
    return c


def policy_config() -> ml_collections.ConfigDict:
    """`config.policy` of a method that trains a policy against its initial self (`harness.roles`)."""
    p = ml_collections.ConfigDict()
    p.init_from = "runs/toylab/sft/model"  # initial policy AND frozen reference (HF/rlhfjax LM dir)
    p.dtype = "float32"  # compute dtype of policy, reference, reward (and value) models
    p.scan_layers = False  # every role: one scanned block, params stacked (as model.scan_layers)
    p.remat_policy = "none"  # every role: per-block remat (as model.remat_policy)
    # every role: the LM head in teacher-forced passes this many positions at a time (as model.logits_chunk)
    p.logits_chunk = 0
    return p


def reward_config(init_from: str) -> ml_collections.ConfigDict:
    """`config.reward`: the frozen reward model and its normaliser (`harness.evaluation.Evaluator`)."""
    r = ml_collections.ConfigDict()
    r.init_from = init_from  # frozen RM (dir written by save_pretrained_scalar); "" = none, where that is allowed
    r.normalise = True  # LHP: gain/bias so the initial policy's scores have mean 0, std 1
    r.norm_batches = 8  # batches of eval prompts the initial policy samples for the normaliser
    return r


def _random_models_and_mesh(c: ml_collections.ConfigDict) -> None:
    # Architecture of a random policy / reward model, used only when policy.init_from / reward.init_from
    # are empty (the smoke variants, which then need nothing on disk; their rewards mean nothing).
    c.model = toy_model_config()
    c.model.hidden_size = 32
    c.model.intermediate_size = 64
    c.mesh = mesh_config()  # dp over all devices; fsdp / tp / custom for models that need it
    c.distributed = distributed_config()  # multi-process runs (TPU pod slices, GPU clusters)
    c.optim = optim_config()


def toylab_offline_config() -> ml_collections.ConfigDict:
    """The sections every offline method with a reference shares on the toy lab (`offline.reference`): its
    comparisons, tokenizer, policy (= the frozen reference), an optional reward model for the proxy reward, the
    held-out sampling evals (as the online methods sample theirs, so all land on the same reward vs √KL axes),
    the random-model preset of smoke runs, mesh and optimizer. Each experiment file adds its method's section,
    `optim` and `train`."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    # Comparisons: the toy lab's annotator pool (or HH: --config.data.source=Anthropic/hh-rlhf
    # --config.data.data_dir=helpful-base, or local json/jsonl/parquet files), eval_split for held-out pairs
    # and prompts; data.eval_limit caps the eval pairs.
    c.data = data_config("toylab")
    c.data.data_dir = "mixed"  # annotator pool: helpful | harmless | mixed | generic
    c.data.ranked_lists = False  # True: train on every pair (i better than j) of the ranked lists
    c.data.max_response_len = 32  # tokens incl. EOS (the SFT policy's); longer responses are cut
    c.tokenizer = ml_collections.ConfigDict({"path": ""})  # "" = the toy lab's, else the policy's
    c.policy = policy_config()
    c.reward = reward_config("")  # evaluation only: an RM dir (e.g. runs/toylab/rm/model) adds eval/reward/proxy

    # Held-out sampling evals (every train.eval_every steps, the last step and step 0), as the online methods'.
    c.eval = ml_collections.ConfigDict()
    c.eval.prompt_limit = 400  # eval_split prompt rows read, as the online methods' data.eval_limit; 0 = off
    c.eval.batch_size = 32  # = the online methods' train.eval_batch_size: the same prompts and sampling keys
    c.eval.temperature = 0.7  # = PPO's rollout temperature (lm-human-preferences); KL is of the T-scaled models
    c.eval.top_p = 1.0
    c.eval.max_new_tokens = 24  # = PPO's fixed response length on the toy lab
    c.eval.kl_estimator = "k1"  # k1 | k2 | k3 (objectives.core.kl_per_token), as PPO's kl.estimator
    c.eval.chunk_size = 0  # > 0: teacher-forced eval phases this many rows at a time (memory)
    c.eval.at_start = True  # evaluate the initial policy as step 0 (a fresh run's baseline)
    _random_models_and_mesh(c)
    c.optim.total_steps = 0  # 0 = train.steps
    return c


def offline_smoke(c: ml_collections.ConfigDict) -> None:
    """Shrink an offline toy-lab config in place to a standalone smoke run (a random tiny policy)."""
    c.policy.init_from = ""
    c.data.limit = 64
    c.data.eval_limit = 16
    c.eval.prompt_limit = 16
    c.eval.batch_size = 8
    c.eval.max_new_tokens = 8
    # 8 pairs: divisible by the 8 virtual CPU devices of the test suite's default data-parallel mesh
    c.train = train_config(steps=4, batch_size=8, eval_every=2)


def online_smoke(c: ml_collections.ConfigDict) -> None:
    """Shrink an online toy-lab config in place to a standalone smoke run (random tiny models)."""
    c.policy.init_from = ""
    c.reward.init_from = ""
    c.data.limit = 64
    c.data.max_response_len = 8
    c.reward.norm_batches = 1
    c.data.eval_limit = 16
    # 8 prompts: divisible by the 8 virtual CPU devices of the test suite's default data-parallel mesh
    c.train = online_train_config(iterations=3, batch_size=8, eval_every=2)
    c.train.eval_batch_size = 8


# What each field of the sections above may hold, checked at load wherever the section appears (with the
# method sections' own checks, `rlhfjax.commands`): a bad value is a one-line error before anything runs.
CHECKS = {
    "data.max_prompt_len": C.POSITIVE, "data.max_response_len": C.POSITIVE, "data.limit": C.NON_NEGATIVE,
    "data.eval_limit": C.NON_NEGATIVE, "data.template": OneOf(C.TEMPLATES),
    **{f"{section}.{field}": check for section in ("model", "policy") for field, check in {
        "dtype": OneOf(C.DTYPES), "remat_policy": OneOf(C.REMAT_POLICIES), "logits_chunk": C.NON_NEGATIVE}.items()},
    "model.family": OneOf(C.MODEL_FAMILIES),
    **{f"model.{field}": C.POSITIVE for field in ("hidden_size", "num_layers", "num_heads", "num_kv_heads",
                                                  "intermediate_size", "max_position_embeddings")},
    "train.steps": C.NON_NEGATIVE, "train.iterations": C.NON_NEGATIVE, "train.batch_size": C.POSITIVE,
    "train.eval_batch_size": C.POSITIVE, "train.log_every": C.POSITIVE, "train.eval_every": C.NON_NEGATIVE,
    "train.save_every": C.NON_NEGATIVE, "train.keep_checkpoints": C.POSITIVE, "train.stop_at": C.NON_NEGATIVE,
    "train.epochs": C.NON_NEGATIVE,
    "optim.learning_rate": C.NON_NEGATIVE, "optim.warmup_steps": C.NON_NEGATIVE, "optim.schedule": OneOf(C.SCHEDULES),
    "optim.total_steps": C.NON_NEGATIVE, "optim.weight_decay": C.NON_NEGATIVE,
    "optim.b1": C.Range(0, 1, open_high=True), "optim.b2": C.Range(0, 1, open_high=True), "optim.eps": C.above(0),
    "optim.grad_clip_norm": C.FINITE, "optim.grad_accum_steps": C.POSITIVE,
    "optim.max_consecutive_nonfinite": C.NON_NEGATIVE,
    "mesh.strategy": OneOf(C.MESH_STRATEGIES), "mesh.data": C.at_least(-1), "mesh.fsdp": C.at_least(-1),
    "mesh.tensor": C.at_least(-1),
    "distributed.mode": OneOf(C.DISTRIBUTED_MODES), "distributed.num_processes": C.NON_NEGATIVE,
    "distributed.process_id": C.at_least(-1), "distributed.initialization_timeout": C.above(0),
    "reward.norm_batches": C.POSITIVE, "reward.score_clip": C.NON_NEGATIVE, "reward.no_eos_penalty": C.FINITE,
    "rollout.temperature": C.TEMPERATURE, "rollout.top_p": C.TOP_P,
    "sample.num_prompts": C.NON_NEGATIVE, "sample.max_new_tokens": C.POSITIVE, "sample.temperature": C.TEMPERATURE,
    "sample.top_p": C.TOP_P,
    # the offline methods' held-out sampling evals (toylab_offline_config's `eval` section)
    "eval.kl_estimator": OneOf(C.KL_ESTIMATORS), "eval.prompt_limit": C.NON_NEGATIVE, "eval.batch_size": C.POSITIVE,
    "eval.temperature": C.TEMPERATURE, "eval.top_p": C.TOP_P, "eval.max_new_tokens": C.POSITIVE,
    "eval.chunk_size": C.NON_NEGATIVE,
}
