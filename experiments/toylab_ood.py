"""OOD detection on a toy-lab model's prompt activations (Bai et al. 2022 §5.4), seconds on CPU.

    rlhfjax ood --config experiments/toylab_ood.py --config.model.init_from=runs/toylab/sft/model \\
        --workdir runs/toylab/ood
    rlhfjax ood --config experiments/toylab_ood.py:smoke --workdir /tmp/ood_smoke   # random tiny model

`model.init_from` may be any causal LM or reward-model directory (e.g. runs/toylab/rm/model). The
Gaussian is fitted on prompts/train (in-distribution topics); prompts/test (same topics) is scored
against prompts/ood (held-out topics). Results in `<workdir>`: `summary.json`, `metrics.jsonl` and `tb/`
(AUROC per layer and score), `scores.npz`, `ood_hist.png`.
"""

import ml_collections

from rlhfjax.config_blocks import data_config, distributed_config, mesh_config, toy_model_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # only used by a random init (model.init_from = "")
    c.data = data_config("toylab")  # toy lab location, prompt length and template (other fields unused)
    c.tokenizer = ml_collections.ConfigDict({"path": ""})  # "" = the toy lab's (or init_from's) tokenizer
    c.model = toy_model_config()  # set model.init_from; the preset fields only shape a random init

    o = c.ood = ml_collections.ConfigDict()
    o.layer = "all"  # "middle" (L // 2) | "all" (every block and -1) | "0,1,-1"; -1 = final-norm output
    # Prompt sources: "" = the toy lab's prompts/ folder (else data.source for fit/test; ood_source required).
    # Anything rlhfjax.data.hh.load_prompts reads: a hub id, a local json/jsonl/parquet file or folder.
    o.fit_source, o.fit_data_dir, o.fit_split, o.fit_limit = "", "", "train", 0  # in-distribution fit set
    o.test_source, o.test_data_dir, o.test_split, o.test_limit = "", "", "test", 0  # held-out in-distribution
    o.ood_source, o.ood_data_dir, o.ood_split, o.ood_limit = "", "", "ood", 0  # out-of-distribution
    o.batch_size = 64  # prompts per jitted forward (fixed shape: the last batch is padded)
    o.shrinkage = 1e-6  # × mean variance added to the covariance diagonal (raise it when N ≲ hidden size)
    c.mesh = mesh_config()  # dp over all local devices (ood.batch_size must divide evenly); fsdp | tp
    c.distributed = distributed_config()  # multi-process runs: `rlhfjax.distributed`

    if arg == "smoke":
        c.model.hidden_size = 32
        c.model.intermediate_size = 64
        o.fit_limit, o.test_limit, o.ood_limit = 400, 100, 100
        o.batch_size = 32
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: smoke")
    return c
