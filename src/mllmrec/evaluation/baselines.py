"""Classic baselines as candidate scorers: (candidates frame) -> (samples, candidates) scores, higher = better.

    from mllmrec.evaluation.baselines import popularity_scorer, random_scorer, sasrec_scorer
    scorer = popularity_scorer(train_seqs, seed=0)          # or random_scorer(0), sasrec_scorer(...)
    preds, summary = score_predictions(rank_by_scores(cands, scorer(cands)), eval_params)

Every scorer sees the persisted candidates (data/split), the same ones the LLM policies are ranked on.
"""

from collections.abc import Callable

import numpy as np
import polars as pl

from mllmrec.config import SasrecParams

Scorer = Callable[[pl.DataFrame], np.ndarray]


def random_scorer(seed: int) -> Scorer:
    rng = np.random.default_rng(seed)
    return lambda c: rng.random((c.height, c["candidates"].list.len().max()))


def popularity_scorer(train_seqs: pl.DataFrame, seed: int) -> Scorer:
    """Interactions of each candidate in the training sequences; seeded jitter < 1 breaks ties only.

    >>> seqs = pl.DataFrame({"items": [["a", "b", "a"], ["a", "c"]]})
    >>> popularity_scorer(seqs, 0)(pl.DataFrame({"candidates": [["c", "a", "z"]]})).argsort()[0].tolist()
    [2, 0, 1]
    """
    counts = dict(train_seqs["items"].explode().value_counts().iter_rows())
    rng = np.random.default_rng(seed)

    def score(c: pl.DataFrame) -> np.ndarray:
        pop = np.array([[counts.get(i, 0) for i in row] for row in c["candidates"].to_list()], dtype=float)
        return pop + rng.random(pop.shape) * 0.5

    return score


def sasrec_scorer(train_seqs: pl.DataFrame, valid: pl.DataFrame, test: pl.DataFrame, p: SasrecParams
                  ) -> tuple[Scorer, dict, list[dict]]:
    """Train SASRec on the training sequences, early-stopped on `valid` (history, candidates, target_index).

    Returns the scorer, a checkpoint ({state_dict, items}: torch.save it) and the per-epoch log. Item index 0 is
    padding; the vocabulary is every training item plus every test candidate (sorted: the same run, the same ids)."""
    from mllmrec.evaluation import sasrec

    items = sorted(set(train_seqs["items"].explode().to_list()) | set(test["candidates"].explode().to_list()))
    index = {item: i + 1 for i, item in enumerate(items)}

    def to_idx(col: pl.Series) -> list[list[int]]:
        return [[index[i] for i in seq] for seq in col.to_list()]

    model, log = sasrec.train(to_idx(train_seqs["items"]), len(items), p,
                              (to_idx(valid["history"]), to_idx(valid["candidates"]), valid["target_index"].to_numpy()))

    def score(c: pl.DataFrame) -> np.ndarray:
        return sasrec.score_candidates(model, to_idx(c["history"]), to_idx(c["candidates"]))

    return score, {"state_dict": model.state_dict(), "items": items}, log
