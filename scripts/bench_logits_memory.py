"""Memory and FLOPs of a teacher-forced policy phase with the LM head over every slot vs over the response
slots only (`models.api.policy_outputs`), from XLA's compiled memory and cost analysis: nothing runs, no
weights are allocated, so the GPT-2 124M shape at HH lengths fits a laptop.

    python scripts/bench_logits_memory.py                                   # GPT-2 124M, 64 × (448 + 64) tokens
    python scripts/bench_logits_memory.py --batch 8 --prompt-len 64 --response-len 24 --json out.json

Two programs per head placement: the forward that gives log π of the response tokens (the log-prob phases
of an online method), and that forward with its gradient (the policy part of a PPO/SuperHF/RLOO update).
"All slots" is the head over every slot followed by a slice, what the code did before the head took
`head_slots`; "response slots" is the default now; "response slots, chunks of K" is `logits_chunk=K`
(`ModelConfig.logits_chunk`: head, log-softmax and entropy over K positions at a time, recomputed in the
backward). Peak = temp + arguments + outputs, as XLA plans them. A whole-sequence loss (SFT, DPO) is
`--prompt-len 1 --response-len L-1`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_ppo import SHAPES, compiled_stats, shape_config  # noqa: E402

from rlhfjax.models import api, init_params  # noqa: E402
from rlhfjax.models.transformer import Transformer, positions_from_mask  # noqa: E402


def _all_slots_logp(params, cfg, seq, mask, start):
    """The former policy_outputs: logits over every slot, then the response's."""
    L = seq.shape[1]
    logits = Transformer(cfg).apply({"params": params}, seq, positions_from_mask(mask), mask).logits
    logits = logits[:, start - 1:L - 1].astype(jnp.float32)
    return jnp.where(mask[:, start:].astype(bool), api.selected_logp(logits, seq[:, start:]), 0.0)


def _response_slots_logp(params, cfg, seq, mask, start):
    return api.policy_outputs(params, cfg, seq, mask, start=start)["logp_BxN"]


def measure(cfg, batch: int, prompt_len: int, response_len: int, logits_chunk: int = 0) -> list[dict]:
    L, start = prompt_len + response_len, prompt_len
    params = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
    seq = jax.ShapeDtypeStruct((batch, L), jnp.int32)
    rows = []
    placements = [("all slots", _all_slots_logp, cfg), ("response slots", _response_slots_logp, cfg)]
    if logits_chunk:
        placements.append((f"response slots, chunks of {logits_chunk}", _response_slots_logp,
                           cfg.replace(logits_chunk=logits_chunk)))
    for name, fn, c in placements:
        forward = jax.jit(lambda p, s, m, fn=fn, c=c: fn(p, c, s, m, start))
        grad = jax.jit(jax.grad(lambda p, s, m, fn=fn, c=c: jnp.sum(fn(p, c, s, m, start))))
        for program, jitted in (("forward", forward), ("forward + grad", grad)):
            stats = compiled_stats(jitted, params, seq, seq)
            rows.append({"head": name, "program": program, **stats})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _gb(x):
    return "n/a" if x is None else f"{x / 1e9:.2f}"


def table(rows, scanned: bool) -> str:
    lines = ["| program | LM head over | GFLOPs | peak memory (GB) | temp (GB) |", "|---|---|---|---|---|"]
    for r in rows:
        flops = "n/a (scanned)" if scanned else f"{r['flops'] / 1e9:.1f}"  # a scan's body is counted once
        lines.append(f"| {r['program']} | {r['head']} | {flops} | {_gb(r.get('peak_memory_bytes'))} | "
                     f"{_gb(r.get('temp_bytes'))} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="gpt2-124m", choices=sorted(SHAPES))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=448)
    p.add_argument("--response-len", type=int, default=64)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--logits-chunk", type=int, default=16, help="also measure logits_chunk=K (0: do not)")
    p.add_argument("--remat-policy", default="none", help="per-block remat (ModelConfig.remat_policy)")
    p.add_argument("--scan-layers", action="store_true", help="scanned layers: much shorter compiles; no FLOPs")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    cfg = shape_config(args.shape, args.dtype, args.scan_layers).replace(remat_policy=args.remat_policy)
    rows = measure(cfg, args.batch, args.prompt_len, args.response_len, args.logits_chunk)
    print(f"{args.shape}, batch {args.batch}, prompt {args.prompt_len} + response {args.response_len}, "
          f"{args.dtype}, {jax.default_backend()}{', scanned layers' if args.scan_layers else ''}, "
          f"block remat {args.remat_policy}:\n"
          f"{table(rows, args.scan_layers)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
