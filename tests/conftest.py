"""Shared pytest fixtures: tiny random models saved once per session (see tests/tiny_models.py).

def test_x(tiny_vlm_dir): AutoProcessor.from_pretrained(tiny_vlm_dir) ...
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # so tests can `import tiny_models`

import tiny_models


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory) -> Path:
    """Tiny LLaVA (CLIP vision + Qwen3 text) with a processor AutoProcessor loads; 4 image tokens per image."""
    return tiny_models.build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"))


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """Tiny Qwen3 causal LM with a ChatML tokenizer (<think>/</think> included)."""
    return tiny_models.build_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="session")
def tiny_item_lm_dir(tmp_path_factory) -> Path:
    """The tiny Qwen3 LM with collaborative item tokens [ITEM_1]..[ITEM_40], saved like a merged SFT model."""
    return tiny_models.build_tiny_item_lm(tmp_path_factory.mktemp("tiny_item_lm"), [str(i) for i in range(1, 41)])


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """Tiny Llama causal LM, for `transformers serve` (which returns a llama model's raw text)."""
    return tiny_models.build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))
