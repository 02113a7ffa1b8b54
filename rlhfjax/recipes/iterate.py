"""`rlhfjax iterate`: iterated online RLHF (Bai et al. 2022, §4.5): preference model and policy are
updated round by round on fresh comparisons from the current policy.

Round r = 0 … `iterate.rounds` − 1 starts from the current policy π_r (π_0 = `policy.init_from`):
 1. pairs: `iterate.comparisons` comparisons on training prompts, both responses from π_r or, for a
    fraction `iterate.earlier_policy_frac`, the second from an earlier policy π_j, j < r; and
    `iterate.eval_comparisons` held-out pairs from π_r on eval prompts (`online.comparisons`).
    Written as labelling tasks (`data.labelling`): round_<r>/tasks.jsonl and eval_tasks.jsonl.
 2. labels: the toy lab's simulated annotators (`iterate.labeller=simulated`, pool `iterate.pool`), or
    people (`external`): the run stops after writing the tasks, and a re-run continues once
    round_<r>/labels.jsonl and eval_labels.jsonl hold `{"id", "choice": "a"|"b"|"tie"}` lines (ties, bad
    lines and duplicates are counted and dropped, `online.labelling_round`) for all but at most a fraction
    `iterate.max_unlabelled_fraction` of the tasks. Labels become HH comparisons: round_<r>/comparisons.jsonl,
    eval_comparisons.jsonl.
 3. PM: an `rlhfjax rm` run (config section `pm`) on every comparison so far, `iterate.pm_epochs` epochs,
    from the previous round's PM (`iterate.pm_init=previous`) or from the same start every round
    (`base`: `pm.model.init_from`, "" = π_0). Its eval pairs are round r's held-out pairs, so
    `pm/accuracy` is measured on the latest policy's distribution; `pm/prev_accuracy` is the previous
    round's PM on the same pairs (how stale the last PM had become).
 4. RL: `iterate.method` (a command registered as an iterate method, `rlhfjax.commands`: ppo, superhf, rloo,
    grpo, ...; its full config is `methods.<method>`) from π_r
    against PM_r, with the KL penalty and every √KL measured against π_0 (`reference.init_from`), so
    the rounds' curves share one axis. Its exported model is π_{r+1}. Each round's run fits its own
    reward normaliser (the PM changed) and its own LR schedule.
After the last round the final policy's held-out pairs are labelled the same way and every round's PM
is scored on them (`final.pm`: which PM still ranks what RL ended on).

The label budget is `rounds × comparisons` (held-out pairs are measurements, never trained on).
`rounds=1` with the whole budget is the single offline round the paper compares against.

Resumable: every file is written atomically and every step is skipped on a re-run once its output
exists (the PM and RL runs resume from their own checkpoints); a finished run does no work.
`iterate.stop_at` = k stops after round k (the notebook API's "k more iterations").
Outputs: round_<r>/ (pairs, tasks, labels, comparisons, pm/ and rl/ run directories, round.json),
final/, metrics.jsonl (one record per round, step = r + 1), curve.jsonl (every RL eval on one
iteration axis), reward_vs_sqrt_kl.png and summary.json.
"""

from __future__ import annotations

import json
import math
import os
import time

import jax
import ml_collections

from rlhfjax import commands, parallel
from rlhfjax.atomic_files import atomic_path
from rlhfjax.analysis.iterated import EVAL_KEYS, plot_curve, round_curve
from rlhfjax.data.hh import load_prompts
from rlhfjax.data.labelling import read_jsonl, write_jsonl
from rlhfjax.data.sources import is_toylab, resolve_source
from rlhfjax.data.tokenizing import encoder_for, tokenizer_for
from rlhfjax.errors import ConfigError
from rlhfjax.models import init_params
from rlhfjax.models.factory import preset_from_config
from rlhfjax.models.hf import save_pretrained
from rlhfjax.online import comparisons, labelling_round
from rlhfjax.sampling import SamplingConfig
from rlhfjax.train.metrics import write_json



def _done(path: str) -> bool:
    return os.path.exists(path)


def _tokenizer_path(config) -> str:
    if config.tokenizer.path:
        return config.tokenizer.path
    if is_toylab(config.data):
        return os.path.join(config.data.toylab_dir, "tokenizer")
    return config.policy.init_from


def _check(config) -> None:
    it = config.iterate
    if it.method not in commands.iterate_methods():
        raise ConfigError(f"iterate.method={it.method!r}", f"use one of: {', '.join(commands.iterate_methods())}")
    if it.labeller == "simulated" and not is_toylab(config.data):
        raise ConfigError("iterate.labeller=simulated needs the toy lab's annotators (data.source=toylab)",
                          "use iterate.labeller=external and label the exported tasks")
    if config.pm.rm.objective == "imitation" or config.pm.rm.lm_coef:
        raise ConfigError("iterate trains scalar PMs: pm.rm.objective must be ranked or binary, pm.rm.lm_coef 0")
    if it.rounds < 1 or it.comparisons < 1 or it.eval_comparisons < 1:
        raise ConfigError("iterate.rounds, iterate.comparisons and iterate.eval_comparisons must be >= 1")


def _initial_policy(config, workdir: str, tokenizer, encoder) -> str:
    """`policy.init_from`, or (smoke runs) a random `model` preset saved once under the run directory."""
    if config.policy.init_from:
        return config.policy.init_from
    path = os.path.join(workdir, "initial_policy")
    if not _done(os.path.join(path, "config.json")):
        cfg = preset_from_config(config.model, len(tokenizer))
        params = init_params(cfg, jax.random.PRNGKey(config.seed))
        cfg = cfg.replace(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=encoder.pad_id)
        with atomic_path(path) as tmp:
            save_pretrained(cfg, params, tmp, tokenizer=tokenizer)
    return path


def _sub_config(section: ml_collections.ConfigDict, config, **fields) -> ml_collections.ConfigDict:
    """A stage's config: `section` with the run's data, tokenizer and seed, and `fields` ("a.b": value)."""
    c = ml_collections.ConfigDict(section.to_dict())
    c.seed = config.seed
    c.data = ml_collections.ConfigDict(config.data.to_dict())
    c.tokenizer.path = _tokenizer_path(config)
    for name, value in fields.items():
        node = c
        *parents, leaf = name.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


class _Run:
    """One `rlhfjax iterate` run: its config, mesh, tokenizer, prompts and paths."""

    def __init__(self, config, workdir: str, mesh):
        self.config, self.workdir, self.mesh, self.it = config, workdir, mesh, config.iterate
        parallel.check_batch_size(self.it.batch_size, mesh, what="iterate.batch_size")
        self.tokenizer = tokenizer_for(config, config.policy.init_from)
        self.encoder = encoder_for(config, self.tokenizer)
        source, data_dir = resolve_source(config.data, "prompts")
        self.train_prompts, report = load_prompts(source, data_dir=data_dir, split=config.data.train_split,
                                                  limit=config.data.limit or None)
        print(f"iterate train prompts: {report.summary()}", flush=True)
        self.eval_prompts, report = load_prompts(source, data_dir=data_dir, split=config.data.eval_split,
                                                 limit=config.data.eval_limit or None)
        print(f"iterate eval prompts: {report.summary()}", flush=True)
        self.sampling = SamplingConfig(max_new_tokens=config.data.max_response_len,
                                       temperature=float(self.it.temperature), eos_id=self.tokenizer.eos_token_id,
                                       pad_id=self.encoder.pad_id)
        self.policy0 = _initial_policy(config, workdir, self.tokenizer, self.encoder)
        self._policies: dict[str, tuple] = {}

    def path(self, *parts) -> str:
        return os.path.join(self.workdir, *parts)

    def policy_dir(self, r: int) -> str:
        """π_r's model directory."""
        return self.policy0 if r == 0 else self.path(f"round_{r - 1}", "rl", "model")

    def policy(self, r: int):
        d = self.policy_dir(r)
        if d not in self._policies:
            self._policies[d] = comparisons.load_policy(d, self.mesh, self.config.policy.dtype)
        return self._policies[d]

    def sample(self, folder: str, r: int, prompts, num: int, seed: int, earlier_frac: float, prefix: str):
        """Pairs from π_r (and, for `earlier_frac` of them, an earlier π_j) as `<prefix>` labelling tasks."""
        def policies():
            return [self.policy(j) for j in range(r + 1)] if earlier_frac > 0 else [self.policy(r)]

        return labelling_round.sample_tasks(
            folder, prefix, policies, prompts, num, encoder=self.encoder, tokenizer=self.tokenizer,
            sampling=self.sampling, mesh=self.mesh, batch_size=self.it.batch_size, seed=seed,
            earlier_frac=earlier_frac, id_prefix=f"{os.path.basename(folder)}-{'eval' if prefix else 'train'}")

    def label(self, folder: str, prefix: str, seed: int) -> str | None:
        return labelling_round.comparisons(folder, prefix, labeller=self.it.labeller, pool=self.it.pool, seed=seed,
                                           max_unlabelled_fraction=float(self.it.max_unlabelled_fraction))

    def pm_metrics(self, pm_dir: str, comparisons_path: str, prefix: str) -> dict:
        return labelling_round.pm_metrics(pm_dir, comparisons_path, encoder=self.encoder, mesh=self.mesh,
                                          batch_size=self.it.batch_size, dtype=self.config.policy.dtype,
                                          toylab=is_toylab(self.config.data), prefix=prefix)

    def round(self, r: int) -> dict | None:
        """Run round r (or what is left of it) → its record; None while waiting for external labels."""
        folder = self.path(f"round_{r}")
        record_path = os.path.join(folder, "round.json")
        if _done(record_path):
            with open(record_path) as f:
                return json.load(f)
        os.makedirs(folder, exist_ok=True)
        it, seed = self.it, self.config.seed
        counts = self.sample(folder, r, self.train_prompts, it.comparisons, seed * 1000 + 10 * r,
                             float(it.earlier_policy_frac), "")
        self.sample(folder, r, self.eval_prompts, it.eval_comparisons, seed * 1000 + 10 * r + 1, 0.0, "eval_")
        train_cmp = self.label(folder, "", seed * 1000 + 10 * r + 2)
        eval_cmp = self.label(folder, "eval_", seed * 1000 + 10 * r + 3)
        if train_cmp is None or eval_cmp is None:
            return None
        # The PM's data: every comparison so far; its eval set: this round's held-out pairs.
        data_dir = os.path.join(folder, "pm_data")
        rows = [row for j in range(r + 1) for row in read_jsonl(self.path(f"round_{j}", "comparisons.jsonl"))]
        os.makedirs(data_dir, exist_ok=True)
        write_jsonl(os.path.join(data_dir, "train.jsonl"), rows)
        write_jsonl(os.path.join(data_dir, "test.jsonl"), read_jsonl(eval_cmp))
        pm = self.config.pm
        init = (self.path(f"round_{r - 1}", "pm", "model") if r > 0 and it.pm_init == "previous"
                else pm.model.init_from or self.policy0)
        steps = max(1, math.ceil(float(it.pm_epochs) * len(rows) / pm.train.batch_size))
        pm_cfg = _sub_config(pm, self.config, **{
            "data.source": data_dir, "data.data_dir": "", "data.limit": 0, "data.eval_limit": 0,
            "data.ranked_lists": False, "data.train_split": "train", "data.eval_split": "test",
            "model.init_from": init, "train.steps": steps, "train.eval_every": steps, "train.save_every": steps})
        pm_cfg.seed = self.config.seed + r
        pm_dir = os.path.join(folder, "pm")
        if not _done(os.path.join(pm_dir, "summary.json")):
            commands.get("rm").run(pm_cfg, pm_dir, self.mesh)  # its loop writes pm/config.json
        record = {"step": r + 1, "round": r, "labels/round": len(read_jsonl(train_cmp)), "labels/total": len(rows),
                  "pairs/identical_dropped": counts["identical"], "pairs/from_earlier": counts["from_earlier"],
                  "pm/steps": steps,
                  **self.pm_metrics(os.path.join(pm_dir, "model"), eval_cmp, "pm/")}
        if r > 0:
            record.update(self.pm_metrics(self.path(f"round_{r - 1}", "pm", "model"), eval_cmp, "pm/prev_"))
        rl_dir = os.path.join(folder, "rl")
        rl_cfg = _sub_config(self.config.methods[it.method], self.config, **{
            "policy.init_from": self.policy_dir(r), "reference.init_from": self.policy0,
            "reward.init_from": os.path.join(pm_dir, "model"), "policy.dtype": self.config.policy.dtype})
        if not _done(os.path.join(rl_dir, "summary.json")):
            commands.get(it.method).run(rl_cfg, rl_dir, self.mesh)
        with open(os.path.join(rl_dir, "summary.json")) as f:
            last = json.load(f)["evals"][-1]
        record.update({k: last[k] for k in EVAL_KEYS if k in last})
        record["eval/kl/sqrt"] = math.sqrt(max(record["eval/kl/seq_mean"], 0.0))
        record["rl/iterations"] = rl_cfg.train.iterations
        write_json(record_path, record)
        self._policies.pop(self.policy_dir(r), None)  # π_r is no longer needed unless mixing in old ones
        return record

    def final(self, rounds: int) -> dict | None:
        """Every PM on held-out pairs from the final policy π_R."""
        folder = self.path("final")
        out = os.path.join(folder, "final.json")
        if _done(out):
            with open(out) as f:
                return json.load(f)
        os.makedirs(folder, exist_ok=True)
        seed = self.config.seed
        self.sample(folder, rounds, self.eval_prompts, self.it.eval_comparisons, seed * 1000 + 10 * rounds + 1,
                    0.0, "eval_")
        cmp_path = self.label(folder, "eval_", seed * 1000 + 10 * rounds + 3)
        if cmp_path is None:
            return None
        result = {"policy": self.policy_dir(rounds), "pm": [
            {"round": r, **self.pm_metrics(self.path(f"round_{r}", "pm", "model"), cmp_path, "")}
            for r in range(rounds)]}
        write_json(out, result)
        return result


def run(config, workdir: str, mesh=None) -> dict:
    """Run (or continue) every round; see the module docstring."""
    t0 = time.time()
    _check(config)
    if jax.process_count() > 1:
        raise ConfigError("rlhfjax iterate runs in one process (each round writes files its next step reads "
                          "back)", "run a round's rm and RL stages as multi-process commands instead")
    os.makedirs(workdir, exist_ok=True)
    mesh = mesh if mesh is not None else parallel.make_mesh(config.mesh)
    job = _Run(config, workdir, mesh)
    rounds = config.iterate.rounds
    last = min(rounds, config.iterate.stop_at) if config.iterate.stop_at > 0 else rounds
    records, waiting = [], None
    for r in range(last):
        rec = job.round(r)
        if rec is None:
            waiting = r
            break
        records.append(rec)
        print(f"[iterate] round {r}: " + " ".join(f"{k}={v:.4g}" for k, v in rec.items()
                                                if isinstance(v, float)), flush=True)
    write_jsonl(os.path.join(workdir, "metrics.jsonl"), records)
    final = job.final(rounds) if len(records) == rounds else None
    if len(records) == rounds and final is None:
        waiting = rounds
    curve = round_curve(workdir, len(records))
    write_jsonl(os.path.join(workdir, "curve.jsonl"), curve)
    plot = plot_curve(curve, os.path.join(workdir, "reward_vs_sqrt_kl.png"),
                      f"iterated {config.iterate.method}, {len(records)} of {rounds} rounds")
    summary = {"method": config.iterate.method, "rounds": rounds, "rounds_done": len(records),
               "label_budget": rounds * config.iterate.comparisons,
               "labels": records[-1]["labels/total"] if records else 0, "records": records, "final": final,
               "policy": job.policy_dir(len(records)), "plot": plot, "seconds": round(time.time() - t0, 1)}
    if waiting is not None:
        folder = job.path("final" if waiting == rounds else f"round_{waiting}")
        summary["waiting_for_labels"] = folder
        print(f"iterate: waiting for labels: label {folder}/*tasks.jsonl into the matching *labels.jsonl "
              "({\"id\", \"choice\": \"a\"|\"b\"|\"tie\"} per line), then run the same command again", flush=True)
    write_json(os.path.join(workdir, "summary.json"), summary)
    return summary
