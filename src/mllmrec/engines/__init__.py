"""One generation protocol, interchangeable engines (transformers, vllm, openai, pixel_describer, image_tagger). See base.py.

    from mllmrec.config import load_section, ModelsParams
    from mllmrec.engines import build_engine
    engine = build_engine(load_section("models", ModelsParams).captioner)
    results = engine.generate(requests)   # stages never branch on which engine runs

Each engine module is imported only when chosen: vllm is a GPU-only extra, and torch/transformers cost seconds.
"""

from mllmrec.config import EngineSpec
from mllmrec.engines.base import Engine, GenerationRequest, GenerationResult, SamplingParams

__all__ = ["Engine", "GenerationRequest", "GenerationResult", "SamplingParams", "build_engine"]


def build_engine(spec: EngineSpec) -> Engine:
    if spec.engine == "transformers":
        from mllmrec.engines.transformers_engine import TransformersEngine

        return TransformersEngine(spec)
    if spec.engine == "vllm":
        from mllmrec.engines.vllm_engine import VllmEngine

        return VllmEngine(spec)
    if spec.engine == "openai":
        from mllmrec.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(spec)
    if spec.engine == "pixel_describer":
        from mllmrec.engines.pixel_describer import PixelDescriber

        return PixelDescriber(spec)
    if spec.engine == "image_tagger":
        from mllmrec.engines.image_tagger import ImageTagger

        return ImageTagger(spec)
    raise ValueError(f"unknown engine {spec.engine!r}")  # unreachable: EngineSpec.engine is a Literal
