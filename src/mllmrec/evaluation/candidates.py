"""Turn any method's output on the persisted candidates into per-sample predictions and DVC metrics.

Every method (baselines now, LLM policies later) produces a `ranked` list of item ids per sample; this module
scores them with the pure functions in metrics.py, so all methods are measured by exactly the same code.
"""

import numpy as np
import polars as pl

from mllmrec import paths
from mllmrec.config import EvalParams
from mllmrec.data.split import seeded_subset
from mllmrec.evaluation.metrics import out_of_candidates, summarize, target_rank
from mllmrec.io import read_parquet


def load_candidates(n_neg: int, split: str, max_samples: int | None = None, seed: int = 0) -> pl.DataFrame:
    """One split of a persisted candidate file; with max_samples, a seeded subset chosen by hashing sample ids, so
    every method (baselines and LLMs) is scored on exactly the same samples whatever the row order
    (mllmrec.data.split.seeded_subset)."""
    cands = read_parquet(paths.candidates(n_neg), "split").filter(pl.col("split") == split)
    if max_samples is not None and cands.height > max_samples:
        cands = seeded_subset(cands, max_samples, seed).sort(pl.col("sample_id").str.len_chars(), "sample_id")
    return cands


def candidate_sizes() -> list[int]:
    """The candidate-set sizes the split stage wrote (split.num_negatives)."""
    sizes = sorted(int(p.stem.removeprefix("candidates_n")) for p in paths.SPLIT.glob(paths.candidates("*").name))
    if not sizes:
        read_parquet(paths.candidates(9), "split")  # raises the "run split first" error
    return sizes


def rank_by_scores(cands: pl.DataFrame, scores: np.ndarray) -> pl.DataFrame:
    """Order each sample's candidates by descending score; ties keep the (already shuffled) candidate order."""
    order = np.argsort(-scores, axis=1, kind="stable")
    matrix = np.array(cands["candidates"].to_list(), dtype=object)
    ranked = np.take_along_axis(matrix, order, axis=1)
    return cands.select("sample_id", "user_id", "target", "candidates").with_columns(
        ranked=pl.Series([list(r) for r in ranked], dtype=pl.List(pl.String)),
        valid=pl.lit(True),
    )


def reorder_candidates(cands: pl.DataFrame, how: str, seed: int) -> pl.DataFrame:
    """The same samples with each candidate list reversed, or shuffled by a generator seeded from (seed, sample_id):
    for the position-bias check (a ranker that reads the list, not the items, moves with the order).

    >>> df = pl.DataFrame({"sample_id": ["u:test"], "candidates": [["a", "b", "c"]]})
    >>> reorder_candidates(df, "reversed", 0)["candidates"].to_list()
    [['c', 'b', 'a']]
    """
    import hashlib

    def shuffled(sample_id: str, items: list) -> list:
        key = int.from_bytes(hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()[:8], "big")
        return [items[i] for i in np.random.default_rng(key).permutation(len(items))]

    new = [
        list(c)[::-1] if how == "reversed" else shuffled(s, list(c))
        for s, c in zip(cands["sample_id"].to_list(), cands["candidates"].to_list())
    ]
    return cands.with_columns(candidates=pl.Series(new, dtype=cands.schema["candidates"]))


def score_predictions(preds: pl.DataFrame, params: EvalParams) -> tuple[pl.DataFrame, dict]:
    """Add target_rank and out_of_candidates per sample; return (predictions, summary metrics)."""
    rows = list(zip(preds["ranked"].to_list(), preds["target"].to_list(), preds["candidates"].to_list()))
    ranks = np.array([-1 if (r := target_rank(ranked, t)) is None else r for ranked, t, _ in rows])
    outside = np.array([out_of_candidates(ranked, c) for ranked, _, c in rows])
    preds = preds.with_columns(
        target_rank=pl.Series(ranks, dtype=pl.Int32), out_of_candidates=pl.Series(outside, dtype=pl.Int32)
    )
    summary = summarize(ranks, params.ks, params.bootstrap, params.seed, preds["valid"].to_numpy(), int(outside.sum()))
    return preds, summary
