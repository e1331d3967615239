"""Markov and ItemKNN baselines on hand-computed counts (mllmrec.evaluation.baselines)."""

import numpy as np
import polars as pl

from mllmrec.evaluation.baselines import itemknn_scorer, markov_scorer

SEQS = pl.DataFrame({"items": [["a", "b", "c"], ["a", "b", "d"], ["a", "c"], ["x", "d", "d", "d"]]})
CANDS = pl.DataFrame({"history": [["q", "a"], ["q", "b"], ["z"]], "candidates": [["d", "c", "b"]] * 3})


def test_markov_counts_what_followed_the_last_item_and_backs_off_to_popularity():
    s = markov_scorer(SEQS, 0)(CANDS)
    # after a: b twice, c once, d never -> 2, 1, 0 plus a popularity share below 1
    assert np.floor(s[0]).tolist() == [0, 1, 2]
    # after b: c once, d once: the tie goes to the more popular d (4 interactions vs c's 2)
    assert np.floor(s[1]).tolist() == [1, 1, 0] and s[1, 0] > s[1, 1]
    # z never seen: popularity alone, d (4) > b (2) ~ c (2), all below one transition
    assert (s[2] < 1).all() and s[2].argmax() == 0


def test_itemknn_sums_cosine_similarities_of_the_history():
    s = itemknn_scorer(SEQS, 0)(CANDS)
    # users: {a,b,c} {a,b,d} {a,c} {x,d}; a in 3 users, b in 2, c in 2, d in 2
    # sim(a,b) = 2/sqrt(3*2), sim(a,c) = 2/sqrt(3*2), sim(a,d) = 1/sqrt(3*2)
    np.testing.assert_allclose(s[0], [1 / 6**0.5, 2 / 6**0.5, 2 / 6**0.5], atol=1e-5)
    # history b: sim(b,d) = 1/2, sim(b,c) = 1/2, b itself is not similar to itself (never counted)
    np.testing.assert_allclose(s[1], [0.5, 0.5, 0.0], atol=1e-5)
    assert s[1, 0] > s[1, 1]  # tie broken by popularity: d (4 interactions) over c (2)
