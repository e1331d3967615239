"""Paired comparisons on hand-made score arrays: differences, CIs, McNemar and sign-flip p-values, refusals."""

import math

import numpy as np
import polars as pl
import pytest

from mllmrec.errors import UserError
from mllmrec.evaluation.significance import compare, mcnemar_exact, paired_difference


def test_identical_methods_differ_by_nothing():
    a = np.array([1.0, 0.0, 1.0, 1.0, 0.0] * 20)
    for binary in (True, False):
        r = paired_difference(a, a.copy(), 500, 0, binary)
        assert (r["diff"], r["lo"], r["hi"], r["p"], r["significant"]) == (0.0, 0.0, 0.0, 1.0, False)
    assert paired_difference(a, a, 500, 0, True)["test"] == "mcnemar_exact"
    assert paired_difference(a, a, 500, 0, False)["test"] == "sign_flip"


def test_thirty_more_hits_in_a_hundred_is_significant():
    rng = np.random.default_rng(3)
    b = (rng.random(100) < 0.3).astype(float)
    a = b.copy()
    a[np.flatnonzero(b == 0)[:30]] = 1.0  # a hits every sample b hits, plus 30 more
    r = paired_difference(a, b, 2000, 0, binary=True)
    assert r["diff"] == pytest.approx(0.30) and r["n"] == 100
    assert r["p"] < 0.001 and r["significant"]
    assert 0 < r["lo"] < 0.30 < r["hi"]  # the CI excludes 0
    assert r["p"] == pytest.approx(2 / 2**30)  # all 30 discordant pairs favour a


def test_mcnemar_matches_the_hand_computed_binomial():
    # 10 discordant pairs split 9 / 1 (plus concordant pairs, which do not count)
    a = np.array([1.0] * 9 + [0.0] + [1.0] * 5 + [0.0] * 5)
    b = np.array([0.0] * 9 + [1.0] + [1.0] * 5 + [0.0] * 5)
    expected = 2 * (math.comb(10, 0) + math.comb(10, 1)) / 2**10
    assert expected == 0.021484375
    assert mcnemar_exact(a, b) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_exact(b, a) == pytest.approx(expected, rel=1e-12)  # two-sided: symmetric
    assert mcnemar_exact(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == 1.0  # a 1 / 1 split: no evidence


def test_mcnemar_works_for_large_n():
    def pairs(a_only: int, b_only: int) -> tuple[np.ndarray, np.ndarray]:
        a = np.r_[np.ones(a_only), np.zeros(b_only), np.ones(1000)]  # + 1000 concordant hits
        return a, np.r_[np.zeros(a_only), np.ones(b_only), np.ones(1000)]

    assert mcnemar_exact(*pairs(50_000, 50_000)) == 1.0  # 100k discordant pairs: 2^100000 overflows a float
    z = 999 / math.sqrt(100_000)  # normal approximation with continuity correction, 50.5k vs 49.5k
    assert mcnemar_exact(*pairs(50_500, 49_500)) == pytest.approx(math.erfc(z / math.sqrt(2)), rel=0.02)


def test_pure_noise_pair_is_not_significant():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=200), rng.normal(size=200)
    r = paired_difference(a, b, 2000, 0, binary=False)
    assert r["test"] == "sign_flip" and r["p"] > 0.2 and not r["significant"]
    assert r["lo"] < 0 < r["hi"]


def test_seeded_output_is_identical_twice():
    rng = np.random.default_rng(1)
    a, b = rng.random(50), rng.random(50)
    assert paired_difference(a, b, 300, 5, False) == paired_difference(a, b, 300, 5, False)
    assert paired_difference(a, b, 300, 5, False) != paired_difference(a, b, 300, 6, False)


def frame(ranks: list[int], ids: list[str] | None = None) -> pl.DataFrame:
    return pl.DataFrame({"sample_id": ids or [f"u{i}" for i in range(len(ranks))], "target_rank": ranks})


def test_compare_aligns_by_sample_id():
    a = frame([0, 0, 2, -1])
    b = frame([0, 7, 0, 9], ["u3", "u2", "u1", "u0"])  # the same samples in another row order
    r = compare(a, b, ["HR@1", "HR@5", "NDCG@10"], 200, 0, "sft", "zeroshot")
    assert set(r) == {"HR@1", "HR@5", "NDCG@10"}
    assert r["HR@1"]["diff"] == pytest.approx((2 - 2) / 4) and r["HR@1"]["test"] == "mcnemar_exact"
    assert r["HR@5"]["diff"] == pytest.approx((3 - 2) / 4)  # u0: 0 vs 9, u2: 2 vs 7, u3: miss vs 0
    assert r["NDCG@10"]["test"] == "sign_flip" and r["NDCG@10"]["n"] == 4
    assert compare(a, b.reverse(), ["HR@1"], 200, 0) == compare(a, b, ["HR@1"], 200, 0)


def test_compare_refuses_different_sample_sets():
    a, b = frame([0, 1, 2]), frame([0, 1, 2], ["u0", "u1", "u9"])
    with pytest.raises(UserError, match=r"sft-generative \(3 samples\).*random \(3 samples\)") as e:
        compare(a, b, ["HR@1"], 100, 0, "sft-generative", "random")
    assert "u2" in str(e.value) and "u9" in str(e.value)
    with pytest.raises(UserError, match="random.*duplicate"):
        compare(a, frame([0, 1, 2, 3], ["u0", "u1", "u2", "u2"]), ["HR@1"], 100, 0, "sft", "random")
