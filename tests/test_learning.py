"""Learning guards: SFT and evaluation, through the functions the stages call, LEARN a rule on synthetic data.

The data (tests/learning_project.py): the next item is the successor of the last history item on a 24-item cycle,
1 + 9 candidates, so chance HR@1 is 0.1 and a policy that learned the rule scores ~1. A tiny random model built
locally (tests/tiny_models.py) is trained by `mllmrec.training.sft.train_sft` and scored on held-out samples by
`mllmrec.evaluation.policy` (the evaluate stage's code). The SFT guard was shown to fail by planting the defects it guards
against (an inverted completion mask; SFT prompts rendered differently from evaluation's); see the README's
"Learning guards". A GRPO guard is not here yet: see the README for what was measured.
"""

import os

import numpy as np
import pytest
from learning_project import PROMPT, TEXTS, samples

from mllmrec.config import EngineSpec, EvalParams, SftParams
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
    params = SftParams(lora=LORA, lr=1e-2, scheduler="constant", max_steps=steps, batch_size=8, grad_accum=1,
                       dtype="float32", save_steps=10_000, logging_steps=50, checkpoint_dir=str(out) + ".ckpt")
    train_sft(rows, str(base_dir), "", tok, params, out)
    return out


@pytest.fixture(scope="module")
def sft_model(tiny_lm_dir, tmp_path_factory):
    return sft(tiny_lm_dir, tmp_path_factory.mktemp("learn") / "sft", steps=700)


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
