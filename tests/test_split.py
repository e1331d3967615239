"""Split and candidate rules: leave-one-out targets, history window, no negative seen by the user,
target exactly once, determinism."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mllmrec.data.split import draw_negatives, make_candidates, make_samples, user_sequences
from mllmrec.errors import UserError


def interactions(seqs: dict[str, list[str]]) -> pl.DataFrame:
    rows = [(u, item, t, t) for u, items in seqs.items() for t, item in enumerate(items)]
    return pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp", "position"], orient="row")


SEQS = {
    "u1": [f"i{j}" for j in range(12)],  # 12 items
    "u2": [f"i{j}" for j in range(20, 26)],  # 6 items: below min_inter 10 in the stage, kept here for windows
}
POOL = [f"i{j}" for j in range(200)]


def test_leave_one_out_targets_and_windows():
    seqs = user_sequences(interactions(SEQS))
    s = {r["sample_id"]: r for r in make_samples(seqs, min_inter=10, train_windows=1, stride=1).iter_rows(named=True)}
    assert s["u1:test:11"]["target"] == "i11" and s["u1:test:11"]["history"] == [f"i{j}" for j in range(2, 11)]
    assert s["u1:valid:10"]["target"] == "i10" and s["u1:valid:10"]["history"] == [f"i{j}" for j in range(1, 10)]
    assert s["u1:train:9"]["target"] == "i9" and s["u1:train:9"]["history"] == [f"i{j}" for j in range(9)]
    # a short user keeps shorter histories (never padded with other users' items)
    assert s["u2:train:3"]["history"] == ["i20", "i21", "i22"]


def test_sliding_windows_go_back_in_time_and_stop_at_one_history_item():
    seqs = user_sequences(interactions({"u": [f"i{j}" for j in range(6)]}))
    samples = make_samples(seqs, min_inter=4, train_windows=10, stride=2)
    train = samples.filter(pl.col("split") == "train")
    assert train["target"].to_list() == ["i1", "i3"]  # positions 3 and 1; position -1 does not exist
    assert train["history"].to_list() == [["i0"], ["i0", "i1", "i2"]]


def candidates(n_neg: int, seed: int = 0) -> pl.DataFrame:
    seqs = user_sequences(interactions(SEQS))
    return make_candidates(make_samples(seqs, 10, 3, 1), seqs, POOL, n_neg, seed)


@pytest.mark.parametrize("n_neg", [9, 99])
def test_candidate_rules(n_neg):
    cands = candidates(n_neg)
    for row in cands.iter_rows(named=True):
        c = row["candidates"]
        assert len(c) == n_neg + 1 and len(set(c)) == n_neg + 1
        assert c.count(row["target"]) == 1 and c[row["target_index"]] == row["target"]
        negatives = set(c) - {row["target"]}
        assert not negatives & set(SEQS[row["user_id"]])  # nothing the user ever interacted with
        assert negatives <= set(POOL)


def test_candidates_are_deterministic_and_seed_dependent():
    a, b, c = candidates(9, seed=3), candidates(9, seed=3), candidates(9, seed=4)
    assert a.equals(b)
    assert not a["candidates"].equals(c["candidates"])
    # the target is shuffled into varying positions, not always first
    assert candidates(99)["target_index"].n_unique() > 1


def test_negatives_are_uniform_over_unseen_items():
    rng = np.random.default_rng(0)
    n_items, seen = 50, np.array([0 * 50 + 3, 0 * 50 + 7])  # user 0 has seen items 3 and 7
    draws = draw_negatives(np.zeros(4000, dtype=np.int64), seen, n_items, 9, rng)
    counts = np.bincount(draws.ravel(), minlength=n_items)
    assert counts[3] == counts[7] == 0
    expected = 4000 * 9 / 48
    assert np.all(np.abs(np.delete(counts, [3, 7]) - expected) < 5 * np.sqrt(expected))


def test_user_with_too_few_unseen_items_is_a_clear_error():
    seqs = user_sequences(interactions({"heavy": POOL[:195]}))
    with pytest.raises(UserError, match="user 'heavy'.*cannot draw 9 unseen negatives"):
        make_candidates(make_samples(seqs, 10, 1, 1), seqs, POOL, 9, 0)


def test_no_user_reaching_min_inter_names_min_inter(tmp_path):
    """Everyone filtered out: the error names split.min_inter and the longest history, not num_negatives."""
    (tmp_path / "params.yaml").write_text("split:\n  min_inter: 50\n  num_negatives: [9]\n")
    (tmp_path / "data/ingest").mkdir(parents=True)
    pl.DataFrame(
        {
            "user_id": ["u1"] * 12 + ["u2"] * 5,
            "item_id": [f"i{j}" for j in range(12)] + ["i0"] * 5,
            "position": list(range(12)) + list(range(5)),
        }
    ).write_parquet(tmp_path / "data/ingest/interactions.parquet")
    stage = Path(__file__).resolve().parents[1] / "stages/split.py"
    r = subprocess.run([sys.executable, str(stage)], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "split.min_inter = 50" in r.stderr and "most active has 12" in r.stderr and "num_negatives" not in r.stderr
