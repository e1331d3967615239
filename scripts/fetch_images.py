"""Download the Amazon metadata's first image per item into the dataset's image folder, for `ingest.format: amazon`.

    python scripts/fetch_images.py dataset/amazon-beauty                      # meta_*.json* -> images/
    python scripts/fetch_images.py dataset/amazon-beauty --workers 8 --rate 10 --failures fails.json

Resumable (rerun after a kill: finished images are skipped), rate-limited over all threads, retried with backoff;
every download is verified to decode as an image. Failures (item, url, reason) go to `--failures` (CSV, or JSON for a
.json name; default <root>/fetch_failures.csv). Not a DVC stage: the pipeline itself never touches the network.
"""

from pathlib import Path
from typing import Annotated

import typer

from mllmrec.cli import run
from mllmrec.data.amazon import meta_image_urls
from mllmrec.data.fetch_images import fetch_images, write_failures
from mllmrec.data.ingest import LAYOUTS, Report, resolve


def main(
    root: Annotated[Path, typer.Argument(help="the dataset folder (ingest.root)")],
    meta: Annotated[str, typer.Option(help="metadata file or glob inside root")] = LAYOUTS["amazon"].titles,
    image_dir: Annotated[str, typer.Option(help="folder inside root (ingest.image_dir)")] = "images",
    workers: Annotated[int, typer.Option(min=1, help="download threads")] = 4,
    rate: Annotated[float, typer.Option(min=0.01, help="requests per second, all threads together")] = 5.0,
    timeout: Annotated[float, typer.Option(min=0.01, help="seconds per request, the whole body included")] = 10.0,
    retries: Annotated[int, typer.Option(min=0, help="extra attempts on 429/5xx/timeouts/connection errors")] = 3,
    failures: Annotated[
        Path | None, typer.Option(help="failure report, .csv or .json (default: <root>/fetch_failures.csv)")
    ] = None,
) -> None:
    meta_file, bad_lines = resolve(root, meta, "metadata", fix="pass --meta FILE_OR_GLOB"), Report()
    urls = meta_image_urls(meta_file, bad_lines)
    if bad_lines.skipped:
        print(
            f"fetch_images: {meta_file}: skipped {dict(bad_lines.skipped)} metadata lines, e.g. "
            f"{[e for ex in bad_lines.examples.values() for e in ex][:3]}"
        )
    summary, failed = fetch_images(urls, root / image_dir, workers=workers, rate=rate, timeout=timeout, retries=retries)
    report = failures or root / "fetch_failures.csv"
    write_failures(failed, report)
    print(
        f"fetch_images: {summary['downloaded']} downloaded, {summary['already_present']} already present, "
        f"{summary['failed']} failed {summary['failed_by_reason']}, {summary['no_url']} without an image URL "
        f"(of {summary['items']} items); failures in {report}"
    )


if __name__ == "__main__":
    run(main)
