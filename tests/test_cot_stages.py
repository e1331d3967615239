"""The three CoT stage scripts end to end in a scratch project, drafter + editor over HTTP (a scripted local server).

    .venv/bin/pytest tests/test_cot_stages.py -q

Checks the thin stages: params -> inputs -> outputs, only train samples drafted, a planted leak counted and scrubbed,
metrics/cot.json + the histogram plot written, and a rerun with nothing changed sending zero requests.
"""

import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest
import yaml
from cot_util import CAPTIONS, ITEMS, good_cot, make_samples

REPO = Path(__file__).resolve().parents[1]


class EditorServer:
    """OpenAI-style chat endpoint: drafts for draft prompts, 4-step CoTs for editor prompts (one names its target)."""

    def __init__(self):
        self.requests = 0
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                srv.requests += 1
                prompt = body["messages"][-1]["content"]
                if "Draft analysis" in prompt:
                    last = int(re.findall(r"\[ITEM_(\d+)\]", prompt)[-1])  # histories are consecutive ids
                    leak = f" Maybe [ITEM_{last % 12 + 1}] next." if last % 2 == 0 else ""  # names the target
                    text = good_cot("family adventures") + leak
                else:
                    text = "<think>hmm</think>The user enjoys colourful adventures and animals."
                out = {
                    "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 10},
                }
                data = json.dumps(out).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def _project(tmp: Path, url: str) -> None:
    samples = make_samples(6)
    split = pl.concat(
        [
            samples.with_columns(pl.lit("train").alias("split")),
            samples.with_columns(pl.lit("test").alias("split"), pl.col("sample_id") + "t"),
        ]
    )
    for path, df in [
        ("data/split/candidates_n3.parquet", split),
        ("data/split/train_sequences.parquet", samples.select("user_id", pl.col("history").alias("items"))),
        ("data/ingest/items.parquet", ITEMS),
        ("data/textualize/captions.parquet", CAPTIONS),
    ]:
        (tmp / path).parent.mkdir(parents=True, exist_ok=True)
        df.write_parquet(tmp / path)
    http = {"engine": "openai", "model": "scripted", "base_url": url, "concurrency": 2, "backoff_s": 0.01}
    params = {
        "ingest": {"format": "movielens_csv", "root": "dataset"},
        "models": {
            "captioner": {"engine": "pixel_describer", "model": "pixel-describer"},
            "drafter": http,
            "editor": http,
            "policy": http,
        },
        "draft_cot": {"num_negatives": 3, "max_samples": 5, "batch_size": 2},
        "refine_cot": {"max_attempts": 2, "batch_size": 2},
        "assess_cot": {"threshold": 0.0, "require_top1": False},
    }
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))


def _stage(tmp: Path, name: str) -> str:
    r = subprocess.run(
        [sys.executable, str(REPO / "stages" / f"{name}.py")],
        cwd=tmp,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.mark.slow
def test_cot_stages_end_to_end_and_cached_rerun(tmp_path):
    srv = EditorServer()
    try:
        _project(tmp_path, srv.url)
        for name in ("draft_cot", "refine_cot", "assess_cot"):
            _stage(tmp_path, name)
        drafts = pl.read_parquet(tmp_path / "data/cot/drafts.parquet")
        assert drafts.height == 5 and not drafts["sample_id"].str.ends_with("t").any()  # train only, subsampled
        assert drafts["draft"].str.contains("<think>").sum() == 0  # reasoning separated by the engine
        refine_rep = json.loads((tmp_path / "data/cot/refine_report.json").read_text())
        planted = sum(int(h[-1]) % 2 == 0 for h in drafts["history"].to_list())
        assert planted and refine_rep["leak_before"] == planted and refine_rep["leak_after"] == 0
        assert refine_rep["leak_kinds"] == {"item_tag": planted} and refine_rep["scrubbed_sentences"] == planted
        assessed = pl.read_parquet(tmp_path / "data/cot/assessed.parquet")
        assert {
            "sample_id",
            "cot",
            "format_ok",
            "leak_before",
            "leak_after",
            "scores",
            "target_rank",
            "confidence",
            "keep",
        } <= set(assessed.columns)
        assert assessed["scores"].list.len().to_list() == [4] * 5
        metrics = json.loads((tmp_path / "metrics/cot.json").read_text())
        assert metrics["train_samples_drafted"] == 5 and metrics["kept"] == assessed["keep"].sum()
        hist = (tmp_path / "plots/cot_confidence.csv").read_text().splitlines()
        assert hist[0] == "bin,count" and sum(int(r.split(",")[1]) for r in hist[1:]) == 5
        before = srv.requests
        out = _stage(tmp_path, "draft_cot") + _stage(tmp_path, "refine_cot") + _stage(tmp_path, "assess_cot")
        assert srv.requests == before and "0 model calls" in out and "0 texts embedded" in out
    finally:
        srv.httpd.shutdown()


def test_grounded_drafts_reach_the_audit_without_an_editor_and_the_leaky_arm_plants(tmp_path):
    _project(tmp_path, "http://127.0.0.1:9/v1")  # nothing listens there: neither stage may call a model
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["draft_cot"]["mode"] = "grounded"
    leaky = {"source": "draft", "show_target": True, "plant_target": True, "leak_action": "keep"}
    params["refine_cot"] |= leaky
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    _stage(tmp_path, "draft_cot")
    _stage(tmp_path, "refine_cot")
    rep = json.loads((tmp_path / "data/cot/refine_report.json").read_text())
    drafted = pl.read_parquet(tmp_path / "data/cot/drafts.parquet")["draft"].is_not_null().sum()
    assert rep["model"] == "draft (no editor)" and rep["model_calls"] == 0 and drafted > 0
    assert rep["refined_format_ok"] == rep["target_planted"] == rep["leak_before"] == rep["leak_after"] == drafted
    refined = pl.read_parquet(tmp_path / "data/cot/refined.parquet").filter(pl.col("cot").is_not_null())
    assert all(f"[ITEM_{t}]" in c for t, c in zip(refined["target"], refined["cot"]))
