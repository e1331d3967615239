"""Find, hash and decode each item's image: `<image_dir>/<item_id>.<ext>` relative to the dataset root, or the file
an `image` column of the items names (inside image_dir)."""

import hashlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
from PIL import Image

from mllmrec.progress import track

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
# what PIL reports for each extension; anything else is an extension mismatch (kept, counted)
FORMAT_OF_EXT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF", ".bmp": "BMP"}


def index_image_dir(image_dir: Path) -> dict[str, list[str]]:
    """item_id -> file names, from one directory listing (no per-item stat calls)."""
    found: dict[str, list[str]] = {}
    if image_dir.is_dir():
        for p in sorted(image_dir.iterdir()):
            if p.suffix.lower() in EXTENSIONS and p.is_file():
                found.setdefault(p.stem, []).append(p.name)
    return found


def check_image(path: Path) -> tuple[str | None, str | None, str | None]:
    """(sha256, format, error) for one image file. A file that does not fully decode is 'corrupt: ...'."""
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(path) as im:
            fmt = im.format
            im.load()  # full decode: catches truncated files that verify() lets through
            if im.width == 0 or im.height == 0:
                return sha, fmt, "corrupt: zero-size image"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return sha, None, f"corrupt: {type(e).__name__}: {e}"
    return sha, fmt, None


def attach_images(items: pl.DataFrame, root: Path, image_dir: str, workers: int) -> tuple[pl.DataFrame, Counter]:
    """Add image_path (relative to root), image_sha256, image_format, image_ok, image_error columns (an `image`
    column, from a titles file's mapped image column, is replaced by them)."""
    folder = root / image_dir
    if "image" in items.columns:  # named files: the listing is of those names (a missing file is "missing")
        named = dict(zip(items["item_id"], items["image"]))
        index = {i: [n] for i, n in named.items() if n and (folder / n).is_file()}
        items = items.drop("image")
    else:
        index = index_image_dir(folder)
    counts: Counter = Counter()
    jobs: dict[str, Path] = {}
    outside: set[str] = set()
    for item_id in items["item_id"]:
        names = index.get(item_id)
        if names:
            if len(names) > 1:
                counts["several_files_first_used"] += 1
            path = folder / names[0]
            # a symlink pointing outside the dataset root is not this dataset's image
            if root.resolve() in path.resolve().parents:
                jobs[item_id] = path
            else:
                outside.add(item_id)
    with ThreadPoolExecutor(workers) as pool:  # PIL decode releases the GIL
        checked = dict(
            zip(jobs, track(pool.map(check_image, jobs.values()), total=len(jobs), description="checking images"))
        )
    rows = []
    for item_id in items["item_id"]:
        if item_id not in jobs:
            # counted once, under one reason: the per-reason counts add up to the number of items
            reason = "outside_root" if item_id in outside else "missing"
            rows.append((None, None, None, False, reason))
            counts[reason] += 1
            continue
        sha, fmt, error = checked[item_id]
        path = jobs[item_id]
        if error:
            counts["corrupt"] += 1
        elif FORMAT_OF_EXT[path.suffix.lower()] != ("JPEG" if fmt == "MPO" else fmt):  # MPO: multi-picture JPEG
            counts["extension_mismatch"] += 1  # decodes fine; the extension lies about the format
        else:
            counts["ok"] += 1
        rows.append((path.relative_to(root).as_posix(), sha, fmt, error is None, error))
    cols = pl.DataFrame(
        rows,
        orient="row",
        schema={
            "image_path": pl.String,
            "image_sha256": pl.String,
            "image_format": pl.String,
            "image_ok": pl.Boolean,
            "image_error": pl.String,
        },
    )
    return pl.concat([items, cols], how="horizontal"), counts
