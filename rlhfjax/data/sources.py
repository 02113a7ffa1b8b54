"""Generic row sources: any hub id, local file/directory/glob or in-memory rows → parsed examples + a report.

Every source goes through ``datasets.load_dataset``: a hub id (``Anthropic/hh-rlhf`` with any ``data_dir``)
is passed straight through; a local file, directory or glob becomes the ``json``/``parquet``/``csv`` builder
with ``data_files`` — the same code path, so local copies of hub files load exactly like the hub.

Bad rows never crash a run: a row parser (e.g. the HH parsers in :mod:`rlhfjax.data.hh`) skips each (or
fixes it) and counts it by reason in a :class:`LoadReport`; loading fails with :class:`BadDataError` only
when the skipped fraction exceeds ``max_bad_fraction``, quoting one example per reason. A line of a local
JSON Lines file that is not valid JSON is such a row too (``invalid_json``, quoted as ``file:line``).
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import glob
import gzip
import json
import logging
import os
import re
import shutil
import tempfile
from typing import Any, Callable, Iterable, Mapping

import datasets
from datasets.exceptions import DatasetGenerationError

from rlhfjax.errors import BadInputError, ConfigError, MissingPathError, UserError

_log = logging.getLogger(__name__)
datasets.disable_progress_bars()  # per-split progress bars drown the training log (and a one-line error)

# Skip reason shared by every parser: the row is not a mapping, or a field has the wrong type.
NOT_STRING = "not_string"
# Skip reason for a line of a local JSON Lines file that does not parse (an :class:`InvalidLine`).
INVALID_JSON = "invalid_json"

# File suffix -> `datasets` packaged builder.
_BUILDERS = {
    ".jsonl": "json", ".json": "json", ".jsonl.gz": "json", ".json.gz": "json",
    ".parquet": "parquet", ".csv": "csv",
}
_SPLIT_NAMES = ("train", "test", "validation", "valid", "dev")


class BadDataError(UserError, ValueError):
    """Too many bad rows; the message holds the report summary and one example per reason."""


# --------------------------------------------------------------------------------------------------
# Load report
# --------------------------------------------------------------------------------------------------


def _short_repr(row: Any, limit: int = 300) -> str:
    text = repr(dict(row) if isinstance(row, Mapping) else row)
    return text if len(text) <= limit else text[:limit] + "…"


@dataclasses.dataclass
class LoadReport:
    """What loading did: rows read, rows kept, skipped rows and kept-but-fixed rows by reason."""

    source: str = ""
    rows: int = 0
    kept: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    fixed: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: dict[str, str] = dataclasses.field(default_factory=dict)  # first offending row per reason

    def skip(self, reason: str, row: Any) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, _short_repr(row))

    def fix(self, reason: str, row: Any) -> None:
        self.fixed[reason] += 1
        self.examples.setdefault(reason, _short_repr(row))

    @property
    def bad(self) -> int:
        return sum(self.skipped.values())

    @property
    def bad_fraction(self) -> float:
        return self.bad / self.rows if self.rows else 0.0

    def print(self, name: str) -> None:
        """The summary, under `name` (what was loaded), to the run's log."""
        print(f"{name}: {self.summary()}", flush=True)

    def summary(self) -> str:
        """One line per reason, e.g. for logs at the end of loading."""
        lines = [f"{self.source}: {self.rows} rows, kept {self.kept}, skipped {self.bad} "
                 f"({100 * self.bad_fraction:.2f}%)"]
        lines += [f"  skipped {r}: {n}" for r, n in sorted(self.skipped.items())]
        lines += [f"  fixed {r}: {n}" for r, n in sorted(self.fixed.items())]
        return "\n".join(lines)

    def check(self, max_bad_fraction: float) -> None:
        """Raise :class:`BadDataError` (quoting one example per skip reason) if too many rows are bad."""
        if self.bad_fraction > max_bad_fraction:
            # One line (the CLI prints it as is): counts, then one flattened example per reason.
            reasons = "; ".join(f"{n} rows {r}, e.g. {r}: {' '.join(str(self.examples[r]).split())[:300]}"
                                for r, n in sorted(self.skipped.items()))
            raise BadDataError(f"{self.source}: {self.bad} of {self.rows} rows are bad "
                               f"({100 * self.bad_fraction:.1f}% > max_bad_fraction {max_bad_fraction:g}): {reasons}",
                               "fix or remove those rows; the load report lists every skip reason")

    def to_dict(self) -> dict:
        return {"source": self.source, "rows": self.rows, "kept": self.kept,
                "skipped": dict(self.skipped), "fixed": dict(self.fixed)}


# --------------------------------------------------------------------------------------------------
# Sources → datasets.Dataset
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InvalidLine:
    """A line of a local JSON Lines file that is not JSON; stands in for its row so ``parse_rows`` counts it."""

    file: str
    line: int  # 1-based, as editors and `sed -n` count
    error: str
    text: str

    def __repr__(self) -> str:  # what the report quotes: where, why, and the start of the line
        return f"{self.file}:{self.line}: {self.error}: {self.text[:120]!r}"


def _builder_for(path: str) -> str | None:
    name = path.lower()
    for suffix in sorted(_BUILDERS, key=len, reverse=True):
        if name.endswith(suffix):
            return _BUILDERS[suffix]
    return None


def _split_of(path: str) -> str:
    """``train.jsonl.gz`` / ``test-00000-of-00001.parquet`` → ``train`` / ``test``."""
    return re.split(r"[.\-_]", os.path.basename(path).lower(), maxsplit=1)[0]


def resolve_local_files(source: str, *, data_dir: str | None = None,
                        split: str = "train") -> tuple[str, list[str]] | None:
    """Local file/dir/glob → ``(builder, files)``; ``None`` if ``source`` is not local (a hub id).

    In a directory laid out like a hub dataset (``train.jsonl.gz``, ``test.jsonl.gz``, or any
    ``<split>.jsonl``) only the files named after ``split`` are used; a directory without split names is
    used whole.
    """
    path = os.path.join(source, data_dir) if data_dir else source
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        files = sorted(f for f in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                       if os.path.isfile(f) and _builder_for(f))
        if any(_split_of(f) in (*_SPLIT_NAMES, split) for f in files):
            files = [f for f in files if _split_of(f) == split]
    elif glob.has_magic(path):
        files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
    elif os.path.isfile(path):
        files = [path]
    elif source.startswith((".", "/", "~")) or _builder_for(source):
        raise MissingPathError(f"no such local data: {path}",
                               "check data.source (a hub id, or a local json/jsonl/parquet/csv file or directory)")
    else:
        return None
    if not files:
        raise MissingPathError(f"no data files for split {split!r} under {path}",
                               "name files like train.jsonl / test.jsonl, or set data.train_split / data.eval_split")
    builders = {_builder_for(f) for f in files}
    if len(builders) != 1 or None in builders:
        raise BadInputError(f"cannot mix or infer file formats {sorted(map(str, builders))} in {path}")
    return builders.pop(), files


def _json_values(path: str) -> tuple[list, bool]:
    """A local JSON file's rows in file order, each the parsed value of its line or an :class:`InvalidLine`,
    and whether some line is not a JSON object (what makes ``datasets`` fail on JSON Lines).

    A file holding one JSON document (an array of rows, say) is that value; such a file that does not
    parse raises :class:`BadDataError` naming the line, since no single row of it can be skipped.
    """
    with (gzip.open if path.lower().endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    data = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
    if data.lstrip().startswith(b"["):
        try:
            return list(json.loads(data)), False
        except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
            where = f"{path}:{err.lineno}" if isinstance(err, json.JSONDecodeError) else path
            raise BadDataError(f"{where}: invalid JSON in a JSON array file ({err}); fix it, or write one "
                               "row per line (JSON Lines) so that bad rows can be skipped") from err
    values = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue  # blank lines are no rows, for datasets' json builder either
        try:
            values.append(json.loads(raw.decode("utf-8")))
        except UnicodeDecodeError:
            values.append(InvalidLine(path, number, "not UTF-8", raw.decode("utf-8", "replace")))
        except json.JSONDecodeError as err:
            values.append(InvalidLine(path, number, f"invalid JSON ({err.msg}, column {err.colno})",
                                      raw.decode("utf-8").rstrip("\r")))
    if all(isinstance(v, dict) for v in values):
        return values, False
    try:  # a valid document spread over lines (e.g. one pretty-printed object) is not bad lines
        return [json.loads(data)], False
    except ValueError:
        return values, True


def _read_json_lines(files: list[str], split: str, name: str) -> list | None:
    """``files`` read line by line → rows (dicts with every key any row has, as datasets gives them) and
    :class:`InvalidLine` markers, in file order, sliced like ``split`` (``train[:100]``); ``None`` if every
    line of every JSON Lines file is a JSON object."""
    per_file = [_json_values(path) for path in files]
    if not any(bad_lines for _, bad_lines in per_file):
        return None
    values = [v for file_values, _ in per_file for v in file_values]
    columns = dict.fromkeys(k for v in values if isinstance(v, dict) for k in v)
    rows = [{k: v.get(k) for k in columns} if isinstance(v, dict) else v for v in values]
    spans = datasets.ReadInstruction.from_spec(split).to_absolute({name: len(rows)})
    return [row for span in spans for row in rows[span.from_:span.to]]


def load_rows(source: str, *, data_dir: str | None = None, split: str = "train",
              **load_kwargs) -> datasets.Dataset | list:
    """Any source → ``datasets.Dataset`` via ``datasets.load_dataset`` (hub id or local files).

    Local JSON Lines files that ``datasets`` cannot read because some line is not a JSON object (pyarrow's
    error names neither file nor line) are read line by line instead: the result is then a list of rows in
    file order, each line that does not parse an :class:`InvalidLine` (``load_kwargs`` do not apply there).
    """
    name = split.split("[", 1)[0]  # "train[:1000]" slices the "train" split, locally as on the hub
    local = resolve_local_files(source, data_dir=data_dir, split=name)
    if local is None:
        return datasets.load_dataset(source, data_dir=data_dir, split=split, **load_kwargs)
    builder, files = local
    try:  # the fast path: files whose every line parses never take the one below
        return datasets.load_dataset(builder, data_files={name: files}, split=split, **load_kwargs)
    except (DatasetGenerationError, ValueError):
        if builder != "json":
            raise
        rows = _read_json_lines(files, split, name)
        if rows is None:
            raise  # every line is a JSON object, so the lines are not what datasets failed on
    bad = [row for row in rows if not isinstance(row, Mapping)]
    _log.warning("%s: %d of %d lines are not JSON objects (first: %r); read line by line to skip and count "
                 "them", source, len(bad), len(rows), bad[0] if bad else None)
    return rows


# --------------------------------------------------------------------------------------------------
# Rows → examples
# --------------------------------------------------------------------------------------------------


def parse_rows(rows: Iterable[Mapping], parse: Callable[..., Any], *, source: str = "<rows>",
               max_bad_fraction: float = 0.05, limit: int | None = None, **parse_kwargs):
    """Apply a row parser to every row → ``(examples, LoadReport)``; raise if too many rows are bad."""
    report = LoadReport(source=source)
    examples = []
    for row in rows:
        if limit is not None and report.rows >= limit:
            break
        report.rows += 1
        if isinstance(row, InvalidLine):
            report.skip(INVALID_JSON, row)
            continue
        if not isinstance(row, Mapping):
            report.skip(NOT_STRING, row)
            continue
        ex = parse(row, report, **parse_kwargs)
        if ex is not None:
            examples.append(ex)
    report.kept = len(examples)
    _log.info("%s", report.summary())
    report.check(max_bad_fraction)
    return examples, report


def shard_rows(rows, process_index: int, process_count: int):
    """This process's contiguous slice of the raw rows, taken before any parsing.

    For multi-host runs that should each read only their part of a large dataset; each process
    then shuffles its own slice (`BatchIterator(..., process_count=1)`). `BatchIterator`'s own
    sharding instead shuffles globally and strides, which needs every process to parse all rows.
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} out of range for process_count {process_count}")
    if isinstance(rows, datasets.Dataset):
        return rows.shard(num_shards=process_count, index=process_index, contiguous=True)
    per, extra = divmod(len(rows), process_count)
    start = process_index * per + min(process_index, extra)
    return rows[start:start + per + (process_index < extra)]


def _load(parse, source, data_dir, split, max_bad_fraction, limit, load_kwargs, parse_kwargs):
    process_shard = load_kwargs.pop("process_shard", None)
    rows = source if isinstance(source, (datasets.Dataset, list)) else load_rows(
        source, data_dir=data_dir, split=split, **load_kwargs)
    name = source if isinstance(source, str) else f"<{type(source).__name__}>"
    name = f"{name}[{data_dir + ':' if data_dir else ''}{split}]"
    if process_shard is not None:  # (process_index, process_count)
        rows = shard_rows(rows, *process_shard)
        name += f"[shard {process_shard[0]}/{process_shard[1]}]"
    return parse_rows(rows, parse, source=name, max_bad_fraction=max_bad_fraction, limit=limit,
                      **parse_kwargs)


# --------------------------------------------------------------------------------------------
# A config's `data` section → the source a loader reads (the toy lab built on first use)

TOYLAB = "toylab"

def ensure_toylab(directory: str, seed: int) -> dict:
    """Build the toy lab into `directory` unless a build with this seed is already there.

    Built in a temporary sibling directory and renamed, so concurrent or interrupted runs never
    see a half-written lab.
    """
    manifest_path = os.path.join(directory, "manifest.json")
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
        if manifest.get("seed") == seed:
            return manifest
        raise ConfigError(f"{directory} holds a toy lab built with seed {manifest.get('seed')}, not {seed}; "
                         "pick another data.toylab_dir or the matching data.toylab_seed")
    from rlhfjax.data.toylab import build_toylab

    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".toylab-", dir=parent)
    try:
        manifest = build_toylab(tmp, seed)
        os.replace(tmp, directory)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.exists(manifest_path):  # lost a race to another process: fine if it finished
            raise
    return manifest


def is_toylab(data_config) -> bool:
    return data_config.source == TOYLAB


def ranked_source(data_config) -> tuple[str, str | None]:
    """(source, data_dir) of ranked lists: the toy lab's `ranked` folder (one set for every annotator pool,
    so `data.data_dir` does not apply), or the configured source."""
    if is_toylab(data_config):
        ensure_toylab(data_config.toylab_dir, data_config.toylab_seed)
        return os.path.join(data_config.toylab_dir, "ranked"), None
    return data_config.source, data_config.data_dir or None


def resolve_source(data_config, kind: str) -> tuple[str, str | None]:
    """(source, data_dir) for a loader: the toy lab's `kind` folder, or the configured source."""
    if is_toylab(data_config):
        ensure_toylab(data_config.toylab_dir, data_config.toylab_seed)
        folder = os.path.join(data_config.toylab_dir, kind)
        if data_config.data_dir and not os.path.isdir(os.path.join(folder, data_config.data_dir)):
            pools = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
            raise ConfigError(f"data.data_dir={data_config.data_dir!r}: the toy lab has no {kind} of that name",
                              f"use one of: {', '.join(pools)}" if pools else f"{kind} has no subsets; leave it empty")
        return folder, data_config.data_dir or None
    return data_config.source, data_config.data_dir or None
