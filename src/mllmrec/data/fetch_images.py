"""Download each item's first image URL into `<image_dir>/<item>.<ext>`: parallel, rate-limited, resumable.

    from mllmrec.data.fetch_images import fetch_images
    summary = fetch_images({"B0001": "https://.../a.jpg"}, Path("images"), workers=8, rate=5.0)

Run from the command line with scripts/fetch_images.py. Never part of the DAG (the offline demo needs no network).

- resumable: a finished file is written as `<item>.<ext>.part` then renamed, so an interrupted run leaves no partial
  image under the final name, and a rerun skips every item that already has one;
- verified: a body that PIL cannot fully decode is a failure (`not_an_image`), never saved;
- polite: at most `rate` requests per second over all `workers` threads (retries included); 429 / 5xx / timeouts /
  connection errors are retried `retries` times with exponential backoff and jitter; other 4xx are final.
"""

import csv
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

from PIL import Image

from mllmrec.data.images import index_image_dir

# PIL format -> the extension saved (one of images.EXTENSIONS, so ingest finds the file)
EXT_OF_FORMAT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}
MAX_BYTES = 50 * 2**20  # an image larger than this is not a product photo
USER_AGENT = "mllmrec-fetch-images/1 (research; resumable, rate-limited)"


class RateLimiter:
    """At most `rate` starts per second across threads: each caller waits for its own slot."""

    def __init__(self, rate: float):
        self.interval, self.next, self.lock = 1.0 / rate, time.monotonic(), threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            slot = max(now, self.next)
            self.next = slot + self.interval
        time.sleep(max(0.0, slot - now))


class Retryable(Exception):
    """A failure worth another attempt (server busy, timeout, connection error); its message is the reason."""


def get(url: str, timeout: float) -> bytes:
    """The response body, or Retryable / ValueError(reason) for a final failure."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as e:
        if e.code == 429 or e.code >= 500:
            raise Retryable(f"http_{e.code}") from None
        raise ValueError(f"http_{e.code}") from None
    except TimeoutError:
        raise Retryable("timeout") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            raise Retryable("timeout") from None
        raise Retryable(f"network: {e.reason}") from None
    except OSError as e:  # connection reset mid-body, ...
        raise Retryable(f"network: {type(e).__name__}") from None
    if len(body) > MAX_BYTES:
        raise ValueError("too_large")
    return body


def image_format(body: bytes) -> str:
    """PIL's format name after a full decode; ValueError('not_an_image' / 'unsupported_format') otherwise."""
    try:
        with Image.open(BytesIO(body)) as im:
            im.load()  # full decode: a truncated download fails here
            fmt = "JPEG" if im.format == "MPO" else im.format
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise ValueError("not_an_image") from None
    if fmt not in EXT_OF_FORMAT:
        raise ValueError(f"unsupported_format: {fmt}")
    return fmt


def fetch_one(item: str, url: str, out_dir: Path, limiter: RateLimiter, timeout: float, retries: int,
              backoff: float) -> str | None:
    """Download, verify and atomically save one image; None on success, else the failure reason."""
    reason = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1) + random.uniform(0, backoff))  # jitter spreads the threads
        limiter.wait()
        try:
            body = get(url, timeout)
            fmt = image_format(body)
        except Retryable as e:
            reason = str(e)
            continue
        except ValueError as e:
            return str(e)
        final = out_dir / f"{item}{EXT_OF_FORMAT[fmt]}"
        part = final.with_name(final.name + ".part")
        part.write_bytes(body)
        os.replace(part, final)  # atomic: the final name only ever holds a whole, verified image
        return None
    return reason


def fetch_images(urls: dict[str, str | None], out_dir: Path, *, workers: int = 4, rate: float = 5.0,
                 timeout: float = 10.0, retries: int = 3, backoff: float = 0.5) -> tuple[dict, list[dict]]:
    """(summary counts, failures [{item, url, reason}]) for item -> URL (None: the metadata has no image)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = list(out_dir.glob("*.part"))  # a killed run's unfinished files
    for p in stale:
        p.unlink()
    present = index_image_dir(out_dir)
    todo = {i: u for i, u in urls.items() if u and i not in present}
    limiter = RateLimiter(rate)
    with ThreadPoolExecutor(workers) as pool:
        reasons = dict(zip(todo, pool.map(lambda kv: fetch_one(*kv, out_dir, limiter, timeout, retries, backoff),
                                          todo.items())))
    failures = [{"item": i, "url": todo[i], "reason": r} for i, r in reasons.items() if r is not None]
    summary = {
        "items": len(urls), "no_url": sum(1 for u in urls.values() if not u),
        "already_present": sum(1 for i, u in urls.items() if u and i in present),
        "downloaded": len(todo) - len(failures), "failed": len(failures),
        "failed_by_reason": dict(sorted(Counter(f["reason"] for f in failures).items())),
        "stale_part_files_removed": len(stale),
    }
    return summary, failures


def write_failures(failures: list[dict], path: Path) -> None:
    """item, url, reason per failed download: JSON for a .json path, else CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps(failures, indent=1) + "\n")
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["item", "url", "reason"])
        writer.writeheader()
        writer.writerows(failures)

