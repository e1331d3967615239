"""Content-addressed, resumable result cache shared by every generating stage (textualize, draft/refine/assess CoT).

    from mllmrec import partcache
    key = partcache.content_key("draft", model, revision, messages, gen_params)   # what determines the output
    done = partcache.read_parts(cache_dir, SCHEMA, keys={key})                     # committed rows for those keys
    partcache.write_part(cache_dir, rows, SCHEMA)                                  # one finished batch, atomically
    done = partcache.run_batches(todo, compute, cache_dir, SCHEMA, batch_size, executor)   # all of them

Layout (see src/mllmrec/data/textualize.py for the DVC side: the folder is a `persist: true` output): one small Parquet
file per finished batch, `part-<sha256 of its bytes>.parquet`, written temp + rename and never modified, so a kill
loses at most the batch in flight and a rerun reads every part. Rows are keyed by `cache_key`; a key is the hash of
everything that determines the result (model identity, prompt, inputs, generation params), so changing any of them
misses the cache while going back to old settings hits it again.

Integrity: a part is served only if its bytes still hash to its name. An edited, truncated or corrupt part (also one
pulled from a shared DVC remote) is reported, moved to `<cache>/rejected/` and its rows are recomputed. This catches
edits and damage, not a deliberate forger who renames the file after editing it (that needs signed parts).
"""

import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from mllmrec.io import PARQUET, atomic
from mllmrec.progress import Progress


def content_key(*parts) -> str:
    """sha256 of the canonical JSON of `parts` (str, numbers, lists, dicts).

    >>> content_key("a", 1, {"t": 0.0}) == content_key("a", 1, {"t": 0.0}) != content_key("a", 2, {"t": 0.0})
    True
    """
    blob = json.dumps(list(parts), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def part_name(data: bytes) -> str:
    """The file name a part's bytes must have: what read_parts verifies."""
    return f"part-{hashlib.sha256(data).hexdigest()[:32]}.parquet"


def read_parts(
    cache_dir: Path, schema: dict, keys: set[str] | None = None, report: Counter | None = None
) -> pl.DataFrame:
    """All committed rows (optionally only `keys`), one per key; temp files of a killed write are ignored. A part that
    fails verification is never served: it is moved to `rejected/`, counted in `report["rejected_cache_parts"]` and
    named on stdout, and its rows count as not cached."""
    frames = []
    for p in sorted(cache_dir.glob("part-*.parquet")):
        data = p.read_bytes()
        problem = None
        if part_name(data) != p.name:
            problem = "its bytes do not match its name (edited, damaged, or written by an older version)"
        else:
            try:
                df = pl.read_parquet(io.BytesIO(data))
                if missing := [c for c in schema if c not in df.columns]:
                    problem = f"lacks column(s) {missing}"
            except (OSError, pl.exceptions.PolarsError) as e:
                problem = f"unreadable ({type(e).__name__})"
        if problem:
            reject(p, problem, report)
            continue
        frames.append(df.filter(pl.col("cache_key").is_in(list(keys))) if keys is not None else df)
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat(frames, how="vertical_relaxed").unique("cache_key", keep="first", maintain_order=True)


def reject(part: Path, problem: str, report: Counter | None) -> None:
    """Set a part aside (never deleted: it may be evidence) and say so."""
    aside = part.parent / "rejected" / part.name
    aside.parent.mkdir(exist_ok=True)
    part.replace(aside)
    if report is not None:
        report["rejected_cache_parts"] += 1
    print(f"cache: {part} {problem}: not served, moved to {aside}; its rows are recomputed", flush=True)


def write_part(cache_dir: Path, rows: list[dict], schema: dict) -> Path:
    """Commit one finished batch under the hash of its bytes (the same rows give the same name and bytes)."""
    buf = io.BytesIO()  # a small part: hashed in memory, then written under its hash
    pl.DataFrame(rows, schema=schema).sort("cache_key").write_parquet(buf, **PARQUET)
    data = buf.getvalue()
    path = cache_dir / part_name(data)
    with atomic(path) as tmp:
        tmp.write_bytes(data)
    return path


def clean_stale_temps(cache_dir: Path) -> int:
    """Remove `*.tmp` left by a kill during a write: it must not end up inside the DVC output."""
    stale = list(cache_dir.glob("*.tmp"))
    for p in stale:
        p.unlink()
    return len(stale)


def model_identity(spec) -> tuple[str, str]:
    """(model, revision) a cache keys on, known WITHOUT loading the model (a fully cached run never loads it).

    A pinned revision is used as is; a local folder without one gets a fingerprint of its small files and the
    names + sizes of its weights (hashing GBs of weights on every run would cost more than it saves); the pixel
    describer's revision is its algorithm version.
    """
    if spec.engine == "pixel_describer":  # not a model: the code is the "weights"
        from mllmrec.engines import pixel_describer

        return pixel_describer.MODEL_ID, pixel_describer.REVISION
    if spec.engine == "image_tagger":  # package versions + thresholds, read without loading a model
        from mllmrec.engines import image_tagger

        return image_tagger.identity(spec.tagger)
    return folder_identity(spec.model, spec.revision)


def folder_identity(model: str, revision: str = "") -> tuple[str, str]:
    folder = Path(model)
    if revision or not folder.is_dir():
        return model, revision
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        small = f.suffix in {".json", ".jinja", ".txt", ".model"} and f.stat().st_size < 50_000_000
        h.update(f"{f.relative_to(folder).as_posix()}:{f.stat().st_size}:".encode())
        h.update(f.read_bytes() if small else b"")
    return model, "local-" + h.hexdigest()[:16]


@dataclass
class BatchOut:
    """What a batch's compute returns: one row per job (None = not cached), why those were not, counters to sum."""

    rows: list[dict | None]
    failed: dict[str, object] = field(default_factory=dict)  # cache_key -> error, for the stage's output
    counts: dict[str, int] = field(default_factory=dict)  # e.g. model_calls, engine_retries


@dataclass
class Computed:
    rows: dict[str, dict]  # cache_key -> committed row (with cache_key)
    failed: dict[str, object]
    counts: Counter
    parts: int


def run_batches(
    todo: list[tuple[str, object]],
    compute: Callable[[object, list[object]], BatchOut],
    cache_dir: Path,
    schema: dict,
    batch_size: int,
    executor,
    progress: str | None = None,
) -> Computed:
    """Compute `todo` = [(cache_key, job)] in batches on `executor` (mllmrec.executor), committing each as one part.

    `compute(engine, jobs)` is picklable (it may run in a Ray actor, on that actor's engine) and returns a BatchOut:
    one row dict per job (without `cache_key`), or None for a job that failed in a way that must not be cached
    (endpoint down: the next run retries it). Parts are written HERE, by the driver, as batches come back (in any
    order under Ray: a part's name and bytes depend only on its rows), so every executor writes the same parts.
    `progress` names the work in the progress display (mllmrec.progress); None shows none.
    """
    batches = [todo[s : s + batch_size] for s in range(0, len(todo), batch_size)]
    done = Computed({}, {}, Counter(), 0)
    with Progress(progress or "", len(todo), enabled=progress is not None and bool(todo)) as bar:
        for i, res in executor.map(compute, [[job for _, job in b] for b in batches]):
            rows = []
            for (k, _), row in zip(batches[i], res.rows, strict=True):
                if row is not None:
                    done.rows[k] = {**row, "cache_key": k}
                    rows.append(done.rows[k])
            if rows:
                write_part(cache_dir, rows, schema)
                done.parts += 1
            done.failed.update(res.failed)
            done.counts.update(res.counts)
            bar.advance(len(batches[i]))
    return done


def keyed(rows: pl.DataFrame) -> dict[str, dict]:
    """{cache_key: row dict} of a read_parts frame."""
    return {r["cache_key"]: r for r in rows.iter_rows(named=True)}


def unique_keys(keys: Iterable[str]) -> list[str]:
    """Keys in first-seen order without repeats (identical requests are computed once)."""
    return list(dict.fromkeys(keys))
