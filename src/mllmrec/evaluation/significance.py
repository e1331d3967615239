"""Paired comparison of two methods scored on the SAME samples: mean difference, bootstrap CI and a p-value.

Two methods on the same test users are not independent: the per-sample difference removes the shared "easy user /
hard user" variance, so a paired test sees differences that two separate CIs hide (they overlap at n = 20).

>>> a, b = np.array([1.0] * 8 + [0.0] * 12), np.array([0.0] * 8 + [1.0] + [0.0] * 11)
>>> r = paired_difference(a, b, 1000, 0, binary=True)  # 9 discordant pairs: 8 for a, 1 for b
>>> round(r["diff"], 2), r["test"], round(r["p"], 4), r["significant"]
(0.35, 'mcnemar_exact', 0.0391, True)

Several comparisons read together need a correction (Holm), and a difference that is not significant says how many
samples it would need (McNemar power, Connor 1987):

>>> holm([0.01, 0.04, 0.03])
[0.03, 0.06, 0.06]
>>> mcnemar_samples_needed(diff=0.1, discordant=0.3)  # 10 points more hits, 30 % of pairs disagree
234
>>> round(mcnemar_detectable(discordant=0.3, n=100), 3)  # the smallest such difference 100 pairs detect
0.152
"""

import math
from statistics import NormalDist

import numpy as np
import polars as pl

from mllmrec.errors import UserError
from mllmrec.evaluation.metrics import bootstrap_ci, per_sample_scores


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar p: under H0 each discordant pair favours a or b with probability 1/2."""
    a_only, b_only = int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))
    n, k = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return 1.0
    # log C(n, i) for i = 0..k by the running product C(n, i+1) = C(n, i) (n - i) / (i + 1), summed in log space:
    # no huge integers (math.comb) and no 2^n overflow, so n in the millions works
    i = np.arange(k)
    log_comb = np.concatenate([[0.0], np.cumsum(np.log(n - i) - np.log(i + 1))])
    top = log_comb.max()
    log_tail = top + math.log(np.exp(log_comb - top).sum()) - n * math.log(2)
    return min(1.0, 2 * math.exp(log_tail))


def sign_flip_p(d: np.ndarray, n_resamples: int, seed: int) -> float:
    """Monte Carlo paired permutation test: under H0 each difference is as likely to have the other sign."""
    observed = abs(d.mean())
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, n_resamples, 100):  # chunks bound memory on large test sets
        signs = rng.choice([-1.0, 1.0], size=(min(100, n_resamples - start), len(d)))
        extreme += int(np.sum(np.abs((signs * d).mean(axis=1)) >= observed - 1e-12))  # float ties count
    return (extreme + 1) / (n_resamples + 1)


def paired_difference(a: np.ndarray, b: np.ndarray, n_resamples: int, seed: int, binary: bool) -> dict:
    """mean(a) - mean(b) with a paired bootstrap 95 % CI and a two-sided p (McNemar if binary, else sign flips)."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same samples: {len(a)} vs {len(b)} values")
    d = a - b
    lo, hi = bootstrap_ci(d, n_resamples, seed)  # resampling d's indices resamples the (a, b) pairs jointly
    p = mcnemar_exact(a, b) if binary else sign_flip_p(d, n_resamples, seed)
    return {
        "diff": float(d.mean()),
        "lo": lo,
        "hi": hi,
        "p": p,
        "test": "mcnemar_exact" if binary else "sign_flip",
        "n": len(d),
        "significant": p < 0.05,
    }


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: the k-th smallest p times (m - k + 1), never below
    the adjusted p before it; family-wise error <= alpha when each adjusted p is compared with alpha."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    adjusted, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        adjusted[i] = running
    return adjusted


def _z(alpha: float, power: float) -> tuple[float, float]:
    return NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)


def mcnemar_samples_needed(diff: float, discordant: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Pairs a two-sided McNemar test needs to detect a difference `diff` in hit rates with the given power, where
    a share `discordant` of pairs disagree (Connor 1987); None when there is no difference to detect."""
    delta, psi = abs(diff), discordant
    if delta == 0 or psi <= 0:
        return None
    z_a, z_b = _z(alpha, power)
    return math.ceil((z_a * math.sqrt(psi) + z_b * math.sqrt(max(psi - delta**2, 0.0))) ** 2 / delta**2)


def mcnemar_detectable(discordant: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest difference in hit rates that n pairs detect with the given power at this discordant share
    (mcnemar_samples_needed solved for the difference, by bisection); None without discordant pairs."""
    if discordant <= 0 or n <= 0:
        return None
    z_a, z_b = _z(alpha, power)

    def needed(delta: float) -> float:  # decreasing in delta on (0, discordant]
        return (z_a * math.sqrt(discordant) + z_b * math.sqrt(max(discordant - delta**2, 0.0))) ** 2 / delta**2

    lo, hi = 1e-9, discordant  # |p10 - p01| <= p10 + p01: no difference beyond the discordant share
    if needed(hi) > n:
        return None  # even every discordant pair one way would not reach the power at this n
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if needed(mid) > n else (lo, mid)
    return hi


def _check_samples(preds_a: pl.DataFrame, preds_b: pl.DataFrame, name_a: str, name_b: str) -> None:
    for name, preds in ((name_a, preds_a), (name_b, preds_b)):
        dup = preds.filter(pl.col("sample_id").is_duplicated())["sample_id"].unique(maintain_order=True)
        if dup.len():
            raise UserError(f"{name}: {dup.len()} duplicate sample_id(s), e.g. {dup.head(3).to_list()}")
    ids_a, ids_b = set(preds_a["sample_id"]), set(preds_b["sample_id"])
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b)[:3], sorted(ids_b - ids_a)[:3]
        raise UserError(
            f"cannot compare {name_a} ({len(ids_a)} samples) with {name_b} ({len(ids_b)} samples): "
            f"not the same samples; only in {name_a}: {only_a}, only in {name_b}: {only_b}"
        )


def compare(
    preds_a: pl.DataFrame,
    preds_b: pl.DataFrame,
    metrics: list[str],
    n_resamples: int,
    seed: int,
    name_a: str = "a",
    name_b: str = "b",
) -> dict[str, dict]:
    """Paired differences (a - b) per metric name ("HR@1", "NDCG@10") of two prediction frames with columns
    sample_id and target_rank (0-based, -1 = not predicted); refuses frames that are not on the same samples."""
    _check_samples(preds_a, preds_b, name_a, name_b)
    joined = (
        preds_a.select("sample_id", "target_rank")
        .join(preds_b.select("sample_id", "target_rank"), on="sample_id", suffix="_b")
        .sort("sample_id")
    )  # the seeded bootstrap sees the same order whatever the frames' row order
    ks = sorted({int(m.split("@")[1]) for m in metrics})
    scores_a = per_sample_scores(joined["target_rank"].to_numpy(), ks)
    scores_b = per_sample_scores(joined["target_rank_b"].to_numpy(), ks)
    return {
        m: paired_difference(scores_a[m], scores_b[m], n_resamples, seed, binary=m.startswith("HR@")) for m in metrics
    }


def position_bias(original: pl.DataFrame, reordered: dict[str, pl.DataFrame], params, summary: dict) -> dict:
    """HR@1 under each candidate order and its paired difference from the original order (McNemar p, bootstrap CI);
    `flagged` when HR@1 moves by more than half the width of its own 95 % CI (summary: the original's metrics)."""
    half_ci = (summary.get("HR@1_hi", summary["HR@1"]) - summary.get("HR@1_lo", summary["HR@1"])) / 2
    out: dict = {"HR@1": summary["HR@1"]}
    for how, preds in reordered.items():
        d = compare(preds, original, ["HR@1"], params.bootstrap, params.seed, how, "original")["HR@1"]
        out[how] = {
            "HR@1": float(np.mean(preds["target_rank"].to_numpy() == 0)),
            "diff": d["diff"],
            "lo": d["lo"],
            "hi": d["hi"],
            "p": d["p"],
        }
    out["flagged"] = any(abs(v["diff"]) > half_ci for k, v in out.items() if isinstance(v, dict))
    return out
