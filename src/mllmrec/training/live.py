"""SFT and GRPO logging with DVCLive: the Trainer's log (loss, reward and its components, KL, ...) and the valid monitor's
points (valid/train HR@K, NDCG@K) as step metrics.

    from mllmrec.training.live import LiveLog
    live = LiveLog(paths.SFT_LIVE_METRICS, paths.SFT_LIVE_PLOTS, SFT_SERIES, params.monitor.ks)
    trainer = SFTTrainer(..., callbacks=[monitor, live])

One folder per stage (mllmrec.paths.SFT_LIVE, GRPO_LIVE) in DVCLive's layout: plots/metrics/<series>.tsv (columns
step and the series: one row per step that has a value, so the monitor's series have no blank rows at the steps it
skipped) and metrics.json (each series' latest value and `step`, rewritten at every logged step: `dvc exp show` reads
it as the stage's metrics, also while the run trains).

Same run, same bytes: no timestamps, values rounded like the old CSVs, no dvc.yaml, report, experiment save or system
monitor. Resume: the folder is rebuilt from the Trainer's log history, which a checkpoint restores, so a resumed run
writes one continuous curve (what it logged after its last checkpoint before the kill is dropped, as the Trainer
drops it). Only the main process writes.
"""

import logging
import math
from pathlib import Path

from transformers import TrainerCallback

from mllmrec.training.monitor import monitor_columns

SFT_SERIES = {"epoch": "epoch", "loss": "loss", "learning_rate": "learning_rate"}  # Trainer log key -> series name
GRPO_SERIES = {
    "epoch": "epoch",
    "reward": "reward",
    "reward_std": "reward_std",
    "rewards/format/mean": "reward_format",
    "rewards/hit/mean": "reward_hit",
    "rewards/valid_miss/mean": "reward_valid_miss",
    "frac_reward_zero_std": "frac_reward_zero_std",
    "kl": "kl",
    "entropy": "entropy",
    "completions/mean_length": "completion_length",
    "loss": "loss",
    "learning_rate": "learning_rate",
}


def open_live(folder: Path):
    """A DVCLive logger on `folder`, emptied (resume=False: the log history is replayed into it instead), that writes
    nothing but its metrics and plots: no timestamps (log_metric's default), dvc.yaml (the project's own declares the
    files), report, `dvc exp save` or system monitor."""
    from dvclive import Live

    logging.getLogger("dvclive").setLevel(logging.WARNING)  # its INFO line names a random experiment it never saves
    return Live(dir=str(folder), resume=False, report=None, save_dvc_exp=False, dvcyaml=None, monitor_system=False)


def entry_series(entry: dict, series: dict[str, str], monitor_cols: list[str]) -> dict[str, float]:
    """The series one log-history entry holds: Trainer keys renamed by `series`, the monitor's columns as they are;
    None and NaN left out (no point, not a zero), floats rounded to 6 digits (the bytes of a rerun).

    >>> entry_series({"step": 3, "epoch": 0.5, "rewards/hit/mean": 0.25, "kl": float("nan")}, GRPO_SERIES, [])
    {'epoch': 0.5, 'reward_hit': 0.25}
    >>> entry_series({"step": 3, "epoch": 0.5, "valid_HR@1": 0.1}, SFT_SERIES, ["valid_HR@1"])  # a monitor point
    {'valid_HR@1': 0.1}
    """
    if "step" not in entry or "train_runtime" in entry:
        return {}  # the end-of-training summary (durations)
    monitor = monitor_cols and monitor_cols[0] in entry
    # a monitor point's epoch repeats the Trainer's at that step: the epoch series comes from the Trainer's entries
    names = {c: c for c in monitor_cols} if monitor else series
    out = {}
    for key, name in names.items():
        v = entry.get(key)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            out[name] = round(v, 6) if isinstance(v, float) else v
    return out


class LiveLog(TrainerCallback):
    """Writes the Trainer's log history to a DVCLive folder as it grows (see the module docstring). Put it after the
    valid monitor in the callbacks: the monitor appends its points in the same events this one flushes in."""

    def __init__(self, metrics: Path, plots: Path, series: dict[str, str], ks: list[int]):
        """`metrics`, `plots`: the files DVCLive writes, named by the caller (its stage declares them): DVCLive's
        layout in the folder of `metrics` (<folder>/metrics.json, <folder>/plots/metrics)."""
        self.folder = Path(metrics).parent
        if (Path(metrics).name, Path(plots)) != ("metrics.json", self.folder / "plots/metrics"):
            raise ValueError(f"{metrics}, {plots}: not DVCLive's layout (<dir>/metrics.json, <dir>/plots/metrics)")
        self.series, self.monitor_cols = series, monitor_columns(ks)
        self.live = None
        self._seen = 0  # log-history entries already written
        self._logged: set[tuple[str, int]] = set()

    def flush(self, state) -> None:
        """Write the entries added since the last flush; the first flush replays what a checkpoint restored."""
        if not state.is_world_process_zero:
            return
        if self.live is None:
            self.live = open_live(self.folder)
        new = state.log_history[self._seen :]
        self._seen = len(state.log_history)
        for entry in new:
            for name, value in entry_series(entry, self.series, self.monitor_cols).items():
                self.log(name, value, int(entry["step"]))
        if new:
            # sorted, step last: the bytes of metrics.json do not depend on how the history was split between flushes
            self.live.summary = {k: v for k, v in sorted(self.live.summary.items()) if k != "step"}
            self.live.make_summary()  # metrics.json: latest values + step, for `dvc exp show` mid-run

    def log(self, name: str, value: float, step: int) -> None:
        if (name, step) in self._logged:
            return  # one point per step and series (the first), as the old per-step CSV rows had
        self._logged.add((name, step))
        self.live.step = step
        self.live.log_metric(name, value, timestamp=False)

    # not on_train_begin: a checkpoint's log history is restored after it, before the first step
    def on_step_begin(self, args, state, control, **kw):
        self.flush(state)

    def on_step_end(self, args, state, control, **kw):
        self.flush(state)

    def on_log(self, args, state, control, **kw):
        self.flush(state)

    def on_train_end(self, args, state, control, **kw):
        self.flush(state)
