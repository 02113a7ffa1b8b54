"""HF checkpoint files: hub ids and local directories, single or sharded safetensors, read and write.

`load_pretrained("gpt2")` or `load_pretrained("/path/to/dir")` reads single or sharded
safetensors checkpoints of GPT-2, GPT-NeoX/Pythia, Llama and Qwen2; `save_pretrained` writes a
directory that `transformers.AutoModelForCausalLM.from_pretrained` loads. Every tensor's name and
shape is validated against the config before any is converted (names and layouts: `weights.py`;
config.json: `config_map.py`). A damaged folder (config.json unreadable or of an unknown model_type, a
missing shard or tensor, a wrong shape, a truncated safetensors file) is a one-line `BadInputError` or
`MissingPathError` naming the file and the tensor, found from the headers alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from rlhfjax.errors import BadInputError, MissingPathError
from rlhfjax.models.config import SUPPORTED_FAMILIES, ModelConfig
from rlhfjax.models.hf import safetensors_io
from rlhfjax.models.hf.config_map import config_from_hf, config_to_hf
from rlhfjax.models.hf.weights import _FAMILIES, _params_for, expected_hf_shapes, from_hf_state_dict, to_hf_state_dict

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"

# Non-parameter buffers that old checkpoints carry; safe to ignore.
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".attention.bias", ".attention.masked_bias",
                     "rotary_emb.inv_freq")


def _read_index(index: str) -> dict[str, str]:
    """The `weight_map` (tensor name -> shard file) of a sharded checkpoint's index file."""
    try:
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise BadInputError(f"{index}: unreadable checkpoint index ({type(e).__name__}: {e})",
                            'it must be JSON with a "weight_map" of tensor name -> shard file; re-download or '
                            "re-save the checkpoint") from e
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise BadInputError(f"{index}: unreadable checkpoint index (weight_map is not tensor name -> shard file)",
                            "re-download or re-save the checkpoint")
    return weight_map


class _Checkpoint(Mapping):
    """All tensors of a single or sharded safetensors checkpoint directory, by name. Opening reads only
    the headers: a missing shard, a tensor the index places in a shard that lacks it, or a truncated file
    is a user error naming the file (and tensor) here."""

    def __init__(self, directory: str):
        index = os.path.join(directory, SAFE_INDEX)
        single = os.path.join(directory, SAFE_SINGLE)
        if os.path.exists(index):
            weight_map = _read_index(index)
            files: dict[str, safetensors_io.SafetensorsFile] = {}
            for fn in sorted(set(weight_map.values())):
                path = os.path.join(directory, fn)
                if not os.path.isfile(path):
                    names = sorted(n for n, f in weight_map.items() if f == fn)
                    raise MissingPathError(f"{path}: shard missing; {SAFE_INDEX} places {len(names)} tensor(s) "
                                           f"in it, e.g. {names[0]!r}",
                                           "download or copy every shard the index names")
                files[fn] = safetensors_io.SafetensorsFile(path)
            for name, fn in weight_map.items():
                if name not in files[fn]:
                    raise BadInputError(f"{files[fn].path}: lacks tensor {name!r}, which {SAFE_INDEX} "
                                        "places in it", "re-download or re-save the checkpoint")
            self._where = {name: files[fn] for name, fn in weight_map.items()}
            self.describe = f"the shards of {index}"
        elif os.path.exists(single):
            f = safetensors_io.SafetensorsFile(single)
            self._where = {name: f for name in f}
            self.describe = single
        else:
            found = sorted(os.listdir(directory))
            raise MissingPathError(
                f"no {SAFE_SINGLE} or {SAFE_INDEX} in {directory} (found: {found})",
                "rlhfjax reads safetensors only: re-save a PyTorch checkpoint with `save_pretrained(..., "
                "safe_serialization=True)`")

    def __getitem__(self, name):
        return self._where[name][name]

    def shape(self, name):
        return self._where[name].shape(name)

    def path(self, name) -> str:
        """The file that holds tensor `name`."""
        return self._where[name].path

    def __iter__(self):
        return iter(self._where)

    def __len__(self):
        return len(self._where)


class _Renamed(Mapping):
    """View of a checkpoint with base-model prefixes added where a checkpoint omitted them
    (the hub's `gpt2` stores `h.0...` rather than `transformer.h.0...`)."""

    def __init__(self, ckpt: _Checkpoint, prefix: str, top_level: tuple[str, ...]):
        self._ckpt = ckpt
        self._names = {}
        for name in ckpt:
            full = name if (name.startswith(prefix) or name in top_level) else prefix + name
            self._names[full] = name

    def __getitem__(self, name):
        return self._ckpt[self._names[name]]

    def shape(self, name):
        return self._ckpt.shape(self._names[name])

    def path(self, name) -> str:
        return self._ckpt.path(self._names[name])

    @property
    def describe(self) -> str:
        return self._ckpt.describe

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)


def _resolve(name_or_path: str, revision: str | None) -> str:
    """A local directory as is; otherwise download config + safetensors from the hub."""
    expanded = os.path.expanduser(name_or_path)
    if os.path.isdir(expanded):
        return expanded
    if expanded.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise MissingPathError(f"no such checkpoint directory: {name_or_path!r}",
                               "check the path, or run the stage that writes it first, e.g. `rlhfjax sft ... "
                               "--workdir DIR` writes DIR/model")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(
            repo_id=name_or_path, revision=revision,
            allow_patterns=["config.json", "*.safetensors", SAFE_INDEX, "generation_config.json"])
    except Exception as e:  # noqa: BLE001 — re-raised with what the user can do about it
        raise MissingPathError(
            f"could not fetch {name_or_path!r} from the Hugging Face Hub ({type(e).__name__}: {e})",
            f"without network, download it elsewhere (e.g. `hf download {name_or_path}`) and pass the "
            "local directory instead of the hub id") from e


def load_hf_config(name_or_path: str, revision: str | None = None):
    """(local directory, transformers PretrainedConfig) for a hub id or directory."""
    directory = _resolve(name_or_path, revision)
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise MissingPathError(f"{name_or_path!r} holds no config.json, so it is not a model checkpoint",
                               "pass a directory written by an rlhfjax run (<workdir>/model) or an HF checkpoint")
    try:
        with open(path) as f:
            raw = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInputError(f"{path}: not valid JSON ({e})", "repair it or re-save the checkpoint") from e
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type not in SUPPORTED_FAMILIES:
        what = f"unsupported model_type {model_type!r}" if model_type is not None else "no model_type"
        raise BadInputError(f"{path}: {what}",
                            f"rlhfjax reads model_type {', '.join(SUPPORTED_FAMILIES)}")
    import transformers

    return directory, transformers.AutoConfig.from_pretrained(directory)


def _validate(cfg: ModelConfig, tensors: _Renamed, want: dict[str, tuple[int, ...]],
              ignore: tuple[str, ...] = ()):
    """Fail on missing, unused or wrongly shaped tensors before any is converted (headers only)."""
    missing = sorted(set(want) - set(tensors))
    if missing:
        raise BadInputError(f"{tensors.describe}: lacks {len(missing)} tensor(s) a {cfg.family} model with this "
                            f"config.json needs: {', '.join(missing[:8])}"
                            f"{' ...' if len(missing) > 8 else ''}",
                            "the weights do not match config.json: re-download or re-save the checkpoint")
    unexpected = sorted(n for n in set(tensors) - set(want)
                        if not n.endswith(_IGNORED_SUFFIXES) and n not in ignore)
    if unexpected:
        raise BadInputError(f"{tensors.describe}: {len(unexpected)} tensor(s) a {cfg.family} model does not use: "
                            f"{', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}",
                            "the weights do not match config.json, or the architecture is not supported")
    for name, shape in want.items():
        got = tuple(tensors.shape(name))
        if got != shape:
            raise BadInputError(f"{tensors.path(name)}: tensor {name!r} (rlhfjax param {_params_for(cfg, name)}) "
                                f"has shape {got} but config.json implies {shape}",
                                "the weights do not match config.json: re-download or re-save the checkpoint")


def load_pretrained(name_or_path: str, *, dtype: str = "float32", param_dtype: str = "float32",
                    revision: str | None = None, scan_layers: bool = False,
                    remat_policy: str = "none", logits_chunk: int = 0) -> tuple[ModelConfig, dict]:
    """Load `(ModelConfig, params)` of a causal LM from a hub id or a local HF checkpoint directory.

    `dtype` is the compute dtype written into the config; params are stored in `param_dtype`
    as host numpy arrays (place them with `jax.device_put` or `rlhfjax.parallel`). `scan_layers`,
    `remat_policy` and `logits_chunk` are execution choices written into the config (params stacked for
    scanned layers).
    """
    directory, hf = load_hf_config(name_or_path, revision)
    cfg = config_from_hf(hf, dtype=dtype, param_dtype=param_dtype, scan_layers=scan_layers,
                         remat_policy=remat_policy, logits_chunk=logits_chunk)
    fam = _FAMILIES[cfg.family]
    tensors = _Renamed(_Checkpoint(directory), fam.prefix, (fam.lm_head,))
    # Tied checkpoints sometimes store the (duplicate) output matrix anyway.
    _validate(cfg, tensors, expected_hf_shapes(cfg),
              ignore=(fam.lm_head,) if cfg.tie_embeddings else ())
    return cfg, from_hf_state_dict(cfg, tensors, dtype=np.dtype(cfg.weights_dtype))


SCORE = "score.weight"  # the [num_labels, hidden] head of HF *ForSequenceClassification models


def load_pretrained_scalar(name_or_path: str, *, dtype: str = "float32", param_dtype: str = "float32",
                           revision: str | None = None, scan_layers: bool = False,
                           remat_policy: str = "none", logits_chunk: int = 0) -> tuple[ModelConfig, dict]:
    """Load a reward/value model saved as an HF *ForSequenceClassification checkpoint with
    num_labels=1, as `(ModelConfig, ScalarModel params)`. HF reads it at each row's last non-pad
    token: use `read_at(scalars, last_token_index(mask))` for the same number. `scan_layers`,
    `remat_policy`, `logits_chunk`: as `load_pretrained`."""
    directory, hf = load_hf_config(name_or_path, revision)
    cfg = config_from_hf(hf, dtype=dtype, param_dtype=param_dtype, scan_layers=scan_layers,
                         remat_policy=remat_policy, logits_chunk=logits_chunk)
    fam = _FAMILIES[cfg.family]
    tensors = _Renamed(_Checkpoint(directory), fam.prefix, (fam.lm_head, SCORE))
    want = {**expected_hf_shapes(cfg, lm_head=False), SCORE: (1, cfg.hidden_size)}
    _validate(cfg, tensors, want)
    wdtype = np.dtype(cfg.weights_dtype)
    backbone = from_hf_state_dict(cfg, tensors, dtype=wdtype, lm_head=False)
    head = {"kernel": np.asarray(tensors[SCORE]).astype(wdtype).T, "bias": np.zeros((1,), wdtype)}
    return cfg, {"backbone": backbone, "head": head}


def _write_checkpoint(hf_config, tensors: dict[str, np.ndarray], path: str, max_shard_bytes: int,
                      tokenizer) -> str:
    os.makedirs(path, exist_ok=True)
    hf_config.save_pretrained(path)
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(tensors):
        if shards[-1] and size + tensors[name].nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += tensors[name].nbytes
    if len(shards) == 1:
        safetensors_io.write(os.path.join(path, SAFE_SINGLE), shards[0])
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            safetensors_io.write(os.path.join(path, fn), shard)
            weight_map.update({n: fn for n in shard})
        index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map}
        with open(os.path.join(path, SAFE_INDEX), "w") as f:
            json.dump(index, f, indent=2, sort_keys=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


_ARCH_NAMES = {"gpt2": "GPT2", "gpt_neox": "GPTNeoX", "llama": "Llama", "qwen2": "Qwen2"}


def _host(tree, dtype: str) -> dict[str, np.ndarray]:
    np_dtype = np.dtype(jnp.dtype(dtype))
    return {k: np.asarray(jax.device_get(v)).astype(np_dtype) for k, v in tree.items()}


def save_pretrained(cfg: ModelConfig, params, path: str, *, dtype: str = "float32",
                    max_shard_bytes: int = 4 << 30, tokenizer=None) -> str:
    """Write `path/` as a HF causal-LM checkpoint (config.json + safetensors, sharded above
    `max_shard_bytes`); `transformers.AutoModelForCausalLM.from_pretrained(path)` loads it."""
    hf_config = config_to_hf(cfg)
    hf_config.architectures = [_ARCH_NAMES[cfg.family] + ("LMHeadModel" if cfg.family == "gpt2"
                                                          else "ForCausalLM")]
    tensors = _host(to_hf_state_dict(cfg, params), dtype)
    return _write_checkpoint(hf_config, tensors, path, max_shard_bytes, tokenizer)


def save_pretrained_scalar(cfg: ModelConfig, params, path: str, *, dtype: str = "float32",
                           max_shard_bytes: int = 4 << 30, tokenizer=None, drop_bias: bool = False) -> str:
    """Write ScalarModel params as an HF *ForSequenceClassification checkpoint (num_labels=1).

    HF's `score` layer has no bias. A reward model's bias never changes a comparison
    (r_A − r_B), so `drop_bias=True` drops it; otherwise a non-zero bias is an error."""
    bias = np.asarray(jax.device_get(params["head"]["bias"]))
    if np.any(bias != 0) and not drop_bias:
        raise ValueError(f"the scalar head has bias {bias.tolist()}, which HF's bias-free `score` layer "
                         "cannot hold; fold it into your reward normalisation before exporting")
    if cfg.pad_token_id is None:
        raise ValueError("set cfg.pad_token_id: HF sequence classifiers find each row's last token by it")
    hf_config = config_to_hf(cfg)
    hf_config.num_labels = 1
    hf_config.architectures = [_ARCH_NAMES[cfg.family] + "ForSequenceClassification"]
    tensors = _host(to_hf_state_dict(cfg, params["backbone"]), dtype)
    tensors[SCORE] = np.asarray(jax.device_get(params["head"]["kernel"])).T.astype(tensors[next(iter(tensors))].dtype)
    # *ForSequenceClassification state dicts use the base-model prefix for every backbone tensor.
    return _write_checkpoint(hf_config, tensors, path, max_shard_bytes, tokenizer)
