"""mllmrec.training.memory: the GPU-memory estimate that refuses a configuration before hours of work.

Checked against models built here (exact parameter counts, PEFT's LoRA count, the bytes autograd really saves for
backward, measured with saved-tensor hooks) and against Qwen3-4B's published size (4.0 B parameters, ~8 GB in bf16).
"""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

from mllmrec.config import LoraParams
from mllmrec.errors import UserError
from mllmrec.training.memory import (
    GIB,
    check_fits,
    lora_params,
    n_params,
    saved_per_token,
    training_need,
)

SHAPES = {
    "qwen3-gqa": (
        Qwen3ForCausalLM,
        Qwen3Config(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
            vocab_size=1000,
            tie_word_embeddings=True,
        ),
    ),
    "qwen3-wide-mlp": (
        Qwen3ForCausalLM,
        Qwen3Config(
            hidden_size=96,
            intermediate_size=384,
            num_hidden_layers=3,
            num_attention_heads=6,
            num_key_value_heads=2,
            head_dim=16,
            vocab_size=1000,
            tie_word_embeddings=False,
        ),
    ),
    "llama-mha": (
        LlamaForCausalLM,
        LlamaConfig(
            hidden_size=128,
            intermediate_size=344,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            vocab_size=1000,
        ),
    ),
}
# Qwen3-4B's config.json (the paper's policy): 36 layers, hidden 2560, MLP 9728, 32 query / 8 KV heads of 128, tied
QWEN3_4B = Qwen3Config(
    hidden_size=2560,
    intermediate_size=9728,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=151936,
    tie_word_embeddings=True,
)
PAPER_LORA = LoraParams(
    r=16, alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
)


def saved_bytes(model, batch: int, seq: int) -> int:
    """Bytes of the non-parameter tensors autograd keeps for backward in one forward of the decoder (no LM head)."""
    params = {p.data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        if t.data_ptr() not in params:
            seen.setdefault(t.data_ptr(), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.base_model.model.model(input_ids=torch.randint(0, 1000, (batch, seq)))
    return sum(seen.values())


@pytest.mark.parametrize("shape", SHAPES)
def test_counts_match_built_models_and_peft(shape):
    cls, config = SHAPES[shape]
    torch.manual_seed(0)
    model = cls(config)
    assert n_params(config) == sum(p.numel() for p in model.parameters())
    peft = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear"))
    assert lora_params(config, 8, "all-linear") == peft.get_nb_trainable_parameters()[0]


@pytest.mark.parametrize("shape", SHAPES)
def test_activation_count_is_what_autograd_saves(shape):
    cls, config = SHAPES[shape]
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = get_peft_model(cls(config), LoraConfig(r=8, target_modules="all-linear")).train()
    measured = saved_bytes(model, batch=2, seq=64) / (2 * 64 * config.num_hidden_layers * 4)  # fp32 elements
    estimate = saved_per_token(config, lora_r=8, lora_targets=7)
    assert measured <= estimate <= 1.05 * measured  # never under, at most 5 % over


def test_qwen3_4b_is_its_published_size():
    assert 4.0e9 <= n_params(QWEN3_4B) <= 4.05e9  # model card: 4.0 B (3.6 B without embeddings)
    need = training_need(QWEN3_4B, 2, PAPER_LORA, batch_size=2, seq_len=2048)
    assert 8.0e9 <= need["weights"] <= 8.1e9  # ~8 GB of bf16 weights
    assert need["lora"] == lora_params(QWEN3_4B, 16, PAPER_LORA.target_modules) * 16 and need["lora"] < GIB


def test_paper_sft_fits_an_h100_and_is_refused_on_a_16_gib_card_with_the_params_to_change():
    need = training_need(QWEN3_4B, 2, PAPER_LORA, batch_size=2, seq_len=2048)
    check_fits(need, 80 * GIB, "sft", "sft.batch_size")  # the paper's 2 x 2048 tokens on an 80 GB card
    with pytest.raises(
        UserError,
        match=r"sft: this configuration needs ~\d+\.\d GiB \(weights 7\.5, .*logits .*; "
        r"the visible GPU has 16\.0 GiB: change sft\.batch_size",
    ):
        check_fits(need, 16 * GIB, "sft", "sft.batch_size")
    checkpointed = training_need(QWEN3_4B, 2, PAPER_LORA, batch_size=2, seq_len=2048, checkpointing=True)
    assert checkpointed["activations"] < need["activations"] / 10  # the advice the refusal gives does help


def test_the_stage_check_reads_the_config_and_names_the_param(tmp_path, monkeypatch):
    """The CUDA entry points, on a faked 0.5 GiB card (no GPU here): the estimate is printed, a card too small and a
    vLLM share that cannot hold the weights are one line each; without CUDA nothing is checked."""
    from tiny_models import build_tiny_lm

    from mllmrec.training import memory

    model = str(build_tiny_lm(tmp_path / "lm"))
    assert memory.check_cuda_inference(model, "", torch.bfloat16, 0.9, "evaluate sft") is None  # CPU: no check

    class Card:
        total_memory = GIB // 2

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Card)
    with pytest.raises(UserError, match=r"evaluate sft: .*0\.5 GiB: change models\.policy\.dtype"):
        memory.check_cuda_inference(model, "", torch.bfloat16, 0.9, "evaluate sft")
    Card.total_memory = 4 * GIB
    need = memory.check_cuda_training(model, "", torch.bfloat16, PAPER_LORA, 2, 64, False, "sft", "sft.batch_size")
    assert need["weights"] == n_params(Qwen3ForCausalLM.config_class.from_pretrained(model)) * 2
    monkeypatch.setattr(memory, "n_params", lambda config: 3 * GIB)  # 6 GiB of bf16 weights: fit 16 GiB, not 0.3 of it
    Card.total_memory = 16 * GIB
    with pytest.raises(UserError, match=r"vLLM share \(0\.3 x 16\.0 GiB\) cannot hold .*raise grpo\.vllm_gpu_memory"):
        memory.check_cuda_training(model, "", torch.bfloat16, PAPER_LORA, 2, 64, False, "grpo", "x", 0.3)
