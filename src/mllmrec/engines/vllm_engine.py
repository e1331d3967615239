"""Offline vLLM batched generation (`vllm.LLM.chat`), text and multimodal, for GPU boxes (extra `gpu`).

    spec = EngineSpec(engine="vllm", model="Qwen/Qwen3-VL-8B-Instruct", revision="<commit>", max_model_len=8192,
                      max_pixels=401408, limit_mm_per_prompt=10)
    VllmEngine(spec).generate(requests)      # the whole list goes to vLLM's scheduler at once

vllm is imported here only, so CPU installs never need it. Caps that matter for memory: `max_pixels` (images are
downscaled before vLLM sees them) and `limit_mm_per_prompt` (vLLM reserves encoder memory for that many images per
prompt at start-up). `generation_config="vllm"`: the checkpoint's generation_config.json never sets our sampling.
vLLM spawns its engine core: a script that builds this engine needs an `if __name__ == "__main__":` guard.
"""

import logging
import time

from mllmrec.config import EngineSpec
from mllmrec.engines.base import GenerationRequest, GenerationResult, load_image, split_think, with_image_parts

log = logging.getLogger(__name__)


def _is_multimodal(spec: EngineSpec) -> bool:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(spec.model, revision=spec.revision or None)
    return getattr(cfg, "vision_config", None) is not None


class VllmEngine:
    def __init__(self, spec: EngineSpec):
        import torch
        from vllm import LLM

        from mllmrec.engines.transformers_engine import resolve_dtype

        self.spec = spec
        self.model_id, self.revision = spec.model, spec.revision
        self.multimodal = _is_multimodal(spec)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = str(resolve_dtype(spec.dtype, device, engine="vllm")).removeprefix("torch.")
        kw = {
            "model": spec.model,
            "revision": spec.revision or None,
            "dtype": dtype,
            "seed": 0,
            "enforce_eager": spec.enforce_eager,
            "gpu_memory_utilization": spec.gpu_memory_utilization,
            "generation_config": "vllm",  # vLLM's neutral defaults, not the checkpoint's
        }
        if spec.max_model_len:
            kw["max_model_len"] = spec.max_model_len
        if self.multimodal:
            kw["limit_mm_per_prompt"] = {"image": spec.limit_mm_per_prompt}
        t0 = time.perf_counter()
        self.llm = LLM(**kw)
        log.info(
            "vllm engine: %s (%s, multimodal=%s) ready in %.1fs",
            spec.model,
            dtype,
            self.multimodal,
            time.perf_counter() - t0,
        )

    def _conversation(self, req: GenerationRequest) -> list[dict]:
        if req.images and not self.multimodal:
            raise ValueError(f"{self.model_id} is a text-only model but the request has {len(req.images)} image(s)")
        if len(req.images) > self.spec.limit_mm_per_prompt:
            raise ValueError(f"{len(req.images)} images > limit_mm_per_prompt={self.spec.limit_mm_per_prompt}")
        if not req.images:
            return [dict(m) for m in req.messages]
        images = iter([load_image(p, self.spec.max_pixels) for p in req.images])
        return [
            {
                **m,
                "content": [
                    {"type": "image_pil", "image_pil": next(images)} if p["type"] == "image" else p
                    for p in m["content"]
                ],
            }
            for m in with_image_parts(req.messages, len(req.images))
        ]

    def _sampling(self, req: GenerationRequest):
        from vllm import SamplingParams as VSP

        s = req.sampling
        return VSP(
            temperature=s.temperature,
            top_p=s.top_p if s.temperature > 0 else 1.0,
            max_tokens=s.max_new_tokens,
            seed=s.seed,  # per request: the draw does not depend on what else is in the batch
            stop=list(s.stop) or None,
            repetition_penalty=1.0,
        )

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        results: list[GenerationResult | None] = [None] * len(requests)
        todo = []
        for i, req in enumerate(requests):
            try:
                todo.append((i, self._conversation(req), self._sampling(req)))
            except Exception as e:  # noqa: BLE001  missing/corrupt image, too many images: fails alone
                results[i] = GenerationResult(finish_reason="error", error=f"{type(e).__name__}: {e}")
        for (i, *_), res in zip(todo, self._chat_safe(todo)):
            results[i] = res
        return results  # type: ignore[return-value]

    def _chat_safe(self, todo) -> list[GenerationResult]:
        if not todo:
            return []
        kw = {}
        if self.spec.enable_thinking is not None:
            kw["chat_template_kwargs"] = {"enable_thinking": self.spec.enable_thinking}
        try:
            outs = self.llm.chat([c for _, c, _ in todo], [s for _, _, s in todo], use_tqdm=False, **kw)
        except Exception as e:  # noqa: BLE001  recorded per request, never lost
            if len(todo) == 1 or type(e).__name__ == "EngineDeadError":  # a dead engine fails everything alike
                return [GenerationResult(finish_reason="error", error=f"{type(e).__name__}: {e}") for _ in todo]
            log.warning("vllm batch of %d failed (%s); retrying one by one", len(todo), e)
            return [r for item in todo for r in self._chat_safe([item])]
        results = []
        for out in outs:
            o = out.outputs[0]
            answer, reasoning = split_think(o.text)
            results.append(
                GenerationResult(
                    text=answer,
                    reasoning=reasoning,
                    prompt_tokens=len(out.prompt_token_ids or []),
                    completion_tokens=len(o.token_ids),
                    finish_reason="length" if o.finish_reason == "length" else "stop",
                )
            )
        return results
