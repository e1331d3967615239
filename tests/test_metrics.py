"""Metric values on hand-computed cases."""

import math

import numpy as np
import pytest

from mllmrec.evaluation.metrics import (
    bootstrap_ci,
    hit_at_k,
    ndcg_at_k,
    out_of_candidates,
    per_sample_scores,
    summarize,
    target_rank,
)


def test_hit_and_ndcg_hand_computed():
    ranked = ["b", "c", "a", "d"]
    assert [hit_at_k(ranked, "a", k) for k in (1, 2, 3, 10)] == [0.0, 0.0, 1.0, 1.0]
    assert ndcg_at_k(ranked, "a", 2) == 0.0
    assert ndcg_at_k(ranked, "a", 3) == pytest.approx(1 / math.log2(4))  # rank 3 -> 1/log2(3+1) = 0.5
    assert ndcg_at_k(["a"], "a", 1) == 1.0
    assert hit_at_k([], "a", 5) == 0.0 and ndcg_at_k([], "a", 5) == 0.0


def test_out_of_candidate_prediction_is_a_miss_at_its_position():
    cands = ["a", "b", "c"]
    ranked = ["zzz", "a"]  # the model named an item it was not offered first
    assert out_of_candidates(ranked, cands) == 1
    assert target_rank(ranked, "a") == 1  # the invented id still occupies rank 0
    assert hit_at_k(ranked, "a", 1) == 0.0 and hit_at_k(ranked, "a", 2) == 1.0


def test_vectorized_scores_match_scalar_functions():
    rng = np.random.default_rng(0)
    ranks = rng.integers(-1, 12, size=200)
    scores = per_sample_scores(ranks, [1, 3, 5, 10])
    items = [f"i{j}" for j in range(12)]
    for r, hr10, nd5 in zip(ranks, scores["HR@10"], scores["NDCG@5"]):
        ranked = items if r >= 0 else items[:0]
        target = items[r] if r >= 0 else "missing"
        assert hr10 == hit_at_k(ranked, target, 10)
        assert nd5 == pytest.approx(ndcg_at_k(ranked, target, 5))


def test_bootstrap_ci_brackets_the_mean_and_is_seeded():
    values = np.array([1.0] * 30 + [0.0] * 70)
    lo, hi = bootstrap_ci(values, 2000, seed=1)
    assert lo < 0.3 < hi and 0.18 < lo and hi < 0.42  # binomial sd ~ 0.046 -> about +-0.09
    assert bootstrap_ci(values, 2000, seed=1) == (lo, hi)
    assert all(math.isnan(x) for x in bootstrap_ci(values, 0, seed=1))


def test_summarize_rates():
    ranks = np.array([0, 2, -1, -1])
    valid = np.array([True, True, True, False])
    m = summarize(ranks, [1, 3], n_resamples=100, seed=0, valid=valid, n_out_of_candidates=3)
    assert m["n"] == 4
    assert m["HR@1"] == 0.25 and m["HR@3"] == 0.5
    assert m["NDCG@3"] == pytest.approx((1 + 0.5) / 4)
    assert m["valid_rate"] == 0.75 and m["out_of_candidates"] == 3
    assert m["HR@3_lo"] <= m["HR@3"] <= m["HR@3_hi"]


def test_docstring_examples():
    import doctest

    import mllmrec.evaluation.metrics

    assert doctest.testmod(mllmrec.evaluation.metrics).failed == 0
