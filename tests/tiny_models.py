"""Tiny random-weight models built locally (no hub): tokenizer, Qwen3 and Llama text LMs, a LLaVA VLM.

    from tiny_models import build_tiny_lm, build_tiny_vlm
    build_tiny_vlm(Path("/tmp/vlm"))   # then AutoProcessor / AutoModelForImageTextToText.from_pretrained("/tmp/vlm")

Each builder saves a normal `save_pretrained` folder (weights + tokenizer/processor + chat template), so the code under
test loads it exactly like a real model. Weights are random: outputs are gibberish but deterministic under greedy.
Everything runs in well under a second per model on CPU.
"""

from pathlib import Path

import torch

# ChatML with optional images: content is a str or a list of {"type": "text"|"image"} parts (processor-style)
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<image>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)
# Qwen3's rule for `enable_thinking=False`: an empty think block opens the assistant turn (the model answers directly)
QWEN3_CHAT_TEMPLATE = CHAT_TEMPLATE.replace(
    "{{- '<|im_start|>assistant\n' -}}{%- endif -%}",
    "{{- '<|im_start|>assistant\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\n\n</think>\n\n' -}}{%- endif -%}"
    "{%- endif -%}",
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<image>"]
CORPUS = [
    "The poster shows a dark city at night with bright neon lights and a lone figure in a red coat.",
    "A cheerful cartoon family stands in front of a yellow house under a blue sky.",
    "User history: [ITEM_1] Toy Story (1995), [ITEM_2] Jumanji (1995), [ITEM_3] Heat (1995).",
    "Step 1: The user likes animated adventure films. Step 2: Next intent is a family comedy.",
    "Candidates: [ITEM_10] GoldenEye (1995) [ITEM_32] Twelve Monkeys (1995) [ITEM_47] Seven (1995)",
    "Describe the image in at most fifty words. Do not mention the title. Answer with one item id.",
    "You are a helpful assistant. Think step by step, then answer briefly.",
    "0123456789 colours: black white grey red orange yellow green blue purple pink brown; bright dark contrast.",
]


def build_tokenizer(
    out: Path | None = None, corpus: list[str] | None = None, vocab_size: int = 1000, chat_template: str = CHAT_TEMPLATE
):
    """Byte-level BPE (vocab ~1000) trained on CORPUS (or `corpus`: a dataset's own text gives realistic prompt
    lengths), ChatML special tokens, <think>/</think>, <image>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator((corpus or CORPUS) * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        chat_template=chat_template,
        model_max_length=2048,
    )
    if out is not None:
        fast.save_pretrained(out)
    return fast


def _ids(tok) -> dict:
    return {
        "vocab_size": len(tok),
        "eos_token_id": tok.convert_tokens_to_ids("<|im_end|>"),
        "pad_token_id": tok.convert_tokens_to_ids("<|endoftext|>"),
        "bos_token_id": None,
    }


def _qwen3_config(tok, max_positions: int = 2048):
    from transformers import Qwen3Config

    return Qwen3Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        tie_word_embeddings=True,
        max_position_embeddings=max_positions,
        initializer_range=0.3,
        **_ids(tok),
    )


def _save_lm(model, tok, out: Path) -> Path:
    from transformers import GenerationConfig

    # a plain generation_config: the engines must not depend on what it says anyway
    model.generation_config = GenerationConfig(eos_token_id=model.config.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_tiny_lm(out: Path, seed: int = 0, tok=None, max_positions: int = 2048) -> Path:
    """Tiny Qwen3 causal LM (~130k params) with the tiny tokenizer (or `tok`)."""
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(seed)
    tok = tok or build_tokenizer()
    return _save_lm(Qwen3ForCausalLM(_qwen3_config(tok, max_positions)).eval(), tok, out)


def build_tiny_item_lm(out: Path, item_ids: list[str], seed: int = 0) -> Path:
    """The tiny Qwen3 LM with one collaborative item token per id (mllmrec.training.item_tokens, seeded vectors),
    saved as the sft stage saves a merged model: extended vocabulary + tokenizer with the added tokens."""
    import polars as pl
    from transformers import Qwen3ForCausalLM

    from mllmrec.training.item_tokens import init_item_embeddings

    torch.manual_seed(seed)
    tok = build_tokenizer()
    model = Qwen3ForCausalLM(_qwen3_config(tok)).eval()
    table = pl.DataFrame(
        {"item_id": item_ids, "title": item_ids, "vector": [torch.randn(16).tolist() for _ in item_ids]},
        schema_overrides={"vector": pl.List(pl.Float32)},
    )
    init_item_embeddings(model, tok, table, seed)
    model.config.vocab_size = model.get_input_embeddings().weight.shape[0]
    return _save_lm(model, tok, out)


def build_tiny_llama(out: Path, seed: int = 0, tok=None, max_positions: int = 2048) -> Path:
    """Tiny Llama causal LM: `transformers serve` returns its raw text (its Qwen reply parser would eat random text)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tok = tok or build_tokenizer()
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        tie_word_embeddings=True,
        max_position_embeddings=max_positions,
        initializer_range=0.3,
        **_ids(tok),
    )
    return _save_lm(LlamaForCausalLM(cfg).eval(), tok, out)


def build_tiny_vlm(out: Path, seed: int = 0, image_size: int = 28, tok=None, max_positions: int = 2048) -> Path:
    """Tiny LLaVA: CLIP vision tower (28 px, 14 px patches -> 4 image tokens) + tiny Qwen3 text model.

    Saved with a LlavaProcessor (PIL CLIP image processor: no torchvision needed) that AutoProcessor loads.
    """
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    torch.manual_seed(seed)
    tok = tok or build_tokenizer()
    image_token_id = tok.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=14,
        projection_dim=32,
    )
    cfg = LlavaConfig(
        vision_config=vision,
        text_config=_qwen3_config(tok, max_positions),
        image_token_id=image_token_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=True,
    )
    model = LlavaForConditionalGeneration(cfg).eval()
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS, dropped again by the "default" strategy
        chat_template=tok.chat_template,
    )
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(eos_token_id=_ids(tok)["eos_token_id"], pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_llama_gguf(out: Path, seed: int = 0) -> tuple[Path, Path]:
    """A tiny Llama written as an F32 GGUF (the format SmolLM2 ships in), plus its HF folder for comparison.

    Mirrors llama.cpp's convert_hf_to_gguf for the llama arch (Q/K rows permuted for its rope layout), so the models
    stage's GGUF -> safetensors path can be tested offline. Returns (gguf_path, hf_dir).
    """
    import json

    import gguf
    import numpy as np
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tok = build_tokenizer()
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
        max_position_embeddings=2048,
        initializer_range=0.3,
        **_ids(tok),
    )
    hf_dir = _save_lm(LlamaForCausalLM(cfg).eval(), tok, out / "hf")
    model = LlamaForCausalLM.from_pretrained(hf_dir)

    def permute(w: np.ndarray, n_head: int) -> np.ndarray:
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    path = out / "tiny-llama.F32.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_vocab_size(cfg.vocab_size)
    spec = json.loads((hf_dir / "tokenizer.json").read_text())
    vocab = {**spec["model"]["vocab"], **{t["content"]: t["id"] for t in spec["added_tokens"]}}
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in SPECIAL_TOKENS else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges(merges)
    w.add_eos_token_id(cfg.eos_token_id)
    w.add_pad_token_id(cfg.pad_token_id)
    w.add_chat_template(CHAT_TEMPLATE)
    sd = {k: v.float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    names = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for i in range(cfg.num_hidden_layers):
        for hf, gg in names.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            if gg == "attn_q":
                t = permute(t, cfg.num_attention_heads)
            elif gg == "attn_k":
                t = permute(t, cfg.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{gg}.weight", np.ascontiguousarray(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, hf_dir
