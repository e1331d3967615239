"""Learning guards: SFT and evaluation, through the functions the stages call, LEARN a rule on synthetic data.

The data (tests/learning_project.py): the next item is the successor of the last history item on a 24-item cycle,
1 + 9 candidates, so chance HR@1 is 0.1 and a policy that learned the rule scores ~1. A tiny random model built
locally (tests/tiny_models.py) is trained by `mllmrec.training.sft.train_sft` and scored on held-out samples by
`mllmrec.evaluation.policy` (the evaluate stage's code). GRPO (`mllmrec.training.grpo.train_grpo`, the grpo stage's
code) starts from an SFT run stopped early and must raise the hit rate of its own completions. Each guard was shown
to fail by planting the defect it guards against (an inverted completion mask; SFT prompts rendered differently
from evaluation's; GRPO rewards joined to the wrong samples); see docs/evidence.md, "Learning guards".
"""

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from learning_project import PROMPT, TEXTS, samples

from mllmrec.config import EngineSpec, EvalParams, GrpoParams, SftParams
from mllmrec.errors import UserError
from mllmrec.evaluation.candidates import score_predictions
from mllmrec.evaluation.policy import generative_predictions, likelihood_predictions, load_policy

pytestmark = pytest.mark.slow
EVAL = EvalParams(ks=[1, 3], bootstrap=0)
TRAIN, HELD_OUT, VALID = samples(320, "train", 0), samples(40, "test", 1), samples(40, "valid", 2)
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))  # a 130k-param model: more threads only fight


def likelihood_hr1(model_dir) -> tuple[float, list]:
    """Held-out HR@1 by exact likelihood ranking (the evaluate stage's scorer), and the ranked lists."""
    import torch

    model, tok = load_policy(str(model_dir), "", torch.device("cpu"), torch.float32)
    preds, m = score_predictions(likelihood_predictions(model, tok, HELD_OUT, TEXTS, PROMPT, None, 8192), EVAL)
    return m["HR@1"], preds["ranked"].to_list()


def sft(base_dir, out, steps: int):
    """The sft stage's path: renderer examples -> tokenized rows (completion mask) -> TRL SFTTrainer + LoRA."""
    from transformers import AutoTokenizer

    from mllmrec.training.sft import sft_examples, tokenize_examples, train_sft

    tok = AutoTokenizer.from_pretrained(base_dir)
    rows, skipped = tokenize_examples(sft_examples(TRAIN, TEXTS, tok, PROMPT, None), tok, 4096)
    assert not skipped
    params = SftParams(
        lora=LORA,
        lr=1e-2,
        scheduler="constant",
        max_steps=steps,
        batch_size=8,
        grad_accum=1,
        dtype="float32",
        save_steps=10_000,
        logging_steps=50,
        checkpoint_dir=str(out) + ".ckpt",
    )
    train_sft(rows, str(base_dir), "", tok, params, out)
    return out


@pytest.fixture(scope="module")
def sft_model(tiny_lm_dir, tmp_path_factory):
    return sft(tiny_lm_dir, tmp_path_factory.mktemp("learn") / "sft", steps=700)


@pytest.fixture(scope="module")
def early_sft(tiny_lm_dir, tmp_path_factory):
    # stopped at 300 of the 700 steps: the format is mostly learned, the rule partly (sampled at T = 1 about 60 %
    # of its completions hit), so GRPO has hits to reinforce and room to improve
    return sft(tiny_lm_dir, tmp_path_factory.mktemp("learn") / "sft_early", steps=300)


def sampled_hit_rate(model_dir, n: int = 8) -> tuple[float, float]:
    """Hit rate and parse rate of n sampled (T = 1) completions per held-out sample, read by the evaluate stage's
    generative path: what GRPO optimises, measured on samples it never trained on, with their true targets."""
    from mllmrec.engines import build_engine
    from mllmrec.engines.base import SamplingParams

    repeated = pl.concat([HELD_OUT.with_columns(sample_id=pl.col("sample_id") + f"#{j}") for j in range(n)])
    engine = build_engine(EngineSpec(engine="transformers", model=str(model_dir), dtype="float32", batch_size=40))
    sampling = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=16, seed=0)
    gen = generative_predictions(engine, repeated, TEXTS, PROMPT, sampling, batch=40)
    hit = [bool(r) and r[0] == t for r, t in zip(gen["ranked"].to_list(), gen["target"].to_list())]
    return float(np.mean(hit)), float(gen["valid"].mean())


def grpo(start, out) -> dict:
    """The grpo stage's path: grpo_rows (rendered prompts + reward columns) -> train_grpo (TRL GRPOTrainer + LoRA)."""
    from transformers import AutoTokenizer

    from mllmrec.paths import live_series
    from mllmrec.training.grpo import grpo_rows, train_grpo
    from mllmrec.training.live import GRPO_SERIES, LiveLog

    tok = AutoTokenizer.from_pretrained(start)
    params = GrpoParams(
        model=str(start),
        lora=LORA,
        reward={"kind": "paper"},
        num_generations=8,
        beta=0.1,
        lr=1e-2,
        max_steps=60,
        batch_size=64,
        grad_accum=1,
        temperature=1.0,
        top_p=1.0,
        max_completion_length=16,
        dtype="float32",
        save_steps=10_000,
        logging_steps=1,
        checkpoint_dir=str(out) + ".ckpt",
        monitor={"every": 20, "samples": VALID.height, "ks": [1], "completions": 0},
    )
    live_dir = Path(str(out) + ".live")  # the stage's DVCLive logger: the guard reads the curve it writes
    live = LiveLog(live_dir / "metrics.json", live_dir / "plots/metrics", GRPO_SERIES, params.monitor.ks)
    rows = grpo_rows(TRAIN, TEXTS, tok, PROMPT, None)
    info = train_grpo(rows, VALID, TEXTS, tok, params, PROMPT, None, out, callbacks=[live])
    hits = pl.read_csv(live_series(live_dir / "plots/metrics", "reward_hit"), separator="\t")
    return {**info, "reward_hit": hits["reward_hit"].to_list()}


def test_sft_learns_the_rule_that_zero_shot_cannot_guess(tiny_lm_dir, sft_model):
    zero_shot, _ = likelihood_hr1(tiny_lm_dir)
    trained, _ = likelihood_hr1(sft_model)
    assert zero_shot <= 0.3, f"zero-shot HR@1 {zero_shot}: a random model should be near chance (0.1)"
    assert trained >= 0.9, f"held-out HR@1 after SFT {trained} (zero-shot {zero_shot}): SFT did not learn the rule"


def test_generative_and_likelihood_evaluation_agree_on_the_learned_model(sft_model):
    from mllmrec.engines import build_engine
    from mllmrec.engines.base import SamplingParams

    _, ranked = likelihood_hr1(sft_model)
    engine = build_engine(EngineSpec(engine="transformers", model=str(sft_model), dtype="float32", batch_size=8))
    greedy = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=16, seed=0)
    gen = generative_predictions(engine, HELD_OUT, TEXTS, PROMPT, greedy, batch=8)
    top1 = [r[0] if r else None for r in gen["ranked"].to_list()]
    agree = np.mean([g == r[0] for g, r in zip(top1, ranked)])
    bad = [(t, g, r[0], tgt) for t, g, r, tgt in zip(gen["text"], top1, ranked, HELD_OUT["target"]) if g != r[0]]
    assert gen["valid"].mean() >= 0.9 and agree >= 0.9, f"valid {gen['valid'].mean()}, same top-1 {agree}: {bad}"


def test_monitor_scores_train_and_valid_subsets_on_their_own_samples(sft_model):
    """The SFT/GRPO monitor's train-vs-valid columns (monitor.train_samples) each rank their own frame: on the learned
    model, training samples follow the rule (train HR@1 high) and valid samples whose targets were moved off the
    rule's answer cannot be hit (valid HR@1 ~0): swapped or shared frames would make the two equal."""
    import torch
    from transformers import TrainerState

    from mllmrec.config import MonitorParams
    from mllmrec.training.monitor import ValidMonitor, train_subset, valid_rows

    params = MonitorParams(every=1, samples=VALID.height, train_samples=40, ks=[1])
    off_rule = VALID.with_columns(
        target=pl.struct("candidates", "target").map_elements(
            lambda r: r["candidates"][(r["candidates"].index(r["target"]) + 1) % len(r["candidates"])],
            return_dtype=pl.String,
        )
    )
    model, tok = load_policy(str(sft_model), "", torch.device("cpu"), torch.float32)
    monitor = ValidMonitor(off_rule, TEXTS, tok, PROMPT, None, params, "sft", train_subset(TRAIN, params))
    state = TrainerState()
    monitor.evaluate(model, state)
    [row] = valid_rows(state.log_history, params.ks)
    assert row["train_HR@1"] >= 0.9 and row["valid_HR@1"] <= 0.1, row
    with pytest.raises(UserError, match="train_samples = 400"):
        train_subset(TRAIN, MonitorParams(train_samples=400))


def test_grpo_raises_the_hit_rate_of_its_own_completions(early_sft, tmp_path):
    # the paper reward; `rank_aware` gives exactly the same reward to one-id answers (all this policy writes), so a
    # rank_aware run was step-for-step identical: one run guards both (multi-id scoring: tests/test_rewards.py)
    before_hit, before_valid = sampled_hit_rate(early_sft)
    info = grpo(early_sft, tmp_path / "grpo")
    after_hit, after_valid = sampled_hit_rate(tmp_path / "grpo")
    train_hits = info["reward_hit"]  # TRL's rewards/hit/mean per step: the policy's own completions
    first, last = np.mean(train_hits[:20]), np.mean(train_hits[-20:])  # 160 prompts × 8 completions each
    valid_hr = [row["valid_HR@1"] for row in info["valid_curve"]]  # the monitor: likelihood ranking, valid split
    report = (
        f"paper reward: train hit {first:.3f} -> {last:.3f}; held-out sampled hit {before_hit:.3f} -> {after_hit:.3f}"
        f" (parsed {before_valid:.3f} -> {after_valid:.3f}); valid HR@1 by likelihood {valid_hr}"
    )
    print(report)
    # the reward wiring: joined to the wrong samples (planted once: each prompt scored against the next sample's
    # target) the policy's own hit rate stayed near chance (0.02 -> 0.07) while every other number still rose
    assert last >= 0.5, f"the policy's own completions hit at chance level: rewards joined to wrong samples? {report}"
    # the learning: more of its sampled answers hit on samples it never trained on (measured 0.625 -> 0.800)
    assert after_hit - before_hit >= 0.1, f"GRPO did not raise the held-out hit rate of its completions: {report}"
    # and the answer lines stay what the likelihood ranker scores (with beta = 0 the titles after the id, which the
    # reward does not read, degenerated and valid HR@1 fell from 0.95 to 0.50)
    assert valid_hr[-1] >= valid_hr[0] - 0.2, f"GRPO degraded the likelihood ranking: {report}"
