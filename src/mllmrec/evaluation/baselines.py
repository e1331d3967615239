"""Classic baselines as candidate scorers: (candidates frame) -> (samples, candidates) scores, higher = better.

    from mllmrec.evaluation.baselines import popularity_scorer, random_scorer, sasrec_scorer
    scorer = popularity_scorer(train_seqs, seed=0)   # or random_scorer(0), markov_scorer, itemknn_scorer, sasrec_scorer
    preds, summary = score_predictions(rank_by_scores(cands, scorer(cands)), eval_params)

Every scorer sees the persisted candidates (data/split), the same ones the LLM policies are ranked on. Markov and
ItemKNN are the cheap collaborative baselines an LLM recommender must beat before its text or reasoning means anything
(small LLM rankers on MovieLens lose to a last-item transition table); both back off to popularity.
"""

import itertools
from collections import Counter, defaultdict
from collections.abc import Callable

import numpy as np
import polars as pl

from mllmrec.config import SasrecParams
from mllmrec.cooccurrence import CoOccurrence

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


def _popularity_backoff(train_seqs: pl.DataFrame, seed: int):
    """(counts, tie-break) for the collaborative baselines: a candidate's score is its collaborative evidence plus
    popularity scaled below one unit of that evidence, plus seeded jitter below one popularity count."""
    counts = Counter(train_seqs["items"].explode().drop_nulls().to_list())
    top = max(counts.values(), default=0) + 1
    rng = np.random.default_rng(seed)

    def backoff(c: pl.DataFrame) -> np.ndarray:
        pop = np.array([[counts.get(i, 0) for i in row] for row in c["candidates"].to_list()], dtype=float)
        return (pop + rng.random(pop.shape) * 0.5) / top  # < 1: evidence first, popularity only breaks its ties

    return backoff


def markov_scorer(train_seqs: pl.DataFrame, seed: int) -> Scorer:
    """First-order Markov chain: how often the candidate followed the history's last item in the training sequences;
    popularity breaks ties (and ranks alone when the last item was never followed by any candidate).

    >>> seqs = pl.DataFrame({"items": [["a", "b", "a", "c"], ["a", "c", "d"]]})
    >>> markov_scorer(seqs, 0)(pl.DataFrame({"history": [["x", "a"]], "candidates": [["b", "c", "d"]]})).argsort()[0]
    array([2, 0, 1])
    """
    follows: dict[str, Counter] = defaultdict(Counter)
    for seq in train_seqs["items"].to_list():
        for a, b in itertools.pairwise(seq):
            follows[a][b] += 1
    backoff = _popularity_backoff(train_seqs, seed)

    def score(c: pl.DataFrame) -> np.ndarray:
        counts = np.array(
            [
                [follows[h[-1]].get(i, 0) if h else 0 for i in cands]
                for h, cands in zip(c["history"].to_list(), c["candidates"].to_list())
            ],
            dtype=float,
        )
        return counts + backoff(c)

    return score


def itemknn_scorer(train_seqs: pl.DataFrame, seed: int) -> Scorer:
    """Item-based kNN: a candidate's score is the sum over the history's items of their cosine similarity in the
    user-item matrix of the training sequences, co-occurrences / sqrt(users of each); popularity breaks ties.

    >>> seqs = pl.DataFrame({"items": [["a", "b"], ["a", "b"], ["c", "d"], ["c"]]})
    >>> s = itemknn_scorer(seqs, 0)(pl.DataFrame({"history": [["a"]], "candidates": [["c", "b", "d"]]}))
    >>> s.argmax(), round(float(s[0, 1]), 2)   # a and b share both of their users: similarity 1
    (np.int64(1), 1.0)
    """
    co = CoOccurrence(train_seqs.select("items"))  # every row a user of its own, as the matrix has it
    backoff = _popularity_backoff(train_seqs, seed)

    def score(c: pl.DataFrame) -> np.ndarray:
        knn = np.array(
            [
                [sum(co.cosine(h, i) for h in set(hist)) for i in cands]
                for hist, cands in zip(c["history"].to_list(), c["candidates"].to_list())
            ],
            dtype=float,
        )
        # similarities are < 1 each: scale the back-off below the smallest nonzero evidence a sum can carry here
        return knn + backoff(c) * 1e-6

    return score


def sasrec_scorer(
    train_seqs: pl.DataFrame, valid: pl.DataFrame, test: pl.DataFrame, p: SasrecParams
) -> tuple[Scorer, dict, list[dict]]:
    """Train SASRec on the training sequences, early-stopped on `valid` (history, candidates, target_index).

    Returns the scorer, a checkpoint ({state_dict, items}: torch.save it) and the per-epoch log. Item index 0 is
    padding; the vocabulary is every training item plus every test candidate (sorted: the same run, the same ids)."""
    from mllmrec.evaluation import sasrec

    items = sorted(set(train_seqs["items"].explode().to_list()) | set(test["candidates"].explode().to_list()))
    index = {item: i + 1 for i, item in enumerate(items)}

    def to_idx(col: pl.Series) -> list[list[int]]:
        return [[index[i] for i in seq] for seq in col.to_list()]

    model, log = sasrec.train(
        to_idx(train_seqs["items"]),
        len(items),
        p,
        (to_idx(valid["history"]), to_idx(valid["candidates"]), valid["target_index"].to_numpy()),
    )

    def score(c: pl.DataFrame) -> np.ndarray:
        return sasrec.score_candidates(model, to_idx(c["history"]), to_idx(c["candidates"]))

    return score, {"state_dict": model.state_dict(), "items": items}, log
