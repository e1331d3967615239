"""mllmrec.training.live: the Trainer's log history as DVCLive step metrics (SFT and GRPO).

.venv/bin/pytest tests/test_live.py -q
"""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from mllmrec.training.live import GRPO_SERIES, SFT_SERIES, LiveLog

HISTORY = [  # a GRPO log history: monitor points (step 0, 2), trainer steps, the end-of-training summary
    {"step": 0, "epoch": 0.0, "valid_HR@1": 0.2, "valid_NDCG@1": 0.2},
    {"step": 1, "epoch": 0.25, "reward": -0.5, "kl": 0.0, "rewards/hit/mean": 0.1, "entropy": float("nan")},
    {"step": 2, "epoch": 0.5, "reward": 0.1234567891},
    {"step": 2, "epoch": 0.5, "valid_HR@1": 0.3, "valid_NDCG@1": 0.3},
    {"step": 3, "epoch": 0.75, "reward": 0.2},
    {"step": 4, "epoch": 1.0, "reward": 0.3},
    {"step": 4, "train_runtime": 9.0, "train_loss": 0.1},
]


def run(folder: Path, chunks: list[list[dict]], main: bool = True, restored: list[dict] | None = None) -> None:
    """Feed a LiveLog the history as a Trainer grows it: `restored` (a checkpoint's) first, then each chunk per event."""
    log = LiveLog(folder / "metrics.json", folder / "plots/metrics", GRPO_SERIES, [1])
    state = SimpleNamespace(log_history=list(restored or []), is_world_process_zero=main)
    for chunk in chunks:
        state.log_history.extend(chunk)
        log.on_step_end(None, state, None)
    log.on_train_end(None, state, None)


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_series_files_and_summary(tmp_path):
    """One file per series (step, value), a point only where a step has one, floats rounded, NaN left out; metrics.json:
    the latest values and the step."""
    run(tmp_path / "live", [[h] for h in HISTORY])
    got = files(tmp_path / "live")
    assert set(got) == {
        "metrics.json",
        *(f"plots/metrics/{n}.tsv" for n in ["epoch", "reward", "kl", "reward_hit", "valid_HR@1", "valid_NDCG@1"]),
    }
    assert got["plots/metrics/reward.tsv"].decode().splitlines() == [
        "step\treward",
        "1\t-0.5",
        "2\t0.123457",
        "3\t0.2",
        "4\t0.3",
    ]
    assert got["plots/metrics/valid_HR@1.tsv"].decode().splitlines() == ["step\tvalid_HR@1", "0\t0.2", "2\t0.3"]
    assert got["plots/metrics/epoch.tsv"].decode().count("\n") == 5  # the monitor's epoch is not a second point
    summary = json.loads(got["metrics.json"])
    assert list(summary.items()) == [
        ("epoch", 1.0),
        ("kl", 0.0),
        ("reward", 0.3),
        ("reward_hit", 0.1),
        ("valid_HR@1", 0.3),
        ("valid_NDCG@1", 0.3),
        ("step", 4),
    ]


def test_same_history_same_bytes_and_a_resume_rebuilds_one_curve(tmp_path):
    """Two runs write the same bytes; a run killed after step 3 with a checkpoint at step 2 and resumed writes what
    an uninterrupted run writes: the folder is rebuilt from the restored history (steps after the checkpoint that the
    killed run logged are not kept twice)."""
    run(tmp_path / "a", [[h] for h in HISTORY])
    run(tmp_path / "b", [HISTORY[:3], HISTORY[3:]])
    run(tmp_path / "resumed", [[h] for h in HISTORY[:5]])  # the killed run got to step 3
    run(tmp_path / "resumed", [HISTORY[4:]], restored=HISTORY[:4])  # the checkpoint at step 2 restored
    assert files(tmp_path / "a") == files(tmp_path / "b") == files(tmp_path / "resumed")


def test_only_the_main_process_writes(tmp_path):
    run(tmp_path / "rank1", [HISTORY], main=False)
    assert not (tmp_path / "rank1").exists()


def test_refuses_another_layout(tmp_path):
    with pytest.raises(ValueError, match="layout"):
        LiveLog(tmp_path / "metrics.json", tmp_path / "plots", SFT_SERIES, [1])


def test_sft_series_names():
    assert set(SFT_SERIES.values()) == {"epoch", "loss", "learning_rate"}
