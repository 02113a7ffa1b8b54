"""Reward vs √KL sweep on the toy lab: PPO at fixed KL coefficients, SuperHF at several KL coefficients,
best-of-n at several n and DPO at several β, all from one SFT policy and one reward model (Gao et al. 2022,
"Scaling Laws for Reward Model Overoptimization"; Bai et al. 2022, §4.3). Any other registered method joins
the sweep by name (`methods`), with one run of its experiment file's own settings unless its section says more.

    python scripts/kl_scaling.py --config experiments/kl_scaling_toy.py
    python scripts/kl_scaling.py --config experiments/kl_scaling_toy.py --config.ppo.grid="(0.01, 0.1)"
    python scripts/kl_scaling.py --config experiments/kl_scaling_toy.py --config.methods="(ppo, grpo, kto)"
    python scripts/kl_scaling.py --config experiments/kl_scaling_toy.py --config.sft_dir=runs/toylab/sft/model \\
        --config.rm_dir=runs/toylab/rm/model --config.ppo.steps=400 --config.eval_prompts=400
    python scripts/kl_scaling.py --config experiments/kl_scaling_toy.py --render   # redraw from results.json
    python scripts/kl_scaling.py --config experiments/kl_scaling_toy.py:smoke --config.out=/tmp/kls
    python scripts/objectives_table.py     # the :objectives variant: every method once → docs/objectives.md

Every (method, value) is an ordinary run directory `<out>/<method>/<value>` (best-of-n: one run, `<out>/bon`,
for every n); a finished run is reused on a re-run. Each method runs its experiments/toylab_<method>.py with the
fields below on top. Scaling up = overrides: more values, iterations, eval prompts, or bigger SFT/RM stages.
"""

import ml_collections

# The methods a sweep can name beyond PPO, SuperHF, best-of-n and DPO: each runs once with its experiment file's own
# settings unless its section's `field` and `grid` are set.
MORE_METHODS = ("rloo", "grpo", "remax", "reinforce_pp", "online_dpo", "kto", "orpo", "simpo")


def method_section(config: str, field: str = "", grid=(), steps: int = 0, eval_every: int = 0,
                   extra=()) -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.config = config  # the base experiment file (a path relative to the project root, `:variant` allowed)
    m.field = field  # the config field swept ("section.name"); "" = one run with the file's own settings
    m.grid = tuple(grid)  # the field's values, one run each (best-of-n: the n's of its one run)
    m.steps = steps  # train.iterations (online methods) or train.steps (offline); 0 = the file's own
    m.eval_every = eval_every  # train.eval_every: one point of the curve per eval (+ the SFT policy at 0); 0 = own
    m.extra = tuple(extra)  # any other field of it, as "field=value" strings, e.g. ("train.batch_size=32",)
    return m


def _stage(config: str) -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.config = config
    m.extra = ()
    return m


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.out = "runs/kl_scaling"  # every run dir, the CSV (<out>/kl_scaling.csv) and results.json
    c.doc = "docs/kl_scaling.md"  # markdown summary; the PNG is written next to it (same name, .png); "" = none
    c.toylab_dir = ""  # the toy lab's data; "" = <out>/data (built on first use, seeded: the same lab everywhere)

    # The SFT policy (initial policy and KL reference of every method) and the reward model (the proxy):
    # a model directory to reuse; "" = train it here into <out>/sft, <out>/rm with the stage config below
    # (about 2 min for both on 2 cores); "base" = leave each method config's own policy/reward.init_from
    # (the :smoke variants' random tiny models; DPO then has no proxy reward).
    c.sft_dir = ""
    c.rm_dir = ""
    c.sft = _stage("experiments/toylab_sft.py")  # the SFT stage (when sft_dir is "")
    c.rm = _stage("experiments/toylab_rm.py")  # the RM stage (when rm_dir is ""), from the SFT policy

    # Shared by every method so that all curves start from the same distribution and land on one axis:
    c.temperature = 0.7  # sampling temperature of training rollouts and evals (KL is of the T-scaled policies)
    c.eval_prompts = 256  # held-out prompts per eval (online: data.eval_limit; DPO: eval.prompt_limit; bon prompts)
    c.single_device = True  # True: every run on one device (2-core CPU); False: each config's own mesh
    c.compilation_cache = True  # a persistent XLA cache in <out>/jax_cache: later runs and re-runs skip compiles

    # Analysis: the "early range" over which the proxy's slope vs √KL is fitted (Bai et al. §4.3 see it
    # roughly linear there): √KL ≤ early_sqrt_kl, or, when 0, √KL ≤ half the method's largest √KL.
    c.early_sqrt_kl = 1.0

    # The methods run, in this order, each by its section below (any of MORE_METHODS may be named too).
    c.methods = ("ppo", "superhf", "bon", "dpo")

    # PPO with a fixed KL coefficient β in the reward r − β·KL (kl.controller=fixed, kl.init_coef=β);
    # the adaptive controller of toylab_ppo.py would steer every run to the same KL.
    c.ppo = method_section("experiments/toylab_ppo.py", "kl.init_coef", (0.01, 0.03, 0.1, 0.3), steps=100,
                           eval_every=5, extra=("kl.controller=fixed",))  # 100 iterations of 64 prompts

    # SuperHF's KL-prior coefficient; 0 = plain expert iteration on the RM's best-of-16.
    c.superhf = method_section("experiments/toylab_superhf.py", "superhf.kl_coef", (0.0, 0.1, 0.35, 1.0), steps=60,
                               eval_every=6)  # 60 iterations of 8 prompts × superbatch 16

    # Best-of-n: ONE run samples a pool per held-out prompt and takes the RM's best of n for every n in `grid`
    # (must include 1: the baseline).
    c.bon = method_section("experiments/toylab_bon.py", "bon.n", (1, 2, 4, 8, 16, 32, 64, 128, 256))
    c.bon.pool = 256  # samples per prompt (bon.pool ≥ max n; ⌊pool/n⌋ disjoint groups per prompt)

    # DPO's β, trained on the `mixed` pool's comparisons (the RM's training pairs); the RM scores its sampling
    # evals (proxy) but is not used in training.
    c.dpo = method_section("experiments/toylab_dpo.py", "dpo.beta", (0.03, 0.1, 0.3, 1.0), steps=250,
                           eval_every=25)  # 250 steps of 64 pairs

    for name in MORE_METHODS:  # one run each when named in `methods`; e.g. --config.grpo.field=grpo.kl_coef
        c[name] = method_section(f"experiments/toylab_{name}.py")  # --config.grpo.grid="(0.01, 0.04)" sweeps it

    if arg == "smoke":  # the test suite's: the :smoke variants' random tiny models, 2 iterations or steps;
        # two PPO values (the second run reuses the first's compiled programs), one of the others (compiles
        # dominate the time of a run this small)
        c.sft_dir = c.rm_dir = "base"
        c.eval_prompts = 16
        c.ppo.config = "experiments/toylab_ppo.py:smoke"
        c.ppo.grid = (0.01, 0.3)
        c.ppo.steps, c.ppo.eval_every = 2, 1
        c.ppo.extra = ("kl.controller=fixed", "ppo.epochs=1", "ppo.num_minibatches=1")  # fewer programs to compile
        c.superhf.config = "experiments/toylab_superhf.py:smoke"
        c.superhf.grid = (1.0,)
        c.superhf.steps, c.superhf.eval_every = 2, 1
        c.bon.config = "experiments/toylab_bon.py:smoke"
        c.bon.grid = (1, 2, 4)
        c.bon.pool = 8
        c.bon.extra = ("bon.distill=False",)
        c.dpo.config = "experiments/toylab_dpo.py:smoke"
        c.dpo.grid = (0.1,)
        c.dpo.steps, c.dpo.eval_every = 2, 1
    elif arg == "objectives":  # scripts/objectives_table.py: every method once, with its experiment file's settings
        c.out = "runs/objectives"
        c.doc = "docs/objectives_curves.md"
        c.methods = ("ppo", "superhf", "bon", "dpo", *MORE_METHODS)
        for name in ("ppo", "superhf", "dpo"):  # their own settings (PPO: the adaptive KL controller), same length
            c[name].field, c[name].grid, c[name].extra = "", (), ()
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: smoke, objectives")
    return c
