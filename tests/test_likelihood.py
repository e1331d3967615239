"""The packed likelihood ranker equals brute-force per-candidate scoring, on real tokenizers and real models."""

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mllmrec.evaluation.likelihood import score_brute_force, score_candidates

SMOLLM = Path(__file__).resolve().parents[1] / "models/smollm2-135m-instruct"


def check_equal(model_dir: Path, max_tokens: int = 8192):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Pick one: [ITEM_1] Heat, [ITEM_22] Up"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    comps = ["[ITEM_1] Heat (1995)<|im_end|>\n", "[ITEM_22] Up (2009)<|im_end|>\n", "x", "[ITEM_333] Amélie 天"]
    packed = score_candidates(model, tok, [prompt, prompt[:40]], [comps, comps[:2]], max_tokens=max_tokens)
    assert np.allclose(packed[0], score_brute_force(model, tok, prompt, comps), atol=1e-3, rtol=1e-4)
    assert np.allclose(packed[1], score_brute_force(model, tok, prompt[:40], comps[:2]), atol=1e-3, rtol=1e-4)
    assert packed[0].shape == (4,) and np.all(packed[0] < 0)


def test_packed_equals_brute_force_tiny_qwen3(tiny_lm_dir):
    check_equal(tiny_lm_dir)


def test_packed_groups_when_over_token_budget(tiny_lm_dir):
    check_equal(tiny_lm_dir, max_tokens=1)  # every completion in its own forward: same numbers


@pytest.mark.skipif(not SMOLLM.exists(), reason="models/smollm2-135m-instruct not built (dvc repro models)")
def test_packed_equals_brute_force_smollm2():
    check_equal(SMOLLM)
