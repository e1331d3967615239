"""Textualize item images: one short, visually grounded caption per image through the `models.captioner` engine.

    python stages/textualize.py                     # reads params.yaml `textualize`, `models`, `ingest.root`
    MLLMREC_CACHE_ONLY=1 dvc repro textualize       # fail rather than load a model on a cache miss

Outputs: data/textualize/captions.parquet (item_id, image_sha256, caption, model, revision, prompt_hash,
generation_params, error, cache_key), data/textualize/report.json (model calls, cache hits, errors by reason), and
the content-addressed cache `textualize.cache_dir` (a `persist: true` DVC output; see src/mllmrec/data/textualize.py for
why, and how a teammate gets captions with `dvc pull` without loading any model).
"""

from pathlib import Path

import typer

from mllmrec import paths
from mllmrec.cli import run
from mllmrec.config import ExecutorParams, IngestParams, ModelsParams, TextualizeParams, load_section
from mllmrec.data.textualize import textualize
from mllmrec.engines import SamplingParams, build_engine
from mllmrec.io import read_parquet, write_parquet
from mllmrec.partcache import model_identity
from mllmrec.reports import write_report

READS = [paths.ITEMS]  # the images are read under ingest.root, named and hashed in items.parquet
WRITES = [paths.CAPTIONS, paths.TEXTUALIZE_REPORT, paths.param("textualize.cache_dir")]


def main(
    cache_only: bool = typer.Option(False, envvar="MLLMREC_CACHE_ONLY", help="fail instead of loading a model"),
) -> None:
    params = load_section("textualize", TextualizeParams)
    spec = load_section("models", ModelsParams).captioner
    root = Path(load_section("ingest", IngestParams).root)
    items = read_parquet(paths.ITEMS, "ingest")

    model, revision = model_identity(spec)
    s = params.sampling
    sampling = SamplingParams(
        temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens, seed=s.seed, stop=tuple(s.stop)
    )
    captions, report = textualize(
        items,
        root,
        prompt=params.prompt,
        sampling=sampling,
        model=model,
        revision=revision,
        make_engine=lambda: build_engine(spec),
        cache_dir=Path(params.cache_dir),
        batch_size=params.batch_size,
        cache_only=cache_only,
        executor=load_section("executor", ExecutorParams, default=ExecutorParams()),
    )

    write_parquet(captions, paths.CAPTIONS)
    write_report(report, paths.TEXTUALIZE_REPORT)
    print(
        f"textualize: {report.captioned}/{report.items} items captioned by {model}; "
        f"{report.model_calls} model calls, {report.cache_hits} cache hits, errors {report.errors}"
    )


if __name__ == "__main__":
    run(main)
