"""Valid-split HR@K during training (SFT and GRPO): the learning curve a user reads next to the loss or reward.

    from mllmrec.training.monitor import ValidMonitor, valid_subset, valid_rows
    valid = valid_subset(Path("data/split"), params.monitor)             # fixed, seeded valid samples
    trainer = SFTTrainer(..., callbacks=[ValidMonitor(valid, texts, tokenizer, prompt, thinking, params.monitor, "sft")])
    rows = valid_rows(trainer.state.log_history, params.monitor.ks)     # one row per evaluated step

Every `monitor.every` optimizer steps (and at step 0 and at the end) the model being trained ranks the fixed valid
subset by exact likelihood, with the evaluate stage's own scorer (mllmrec.evaluation.policy), so the curve measures what
`evaluate` will measure. With `monitor.train_samples`, a fixed subset of the samples being trained on is ranked at the
same steps (columns train_HR@K): train HR rising while valid HR stays flat means the model memorises its training
samples without generalising (too few samples); both flat means it does not fit them either (lr, steps, capacity).
The points go into Trainer's log_history, which checkpoints carry: a resumed run still
writes the whole curve. With several processes each rank scores a shard and the shards are gathered.
"""

import time
from pathlib import Path

import numpy as np
import polars as pl
from transformers import TrainerCallback

from mllmrec.config import MonitorParams
from mllmrec.data.split import seeded_subset
from mllmrec.errors import UserError
from mllmrec.io import read_parquet


def valid_subset(split_dir: Path, params: MonitorParams) -> pl.DataFrame | None:
    """The monitor's fixed valid samples (None when the monitor is off); refuses a subset larger than the split."""
    if not params.every:
        return None
    cands = read_parquet(split_dir / f"candidates_n{params.num_negatives}.parquet", "split")
    valid = cands.filter(pl.col("split") == "valid")
    if params.samples > valid.height:
        raise UserError(
            f"params.yaml: monitor.samples = {params.samples} but the valid split of "
            f"candidates_n{params.num_negatives}.parquet has {valid.height} samples; lower it"
        )
    return seeded_subset(valid, params.samples, params.seed)


def train_subset(samples: pl.DataFrame, params: MonitorParams) -> pl.DataFrame | None:
    """The monitor's fixed subset of the training samples (None when off); refuses more than the training data holds."""
    if not params.every or not params.train_samples:
        return None
    if params.train_samples > samples.height:
        raise UserError(
            f"params.yaml: monitor.train_samples = {params.train_samples} but the stage trains on "
            f"{samples.height} samples; lower it"
        )
    return seeded_subset(samples, params.train_samples, params.seed)


def target_ranks(ranked: list[list[str]], targets: list[str]) -> np.ndarray:
    return np.array([r.index(t) if t in r else -1 for r, t in zip(ranked, targets)])


def monitor_columns(ks: list[int]) -> list[str]:
    """The names of the monitor's points, valid ones first (the first one marks a monitor entry in the log history).

    >>> monitor_columns([1, 5])
    ['valid_HR@1', 'valid_HR@5', 'valid_NDCG@1', 'valid_NDCG@5', 'train_HR@1', 'train_HR@5', 'train_NDCG@1', 'train_NDCG@5']
    """
    return [f"{split}_{m}@{k}" for split in ("valid", "train") for m in ("HR", "NDCG") for k in ks]


def valid_rows(log_history: list[dict], ks: list[int]) -> list[dict]:
    """The monitor's points only (step, epoch, valid [and train] HR@K / NDCG@K): no blank cells at steps it skipped."""
    cols = monitor_columns(ks)
    rows = {
        int(h["step"]): {
            "step": int(h["step"]),
            "epoch": round(h.get("epoch") or 0.0, 4),
            **{c: round(h[c], 6) for c in cols if c in h},
        }
        for h in log_history
        if cols[0] in h
    }
    return [rows[s] for s in sorted(rows)]


class ValidMonitor(TrainerCallback):
    """Valid HR@K by likelihood ranking every `params.every` steps, at step 0 and at the end (see module docstring);
    `train`: the train_subset ranked at the same steps (or None)."""

    def __init__(
        self,
        valid: pl.DataFrame | None,
        texts,
        tokenizer,
        prompt_params,
        enable_thinking,
        params: MonitorParams,
        stage: str,
        train: pl.DataFrame | None = None,
    ):
        self.valid, self.train, self.texts, self.tok = valid, train, texts, tokenizer
        self.prompt, self.thinking, self.p, self.stage = prompt_params, enable_thinking, params, stage
        self.eval_seconds = 0.0
        self._started = False

    def evaluate(self, model, state) -> None:
        """Valid (and train) HR@K on this process's shard; shards are gathered and merged by sample_id on every rank."""
        key = f"valid_HR@{self.p.ks[0]}"
        if self.valid is None or any(h.get("step") == state.global_step and key in h for h in state.log_history):
            return
        t0 = time.time()
        entry = {"step": state.global_step, "epoch": state.epoch}
        for split, frame in (("valid", self.valid), ("train", self.train)):
            if frame is not None:
                entry.update({f"{split}_{k}": v for k, v in self.scores(model, frame).items()})
        self.eval_seconds += time.time() - t0
        state.log_history.append(entry)  # saved with the next checkpoint: survives a kill + resume
        from accelerate import PartialState

        if PartialState().is_main_process:
            shown = {k: round(v, 3) for k, v in entry.items() if "_HR@" in k}
            print(f"{self.stage}: step {state.global_step} {shown} ({time.time() - t0:.1f} s)", flush=True)

    def scores(self, model, frame: pl.DataFrame) -> dict[str, float]:
        """Mean HR@K / NDCG@K of `frame` ranked by the model's likelihood (every rank scores a shard)."""
        import torch
        from accelerate import PartialState

        from mllmrec.evaluation.metrics import per_sample_scores
        from mllmrec.evaluation.policy import likelihood_predictions, merge_shards, shard

        ps = PartialState()
        # padded: every rank runs the same number of forwards (ZeRO-3 gathers the weights in each one)
        mine = shard(frame, ps.process_index, ps.num_processes, pad=True)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            preds = likelihood_predictions(
                model, self.tok, mine, self.texts, self.prompt, self.thinking, self.p.max_tokens
            )
        model.train(was_training)
        merged = merge_shards(preds, frame, ps.num_processes)
        ranks = target_ranks(merged["ranked"].to_list(), merged["target"].to_list())
        return {k: float(v.mean()) for k, v in per_sample_scores(ranks, self.p.ks).items()}

    def on_step_begin(self, args, state, control, model=None, **kw):
        if not self._started:  # the state is restored from a checkpoint only after on_train_begin: decide here
            self._started = True
            if state.global_step == 0 and self.p.every:
                self.evaluate(model, state)  # the starting point

    def on_step_end(self, args, state, control, model=None, **kw):
        if self.p.every and state.global_step % self.p.every == 0:
            self.evaluate(model, state)

    def on_train_end(self, args, state, control, model=None, **kw):
        if self.p.every:
            self.evaluate(model, state)  # the final point (skipped if this step was just evaluated)
