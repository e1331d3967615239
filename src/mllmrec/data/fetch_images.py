"""Download each item's first image URL into `<image_dir>/<item>.<ext>`: parallel, rate-limited, resumable.

    from mllmrec.data.fetch_images import fetch_images
    summary = fetch_images({"B0001": "https://.../a.jpg"}, Path("images"), workers=8, rate=5.0)

Run from the command line with scripts/fetch_images.py. Never part of the DAG (the offline demo needs no network).

- resumable: a finished file is written as `<item>.<ext>.part` then renamed, so an interrupted run leaves no partial
  image under the final name, and a rerun skips every item that already has one;
- verified: a body that PIL cannot fully decode is a failure (`not_an_image`), never saved;
- polite: at most `rate` requests per second over all `workers` threads (retries included); 429 / 5xx / timeouts /
  connection and protocol errors / truncated bodies are retried `retries` times with exponential backoff and jitter;
  other 4xx are final;
- untrusted input: an id becomes a file name only if it matches ingest's id rule (else `invalid_item_id`, never
  joined to a path); only http(s) URLs, redirects included (else `unsupported_url`); `timeout` bounds each whole
  request (a server that trickles bytes is cut off), the size cap is checked while streaming.
"""

import csv
import http.client
import json
import os
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

from PIL import Image

from mllmrec.data.images import index_image_dir
from mllmrec.data.ingest import ID_PATTERN

# PIL format -> the extension saved (one of images.EXTENSIONS, so ingest finds the file)
EXT_OF_FORMAT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}
MAX_BYTES = 50 * 2**20  # an image larger than this is not a product photo
CHUNK = 64 * 2**10
SCHEMES = ("http", "https")
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


class HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s): a redirect to file:// or ftp:// would copy other data into the dataset."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in SCHEMES:
            raise ValueError("unsupported_url: redirect to " + urllib.parse.urlsplit(newurl).scheme)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


OPENER = urllib.request.build_opener(HttpOnlyRedirects)


def get(url: str, timeout: float) -> bytes:
    """The response body, or Retryable / ValueError(reason) for a final failure. `timeout` bounds the whole request
    (connect, headers and every byte of the body), not only each socket read."""
    if urllib.parse.urlsplit(url).scheme.lower() not in SCHEMES:
        raise ValueError("unsupported_url")
    deadline = time.monotonic() + timeout
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with OPENER.open(req, timeout=timeout) as resp:
            chunks, size = [], 0
            while chunk := resp.read(CHUNK):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BYTES:
                    raise ValueError("too_large")
                if time.monotonic() > deadline:  # a trickling server: each read is quick, the whole is not
                    raise Retryable("timeout")
            body = b"".join(chunks)
            expected = resp.headers.get("Content-Length")
            if expected and expected.isdigit() and int(expected) != len(body):
                raise Retryable("truncated")
    except urllib.error.HTTPError as e:
        if e.code in (301, 302, 303, 307, 308):  # a redirect surfaces only when urllib refused its target's scheme
            raise ValueError("unsupported_url: redirect") from None
        if e.code == 429 or e.code >= 500:
            raise Retryable(f"http_{e.code}") from None
        raise ValueError(f"http_{e.code}") from None
    except TimeoutError:
        raise Retryable("timeout") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            raise Retryable("timeout") from None
        raise Retryable(f"network: {e.reason}") from None
    except http.client.IncompleteRead:
        raise Retryable("truncated") from None
    except http.client.HTTPException as e:  # bad status line, remote disconnected, ...
        raise Retryable(f"protocol: {type(e).__name__}") from None
    except OSError as e:  # connection reset mid-body, ...
        raise Retryable(f"network: {type(e).__name__}") from None
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


def fetch_one(
    item: str, url: str, out_dir: Path, limiter: RateLimiter, timeout: float, retries: int, backoff: float
) -> str | None:
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
        if final.resolve().parent != out_dir.resolve():  # the id rule already forbids it; never write outside
            return "invalid_item_id"
        part = final.with_name(final.name + ".part")
        part.write_bytes(body)
        os.replace(part, final)  # atomic: the final name only ever holds a whole, verified image
        return None
    return reason


def fetch_images(
    urls: dict[str, str | None],
    out_dir: Path,
    *,
    workers: int = 4,
    rate: float = 5.0,
    timeout: float = 10.0,
    retries: int = 3,
    backoff: float = 0.5,
) -> tuple[dict, list[dict]]:
    """(summary counts, failures [{item, url, reason}]) for item -> URL (None: the metadata has no image)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = list(out_dir.glob("*.part"))  # a killed run's unfinished files
    for p in stale:
        p.unlink()
    present = index_image_dir(out_dir)
    bad_ids = {i: u for i, u in urls.items() if u and not re.fullmatch(ID_PATTERN, i)}  # never joined to a path
    todo = {i: u for i, u in urls.items() if u and i not in present and i not in bad_ids}
    limiter = RateLimiter(rate)
    with ThreadPoolExecutor(workers) as pool:
        reasons = dict(
            zip(todo, pool.map(lambda kv: fetch_one(*kv, out_dir, limiter, timeout, retries, backoff), todo.items()))
        )
    failures = [{"item": i, "url": u, "reason": "invalid_item_id"} for i, u in bad_ids.items()]
    failures += [{"item": i, "url": todo[i], "reason": r} for i, r in reasons.items() if r is not None]
    summary = {
        "items": len(urls),
        "no_url": sum(1 for u in urls.values() if not u),
        "already_present": sum(1 for i, u in urls.items() if u and i in present),
        "downloaded": len(todo) - (len(failures) - len(bad_ids)),
        "failed": len(failures),
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
