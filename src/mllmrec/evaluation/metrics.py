"""Pure ranking metrics over a ranked list of predicted ids and the one true target.

A prediction outside the sample's candidate set keeps its rank position but can never be a hit, and is counted:
a model cannot gain by naming items it was not offered, nor hide the miss by being dropped.

>>> hit_at_k(["b", "a", "c"], "a", 1), hit_at_k(["b", "a", "c"], "a", 3)
(0.0, 1.0)
>>> round(ndcg_at_k(["b", "a", "c"], "a", 3), 4)  # 1 / log2(2 + 1)
0.6309
"""

import math

import numpy as np


def target_rank(ranked: list[str], target: str) -> int | None:
    """0-based rank of the target among the predictions, None if absent (the target is always a candidate)."""
    return ranked.index(target) if target in ranked else None


def hit_at_k(ranked: list[str], target: str, k: int) -> float:
    rank = target_rank(ranked, target)
    return float(rank is not None and rank < k)


def ndcg_at_k(ranked: list[str], target: str, k: int) -> float:
    """One relevant item, so IDCG = 1 and NDCG = 1 / log2(rank + 2) when the target is in the top k."""
    rank = target_rank(ranked, target)
    return 1.0 / math.log2(rank + 2) if rank is not None and rank < k else 0.0


def out_of_candidates(ranked: list[str], candidates: list[str]) -> int:
    """How many predicted ids are not in the candidate set (each one is a miss at its position).

    >>> out_of_candidates(["x", "a"], ["a", "b"])
    1
    """
    allowed = set(candidates)
    return sum(item not in allowed for item in ranked)


def per_sample_scores(ranks: np.ndarray, ks: list[int]) -> dict[str, np.ndarray]:
    """Vectorized HR@K / NDCG@K per sample from 0-based target ranks (-1 = target not predicted)."""
    found = ranks >= 0
    gain = np.where(found, 1.0 / np.log2(np.maximum(ranks, 0) + 2), 0.0)
    scores = {}
    for k in ks:
        inside = found & (ranks < k)
        scores[f"HR@{k}"] = inside.astype(float)
        scores[f"NDCG@{k}"] = np.where(inside, gain, 0.0)
    return scores


def bootstrap_ci(values: np.ndarray, n_resamples: int, seed: int, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (samples resampled with replacement, seeded).

    >>> bootstrap_ci(np.ones(10), 100, 0)
    (1.0, 1.0)
    """
    if n_resamples == 0 or len(values) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, 100):  # chunks bound memory on large test sets
        stop = min(start + 100, n_resamples)
        idx = rng.integers(0, len(values), size=(stop - start, len(values)))
        means[start:stop] = values[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def summarize(
    ranks: np.ndarray,
    ks: list[int],
    n_resamples: int,
    seed: int,
    valid: np.ndarray | None = None,
    n_out_of_candidates: int = 0,
) -> dict:
    """Mean HR@K / NDCG@K with 95 % bootstrap CIs, valid-output rate and out-of-candidate count."""
    result: dict = {"n": len(ranks)}
    for name, values in per_sample_scores(ranks, ks).items():
        lo, hi = bootstrap_ci(values, n_resamples, seed)
        result[name] = float(values.mean()) if len(values) else math.nan
        result[f"{name}_lo"], result[f"{name}_hi"] = lo, hi
    result["valid_rate"] = float(valid.mean()) if valid is not None and len(valid) else 1.0
    result["out_of_candidates"] = int(n_out_of_candidates)
    return result
