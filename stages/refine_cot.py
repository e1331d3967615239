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
    # the drafts as written, no editor (after draft_cot.mode grounded, whose drafts are the four steps already):
    #   refine_cot = {source: draft}
"""

from pathlib import Path

from mllmrec import partcache, paths
from mllmrec.cli import run
from mllmrec.config import ExecutorParams, IngestParams, ModelsParams, RefineCotParams, load_section
from mllmrec.cot.generate import refine, to_sampling
from mllmrec.data.authors import read_cot
from mllmrec.engines import build_engine
from mllmrec.io import read_parquet, write_parquet
from mllmrec.prompts import load_item_texts
from mllmrec.reports import write_report

READS = [
    paths.DRAFTS,
    paths.ITEMS,
    paths.CAPTIONS,
    paths.param("models.provision.out"),  # orders after `models`: the editor is named by models.editor
    paths.param("ingest.root"),  # refine_cot.source authors_json: their CoT file lives in their dataset folder
]
WRITES = [paths.REFINED, paths.REFINE_REPORT, paths.param("refine_cot.cache_dir")]


def main() -> None:
    params = load_section("refine_cot", RefineCotParams)
    spec = load_section("models", ModelsParams).editor
    drafts = read_parquet(paths.DRAFTS, "draft_cot")
    items = read_parquet(paths.ITEMS, "ingest")
    captions = read_parquet(paths.CAPTIONS, "textualize")

    model, revision = partcache.model_identity(spec)
    given, joined, missing = None, None, "not_in_authors_file"
    if params.source == "authors_json":
        given, joined = read_cot(Path(load_section("ingest", IngestParams).root) / params.authors_file, drafts)
        model, revision = f"authors_json:{Path(params.authors_file).name}", ""
    elif params.source == "draft":  # the drafts as written, no editor (draft_cot.mode grounded writes four steps)
        given = {sid: d for sid, d in zip(drafts["sample_id"], drafts["draft"]) if d is not None}
        model, revision, missing = "draft (no editor)", "", "no_draft"
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
        missing=missing,
        executor=load_section("executor", ExecutorParams, default=ExecutorParams()),
    )
    report.authors_json = joined  # None (left out of the report) unless the authors' file stood in

    write_parquet(refined, paths.REFINED)
    write_report(report, paths.REFINE_REPORT)
    print(
        f"refine_cot: {report.refined_format_ok}/{report.sent_to_editor} drafts refined by {model}; "
        f"failed {report.failed}; leaks {report.leak_before} -> {report.leak_after} "
        f"({report.leak_action}); {report.model_calls} model calls, {report.cache_hits} cache hits"
    )


if __name__ == "__main__":
    run(main)
