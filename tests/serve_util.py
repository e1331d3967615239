"""A real OpenAI-compatible server process for tests and benchmarks, and a fault-injecting proxy in front of it.

    with transformers_serve(model_dir) as url:            # `transformers serve` subprocess, ready when yielded
        proxy = FaultProxy(url, schedule=lambda n: "429" if n % 3 == 0 else "pass")
        OpenAIEngine(EngineSpec(engine="openai", model=str(model_dir), base_url=proxy.url)).generate(...)

The proxy forwards each POST to the real server unless the schedule (request number -> action) injects a fault:
"429" (with Retry-After: 0), "500", "timeout" (sleeps past the client's timeout, then forwards nothing) or "pass".
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def transformers_serve(
    model_dir: Path, log_path: Path | None = None, start_timeout_s: float = 120, extra_args: tuple[str, ...] = ()
):
    """Yield the /v1 base url of a `transformers serve` subprocess on `model_dir` (CPU), terminated on exit."""
    port = free_port()
    exe = Path(sys.executable).parent / "transformers"
    log_path = log_path or Path(model_dir).parent / f"serve-{port}.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [
                str(exe),
                "serve",
                str(model_dir),
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--device",
                "cpu",
                *extra_args,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.time() + start_timeout_s
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"transformers serve did not start:\n{log_path.read_text()[-3000:]}") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


class QuietHandler(BaseHTTPRequestHandler):
    """A test server's request handler: no access log, and a client that already left is not an error."""

    def log_message(self, *a):
        pass

    def _send(self, status: int, body: bytes, headers=()):
        try:
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left


class FaultProxy:
    """Forwards POSTs to `upstream` (a /v1 base url), injecting the faults `schedule(n)` picks for request n."""

    def __init__(
        self,
        upstream: str,
        schedule: Callable[[int], str] = lambda n: "pass",
        stall_s: float = 3.0,
        delay_s: float = 0.0,
    ):
        # delay_s: added to every forwarded request (a hosted API's network + queueing latency)
        self.upstream, self.schedule, self.stall_s, self.delay_s = upstream.rstrip("/"), schedule, stall_s, delay_s
        self.n = 0
        self.actions: Counter = Counter()
        self.lock = threading.Lock()
        proxy = self

        class Handler(QuietHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with proxy.lock:
                    n = proxy.n
                    proxy.n += 1
                action = proxy.schedule(n)
                proxy.actions[action] += 1
                if action == "429":
                    return self._send(429, b'{"error": "rate limited"}', [("Retry-After", "0")])
                if action == "500":
                    return self._send(500, b'{"error": "internal"}')
                if action == "timeout":
                    time.sleep(proxy.stall_s)
                    return self._send(504, b"too late")
                time.sleep(proxy.delay_s)
                req = urllib.request.Request(
                    proxy.upstream + self.path.removeprefix("/v1"),
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                try:
                    with urllib.request.urlopen(req, timeout=300) as resp:
                        return self._send(resp.status, resp.read(), [("Content-Type", "application/json")])
                except urllib.error.HTTPError as e:
                    return self._send(e.code, e.read())
                except OSError as e:
                    return self._send(502, json.dumps({"error": str(e)}).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
