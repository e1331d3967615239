"""scripts/fetch_images.py against a real HTTP server on 127.0.0.1: real posters and a PNG, 404s, a handler slower
than the timeout, a non-image body, a server error that recovers; failures reported, and a rerun downloads nothing
that is already there."""

import csv
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import pytest
from format_fixtures import asin, write_amazon_2023
from ingest_fixtures import POSTERS, USERS, items_of
from PIL import Image

from mllmrec.data.amazon import meta_image_urls
from mllmrec.data.fetch_images import fetch_images

REPO = Path(__file__).resolve().parents[1]


def png_bytes() -> bytes:
    out = BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def server():
    """(base url, Counter of paths requested); /img/<movie>.jpg serves the real poster."""
    hits: Counter = Counter()
    flaky_left = {"n": 1}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet test output
            pass

        def do_GET(self):
            hits[self.path] += 1
            status, body = 200, b""
            if self.path == "/trickle":  # every read well within the timeout, the whole far past it
                self.send_response(200)
                self.send_header("Content-Length", "4000")
                self.end_headers()
                for _ in range(40):
                    self.wfile.write(b"x" * 100)
                    self.wfile.flush()
                    time.sleep(0.1)
                return
            if self.path == "/truncated":  # promises a whole poster, sends half of it, hangs up
                poster = (POSTERS / "1.jpg").read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(poster)))
                self.end_headers()
                self.wfile.write(poster[: len(poster) // 2])
                self.close_connection = True
                return
            if self.path == "/garbage-status":
                self.wfile.write(b"HTTP/1.1 banana\r\n\r\n")
                self.close_connection = True
                return
            if self.path in ("/to-file", "/to-ftp"):
                self.send_response(302)
                self.send_header("Location", "file:///etc/hostname" if self.path == "/to-file" else "ftp://127.0.0.1/x")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path.startswith("/img/") and (POSTERS / self.path[5:]).is_file():
                body = (POSTERS / self.path[5:]).read_bytes()
            elif self.path == "/png":
                body = png_bytes()
            elif self.path == "/slow":
                time.sleep(1.5)  # longer than the fetcher's timeout
                body = png_bytes()
            elif self.path == "/html":
                body = b"<html>Robot check</html>"
            elif self.path == "/flaky" and flaky_left["n"]:
                flaky_left["n"] -= 1
                status = 503
            elif self.path == "/flaky":
                body = png_bytes()
            else:
                status = 404
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


def test_downloads_verifies_reports_and_resumes(tmp_path, server):
    base, hits = server
    posters = {f"M{i}": f"{base}/img/{i}.jpg" for i in items_of(USERS)[:6]}
    urls = {
        **posters,
        "P": f"{base}/png",
        "GONE": f"{base}/img/nope.jpg",
        "SLOW": f"{base}/slow",
        "HTML": f"{base}/html",
        "FLAKY": f"{base}/flaky",
        "NOURL": None,
    }
    out = tmp_path / "images"
    out.mkdir()
    (out / "M1.jpg.part").write_bytes(b"half a file from a killed run")
    kw = {"workers": 4, "rate": 50.0, "timeout": 0.5, "retries": 1, "backoff": 0.05}
    summary, failures = fetch_images(urls, out, **kw)

    assert summary == {
        "items": 12,
        "no_url": 1,
        "already_present": 0,
        "downloaded": 8,
        "failed": 3,
        "failed_by_reason": {"http_404": 1, "not_an_image": 1, "timeout": 1},
        "stale_part_files_removed": 1,
    }
    assert sorted((f["item"], f["reason"]) for f in failures) == [
        ("GONE", "http_404"),
        ("HTML", "not_an_image"),
        ("SLOW", "timeout"),
    ]
    assert {f["url"] for f in failures} == {urls["GONE"], urls["HTML"], urls["SLOW"]}
    for item, url in posters.items():  # byte-exact copies of the served posters
        assert (out / f"{item}.jpg").read_bytes() == (POSTERS / url.rsplit("/", 1)[1]).read_bytes()
    assert (out / "P.png").is_file() and (out / "FLAKY.png").is_file()
    assert not list(out.glob("*.part")) and not list(out.glob("HTML*")) and not list(out.glob("GONE*"))
    assert hits["/flaky"] == 2 and hits["/slow"] == 2 and hits["/img/nope.jpg"] == 1  # 404 is final, no retry

    hits.clear()
    summary, failures = fetch_images(urls, out, **kw)  # resume: only the three failures are tried again
    assert summary["downloaded"] == 0 and summary["already_present"] == 8 and summary["failed"] == 3
    assert set(hits) == {"/img/nope.jpg", "/slow", "/html"}


def test_rate_limit_spaces_requests_over_all_threads(tmp_path, server):
    base, _ = server
    urls = {f"P{i}": f"{base}/png" for i in range(6)}
    t0 = time.monotonic()
    summary, _ = fetch_images(urls, tmp_path / "img", workers=6, rate=10.0, timeout=2, retries=0)
    assert summary["downloaded"] == 6
    assert time.monotonic() - t0 >= 0.45  # 6 starts at 10/s: the last one >= 0.5 s after the first


def test_script_reads_amazon_metadata_and_writes_the_failure_report(tmp_path, server):
    base, _ = server
    root = write_amazon_2023(tmp_path / "amz", base_url=f"{base}/img")
    for f in (root / "images").iterdir():  # start without images
        f.unlink()
    urls = meta_image_urls(root / "meta_Beauty.jsonl.gz")
    assert urls[asin("293")] == f"{base}/img/293.jpg"  # `large` (hi_res is null in the record)
    env_cmd = [
        sys.executable,
        str(REPO / "scripts/fetch_images.py"),
        str(root),
        "--rate",
        "200",
        "--workers",
        "4",
        "--timeout",
        "2",
        "--failures",
        str(tmp_path / "fails.json"),
    ]
    done = subprocess.run(env_cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    n = len(items_of(USERS))
    assert f"fetch_images: {n} downloaded, 0 already present, 0 failed" in done.stdout
    assert json.loads((tmp_path / "fails.json").read_text()) == []
    assert len(list((root / "images").glob("*.jpg"))) == n

    done = subprocess.run(env_cmd[:-2], capture_output=True, text=True, timeout=120, check=False)
    assert f"0 downloaded, {n} already present" in done.stdout
    with open(root / "fetch_failures.csv") as f:
        assert list(csv.reader(f)) == [["item", "url", "reason"]]


def test_hostile_ids_urls_and_servers_are_counted_failures(tmp_path, server):
    """Ids that are not file names, non-http(s) URLs (also behind a redirect), a server that trickles bytes past the
    timeout, a truncated body, a garbage status line: each a counted failure with its reason, none aborts the run,
    nothing is written outside the image folder."""
    base, hits = server
    secret = tmp_path / "secret.jpg"
    secret.write_bytes((POSTERS / "1.jpg").read_bytes())
    out = tmp_path / "data" / "images"
    urls = {
        "../escape": f"{base}/png",
        "/abs": f"{base}/png",
        ".hidden": f"{base}/png",
        "a b": f"{base}/png",
        "FILE": secret.as_uri(),
        "FTP": "ftp://127.0.0.1/x.jpg",
        "REDIRECT": f"{base}/to-file",
        "REDIRECT2": f"{base}/to-ftp",
        "TRICKLE": f"{base}/trickle",
        "TRUNC": f"{base}/truncated",
        "STATUS": f"{base}/garbage-status",
        "OK": f"{base}/png",
    }
    t = time.monotonic()
    summary, failures = fetch_images(urls, out, workers=4, rate=100, timeout=1.0, retries=1, backoff=0.01)
    reasons = {f["item"]: f["reason"] for f in failures}
    assert {i: reasons[i] for i in ("../escape", "/abs", ".hidden", "a b")} == dict.fromkeys(
        ("../escape", "/abs", ".hidden", "a b"), "invalid_item_id"
    )
    assert reasons["FILE"] == "unsupported_url" and reasons["FTP"] == "unsupported_url"
    assert reasons["REDIRECT"].startswith("unsupported_url") and reasons["REDIRECT2"].startswith("unsupported_url")
    assert reasons["TRICKLE"] == "timeout" and reasons["TRUNC"] == "truncated"
    assert reasons["STATUS"].startswith("protocol")
    assert summary["downloaded"] == 1 and summary["failed"] == len(urls) - 1
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["OK.png", "secret.jpg"]
    assert time.monotonic() - t < 8  # 2 attempts x ~1 s per trickle, not 4 s each
    assert hits["/png"] == 1  # the bad ids were never requested
