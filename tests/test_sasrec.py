"""SASRec correctness: causal, padding-invariant, learns a sequential pattern popularity cannot."""

import numpy as np
import torch

from mllmrec.config import SasrecParams
from mllmrec.evaluation.sasrec import SASRec, pad_left, score_candidates, train

P = SasrecParams(
    max_len=12, hidden=32, blocks=2, heads=2, dropout=0.1, epochs=40, patience=40, batch_size=16, threads=1
)


def test_causal_future_items_do_not_change_earlier_states():
    torch.manual_seed(0)
    model = SASRec(30, P).eval()
    a = torch.tensor([[0, 0, 3, 5, 7, 9]])
    b = torch.tensor([[0, 0, 3, 5, 7, 22]])  # only the last item differs
    ha, hb = model(a), model(b)
    assert torch.allclose(ha[:, :5], hb[:, :5], atol=1e-6)
    assert not torch.allclose(ha[:, 5], hb[:, 5])


def test_left_padding_does_not_change_the_prediction():
    torch.manual_seed(0)
    model = SASRec(30, P).eval()
    short, long = pad_left([[3, 5, 7]], 4), pad_left([[3, 5, 7]], 12)
    cand = torch.tensor([[1, 2, 3, 4]])
    assert torch.allclose(model.score(short, cand), model.score(long, cand), atol=1e-5)
    assert not torch.isnan(model(long)).any()


def test_learns_successor_pattern_that_popularity_cannot():
    # every user walks the catalogue in order from a random start: the next item is always previous + 1
    rng = np.random.default_rng(0)
    n_items = 40
    seqs = [[(s + j) % n_items + 1 for j in range(10)] for s in rng.integers(0, n_items, 200)]
    hist = [s[:-1] for s in seqs[:50]]
    targets = [s[-1] for s in seqs[:50]]
    cands = [[t] + list(rng.choice([i for i in range(1, n_items + 1) if i != t], 9, replace=False)) for t in targets]
    model, log = train([s[:-1] for s in seqs], n_items, P, (hist, cands, np.zeros(50, dtype=int)))
    scores = score_candidates(model, hist, cands)
    hr1 = (scores.argmax(1) == 0).mean()  # all items are equally popular: popularity gets ~0.1 here
    assert hr1 > 0.8, hr1
    assert log[-1]["loss"] < log[0]["loss"]


def test_sasrec_scorer_on_split_frames():
    """The baseline stage's wiring (mllmrec.evaluation.baselines.sasrec_scorer) on split-shaped frames: string item ids, a test
    candidate never seen in training, one score per candidate, the successor ranked first."""
    import polars as pl

    from mllmrec.evaluation.baselines import sasrec_scorer

    rng = np.random.default_rng(1)
    name = [f"m{i}" for i in range(30)]
    walks = [[name[(s + j) % 30] for j in range(10)] for s in rng.integers(0, 30, 150)]
    train_seqs = pl.DataFrame({"items": [w[:-1] for w in walks]})
    frame = pl.DataFrame(
        {
            "history": [w[:-1] for w in walks[:40]],
            "candidates": [[w[-1], "unseen", *[x for x in name if x not in w][:3]] for w in walks[:40]],
            "target_index": [0] * 40,
        }
    )
    scorer, checkpoint, log = sasrec_scorer(train_seqs, frame, frame, P)
    scores = scorer(frame)
    assert scores.shape == (40, 5) and "unseen" in checkpoint["items"] and len(log) >= 1
    assert (scores.argmax(1) == 0).mean() > 0.8


def test_a_busy_box_is_named_with_the_param_to_set(monkeypatch, capsys):
    """Thread count changes the weights, so it is never picked from the load; the stage says what to set instead."""
    from mllmrec.evaluation import sasrec

    monkeypatch.setattr(sasrec.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(sasrec, "busy_processes", lambda: 1)
    sasrec.warn_if_busy(2)
    assert "1 other process(es) running on 2 cores" in capsys.readouterr().out
    sasrec.warn_if_busy(1)
    monkeypatch.setattr(sasrec, "busy_processes", lambda: 0)
    sasrec.warn_if_busy(2)
    assert capsys.readouterr().out == ""
    assert sasrec.busy_processes() >= 0  # the real reading works here
