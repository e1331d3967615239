"""Batched generation with plain transformers: text LMs and image-text-to-text VLMs, left padding, explicit params.

    from mllmrec.config import EngineSpec
    from mllmrec.engines import build_engine
    eng = build_engine(EngineSpec(engine="transformers", model="models/smollm2-135m-instruct", batch_size=8))
    eng.generate([GenerationRequest(messages=({"role": "user", "content": "Hi"},))])

dtype "auto": bf16 where the device computes it natively (CUDA; CPUs with AVX512-BF16 or AMX), else fp32 (see
resolve_dtype). The model's generation_config.json is replaced by a blank one at load time, so nothing (top_k, repetition_penalty, ...) leaks in from it: every sampling knob comes from the request.
Requests are sorted by prompt length before batching (less padding) and returned in input order.
"""

import logging
import time

import torch

from mllmrec.config import EngineSpec
from mllmrec.engines.base import (
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    load_image,
    split_think,
    with_image_parts,
)

log = logging.getLogger(__name__)


def pick_device_dtype(spec: EngineSpec) -> tuple[torch.device, torch.dtype]:
    cuda = torch.cuda.is_available() and spec.device != "cpu"
    if spec.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"models: device 'cuda' requested for {spec.model} but no CUDA device is visible")
    device = torch.device("cuda" if cuda else "cpu")
    return device, resolve_dtype(spec.dtype, device)


def resolve_dtype(name: str, device: torch.device, engine: str = "transformers") -> torch.dtype:
    """The project's one `auto` dtype rule (engines, likelihood ranking, SFT and GRPO training, vLLM): bf16 where the
    hardware computes it natively (CUDA with bf16; CPUs with AVX512-BF16 or AMX: about 2x faster than fp32 there),
    else fp32 (emulated bf16 is slower than fp32); vLLM's CPU backend runs fp32 (the setup measured in
    ENVIRONMENT.md). Any other name is taken as given."""
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
    elif engine == "vllm":
        native = False
    else:
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return torch.bfloat16 if native else torch.float32


def _flatten_text(messages) -> list[dict]:
    # text LMs take str contents; join text parts of processor-style messages
    return [
        {
            **m,
            "content": m["content"]
            if isinstance(m["content"], str)
            else "".join(p.get("text", "") for p in m["content"] if p.get("type") == "text"),
        }
        for m in messages
    ]


class TransformersEngine:
    def __init__(self, spec: EngineSpec):
        from transformers import AutoConfig, GenerationConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        self.spec = spec
        self.model_id, self.revision = spec.model, spec.revision
        self.device, self.dtype = pick_device_dtype(spec)
        rev = spec.revision or None
        t0 = time.perf_counter()
        config = AutoConfig.from_pretrained(spec.model, revision=rev)
        self.is_vlm = config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
        if self.is_vlm:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            self.processor = AutoProcessor.from_pretrained(spec.model, revision=rev)
            self.tokenizer = self.processor.tokenizer
            auto = AutoModelForImageTextToText
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.processor = None
            self.tokenizer = AutoTokenizer.from_pretrained(spec.model, revision=rev)
            auto = AutoModelForCausalLM
        self.model = auto.from_pretrained(spec.model, revision=rev, dtype=self.dtype).to(self.device).eval()
        if self.tokenizer.chat_template is None and (self.processor is None or self.processor.chat_template is None):
            raise RuntimeError(f"{spec.model}: no chat template in its tokenizer/processor; cannot build prompts")
        self.tokenizer.padding_side = "left"  # generation appends on the right, so pads go left
        text_cfg = config.get_text_config()
        eos = text_cfg.eos_token_id if text_cfg.eos_token_id is not None else []
        eos = set(eos if isinstance(eos, list) else [eos])
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)  # the chat turn end (<|im_end|>) often lives only here
        self.eos_ids = sorted(eos)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.pad_id = self.tokenizer.pad_token_id
        # blank generation config: no silent defaults from the checkpoint's generation_config.json
        self.model.generation_config = GenerationConfig(eos_token_id=self.eos_ids, pad_token_id=self.pad_id)
        think = {self.tokenizer.convert_tokens_to_ids(t) for t in ("<think>", "</think>")}
        self.hidden_ids = set(self.tokenizer.all_special_ids) - think  # dropped from decoded text; <think> kept
        log.info(
            "transformers engine: %s (%s, %s, %s) loaded in %.1fs",
            spec.model,
            "vlm" if self.is_vlm else "lm",
            self.device,
            self.dtype,
            time.perf_counter() - t0,
        )

    # ---- prompt building ----
    def _prompt(self, req: GenerationRequest) -> str:
        kw = {} if self.spec.enable_thinking is None else {"enable_thinking": self.spec.enable_thinking}
        if self.is_vlm:
            msgs = with_image_parts(req.messages, len(req.images))
            return self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False, **kw)
        return self.tokenizer.apply_chat_template(
            _flatten_text(req.messages), add_generation_prompt=True, tokenize=False, **kw
        )

    def _check(self, req: GenerationRequest) -> str:
        if req.images and not self.is_vlm:
            return f"{self.model_id} is a text-only model but the request has {len(req.images)} image(s)"
        if len(req.images) > self.spec.limit_mm_per_prompt:
            return f"{len(req.images)} images > limit_mm_per_prompt={self.spec.limit_mm_per_prompt}"
        return ""

    # ---- generation ----
    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        results: list[GenerationResult | None] = [None] * len(requests)
        prepared = []  # (index, prompt, images, sampling)
        for i, req in enumerate(requests):
            try:
                problem = self._check(req)
                if problem:
                    raise ValueError(problem)
                images = [load_image(p, self.spec.max_pixels) for p in req.images]
                prepared.append((i, self._prompt(req), images, req.sampling))
            except Exception as e:  # noqa: BLE001  a bad request (missing image, template error) fails alone
                results[i] = GenerationResult(finish_reason="error", error=f"{type(e).__name__}: {e}")
        # one generate() call takes one sampling config: group by it, then by length to cut padding
        groups: dict[SamplingParams, list] = {}
        for item in prepared:
            groups.setdefault(item[3], []).append(item)
        for sampling, items in groups.items():
            items.sort(key=lambda it: len(it[1]))
            for s in range(0, len(items), self.spec.batch_size):
                batch = items[s : s + self.spec.batch_size]
                for (i, *_), res in zip(batch, self._generate_safe(batch, sampling)):
                    results[i] = res
        return results  # type: ignore[return-value]

    def _generate_safe(self, batch, sampling: SamplingParams) -> list[GenerationResult]:
        try:
            return self._generate_batch(batch, sampling)
        except Exception as e:  # noqa: BLE001  recorded per request, never lost
            if len(batch) == 1:
                log.warning("request failed on %s: %s", self.model_id, e)
                return [GenerationResult(finish_reason="error", error=f"{type(e).__name__}: {e}")]
            # isolate the culprit: one by one, so a single bad request does not fail its neighbours
            log.warning("batch of %d failed (%s); retrying one by one", len(batch), e)
            return [r for item in batch for r in self._generate_safe([item], sampling)]

    @torch.inference_mode()
    def _generate_batch(self, batch, sampling: SamplingParams) -> list[GenerationResult]:
        from transformers import GenerationConfig

        prompts = [p for _, p, _, _ in batch]
        images = [im for _, _, ims, _ in batch for im in ims]
        if self.is_vlm:
            inputs = self.processor(
                text=prompts, images=images or None, padding=True, return_tensors="pt", add_special_tokens=False
            )
        else:
            inputs = self.tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        sample = sampling.temperature > 0
        gen_cfg = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=sample,
            temperature=sampling.temperature if sample else None,
            top_p=sampling.top_p if sample else None,
            top_k=0 if sample else None,  # no top-k filtering: same semantics as vLLM / OpenAI defaults
            repetition_penalty=1.0,
            num_beams=1,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            stop_strings=list(sampling.stop) or None,
        )
        torch.manual_seed(sampling.seed)  # sampling is reproducible per (batch, seed); greedy is batch-invariant
        out = self.model.generate(**inputs, generation_config=gen_cfg, tokenizer=self.tokenizer)
        prompt_len = inputs["input_ids"].shape[1]
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        results = []
        for row, n_prompt in zip(out[:, prompt_len:].tolist(), prompt_tokens):
            n, reason = len(row), None
            for j, tok in enumerate(row):
                if tok in self.eos_ids:
                    n, reason = j + 1, "stop"
                    break
            if reason is None:
                while n and row[n - 1] == self.pad_id:  # rows that finished early are right-padded
                    n -= 1
                reason = "length" if n >= sampling.max_new_tokens else "stop"
            text = self.tokenizer.decode([t for t in row[:n] if t not in self.hidden_ids], skip_special_tokens=False)
            for stop in sampling.stop:  # transformers keeps the stop string; OpenAI/vLLM drop it
                if stop in text:
                    text, reason = text[: text.index(stop)], "stop"
            answer, reasoning = split_think(text)
            results.append(
                GenerationResult(
                    text=answer,
                    reasoning=reasoning,
                    prompt_tokens=int(n_prompt),
                    completion_tokens=n,
                    finish_reason=reason,
                )
            )
        return results
