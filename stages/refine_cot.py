"""Editor refinement + leak audit: each draft becomes exactly `Step 1:` ... `Step 4:`, through `models.editor`.

    python stages/refine_cot.py       # reads params.yaml `refine_cot`, `models.editor`
    # the paper's editor over an API: models.editor = {engine: openai, model: deepseek-reasoner,
    #   base_url: https://api.deepseek.com/v1, api_key_env: DEEPSEEK_API_KEY}; the key stays in the environment

The editor sees history titles + captions and the draft (never images; the target only if `show_target`).
`<think>` traces are stripped; malformed output (empty / refusal / truncated / wrong format) is retried up to
`max_attempts` with a new seed, then recorded as failed with its reason. Every edited CoT is then audited for
mentions of its target (mllmrec.cot.leak) and scrubbed or dropped (`leak_action`). Outputs: data/cot/refined.parquet,
data/cot/refine_report.json (counts by reason, leak rate before/after), the cache `refine_cot.cache_dir`.

    # the authors' refined CoT instead of an editor: refine_cot = {source: authors_json,
    #   authors_file: movielens_deepseek_cot.json}   (relative to ingest.root; joined by user + items, audited alike)
"""

from pathlib import Path

from mllmrec import partcache
from mllmrec.cli import run
from mllmrec.config import ExecutorParams, IngestParams, ModelsParams, RefineCotParams, load_section
from mllmrec.cot.generate import refine, to_sampling
from mllmrec.data.authors import read_cot
from mllmrec.engines import build_engine
from mllmrec.io import read_parquet, write_json, write_parquet
from mllmrec.prompts import load_item_texts

OUT = Path("data/cot")


def main(out: Path = OUT) -> None:
    params = load_section("refine_cot", RefineCotParams)
    spec = load_section("models", ModelsParams).editor
    drafts = read_parquet(out / "drafts.parquet", "draft_cot")
    items = read_parquet(Path("data/ingest/items.parquet"), "ingest")
    captions = read_parquet(Path("data/textualize/captions.parquet"), "textualize")

    model, revision = partcache.model_identity(spec)
    given, joined = None, None
    if params.source == "authors_json":
        given, joined = read_cot(Path(load_section("ingest", IngestParams).root) / params.authors_file, drafts)
        model, revision = f"authors_json:{Path(params.authors_file).name}", ""
    refined, report = refine(
        drafts,
        load_item_texts(items, captions),
        params=params,
        sampling=to_sampling(params.sampling),
        model=model,
        revision=revision,
        make_engine=lambda: build_engine(spec),
        cache_dir=Path(params.cache_dir),
        given=given,
        executor=load_section("executor", ExecutorParams, default=ExecutorParams()),
    )
    if joined is not None:
        report["authors_json"] = joined

    write_parquet(refined, out / "refined.parquet")
    write_json(report, out / "refine_report.json")
    print(
        f"refine_cot: {report['refined_format_ok']}/{report['sent_to_editor']} drafts refined by {model}; "
        f"failed {report['failed']}; leaks {report['leak_before']} -> {report['leak_after']} "
        f"({report['leak_action']}); {report.get('model_calls', 0)} model calls, "
        f"{report.get('cache_hits', 0)} cache hits"
    )


if __name__ == "__main__":
    run(main)
