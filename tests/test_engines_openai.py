"""OpenAI engine vs a fault-injecting HTTP server (429/500/timeouts/malformed JSON) and a real `transformers serve`.

.venv/bin/pytest tests/test_engines_openai.py -q
"""

import json
import logging
import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from serve_util import QuietHandler, transformers_serve

from mllmrec.config import EngineSpec
from mllmrec.engines import GenerationRequest, SamplingParams, build_engine
from mllmrec.errors import UserError

SECRET = "sk-test-DO-NOT-LEAK-7f3a9c"


class FaultServer:
    """Chat completions whose behaviour is chosen by the user message: `<mode>:<id>`, counted per message.

    ok: 200 at once | flaky429: 429 twice, then 200 | flaky500: 500 once | slow: sleeps past the client timeout once |
    badjson: malformed 200 once | always500 / alwaysbad: never succeed | think: answer with a <think> block | auth400 |
    wait: 0.3 s per request (measures how many are in flight)
    """

    def __init__(self):
        self.attempts: dict[str, int] = {}
        self.auth_seen: set[str] = set()
        self.header_names: set[str] = set()  # every header any request carried (lower case)
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        srv = self

        class Handler(QuietHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                srv.auth_seen.add(self.headers.get("Authorization", ""))
                srv.header_names |= {k.lower() for k in self.headers}
                key = body["messages"][-1]["content"]
                key = key if isinstance(key, str) else "image:" + str(len(key))
                mode = key.split(":")[0]
                with srv.lock:
                    n = srv.attempts[key] = srv.attempts.get(key, 0) + 1
                if mode == "flaky429" and n <= 2:
                    return self._send(429, b'{"error": "rate limited"}', [("Retry-After", "0")])
                if (mode == "flaky500" and n == 1) or mode == "always500":
                    return self._send(500, b"internal error")
                if mode == "slow" and n == 1:
                    time.sleep(3.0)
                if (mode == "badjson" and n == 1) or mode == "alwaysbad":
                    return self._send(200, b'{"choices": [ {"mess')
                if mode == "wait":
                    with srv.lock:
                        srv.in_flight += 1
                        srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
                    time.sleep(0.3)
                    with srv.lock:
                        srv.in_flight -= 1
                if mode == "auth400":  # a request the server refuses; 401/403 stop the stage (test below)
                    return self._send(400, b'{"error": "bad request"}')
                content = f"<think>reason about {key}</think>answer {key}" if mode == "think" else f"echo {key}"
                out = {
                    "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 7, "completion_tokens": 3},
                }
                self._send(200, json.dumps(out).encode(), [("Content-Type", "application/json")])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def fault_server():
    srv = FaultServer()
    yield srv
    srv.httpd.shutdown()


def _spec(url, **kw) -> EngineSpec:
    base = {
        "engine": "openai",
        "model": "m",
        "base_url": url,
        "api_key_env": "MLLMREC_TEST_KEY",
        "concurrency": 4,
        "max_retries": 3,
        "timeout_s": 2.0,
        "backoff_s": 0.01,
        "backoff_max_s": 0.05,
    }
    return EngineSpec(**{**base, **kw})


def _req(text: str) -> GenerationRequest:
    return GenerationRequest(messages=({"role": "user", "content": text},), sampling=SamplingParams(max_new_tokens=8))


def test_faults_nothing_lost_retries_counted_key_never_leaks(fault_server, monkeypatch, caplog):
    monkeypatch.setenv("MLLMREC_TEST_KEY", SECRET)
    eng = build_engine(_spec(fault_server.url))
    modes = [
        "ok:1",
        "ok:2",
        "flaky429:1",
        "flaky500:1",
        "slow:1",
        "badjson:1",
        "always500:1",
        "alwaysbad:1",
        "think:1",
        "auth400:1",
        "ok:3",
        "flaky429:2",
    ]
    with caplog.at_level(logging.DEBUG):
        res = eng.generate([_req(m) for m in modes])
    assert len(res) == len(modes)  # nothing lost, order kept
    by = dict(zip(modes, res))
    for m in ["ok:1", "ok:2", "ok:3"]:
        assert by[m].text == f"echo {m}" and by[m].retries == 0 and not by[m].error
        assert by[m].prompt_tokens == 7 and by[m].completion_tokens == 3 and by[m].finish_reason == "stop"
    assert by["flaky429:1"].text == "echo flaky429:1" and by["flaky429:1"].retries == 2
    assert by["flaky500:1"].retries == 1 and by["slow:1"].retries == 1 and by["badjson:1"].retries == 1
    assert by["think:1"].text == "answer think:1" and by["think:1"].reasoning == "reason about think:1"
    for m in ["always500:1", "alwaysbad:1"]:  # failures recorded per request after max_retries
        assert by[m].finish_reason == "error" and by[m].retries == 3 and by[m].text == ""
        assert "4 attempt" in by[m].error
    assert fault_server.attempts["always500:1"] == 4
    assert by["auth400:1"].finish_reason == "error" and by["auth400:1"].retries == 0  # 4xx: no retry
    assert "HTTP 400" in by["auth400:1"].error
    assert eng.stats == {"requests": 12, "retries": 2 + 1 + 1 + 1 + 3 + 3 + 2, "errors": 3}
    # the key reached the server (so it was used) but nothing we produce contains it
    assert fault_server.auth_seen == {f"Bearer {SECRET}"}
    assert SECRET not in repr(res) and SECRET not in caplog.text
    assert "retrying" in caplog.text  # retries are logged


def test_concurrency_limit(fault_server, monkeypatch):
    monkeypatch.setenv("MLLMREC_TEST_KEY", SECRET)
    t0 = time.perf_counter()
    res = build_engine(_spec(fault_server.url, concurrency=3)).generate([_req(f"wait:{i}") for i in range(9)])
    elapsed = time.perf_counter() - t0
    assert [r.text for r in res] == [f"echo wait:{i}" for i in range(9)]  # input order kept
    assert fault_server.max_in_flight == 3  # parallel, but never more than `concurrency`
    assert elapsed < 9 * 0.3  # faster than one at a time


@contextmanager
def echoing_server(status: int, seen: list | None = None):
    """Base URL of a server answering every POST with `status` and a body that echoes the Authorization header."""

    class Echo(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            if seen is not None:
                seen.append(1)
            body = f"denied for {self.headers['Authorization']}".encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()


def test_key_redacted_even_if_server_echoes_it(monkeypatch, caplog):
    # a server that echoes the Authorization header in its error body must not get the key into our errors/logs
    monkeypatch.setenv("MLLMREC_TEST_KEY", SECRET)
    with echoing_server(503) as url, caplog.at_level(logging.DEBUG):
        res = build_engine(_spec(url, max_retries=1)).generate([_req("x")])
    assert res[0].finish_reason == "error" and "***" in res[0].error
    assert SECRET not in res[0].error and SECRET not in caplog.text


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_stops_with_one_line_naming_the_variable_not_the_key(status, monkeypatch):
    """Every request would fail alike (refine_cot used to end with exit 0 and 0 refined): stop, name the env var."""
    seen: list = []
    monkeypatch.setenv("MLLMREC_TEST_KEY", SECRET)
    with (
        echoing_server(status, seen) as url,
        pytest.raises(
            UserError, match=rf"HTTP {status} .*check the key in the environment variable MLLMREC_TEST_KEY"
        ) as e,
    ):
        build_engine(_spec(url, max_retries=3, concurrency=2)).generate([_req(f"x{i}") for i in range(20)])
    assert SECRET not in str(e.value) and len(seen) <= 4  # no retries, no 20 doomed calls


def test_missing_key_env_and_key_in_params_are_user_errors(monkeypatch):
    monkeypatch.delenv("MLLMREC_TEST_KEY", raising=False)
    with pytest.raises(UserError, match="MLLMREC_TEST_KEY"):
        build_engine(_spec("http://127.0.0.1:9/v1"))
    with pytest.raises(UserError, match="NAME of an environment variable") as e:
        _spec("http://127.0.0.1:9/v1", api_key_env=SECRET)
    assert SECRET not in str(e.value)


def test_without_a_key_no_authorization_and_no_openai_env_var_reaches_the_server(fault_server, monkeypatch):
    """The SDK reads OPENAI_API_KEY / OPENAI_ORG_ID / OPENAI_PROJECT_ID by itself: none may reach another host."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-NOT-FOR-THIS-HOST")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-x")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-x")
    res = build_engine(_spec(fault_server.url, api_key_env=None)).generate([_req("ok:1")])
    assert res[0].text == "echo ok:1"
    assert fault_server.auth_seen == {""}  # no Authorization header at all
    assert not fault_server.header_names & {"openai-organization", "openai-project"}


def test_unreachable_endpoint_is_recorded_not_raised(monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    eng = build_engine(_spec(f"http://127.0.0.1:{port}/v1", api_key_env=None, max_retries=2))
    res = eng.generate([_req("a"), _req("b")])
    assert [r.finish_reason for r in res] == ["error", "error"] and all(r.retries == 2 for r in res)


def test_images_sent_as_data_urls(fault_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLLMREC_TEST_KEY", SECRET)
    Image.new("RGB", (40, 60), (200, 10, 10)).save(tmp_path / "a.jpg")
    eng = build_engine(_spec(fault_server.url, limit_mm_per_prompt=2))
    req = GenerationRequest(messages=({"role": "user", "content": "describe"},), images=(str(tmp_path / "a.jpg"),) * 2)
    bad = GenerationRequest(messages=({"role": "user", "content": "describe"},), images=(str(tmp_path / "no.jpg"),))
    res = eng.generate([req, bad])
    assert res[0].text == "echo image:3"  # two image parts + the text part
    assert res[1].finish_reason == "error" and "no.jpg" in res[1].error


@pytest.mark.slow
def test_real_transformers_serve(tiny_llama_dir: Path, monkeypatch):
    """A real OpenAI-compatible server process (`transformers serve`) on a tiny local llama-type model."""
    log_path = tiny_llama_dir.parent / "serve.log"
    with transformers_serve(tiny_llama_dir, log_path=log_path) as url:
        monkeypatch.setenv("MLLMREC_TEST_KEY", SECRET)  # a local server ignores the key; it must still not leak
        eng = build_engine(_spec(url, model=str(tiny_llama_dir), timeout_s=60, concurrency=2))
        reqs = [_req(f"Describe poster number {i} in bright colours.") for i in range(4)]
        res = eng.generate(reqs)
        assert len(res) == 4
        assert all(r.finish_reason in ("stop", "length") and not r.error for r in res), res
        assert all(r.text for r in res) and all(r.completion_tokens > 0 for r in res)
        # greedy: the same request gives the same answer
        assert eng.generate(reqs[:1])[0].text == res[0].text
    assert SECRET not in log_path.read_text()
