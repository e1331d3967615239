"""Caption every item image once, through any engine, with a content-addressed, resumable, shareable cache.

    from mllmrec.data.textualize import textualize
    captions, report = textualize(items, root, prompt=..., sampling=SamplingParams(max_new_tokens=128),
                                  model="pixel-describer", revision="pd-1", make_engine=lambda: engine,
                                  cache_dir=paths.TEXTUALIZE_CACHE, batch_size=16)
    # executor=ExecutorParams(kind="ray", address="auto"): the same parts and captions, batches on a Ray cluster

Cache key = sha256(image sha256, model, revision, prompt, generation params). Identical images share one request;
a rerun with nothing changed makes zero model calls (the engine is not even built); new items cost only their own
calls; a new prompt, model, revision or sampling setting re-captions everything (old entries stay, so going back is
free). Engine failures are recorded in the output but never cached, so the next run retries them. Per item, after
the cache, every clause that restates the item's own title is removed (`scrub_caption`, mllmrec.titles' rules;
counted in the report): the paper's captions never name the item, and posters print their titles.

Cache layout and why (DVC semantics checked in dvc 3.67's source, dvc/stage/__init__.py and dvc/stage/cache.py):
- `cache_dir/part-<hash of its keys>.parquet`: one small Parquet file per finished batch, written atomically
  (temp + rename), never modified afterwards. A kill loses at most the batch in flight; a rerun reads every part.
- In dvc.yaml the folder is an output with `persist: true`. DVC deletes a stage's ordinary outputs before it runs;
  a persistent one survives, which is what makes both resume-after-kill and "+items -> only the new ones" work
  under `dvc repro`. It stays `cache: true`, so `dvc push` uploads it (only new parts: DVC dedupes by content).
- A persist output disables DVC's run-cache for this stage, so sharing goes through dvc.lock instead: a teammate
  on the same commit runs `dvc pull` (or `dvc repro --pull`, which pulls a stage whose deps and params match its
  lock entry instead of running it) and gets captions.parquet plus the whole cache without loading a model. If they
  then change params or add items, the pulled cache still answers every known key. That per-item reuse is strictly
  more than the run-cache (all-or-nothing per stage) would give.
- Set MLLMREC_CACHE_ONLY=1 (stage option --cache-only) to fail instead of building the engine on a cache miss: the
  guard for a teammate without a GPU.
"""

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import polars as pl

from mllmrec import partcache
from mllmrec.config import ExecutorParams
from mllmrec.engines.base import Engine, GenerationRequest, SamplingParams
from mllmrec.errors import UserError
from mllmrec.executor import open_executor, report_entry
from mllmrec.reports import OMIT_IF_NONE
from mllmrec.titles import mentions, spells_title_part

PART_SCHEMA = {
    "cache_key": pl.String,
    "image_sha256": pl.String,
    "caption": pl.String,
    "model": pl.String,
    "revision": pl.String,
    "prompt_hash": pl.String,
    "generation_params": pl.String,
    "finish_reason": pl.String,
    "completion_tokens": pl.Int64,
}
OUT_COLUMNS = [
    "item_id",
    "image_sha256",
    "caption",
    "model",
    "revision",
    "prompt_hash",
    "generation_params",
    "error",
    "cache_key",
]


@dataclass(kw_only=True)
class TitleScrubbed:
    """Captions that restated their item's title (mostly OCR of the poster), and the clauses removed."""

    captions: int
    clauses: int


@dataclass(kw_only=True)
class TextualizeReport:
    """data/textualize/report.json (field names are its keys, mllmrec.reports). No durations: the report is a DVC
    output, the same run gives the same bytes."""

    items: int
    captioned: int
    unique_images: int
    cache_hits: int
    invalid_cache_rows: int  # a null/blank caption in a part (edited or foreign): recomputed, never served
    rejected_cache_parts: int  # failed verification: set aside, recomputed
    model_calls: int
    engine_built: bool
    parts_written: int
    stale_temp_files_removed: int
    title_scrubbed: TitleScrubbed
    errors: dict[str, int]  # by reason
    error_examples: list  # the first five (item_id, error)
    model: str
    revision: str
    prompt_hash: str
    generation_params: dict
    # Ray runs only (mllmrec.executor.report_entry)
    executor: dict | None = field(default=None, metadata=OMIT_IF_NONE)


def gen_params_json(sampling: SamplingParams) -> str:
    """Canonical JSON of the sampling params: part of the key and recorded next to every caption."""
    return json.dumps(asdict(sampling), sort_keys=True, separators=(",", ":"))


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


def cache_key(image_sha256: str, model: str, revision: str, prompt: str, gen_params: str) -> str:
    """Everything that determines a caption, hashed.

    >>> k = cache_key("ab", "m", "r", "p", "{}")
    >>> k == cache_key("ab", "m", "r", "p", "{}") and k != cache_key("ab", "m", "r2", "p", "{}")
    True
    """
    return partcache.content_key("caption", image_sha256, model, revision, prompt, gen_params)


def read_cache(cache_dir: Path, keys: set[str] | None = None, report: Counter | None = None) -> pl.DataFrame:
    """Committed, verified caption rows (optionally only `keys`), one per key (partcache.read_parts)."""
    return partcache.read_parts(cache_dir, PART_SCHEMA, keys, report)


def file_sha256(path: str) -> str | None:
    """The bytes the engine will read, hashed (None when the file is gone or unreadable)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _reason(error: str) -> str:
    return error.split(":", 1)[0].strip() or "error"


def caption_batch(
    engine: Engine,
    jobs: list[tuple[str, str, str]],
    *,
    prompt: str,
    sampling: SamplingParams,
    model: str,
    revision: str,
) -> partcache.BatchOut:
    """Captions for jobs [(cache_key, image sha256, image path)] on `engine`; picklable (may run in a Ray actor)."""
    gp, ph = gen_params_json(sampling), prompt_hash(prompt)
    failed: dict[str, str] = {}
    # the cache is keyed by the sha256 ingest recorded: an image edited since then would poison its key forever
    changed = {k for k, sha, path in jobs if file_sha256(path) != sha}
    for k in changed:
        failed[k] = "changed: image bytes differ from the sha256 ingest recorded (rerun `dvc repro ingest`)"
    jobs_ok = [j for j in jobs if j[0] not in changed]
    reqs = [
        GenerationRequest(messages=({"role": "user", "content": prompt},), images=(path,), sampling=sampling)
        for _, _, path in jobs_ok
    ]
    results = dict(zip([k for k, _, _ in jobs_ok], engine.generate(reqs) if reqs else [], strict=True))
    rows = []
    for k, sha, _ in jobs:
        res = results.get(k)
        if res is None:
            rows.append(None)
            continue
        if res.error:
            failed[k] = f"engine: {res.error}"
        elif not res.text.strip():  # a blank caption is never served from the cache: record it, retry next run
            failed[k] = "empty: the engine returned no caption text"
        rows.append(
            None
            if k in failed
            else {
                "image_sha256": sha,
                "caption": res.text.strip(),
                "model": model,
                "revision": revision,
                "prompt_hash": ph,
                "generation_params": gp,
                "finish_reason": res.finish_reason,
                "completion_tokens": res.completion_tokens,
            }
        )
    return partcache.BatchOut(rows, failed, {"model_calls": len(reqs)})


_CLAUSE = re.compile(r"(?<=[.;!?])\s+")
_QUOTED = re.compile(r'"([^"]*)"')


def scrub_caption(caption: str, item_id: str, title: str, fuzzy_threshold: float = 0.85) -> tuple[str, int]:
    """Remove every clause (split at . ; ! ?) of an image caption that restates the item: quoted text that spells
    part of its title (mllmrec.titles.spells_title_part), or an explicit mention (mllmrec.titles.mentions without
    its fuzzy rule: a caption's own words, such as the ImageNet label "toy store" on Toy Story's poster, are near
    misses, not mentions).

    >>> scrub_caption('comic book, toy store; one face; text "toy"; text "story"; text "007"; dark', "1", "Toy Story")
    ('comic book, toy store; one face; text "007"; dark', 2)
    >>> scrub_caption("The poster of Toy Story shows toys. Blue sky.", "1", "Toy Story (1995)")
    ('Blue sky.', 1)
    """
    keep, removed = [], 0
    for clause in _CLAUSE.split(caption.strip()):
        quoted = _QUOTED.findall(clause)
        if any(spells_title_part(q, title, fuzzy_threshold) for q in quoted) or set(
            mentions(clause, item_id, title, fuzzy_threshold)
        ) - {"fuzzy"}:
            removed += 1
        elif clause:
            keep.append(clause)
    return " ".join(keep).rstrip(";").strip(), removed


def _served_from_cache(cache_dir: Path, keys: dict[str, str]) -> tuple[dict[str, str], int, int]:
    """(cache_key -> caption the cache serves, unusable cached rows, rejected cache parts) for this run's keys."""
    rejected: Counter = Counter()
    cached = read_cache(cache_dir, set(keys.values()), rejected)
    usable = cached["caption"].fill_null("").str.strip_chars() != ""
    invalid = int((~usable).sum())  # a null/blank caption in a part (edited or foreign): recomputed, never served
    done = dict(zip(cached.filter(usable)["cache_key"], cached.filter(usable)["caption"]))
    return done, invalid, rejected["rejected_cache_parts"]


def _missing_images(ok: pl.DataFrame, keys: dict[str, str], done: dict[str, str], root: Path) -> dict:
    """cache_key -> (image sha256, absolute image path): one request per distinct missing image, in item order
    (deterministic batches -> deterministic part files)."""
    todo: dict[str, tuple[str, str]] = {}
    for sha, rel in ok.select("image_sha256", "image_path").iter_rows():
        k = keys[sha]
        if k not in done and k not in todo:
            todo[k] = (sha, str((root / rel).resolve()))
    return todo


def _refuse_cache_misses(ok: pl.DataFrame, keys: dict[str, str], todo: dict, model: str) -> None:
    """Cache-only mode (a teammate without a GPU) stops before building the engine, naming a few uncached items."""
    first = ok.filter(pl.col("image_sha256").is_in([s for s, k in keys.items() if k in todo]))["item_id"]
    raise UserError(
        f"cache-only mode (MLLMREC_CACHE_ONLY): {len(todo)} image(s) have no cached caption for "
        f"model {model} and this prompt, e.g. items {first.head(5).to_list()}; "
        f"run `dvc pull` first or unset MLLMREC_CACHE_ONLY to caption them"
    )


def _item_rows(
    items: pl.DataFrame, keys: dict[str, str], done: dict[str, str], failed: dict[str, str], stamp: dict[str, str]
) -> tuple[pl.DataFrame, Counter, TitleScrubbed]:
    """(captions: one row per item, errors by reason, title scrub counts). `stamp`: model, revision, prompt_hash,
    generation_params, the same on every row."""
    errors: Counter = Counter()
    out_rows, scrubbed, clauses = [], 0, 0
    cols = ("item_id", "title", "image_sha256", "image_ok", "image_error")
    for item_id, title, sha, ok_, img_err in items.select(cols).iter_rows():
        k = keys.get(sha) if ok_ else None
        err = (img_err or "missing") if not ok_ else failed.get(k)
        text = done.get(k) if k and not err else None
        if text is not None:
            # per item, after the cache (one image can serve several items): a caption never restates its own title
            text, n = scrub_caption(text, item_id, title or "")
            scrubbed, clauses = scrubbed + (n > 0), clauses + n
            if n and not text:
                text, err = None, "title only: every clause of the caption restated the item's title"
        if err:
            errors[_reason(err)] += 1
        out_rows.append(
            {"item_id": item_id, "image_sha256": sha, "caption": text, **stamp, "error": err, "cache_key": k}
        )
    captions = pl.DataFrame(out_rows, schema={c: pl.String for c in OUT_COLUMNS})
    return captions, errors, TitleScrubbed(captions=scrubbed, clauses=clauses)


def _caption_missing(
    todo: dict,
    compute: Callable,
    cache_dir: Path,
    batch_size: int,
    make_engine: Callable[[], Engine],
    executor: ExecutorParams | None,
    progress: bool,
) -> tuple[partcache.Computed, dict]:
    """Caption the missing images (`todo`, _missing_images) in batches, each committed to the cache as a part; and
    the report's executor entry (Ray runs only)."""
    with open_executor(executor, make_engine) as ex:
        new = partcache.run_batches(
            [(k, (k, sha, path)) for k, (sha, path) in todo.items()],
            compute,
            cache_dir,
            PART_SCHEMA,
            batch_size,
            ex,
            progress="captioning" if progress else None,
        )
    return new, report_entry(ex)


def textualize(
    items: pl.DataFrame,
    root: Path,
    *,
    prompt: str,
    sampling: SamplingParams,
    model: str,
    revision: str,
    make_engine: Callable[[], Engine],
    cache_dir: Path,
    batch_size: int,
    cache_only: bool = False,
    progress: bool = True,
    executor: ExecutorParams | None = None,
) -> tuple[pl.DataFrame, TextualizeReport]:
    """Captions for `items` (item_id, image_path, image_sha256, image_ok, image_error) and a run report."""
    t0 = time.perf_counter()
    cache_dir.mkdir(parents=True, exist_ok=True)
    stale = partcache.clean_stale_temps(cache_dir)
    gp, ph = gen_params_json(sampling), prompt_hash(prompt)
    ok = items.filter(pl.col("image_ok"))
    keys = {sha: cache_key(sha, model, revision, prompt, gp) for sha in ok["image_sha256"].unique().sort()}
    done, invalid, rejected = _served_from_cache(cache_dir, keys)
    todo = _missing_images(ok, keys, done, root)
    hits = len(keys) - len(todo)
    if todo and cache_only:
        _refuse_cache_misses(ok, keys, todo, f"{model}@{revision or '-'}")

    compute = partial(caption_batch, prompt=prompt, sampling=sampling, model=model, revision=revision)
    new, ran_on = _caption_missing(todo, compute, cache_dir, batch_size, make_engine, executor, progress)
    done.update({k: row["caption"] for k, row in new.rows.items()})
    failed, calls = new.failed, new.counts["model_calls"]  # failed: cache_key -> error (never cached: retried next run)
    stamp = {"model": model, "revision": revision, "prompt_hash": ph, "generation_params": gp}
    captions, errors, scrubbed = _item_rows(items, keys, done, failed, stamp)
    secs = time.perf_counter() - t0
    report = TextualizeReport(
        items=items.height,
        captioned=int(captions["caption"].is_not_null().sum()),
        unique_images=len(keys),
        cache_hits=hits,
        invalid_cache_rows=invalid,
        rejected_cache_parts=rejected,
        model_calls=calls,
        engine_built=bool(todo),
        parts_written=new.parts,
        stale_temp_files_removed=stale,
        title_scrubbed=scrubbed,
        errors=dict(sorted(errors.items())),
        error_examples=captions.filter(pl.col("error").is_not_null()).head(5).select("item_id", "error").rows(),
        model=model,
        revision=revision,
        prompt_hash=ph,
        generation_params=json.loads(gp),
        **ran_on,
    )
    print(f"textualize: {calls} model calls in {secs:.1f} s" + (f" ({calls / secs:.1f}/s)" if calls else ""))
    return captions, report
