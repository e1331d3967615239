"""Amazon Reviews 2018 and 2023: one JSON object per line, optionally gzipped.

    ingest: {format: amazon, root: dataset/amazon-beauty}   # reviews + meta_ file, images/<item>.<ext>

Reviews (`<Category>.jsonl[.gz]`, 2018: `<Category>.json[.gz]`) -> user, item, timestamp (+ rating):
    2023: {"user_id": "AE...", "parent_asin": "B0...", "asin": "B0...", "timestamp": 1588687728923, "rating": 5.0, ...}
    2018: {"reviewerID": "A1...", "asin": "B0...", "unixReviewTime": 1252800000, "overall": 5.0, ...}
Metadata (`meta_<Category>.jsonl[.gz]`) -> item, title, first image URL:
    2023: {"parent_asin": "B0...", "title": "...", "images": [{"hi_res": url|null, "large": url, "thumb": url,
           "variant": "MAIN"}, ...], ...}
    2018: {"asin": "B0...", "title": "...", "imageURLHighRes": [url, ...], "imageURL": [url, ...], ...}

The item id is `parent_asin` where a record has it (2023: variants share it and the metadata is keyed by it), else
`asin`. Timestamps stay in their unit (2023 ms, 2018 s; only their order is used). Images are local files
`images/<item>.<ext>`: `scripts/fetch_images.py` downloads them from the metadata's URLs.
"""

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from mllmrec.config import IngestParams
from mllmrec.data.ingest import LAYOUTS, MAX_EXAMPLES, Report, resolve, title_frame
from mllmrec.errors import UserError

# review fields: (user, item candidates in order, timestamp, rating), per release
FIELDS_2023 = ("user_id", ("parent_asin", "asin"), "timestamp", "rating")
FIELDS_2018 = ("reviewerID", ("asin",), "unixReviewTime", "overall")


def iter_jsonl(path: Path, report: Report, what: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) per non-blank line; a line that is not a JSON object is counted as malformed_line."""
    if not path.is_file():
        raise UserError(f"{path}: not found")
    opener = gzip.open if path.suffix == ".gz" else open
    seen = 0
    try:
        with opener(path, "rb") as f:
            for n, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                seen += 1
                try:
                    rec = json.loads(raw)
                except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
                    rec = None
                if not isinstance(rec, dict):
                    report.skip("malformed_line", 1, [f"{path.name}:{n}"])
                    continue
                yield n, rec
    except (OSError, EOFError) as e:  # not gzip after all, truncated archive
        raise UserError(f"{path}: cannot read ({type(e).__name__}: {e}); expected {what} as JSON lines") from None
    report.read[f"{what}_lines"] += seen
    if not seen:
        raise UserError(f"{path}: file is empty")


def first_image_url(rec: dict) -> str | None:
    """The item's first image: 2023 `images[0]` hi_res > large > thumb; 2018 imageURLHighRes[0] > imageURL[0]."""
    images = rec.get("images")
    if isinstance(images, list):
        for im in images:
            if isinstance(im, dict):
                url = next((im[k] for k in ("hi_res", "large", "thumb") if isinstance(im.get(k), str) and im[k]), None)
                if url:
                    return url
    for key in ("imageURLHighRes", "imageURL"):
        urls = rec.get(key)
        if isinstance(urls, list) and urls and isinstance(urls[0], str) and urls[0]:
            return urls[0]
    return None


def item_of(rec: dict) -> str | None:
    item = rec.get("parent_asin") or rec.get("asin")
    return item if isinstance(item, str) else None


def read_reviews(path: Path, min_rating: float | None, report: Report) -> pl.DataFrame:
    rows, missing, low = [], [], []
    for n, rec in iter_jsonl(path, report, "interaction"):
        user_key, _, ts_key, rating_key = FIELDS_2018 if "reviewerID" in rec else FIELDS_2023
        user, item, ts, rating = rec.get(user_key), item_of(rec), rec.get(ts_key), rec.get(rating_key)
        ok = isinstance(user, str) and item is not None and isinstance(ts, int) and not isinstance(ts, bool)
        if min_rating is not None:
            ok = ok and isinstance(rating, int | float) and not isinstance(rating, bool)
        if not ok:
            missing.append(f"{path.name}:{n}")
            continue
        if min_rating is not None and rating < min_rating:
            low.append(f"{path.name}:{n}")
            continue
        rows.append((n, user, item, ts))
    report.skip("missing_field", len(missing), missing[:MAX_EXAMPLES])
    report.skip("below_min_rating", len(low), low[:MAX_EXAMPLES])
    if not rows and missing:
        raise UserError(
            f"{path}: no review has the fields of Amazon 2018 ({', '.join(FIELDS_2018[:1] + FIELDS_2018[2:])}"
            f", asin) or 2023 (user_id, parent_asin/asin, timestamp, rating), e.g. {missing[0]}"
        )
    schema = {"line": pl.Int64, "user_id": pl.String, "item_id": pl.String, "timestamp": pl.Int64}
    return pl.DataFrame(rows, schema=schema, orient="row").with_columns(file=pl.lit(path.name))


def read_meta(path: Path, report: Report) -> pl.DataFrame:
    rows, missing = [], []
    for n, rec in iter_jsonl(path, report, "title"):
        item, title = item_of(rec), rec.get("title", "")
        if item is None or not isinstance(title, str):
            missing.append(f"{path.name}:{n}")
            continue
        rows.append((item, title, n))  # a missing title is "" -> counted as empty_title
    report.skip("missing_field_in_titles", len(missing), missing[:MAX_EXAMPLES])
    return title_frame(rows, path, report, missing)


def read(root: Path, params: IngestParams, report: Report) -> tuple[pl.DataFrame, pl.DataFrame]:
    layout = LAYOUTS["amazon"]
    titles = read_meta(resolve(root, params.titles_file or layout.titles, "titles"), report)
    reviews = resolve(root, params.interactions_file or layout.interactions[0], "interactions")
    return read_reviews(reviews, params.min_rating, report), titles


def meta_image_urls(path: Path, report: Report | None = None) -> dict[str, str]:
    """item -> first image URL, for scripts/fetch_images.py; malformed lines are counted in `report`."""
    return {
        item: url
        for _, rec in iter_jsonl(path, report or Report(), "title")
        if (item := item_of(rec)) and (url := first_image_url(rec))
    }
