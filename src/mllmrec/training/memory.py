"""GPU memory a configuration needs, estimated from the model's config before hours of work (checked on CUDA only).

    need = training_need(config, dtype_bytes=2, lora=params.lora, batch_size=2, seq_len=2048)
    check_fits(need, total_bytes, "sft", advice="sft.batch_size, sft.max_length or sft.gradient_checkpointing")

Parts (bytes), each a dict entry so the refusal can say what dominates:
- weights: parameter count from the config (exact for Qwen3 / Qwen2 / Llama-style decoders; tests/test_memory.py
  checks it against built models and Qwen3-4B's published 4.0 B) x the training dtype.
- lora: LoRA parameters (r x (in + out) per targeted linear) x 16: fp32 weights, gradients and AdamW's two moments.
- activations: the tensors autograd saves for backward, per token and layer (`saved_per_token`), x batch x sequence x
  layers x dtype; with gradient checkpointing only each layer's input. Calibrated against the bytes autograd really
  saves on tiny models of two shapes (tests/test_memory.py measures them with saved-tensor hooks).
- logits: batch x sequence x vocabulary x (dtype + 8): the logits, their fp32 copy and log-softmax for the loss.
- vllm: a colocated vLLM engine's share (gpu_memory_utilization x the GPU's memory).
- overhead: CUDA context and allocator slack, 1 GiB.
"""

from mllmrec.errors import UserError

GIB = 2**30
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def text_config(config):
    """The decoder's config (a VLM's text_config)."""
    return getattr(config, "text_config", None) or config


def _shape(config) -> dict:
    c = text_config(config)
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    return {
        "h": c.hidden_size,
        "inter": c.intermediate_size,
        "layers": c.num_hidden_layers,
        "vocab": c.vocab_size,
        "q": heads * head_dim,
        "kv": getattr(c, "num_key_value_heads", heads) * head_dim,
        "head_dim": head_dim,
        "tied": bool(getattr(c, "tie_word_embeddings", False) or getattr(config, "tie_word_embeddings", False)),
        "qk_norm": c.model_type.startswith("qwen3"),
        "bias": bool(getattr(c, "attention_bias", False)) or c.model_type == "qwen2",
    }


def linear_shapes(config) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear module of one decoder layer."""
    s = _shape(config)
    return {
        "q_proj": (s["h"], s["q"]),
        "k_proj": (s["h"], s["kv"]),
        "v_proj": (s["h"], s["kv"]),
        "o_proj": (s["q"], s["h"]),
        "gate_proj": (s["h"], s["inter"]),
        "up_proj": (s["h"], s["inter"]),
        "down_proj": (s["inter"], s["h"]),
    }


def n_params(config) -> int:
    """Parameters of a Qwen3 / Qwen2 / Llama-style decoder LM, from its config alone."""
    s = _shape(config)
    per_layer = sum(i * o for i, o in linear_shapes(config).values()) + 2 * s["h"]  # + the two RMSNorms
    if s["qk_norm"]:
        per_layer += 2 * s["head_dim"]
    if s["bias"]:
        per_layer += s["q"] + 2 * s["kv"]
    embed = s["vocab"] * s["h"]
    return embed * (1 if s["tied"] else 2) + s["layers"] * per_layer + s["h"]  # + the final norm


def lora_params(config, r: int, target_modules) -> int:
    """LoRA parameters: r x (in + out) for every targeted linear of every layer ("all-linear": all of them)."""
    shapes = linear_shapes(config)
    targets = ALL_LINEAR if target_modules == "all-linear" else [t for t in target_modules if t in shapes]
    return text_config(config).num_hidden_layers * sum(r * sum(shapes[t]) for t in targets)


def saved_per_token(config, lora_r: int = 0, lora_targets: int = 0) -> int:
    """Elements autograd keeps per token and layer for backward (SDPA attention, LoRA on a frozen base): the two
    norms' inputs and outputs, q/k (and their norms' outputs: Qwen3) and v through rotary embedding, the MLP's gate,
    up, activation and product, each LoRA's r-wide middle. Within 5 % of what autograd saved on three tiny shapes
    (tests/test_memory.py)."""
    s = _shape(config)
    attention = 3 * s["q"] + 4 * s["kv"] if s["qk_norm"] else 2 * s["q"] + 3 * s["kv"]
    return 4 * s["h"] + attention + 4 * s["inter"] + lora_r * lora_targets


def training_need(
    config, dtype_bytes: int, lora, batch_size: int, seq_len: int, checkpointing: bool = False, vllm_bytes: int = 0
) -> dict[str, int]:
    """Bytes per part of one training step with a LoRA on a frozen base (see the module docstring)."""
    s = _shape(config)
    tokens = batch_size * seq_len
    targets = len(ALL_LINEAR) if lora.target_modules == "all-linear" else len(lora.target_modules)
    full = saved_per_token(config, lora.r, targets)
    per_layer = s["h"] if checkpointing else full
    return {
        "weights": n_params(config) * dtype_bytes,
        "lora": lora_params(config, lora.r, lora.target_modules) * 16,
        "activations": tokens * s["layers"] * per_layer * dtype_bytes
        + (tokens * full * dtype_bytes if checkpointing else 0),  # one layer recomputed at a time
        "logits": tokens * s["vocab"] * (dtype_bytes + 8),
        "vllm": vllm_bytes,
        "overhead": GIB,
    }


def describe(need: dict[str, int]) -> str:
    """The total and its non-zero parts, in GiB.

    >>> describe({"weights": 8 * 2**30, "lora": 0, "overhead": 2**30})
    '9.0 GiB (weights 8.0, overhead 1.0)'
    """
    parts = ", ".join(f"{k} {v / GIB:.1f}" for k, v in need.items() if v)
    return f"{sum(need.values()) / GIB:.1f} GiB ({parts})"


def check_fits(need: dict[str, int], total_bytes: int, stage: str, advice: str) -> None:
    """One line naming the estimate, the GPU and the params to change, when the estimate exceeds the GPU."""
    if sum(need.values()) > total_bytes:
        raise UserError(
            f"{stage}: this configuration needs ~{describe(need)} of GPU memory; the visible GPU has "
            f"{total_bytes / GIB:.1f} GiB: change {advice} (estimate: mllmrec.training.memory)"
        )


def _check_on_cuda(
    model_path: str, revision: str, stage: str, advice: str, vllm_share: float, vllm_param: str, estimate
) -> dict | None:
    """On CUDA, before any weights load: `estimate(config, total_bytes)` -> parts; printed, checked against the GPU
    and, with a vLLM share, against what that share must hold (the weights). None elsewhere (CPU RAM is not checked)."""
    import torch

    if not torch.cuda.is_available():
        return None
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path, revision=revision or None)
    total = torch.cuda.get_device_properties(0).total_memory
    need = estimate(config, total)
    print(f"{stage}: estimated GPU memory {describe(need)} of {total / GIB:.1f} GiB", flush=True)
    check_fits(need, total, stage, advice)
    if vllm_share and need["weights"] > vllm_share * total:
        raise UserError(
            f"{stage}: the vLLM share ({vllm_share} x {total / GIB:.1f} GiB) cannot hold the "
            f"{need['weights'] / GIB:.1f} GiB of weights: raise {vllm_param}"
        )
    return need


def check_cuda_training(
    model_path: str,
    revision: str,
    dtype,
    lora,
    batch_size: int,
    seq_len: int,
    checkpointing: bool,
    stage: str,
    advice: str,
    vllm_share: float = 0.0,
) -> dict | None:
    """sft / grpo: the training step's parts (training_need), a colocated vLLM share included."""
    import torch

    return _check_on_cuda(
        model_path,
        revision,
        stage,
        advice,
        vllm_share,
        "grpo.vllm_gpu_memory_utilization",
        lambda config, total: training_need(
            config, torch.finfo(dtype).bits // 8, lora, batch_size, seq_len, checkpointing, int(vllm_share * total)
        ),
    )


def check_cuda_inference(model_path: str, revision: str, dtype, vllm_share: float, stage: str) -> dict | None:
    """evaluate: the weights (+ overhead) must fit the GPU, and a vLLM engine's share must hold them."""
    import torch

    return _check_on_cuda(
        model_path,
        revision,
        stage,
        "models.policy.dtype or the policy model",
        vllm_share,
        "models.policy.gpu_memory_utilization",
        lambda config, _: {"weights": n_params(config) * (torch.finfo(dtype).bits // 8), "overhead": GIB},
    )
