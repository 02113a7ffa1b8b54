"""`rlhfjax lm`: train (or fine-tune) a causal LM on plain text, then print greedy samples.

The run directory gets `config.json` (resolved config), `metrics.jsonl`, `tokenizer/` and
`model/` (an HF checkpoint that transformers and `rlhfjax.models.hf.load_pretrained` read).
Runs on `config.mesh` (params, optimizer state and batches sharded).
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from rlhfjax import distributed, parallel
from rlhfjax.data.batching import BatchIterator
from rlhfjax.errors import ConfigError, MissingPathError
from rlhfjax.data.tokenizing import load_tokenizer
from rlhfjax.models.hf import save_pretrained
from rlhfjax.objectives import lm as lm_objective
from rlhfjax.offline import runner
from rlhfjax.sampling import SamplingConfig, sample
from rlhfjax.train.metrics import write_json

# A seeded toy language: enough structure (agreement, fixed phrases) that a tiny model visibly
# learns it within a few hundred steps.
_SUBJECTS = ["the cat", "the dog", "a bird", "my friend", "the robot", "our teacher", "a child"]
_VERBS = ["sees", "likes", "finds", "follows", "draws", "greets", "helps"]
_OBJECTS = ["the ball", "a tree", "the river", "a small house", "the red car", "an old book"]
_ENDINGS = ["today .", "every morning .", "in the park .", "after lunch .", "again ."]


def synthetic_corpus(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    pick = lambda xs: xs[rng.integers(len(xs))]  # noqa: E731
    return [f"{pick(_SUBJECTS)} {pick(_VERBS)} {pick(_OBJECTS)} {pick(_ENDINGS)}" for _ in range(n)]


def read_corpus(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise MissingPathError(f"no such text file: {path!r}", "set data.text_path to a .txt (one document per "
                               "line) or .jsonl ({\"text\": ...}) file, or leave it empty for the synthetic corpus")
    with open(path) as f:
        if path.endswith(".jsonl"):
            return [json.loads(line)["text"] for line in f if line.strip()]
        return [line.rstrip("\n") for line in f if line.strip()]


def train_word_tokenizer(texts: list[str]):
    """Word-level HF fast tokenizer with <pad>=0, <bos>, <eos>, <unk> (saved like any HF tokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(
        special_tokens=["<pad>", "<bos>", "<eos>", "<unk>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>")


def pack(texts: list[str], tokenizer, seq_len: int) -> np.ndarray:
    """Concatenate `<bos> text <eos>` documents and cut into full rows of `seq_len` tokens."""
    ids: list[int] = []
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    for text in texts:
        ids += [bos] + tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
    rows = len(ids) // seq_len
    if rows == 0:
        raise ConfigError(f"corpus has {len(ids)} tokens, fewer than one row of seq_len={seq_len}")
    return np.asarray(ids[: rows * seq_len], np.int32).reshape(rows, seq_len)


def _batch(rows: np.ndarray, size: int | None = None) -> dict[str, np.ndarray]:
    """Packed rows as an LM batch; `size` pads with fully masked rows (a fixed eval shape)."""
    n = len(rows)
    size = size or n
    tokens = np.zeros((size, rows.shape[1]), np.int32)
    tokens[:n] = rows
    mask = (np.arange(size) < n)[:, None].astype(np.int32) * np.ones_like(tokens)
    return {"tokens_BxT": tokens, "mask_BxT": mask, "loss_mask_BxT": mask}


def run(config, workdir: str, mesh=None) -> dict:
    """Train on `mesh` (default: `parallel.make_mesh(config.mesh)`)."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    mesh = runner.mesh_for(config, mesh)
    runner.check_batch_size(config.train.batch_size, mesh, config.optim.grad_accum_steps)
    rng = jax.random.PRNGKey(config.seed)
    texts = read_corpus(config.data.text_path) if config.data.text_path else synthetic_corpus(
        config.data.num_synthetic, config.seed)
    if config.tokenizer.path:
        tokenizer = load_tokenizer(config.tokenizer.path)
    elif config.model.init_from:
        tokenizer = load_tokenizer(config.model.init_from)
    else:
        tokenizer = train_word_tokenizer(texts)
    if distributed.is_primary():
        tokenizer.save_pretrained(os.path.join(workdir, "tokenizer"))

    rows = pack(texts, tokenizer, config.data.seq_len)
    order = np.random.default_rng(config.seed).permutation(len(rows))
    n_eval = max(1, int(len(rows) * config.data.eval_fraction))
    eval_rows, train_rows = rows[order[:n_eval]], rows[order[n_eval:]]
    B = config.train.batch_size
    if len(train_rows) < B:
        raise ConfigError(f"only {len(train_rows)} training rows for batch_size={B}; add data")
    train_iter = BatchIterator(list(train_rows), B, lambda items: _batch(np.stack(items)), seed=config.seed,
                               num_epochs=None)

    init_rng, state_rng = jax.random.split(rng)
    model_cfg, params, shardings = runner.model_params(config.model, len(tokenizer), init_rng, mesh)
    state = runner.create_state(params, shardings, config, state_rng, mesh)
    loss_config = lm_objective.LMLossConfig(model=model_cfg)
    eval_loss = jax.jit(lambda p, b: lm_objective.loss_fn(p, b, frozen=None, config=loss_config, rng=None)[:2])

    def evaluate(state) -> dict:  # under the mesh (run by the loop inside `fit`)
        total = count = 0.0
        for i in range(0, len(eval_rows), B):
            s, c = eval_loss(state.params, runner.shard(_batch(eval_rows[i:i + B], size=B), mesh))
            total, count = total + float(s), count + float(c)
        nll = total / max(count, 1.0)
        return {"eval/nll": nll, "eval/perplexity": float(np.exp(nll))}

    state, history = runner.fit(config, workdir, state, train_iter, lm_objective.loss_fn, loss_config,
                                mesh=mesh, eval_fn=evaluate)

    # Greedy continuations of document openings show what the model learned.
    P = config.sample.prompt_tokens
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    prompts = np.asarray([([bos] + tokenizer.encode(t, add_special_tokens=False))[:P]
                          for t in texts[-config.sample.num_prompts:]], np.int32)
    with parallel.activate(mesh):  # a few prompts: left unsharded (replicated), the params stay on the mesh
        rollout = sample(state.params, jnp.asarray(prompts), jnp.ones_like(jnp.asarray(prompts)),
                         jax.random.PRNGKey(config.seed), model_cfg=model_cfg,
                         cfg=SamplingConfig(max_new_tokens=config.sample.max_new_tokens, greedy=True,
                                            eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id))
    samples = []
    for prompt, gen, m in zip(prompts, np.asarray(rollout.tokens_BxN), np.asarray(rollout.response_mask_BxN)):
        samples.append({"prompt": tokenizer.decode(prompt, skip_special_tokens=True),
                        "completion": tokenizer.decode(gen[m.astype(bool)], skip_special_tokens=True)})
        print(f"  {samples[-1]['prompt']!r} -> {samples[-1]['completion']!r}")

    model_cfg = model_cfg.replace(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id)
    distributed.export(save_pretrained, model_cfg, state.params, os.path.join(workdir, "model"), tokenizer=tokenizer)
    summary = {"final": history[-1] if history else {}, "steps": config.train.steps, "samples": samples,
               "seconds": round(time.time() - t0, 1)}
    write_json(os.path.join(workdir, "summary.json"), summary)
    return summary
