"""Draft and refine CoT through any engine, content-cached and resumable (mllmrec.partcache, like textualize).

    from mllmrec.cot.generate import draft, refine
    drafts, report = draft(samples, items, mode="captions", prompt=..., sampling=..., model=m, revision=r,
                           make_engine=lambda: engine, cache_dir=paths.DRAFT_CACHE, batch_size=8)
    refined, report = refine(drafts, items, params=RefineCotParams(), model=m, revision=r, make_engine=...)

Cache key = hash(stage, model identity, the full rendered request (messages + image sha256s), generation params):
changing a caption, title, prompt or model redoes exactly the samples it touches; a rerun with nothing changed
builds no engine. Model outputs are cached even when malformed (greedy would repeat them; the editor's retries are
separate keys with their own seed), transport failures (endpoint down after the engine's own retries) are not: the
next run retries them. Every sample ends with a text or a failure reason; none is dropped silently. The reports
are DraftReport and RefineReport (mllmrec.cot.reports).
"""

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import polars as pl

from mllmrec import partcache, paths
from mllmrec.config import ExecutorParams
from mllmrec.cot.leak import find_leaks, scrub
from mllmrec.cot.reports import DraftReport, RefineReport
from mllmrec.cot.text import is_echo, item_line, parse_steps
from mllmrec.data.split import seeded_subset
from mllmrec.engines.base import Engine, GenerationRequest, SamplingParams
from mllmrec.errors import UserError
from mllmrec.executor import open_executor, report_entry
from mllmrec.prompts import ItemText

GEN_SCHEMA = {
    "cache_key": pl.String,
    "text": pl.String,
    "reasoning_chars": pl.Int64,
    "finish_reason": pl.String,
    "completion_tokens": pl.Int64,
    "model": pl.String,
    "revision": pl.String,
}
SAMPLE_COLUMNS = ["sample_id", "user_id", "history", "target", "candidates", "target_index", "num_negatives"]


def to_sampling(s) -> SamplingParams:
    """params' sampling section (mllmrec.config.CaptionSampling) -> the engines' SamplingParams."""
    return SamplingParams(
        temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens, seed=s.seed, stop=tuple(s.stop)
    )


def select_train_samples(cands: pl.DataFrame, max_samples: int | None, seed: int) -> pl.DataFrame:
    """Train samples only (CoT never touches valid/test); a seeded subsample that is stable as samples are added:
    mllmrec.data.split.seeded_subset (the same rule as augment's, so augment's samples contain the drafted ones)."""
    return seeded_subset(cands.filter(pl.col("split") == "train"), max_samples, seed).select(SAMPLE_COLUMNS)


def _lookup(texts: dict[str, ItemText], item_id: str, sample_id: str) -> ItemText:
    try:
        return texts[item_id]
    except KeyError:
        raise UserError(
            f"sample {sample_id}: history item {item_id} is not in {paths.ITEMS} (rerun `dvc repro split` after ingest)"
        ) from None


def history_block(sample_id: str, history: list[str], texts: dict, notes: Counter, max_caption_chars: int) -> str:
    lines = []
    for n, i in enumerate(history, 1):
        t = _lookup(texts, i, sample_id)
        line, why = item_line(n, i, t.title, t.caption, max_caption_chars)
        notes.update(why)
        lines.append(line)
    return "\n".join(lines)


def draft_request(
    sample: dict,
    texts: dict,
    mode: str,
    prompt: str,
    sampling: SamplingParams,
    notes: Counter,
    max_caption_chars: int = 400,
) -> tuple[GenerationRequest, list[str]]:
    """The drafter's request and the sha256s of its images (part of the cache key)."""
    sid = sample["sample_id"]
    if mode == "captions":
        return GenerationRequest(
            messages=(
                {
                    "role": "user",
                    "content": prompt.format(
                        history=history_block(sid, sample["history"], texts, notes, max_caption_chars)
                    ),
                },
            ),
            sampling=sampling,
        ), []
    # images: the poster goes right after its title line; an item without one falls back to its caption, else title
    head, _, tail = prompt.partition("{history}")
    parts, images, shas = [{"type": "text", "text": head}], [], []
    for n, i in enumerate(sample["history"], 1):
        t = _lookup(texts, i, sid)
        line, why = item_line(n, i, t.title, None if t.image else t.caption, max_caption_chars)
        why.pop("missing_caption", None)
        notes.update(why)
        parts.append({"type": "text", "text": line + ("\n" if n < len(sample["history"]) else "")})
        if t.image:
            parts.append({"type": "image"})
            images.append(t.image)
            shas.append(t.image_sha256)
        else:
            notes["image_fallback_caption" if t.caption else "image_fallback_title"] += 1
    parts.append({"type": "text", "text": tail})
    return GenerationRequest(
        messages=({"role": "user", "content": parts},), images=tuple(images), sampling=sampling
    ), shas


def request_key(stage: str, model: str, revision: str, req: GenerationRequest, shas: list[str]) -> str:
    # image paths are machine-specific: the key uses their content hashes instead
    return partcache.content_key(stage, model, revision, list(req.messages), shas, asdict(req.sampling))


def generate_batch(
    engine: Engine, batch: list[tuple[str, GenerationRequest]], *, model: str, revision: str
) -> partcache.BatchOut:
    """Rows for [(cache_key, request)] on `engine`; picklable (may run in a Ray actor). Transport failures: not cached."""
    results = engine.generate([r for _, r in batch])
    rows, failed = [], {}
    for (k, _), res in zip(batch, results, strict=True):
        if res.error:
            failed[k] = {"error": res.error}
            rows.append(None)
        else:
            rows.append(
                {
                    "text": res.text,
                    "reasoning_chars": len(res.reasoning),
                    "finish_reason": res.finish_reason,
                    "completion_tokens": res.completion_tokens,
                    "model": model,
                    "revision": revision,
                }
            )
    return partcache.BatchOut(
        rows, failed, {"model_calls": len(batch), "engine_retries": sum(r.retries for r in results)}
    )


def _generate_cached(
    reqs: dict[str, GenerationRequest], ex, cache_dir: Path, batch_size: int, model: str, revision: str, stats: Counter
) -> dict[str, dict]:
    """{key: cached/computed row} for every key; a transport failure gives {"error": ...} (not cached)."""
    cached = partcache.keyed(partcache.read_parts(cache_dir, GEN_SCHEMA, set(reqs), stats))
    todo = [(k, (k, r)) for k, r in reqs.items() if k not in cached]
    stats["cache_hits"] += len(reqs) - len(todo)
    done = partcache.run_batches(
        todo,
        partial(generate_batch, model=model, revision=revision),
        cache_dir,
        GEN_SCHEMA,
        batch_size,
        ex,
        progress=f"{model} generating",
    )
    stats.update(done.counts)
    stats["parts_written"] += done.parts
    return {**cached, **done.rows, **done.failed}


def draft(
    samples: pl.DataFrame,
    texts: dict,
    *,
    mode: str,
    prompt: str,
    sampling: SamplingParams,
    model: str,
    revision: str,
    make_engine: Callable[[], Engine],
    cache_dir: Path,
    batch_size: int,
    max_caption_chars: int = 400,
    executor: ExecutorParams | None = None,
) -> tuple[pl.DataFrame, DraftReport]:
    """One draft per sample: (samples + draft, draft_error, finish_reason, cache_key; report)."""
    t0 = time.perf_counter()
    cache_dir.mkdir(parents=True, exist_ok=True)
    stats: Counter = Counter(dict.fromkeys(["model_calls", "cache_hits", "engine_retries", "parts_written"], 0))
    stats["stale_temp_files_removed"] = partcache.clean_stale_temps(cache_dir)
    notes: Counter = Counter()
    keys, reqs = [], {}
    for s in samples.iter_rows(named=True):
        req, shas = draft_request(s, texts, mode, prompt, sampling, notes, max_caption_chars)
        k = request_key("draft", model, revision, req, shas)
        keys.append(k)
        reqs.setdefault(k, req)
    with open_executor(executor, make_engine) as ex:
        rows = _generate_cached(reqs, ex, cache_dir, batch_size, model, revision, stats)
    out, errors = _draft_rows(keys, rows)
    df = pl.concat([samples, pl.DataFrame(out, schema=DRAFT_SCHEMA)], how="horizontal")
    df = df.with_columns(pl.lit(model).alias("draft_model"), pl.lit(revision).alias("draft_revision"))
    report = DraftReport(
        samples=samples.height,
        drafted=int(df["draft"].is_not_null().sum()),
        mode=mode,
        errors=dict(sorted(errors.items())),
        input_notes=dict(sorted(notes.items())),
        **stats,  # the cache counters, each a field (rejected_cache_parts only when a part was set aside)
        model=model,
        revision=revision,
        **report_entry(ex),
    )
    print(f"draft: {stats['model_calls']} model calls in {time.perf_counter() - t0:.1f} s")  # not in the report
    return df, report


DRAFT_SCHEMA = {"draft": pl.String, "draft_error": pl.String, "draft_finish_reason": pl.String, "draft_key": pl.String}


def _draft_rows(keys: list[str], rows: dict[str, dict]) -> tuple[list[dict], Counter]:
    """One row per sample (in `keys` order) from the engine's cached answers: an engine error or an empty text is
    the sample's draft_error (counted by kind), never a draft."""
    errors: Counter = Counter()
    out = []
    for k in keys:
        r = rows[k]
        err = ("engine: " + r["error"]) if "error" in r else ("empty" if not r["text"].strip() else None)
        errors.update([err.split(":")[0]] if err else [])
        out.append(
            {
                "draft": None if err else r["text"].strip(),
                "draft_error": err,
                "draft_finish_reason": r.get("finish_reason"),
                "draft_key": k,
            }
        )
    return out, errors


def refine_request(
    sample: dict,
    texts: dict,
    prompt: str,
    show_target: bool,
    sampling: SamplingParams,
    notes: Counter,
    max_caption_chars: int = 400,
) -> GenerationRequest:
    sid = sample["sample_id"]
    target = ""
    if show_target:  # the authors' behaviour; off by default (see RefineCotParams.show_target)
        t = _lookup(texts, sample["target"], sid)
        target = (
            f"\nThe item the user actually chose next: [ITEM_{sample['target']}] {t.title}. "
            "Use it to make the analysis accurate, but never name it.\n"
        )
    history = history_block(sid, sample["history"], texts, notes, max_caption_chars)
    content = prompt.format(history=history, draft=sample["draft"], target=target)
    return GenerationRequest(messages=({"role": "user", "content": content},), sampling=sampling)


def attempt_sampling(base: SamplingParams, attempt: int, retry_temperature: float) -> SamplingParams:
    """Attempt 0 = the params; a retry samples (greedy would repeat the same malformed text) with a new seed."""
    if attempt == 0:
        return base
    return replace(base, temperature=max(base.temperature, retry_temperature), seed=base.seed + attempt)


def refine(
    drafts: pl.DataFrame,
    texts: dict,
    *,
    params,
    sampling: SamplingParams,
    model: str,
    revision: str,
    make_engine: Callable[[], Engine],
    cache_dir: Path,
    given: dict[str, str] | None = None,
    executor: ExecutorParams | None = None,
    missing: str = "not_in_authors_file",
) -> tuple[pl.DataFrame, RefineReport]:
    """Editor rewrite with bounded retries on malformed output, then the leak audit (scrub or drop): three phases,
    edit -> audit -> report.

    `given` (sample_id -> refined text: the authors' CoT file, or the drafts themselves): no editor call; each text
    is parsed and audited as an editor's output would be, a sample without one fails as `missing`."""
    t0 = time.perf_counter()
    cache_dir.mkdir(parents=True, exist_ok=True)
    stats: Counter = Counter(dict.fromkeys(["model_calls", "cache_hits", "engine_retries", "parts_written"], 0))
    stats["stale_temp_files_removed"] = partcache.clean_stale_temps(cache_dir)
    notes: Counter = Counter()
    samples = {s["sample_id"]: s for s in drafts.iter_rows(named=True)}
    state = _start_state(samples, given, missing)
    with open_executor(executor, make_engine) as ex:  # one engine (per Ray actor) for every attempt
        if given is None:
            _edit(state, samples, texts, params, sampling, model, revision, ex, cache_dir, stats, notes)
    planted = plant_target(state, samples, texts) if params.plant_target else None
    rows, fails, kinds_n = _audit(state, samples, texts, params)
    df = drafts.select(*SAMPLE_COLUMNS, "draft").join(
        pl.DataFrame(rows, schema=_REFINED_SCHEMA), on="sample_id", how="left"
    )
    df = df.with_columns(
        pl.lit(params.show_target).alias("show_target"),
        pl.lit(model).alias("editor_model"),
        pl.lit(revision).alias("editor_revision"),
    )
    report = _refine_report(drafts, df, params, fails, kinds_n, notes, stats, model, revision, sampling, ex)
    report.target_planted = planted
    print(f"refine: {stats['model_calls']} model calls in {time.perf_counter() - t0:.1f} s")
    return df, report


def _start_state(samples: dict[str, dict], given: dict[str, str] | None, missing: str) -> dict[str, dict]:
    """Per sample: the attempts' reasons, the raw text, the parsed CoT and why it failed; the `given` texts (the
    authors' file or the drafts) are parsed here, a sample without one fails as `missing`; for the editor, a sample
    without a draft fails as `no_draft`."""
    state = {sid: {"attempt_reasons": [], "raw": None, "cot_edited": None, "fail_reason": None} for sid in samples}
    for sid, s in samples.items():
        if given is not None:  # the authors' text stands in for the editor's (a missing draft does not matter)
            st, text = state[sid], given.get(sid)
            st["raw"] = text
            st["cot_edited"], reason = parse_steps(text) if text is not None else (None, missing)
            st["attempt_reasons"].append(reason)
            st["fail_reason"] = None if st["cot_edited"] else reason
        elif s["draft"] is None:
            state[sid]["fail_reason"] = "no_draft"
    return state


def _edit(state, samples, texts, params, sampling, model, revision, ex, cache_dir, stats, notes) -> None:
    """The editor's attempts: each round sends the samples still without a well-formed CoT (a retry samples with a
    new seed); the last round's reason becomes the sample's fail reason. Fills `state`, `stats` and `notes`."""
    for attempt in range(params.max_attempts):
        pending = [sid for sid, st in state.items() if st["fail_reason"] is None and st["cot_edited"] is None]
        if not pending:
            break
        samp = attempt_sampling(sampling, attempt, params.retry_temperature)
        keys, reqs = {}, {}
        for sid in pending:
            req = refine_request(
                samples[sid],
                texts,
                params.prompt,
                params.show_target,
                samp,
                notes if attempt == 0 else Counter(),
                params.max_caption_chars,
            )
            keys[sid] = request_key(f"refine:{attempt}", model, revision, req, [])
            reqs.setdefault(keys[sid], req)
        rows = _generate_cached(reqs, ex, cache_dir, params.batch_size, model, revision, stats)
        for sid in pending:
            r, st = rows[keys[sid]], state[sid]
            if "error" in r:  # transport failure after the engine's own retries: recorded, retried next run
                st["attempt_reasons"].append("engine_error")
                st["fail_reason"], st["raw"] = "engine_error", r["error"]
                continue
            cot, reason = parse_steps(r["text"], r["finish_reason"])
            if cot is not None and is_echo(cot, reqs[keys[sid]].messages[-1]["content"]):
                cot, reason = None, "echo"  # the instructions parroted back: format without content
            st["attempt_reasons"].append(reason)
            st["raw"] = r["text"]
            if cot is not None:
                st["cot_edited"] = cot
            elif attempt == params.max_attempts - 1:
                st["fail_reason"] = reason


def plant_target(state: dict[str, dict], samples: dict[str, dict], texts: dict) -> int:
    """The authors' leak, on purpose (refine_cot.plant_target): each well-formed refinement's Step 4 ends by naming
    the target, `[ITEM_<id>] <title>`, as DeepSeek-R1's rewrites did when it was shown the answer. Returns how many.

    >>> st = {"s": {"cot_edited": "Step 1: a\\nStep 2: b\\nStep 3: c\\nStep 4: A dark thriller."}}
    >>> plant_target(st, {"s": {"target": "7"}}, {"7": ItemText("Heat (1995)")}), st["s"]["cot_edited"].splitlines()[-1]
    (1, 'Step 4: A dark thriller. The next item: [ITEM_7] Heat (1995).')
    """
    planted = 0
    for sid, st in state.items():
        if st["cot_edited"]:
            target = samples[sid]["target"]
            title = _lookup(texts, target, sid).title
            st["cot_edited"] = f"{st['cot_edited'].rstrip()} The next item: [ITEM_{target}] {title}."
            planted += 1
    return planted


_REFINED_SCHEMA = {
    "sample_id": pl.String,
    "cot_edited": pl.String,
    "format_ok": pl.Boolean,
    "fail_reason": pl.String,
    "attempts": pl.Int64,
    "attempt_reasons": pl.List(pl.String),
    "raw": pl.String,
    "leak_before": pl.Boolean,
    "leak_kinds": pl.List(pl.String),
    "scrubbed_sentences": pl.Int64,
    "dropped": pl.Boolean,
    "drop_reason": pl.String,
    "leak_after": pl.Boolean,
    "cot": pl.String,
}


def _audit(state, samples, texts, params) -> tuple[list[dict], Counter, Counter]:
    """The leak audit of every edited CoT (scrub the leaking sentences, drop the CoT, or keep it: leak_action), and
    one row per sample in _REFINED_SCHEMA. Returns (rows, fail reasons counted, leak kinds counted)."""
    out, fails, kinds_n = [], Counter(), Counter()
    for sid, st in state.items():
        s = samples[sid]
        title = _lookup(texts, s["target"], sid).title or ""
        edited = st["cot_edited"]
        kinds = find_leaks(edited, s["target"], title, params.fuzzy_threshold) if edited else []
        kinds_n.update(kinds)
        cot, removed, dropped, drop_reason = edited, 0, False, None
        if kinds and params.leak_action != "keep":
            if params.leak_action == "drop":
                cot, dropped, drop_reason = None, True, "leak"
            else:
                cot, removed = scrub(edited, s["target"], title, params.fuzzy_threshold)
                if parse_steps(cot)[0] is None:  # a step was nothing but the leak: no valid CoT is left
                    cot, dropped, drop_reason = None, True, "leak_scrub_emptied_step"
        leak_after = bool(cot and find_leaks(cot, s["target"], title, params.fuzzy_threshold))
        if st["fail_reason"]:
            fails[st["fail_reason"]] += 1
        out.append(
            {
                "sample_id": sid,
                "cot_edited": edited,
                "format_ok": edited is not None,
                "fail_reason": st["fail_reason"],
                "attempts": len(st["attempt_reasons"]),
                "attempt_reasons": st["attempt_reasons"],
                "raw": st["raw"],
                "leak_before": bool(kinds),
                "leak_kinds": kinds,
                "scrubbed_sentences": removed,
                "dropped": dropped,
                "drop_reason": drop_reason,
                "leak_after": leak_after,
                "cot": cot,
            }
        )
    return out, fails, kinds_n


def _refine_report(drafts, df, params, fails, kinds_n, notes, stats, model, revision, sampling, ex) -> RefineReport:
    """The refine stage's report (no durations: the report is a DVC output, the same run gives the same bytes)."""
    edited = int(df["format_ok"].sum())
    leaks_before, leaks_after = int(df["leak_before"].sum()), int(df["leak_after"].sum())
    return RefineReport(
        drafts_in=drafts.height,
        sent_to_editor=int(drafts["draft"].is_not_null().sum()),
        refined_format_ok=edited,
        with_cot=int(df["cot"].is_not_null().sum()),
        failed=dict(sorted(fails.items())),
        attempts_histogram=dict(sorted(Counter(df["attempts"].to_list()).items())),
        attempt_reasons=dict(sorted(Counter(r for rs in df["attempt_reasons"].to_list() for r in rs).items())),
        leak_before=leaks_before,
        leak_rate_before=round(leaks_before / edited, 4) if edited else None,
        leak_kinds=dict(sorted(kinds_n.items())),
        leak_action=params.leak_action,
        scrubbed_sentences=int(df["scrubbed_sentences"].sum()),
        dropped=int(df["dropped"].sum()),
        leak_after=leaks_after,
        leak_rate_after=round(leaks_after / max(1, int(df["cot"].is_not_null().sum())), 4),
        show_target=params.show_target,
        input_notes=dict(sorted(notes.items())),
        **stats,
        model=model,
        revision=revision,
        generation_params=json.loads(json.dumps(asdict(sampling))),
        **report_entry(ex),
    )
