"""Every artifact path the stages read or write, relative to the repository root (where `dvc repro` runs them).

    from mllmrec import paths
    items = read_parquet(paths.ITEMS, "ingest")
    write_json(metrics, paths.metrics_file("random"))            # metrics/random.json

dvc.yaml spells the same paths in each stage's deps/outs/metrics/plots. Each stage script declares what it reads and
writes (`READS` / `WRITES`, built from this module) and tests/test_paths.py checks them against dvc.yaml, and that no
stage spells a path of its own. A path params.yaml sets (a cache folder, `ingest.root`) is `param(key)` there, as
dvc.yaml writes it; its default here is the config default.
"""

from pathlib import Path


def param(key: str) -> str:
    """A path params.yaml sets, as dvc.yaml templates it (`${ingest.root}`): the stage reads it from its params."""
    return "${" + key + "}"


# ingest: the normalized dataset
INGEST = Path("data/ingest")
ITEMS = INGEST / "items.parquet"
INTERACTIONS = INGEST / "interactions.parquet"
INGEST_REPORT = INGEST / "report.json"

# split: one candidate file per split.num_negatives (a whole-folder output in dvc.yaml)
SPLIT = Path("data/split")
TRAIN_SEQUENCES = SPLIT / "train_sequences.parquet"
SPLIT_REPORT = SPLIT / "report.json"


def candidates(num_negatives: int | str) -> Path:
    """data/split/candidates_n<N>.parquet; `num_negatives` may be a glob or a `param()` (READS of draft_cot)."""
    return SPLIT / f"candidates_n{num_negatives}.parquet"


# textualize: one caption per item image
TEXTUALIZE = Path("data/textualize")
CAPTIONS = TEXTUALIZE / "captions.parquet"
TEXTUALIZE_REPORT = TEXTUALIZE / "report.json"
TEXTUALIZE_CACHE = TEXTUALIZE / "cache"  # default of textualize.cache_dir

# CoT supervision: draft_cot -> refine_cot -> assess_cot
COT = Path("data/cot")
DRAFTS = COT / "drafts.parquet"
DRAFT_REPORT = COT / "draft_report.json"
REFINED = COT / "refined.parquet"
REFINE_REPORT = COT / "refine_report.json"
ASSESSED = COT / "assessed.parquet"  # default of augment.cot_file
ASSESS_REPORT = COT / "assess_report.json"
DRAFT_CACHE = COT / "cache" / "draft"  # defaults of <stage>.cache_dir
REFINE_CACHE = COT / "cache" / "refine"
EMBED_CACHE = COT / "cache" / "embed"
COT_METRICS = Path("metrics/cot.json")
COT_CONFIDENCE_PLOT = Path("plots/cot_confidence.csv")

# augment: the training samples, CoT on a seeded share
AUGMENT = Path("data/augment")
SFT_SAMPLES = AUGMENT / "sft.parquet"
GRPO_SAMPLES = AUGMENT / "grpo.parquet"
AUGMENT_REPORT = AUGMENT / "report.json"

# item tokens: the collaborative tokens' starting vectors (a whole-folder output)
ITEM_TOKENS = Path("data/item_tokens")
ITEM_TOKEN_TABLE = ITEM_TOKENS / "items.parquet"
ITEM_TOKENS_REPORT = ITEM_TOKENS / "report.json"

# models
DEMO_MODEL = Path("models/smollm2-135m-instruct")  # default of models.provision.out
SFT_MODEL = Path("models/sft")  # default of grpo.model
GRPO_MODEL = Path("models/grpo")
SASREC_CHECKPOINT = Path("data/models/sasrec.pt")

# training curves (the sft and grpo stages): DVCLive folders (mllmrec.training.live), metrics.json (each series' latest
# value + step: `dvc exp show` columns, also mid-run) and plots/metrics/<series>.tsv (step, <series>)
SFT_LIVE = Path("dvclive/sft")
SFT_LIVE_METRICS = SFT_LIVE / "metrics.json"
SFT_LIVE_PLOTS = SFT_LIVE / "plots/metrics"
GRPO_LIVE = Path("dvclive/grpo")
GRPO_LIVE_METRICS = GRPO_LIVE / "metrics.json"
GRPO_LIVE_PLOTS = GRPO_LIVE / "plots/metrics"
GRPO_COMPLETIONS = Path("data/grpo/completions.jsonl")

# evaluation: a method is a baseline (`random`) or a policy-protocol (`sft-generative`) for metrics
SASREC_PLOT = Path("plots/sasrec_train.csv")


def predictions(method: str) -> Path:
    """data/predictions/<method>.parquet (a baseline, or a policy with both protocols' rows)."""
    return Path("data/predictions") / f"{method}.parquet"


def metrics_file(method: str) -> Path:
    """metrics/<method>.json: `random`, ..., or `<policy>-<protocol>` (`sft-likelihood`)."""
    return Path("metrics") / f"{method}.json"


# report: every method side by side
REPORT_MD = Path("metrics/report.md")
COMPARISONS = Path("metrics/comparisons.json")
ENVIRONMENT = Path("metrics/environment.json")
HEADLINE = Path("metrics/headline.json")
REPORT_PLOTS = Path("plots/report")

# the ablation grid's table (scripts/ablation.py; not a stage: it reads finished experiments)
ABLATION_MD = Path("metrics/ablation.md")
ABLATION_PLOTS = Path("plots/ablation")


def live_series(plots_dir: Path, name: str) -> Path:
    """One DVCLive series file: <plots_dir>/<name>.tsv (columns step, <name>).

    >>> live_series(GRPO_LIVE_PLOTS, "reward").as_posix()
    'dvclive/grpo/plots/metrics/reward.tsv'
    """
    return plots_dir / f"{name}.tsv"
