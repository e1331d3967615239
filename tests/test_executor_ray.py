"""The Ray executor (mllmrec.executor) on a real local Ray cluster: same outputs and cache parts as a local run.

    pip install -e .[ray]; .venv/bin/pytest tests/test_executor_ray.py -q      # ~1 min on 2 cores (one cluster)

One in-process Ray cluster (2 CPUs, 127.0.0.1) per module. Checks: textualize (pixel describer, a dozen real
posters) and draft (tiny LM) through Ray write byte-identical parts and rows to a local run, assess_cot's embeddings
the same keys and vectors to 1e-6, and evaluate's generation returns the local rows; an actor killed mid-batch
(os._exit) costs that batch only, resent once and counted; an unreachable address, missing resources and a missing
`ray` package fail fast with a UserError that says what to do.
"""

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from cot_util import CAPTIONS, ITEMS, make_samples
from textualize_util import PROMPT, make_dataset, poster_ids, write_project

from mllmrec.config import EngineSpec, ExecutorParams
from mllmrec.cot.generate import draft
from mllmrec.data.textualize import textualize
from mllmrec.engines import SamplingParams, build_engine
from mllmrec.engines.pixel_describer import PixelDescriber
from mllmrec.errors import UserError
from mllmrec.executor import open_executor
from mllmrec.prompts import load_item_texts

ray = pytest.importorskip("ray")
HERE = Path(__file__).resolve().parent
PIXEL = EngineSpec(engine="pixel_describer", model="pixel-describer")
RAY = ExecutorParams(kind="ray", num_workers=2)


@pytest.fixture(scope="module")
def cluster():
    # workers import this module (DieOnce) and mllmrec: they inherit the driver's environment at ray.init
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "src"), str(HERE), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


class DieOnce:
    """The pixel describer, except that the process exits on the batch holding `poster` the first time only."""

    def __init__(self, marker: str, poster: str):
        self.inner, self.marker, self.poster = PixelDescriber(), Path(marker), poster

    def generate(self, requests):
        if any(r.images[0].endswith(self.poster) for r in requests) and not self.marker.exists():
            self.marker.touch()
            os._exit(1)  # a worker lost mid-batch (OOM kill, node gone): no exception, no result
        return self.inner.generate(requests)


def _captions(tmp: Path, make_engine, executor, name: str):
    root, items = make_dataset(tmp / "data", n=12, missing=1)
    cache = tmp / name
    out, report = textualize(
        items,
        root,
        prompt=PROMPT,
        sampling=SamplingParams(max_new_tokens=64),
        model="pixel-describer",
        revision="pd",
        make_engine=make_engine,
        cache_dir=cache,
        batch_size=2,
        executor=executor,
        progress=False,
    )
    return out, report, {p.name: p.read_bytes() for p in cache.glob("part-*.parquet")}


@pytest.mark.slow  # the module's Ray cluster: ~7 s to start on 2 cores
def test_textualize_on_ray_writes_the_local_parts_and_rows(cluster, tmp_path):
    local, local_report, local_parts = _captions(tmp_path, lambda: build_engine(PIXEL), None, "local")
    on_ray, ray_report, ray_parts = _captions(tmp_path, lambda: build_engine(PIXEL), RAY, "ray")
    assert on_ray.equals(local) and local["caption"].is_not_null().sum() == 12
    assert ray_parts == local_parts and len(ray_parts) == 6  # 12 posters / batch_size 2, same names and bytes
    assert ray_report.executor == {"kind": "ray", "workers": 2, "batch_retries": 0}
    assert replace(ray_report, executor=None) == local_report and local_report.executor is None

    # the shared cache: a local rerun on the Ray run's parts computes nothing (and builds no engine)
    _, again, _ = _captions(tmp_path, lambda: build_engine(PIXEL), None, "ray")
    assert again.model_calls == 0 and again.cache_hits == 12 and not again.engine_built


@pytest.mark.slow  # the module's Ray cluster: ~7 s to start on 2 cores
def test_the_textualize_stage_joins_a_cluster_by_address(cluster, tmp_path):
    """The stage script as DVC runs it, params `executor` naming this module's cluster: same files as local."""
    address = ray.get_runtime_context().gcs_address  # HOST:PORT, what `ray start --head` prints
    outs = {}
    for kind in ("local", "ray"):
        proj = write_project(tmp_path / kind, poster_ids(8), batch_size=2)
        with (proj / "params.yaml").open("a") as f:
            f.write(f"executor: {{kind: {kind}, address: '{address}', num_workers: 2}}\n")
        subprocess.run(
            [sys.executable, str(HERE.parent / "stages" / "textualize.py")],
            cwd=proj,
            check=True,
            capture_output=True,
            env=os.environ,
        )
        out = proj / "data" / "textualize"
        outs[kind] = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.parquet")}
        outs[kind + "_report"] = json.loads((out / "report.json").read_text())
    assert outs["ray"] == outs["local"] and len(outs["local"]) == 1 + 4  # captions.parquet + 8 posters / 2
    assert outs["ray_report"].pop("executor") == {"kind": "ray", "workers": 2, "batch_retries": 0}
    assert outs["ray_report"] == outs["local_report"]


@pytest.mark.slow  # the module's Ray cluster: ~7 s to start on 2 cores
def test_a_worker_killed_mid_batch_costs_that_batch_only(cluster, tmp_path):
    marker = tmp_path / "died"
    local, _, local_parts = _captions(tmp_path, lambda: build_engine(PIXEL), None, "local")
    victim = Path(local.filter(local["caption"].is_not_null())["item_id"][5] + ".jpg").name
    on_ray, report, parts = _captions(tmp_path, lambda: DieOnce(str(marker), victim), RAY, "ray")
    assert marker.exists()  # it did die
    assert on_ray.equals(local) and parts == local_parts  # nothing lost, nothing duplicated
    assert report.executor["batch_retries"] == 1
    assert report.model_calls == 12 and report.parts_written == 6  # the lost batch's calls are not counted


@pytest.mark.slow  # the module's Ray cluster: ~7 s to start on 2 cores
def test_a_batch_that_keeps_losing_its_worker_stops_the_run(cluster, tmp_path):
    no_retries = ExecutorParams(kind="ray", num_workers=1, max_retries=0)
    victim = make_dataset(tmp_path / "data", n=12)[1]["item_id"][0] + ".jpg"
    with pytest.raises(UserError, match=r"batch 0 \(2 jobs\) lost its Ray worker 1 times \(executor.max_retries = 0"):
        _captions(tmp_path, lambda: DieOnce(str(tmp_path / "died"), victim), no_retries, "ray")
    assert not list((tmp_path / "ray").glob("part-*"))  # only that batch was in flight; nothing half-written


@pytest.mark.slow  # the module's Ray cluster: ~7 s to start on 2 cores
def test_draft_on_ray_matches_local(cluster, tmp_path, tiny_lm_dir):
    spec = EngineSpec(engine="transformers", model=str(tiny_lm_dir), device="cpu", dtype="float32")
    texts = load_item_texts(ITEMS, CAPTIONS)
    samples = make_samples(6)

    def run(executor, name):
        df, report = draft(
            samples,
            texts,
            mode="captions",
            prompt="History:\n{history}\nDraft analysis:",
            sampling=SamplingParams(max_new_tokens=8),
            model="tiny",
            revision="t",
            make_engine=lambda: build_engine(spec),
            cache_dir=tmp_path / name,
            batch_size=2,
            executor=executor,
        )
        return df, report, {p.name: p.read_bytes() for p in (tmp_path / name).glob("part-*.parquet")}

    local, local_report, local_parts = run(None, "local")
    on_ray, ray_report, ray_parts = run(RAY, "ray")
    assert on_ray.equals(local) and ray_parts == local_parts and len(local_parts) == 3
    assert ray_report.executor["batch_retries"] == 0 and replace(ray_report, executor=None) == local_report


@pytest.mark.slow  # the module's Ray cluster: ~7 s to start on 2 cores
def test_evaluate_generation_on_ray_matches_local(cluster, tiny_lm_dir):
    """evaluate's generative protocol (policy.generative_predictions) on Ray: the same rows as one local engine."""
    from mllmrec.config import PromptParams
    from mllmrec.evaluation.policy import generative_predictions

    spec = EngineSpec(engine="transformers", model=str(tiny_lm_dir), device="cpu", dtype="float32")
    texts, samples = load_item_texts(ITEMS, CAPTIONS), make_samples(10)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=12, seed=0)
    local = generative_predictions(build_engine(spec), samples, texts, PromptParams(), greedy, batch=3)
    with open_executor(RAY, lambda: build_engine(spec)) as ex:  # 4 batches over 2 actors, back in any order
        on_ray = generative_predictions(None, samples, texts, PromptParams(), greedy, batch=3, executor=ex)
        assert ex.stats == {"kind": "ray", "workers": 2, "batch_retries": 0}
    assert on_ray.equals(local) and local["text"].str.len_chars().min() > 0
    assert on_ray["sample_id"].to_list() == samples["sample_id"].to_list()


@pytest.mark.slow  # the module's Ray cluster: ~7 s to start on 2 cores
def test_assess_embeddings_on_ray_write_the_local_parts(cluster, tmp_path):
    from mllmrec.cot.assess import Embedder, embed_cached
    from mllmrec.partcache import folder_identity

    texts = [f"{t} {c}" for t, c in zip(ITEMS["title"], CAPTIONS["caption"])]
    ident = folder_identity(str(Embedder("all-MiniLM-L6-v2").path))

    def run(executor, name):
        vec, stats = embed_cached(texts, ident, lambda: Embedder("all-MiniLM-L6-v2"), tmp_path / name, 4, executor)
        parts = [pl.read_parquet(p) for p in (tmp_path / name).glob("part-*.parquet")]
        return vec, stats, sorted(parts, key=lambda df: df["cache_key"][0])

    local, local_stats, local_parts = run(None, "local")
    on_ray, ray_stats, ray_parts = run(RAY, "ray")
    # Same batches and keys; the vectors to float precision, not bit for bit: a Ray actor runs torch on its
    # num_cpus (1 thread) and the driver on every core, and on some CPUs (CI's, once) the sums' order follows.
    assert [df["cache_key"].to_list() for df in ray_parts] == [df["cache_key"].to_list() for df in local_parts]
    assert len(local_parts) == 4  # 14 texts / batch 4
    assert all(np.allclose(on_ray[t], local[t], rtol=0, atol=1e-6) for t in texts)
    assert ray_stats.executor["batch_retries"] == 0 and replace(ray_stats, executor=None) == local_stats


@pytest.mark.slow  # the module's Ray cluster: ~7 s to start on 2 cores
def test_missing_resources_fail_fast(cluster, tmp_path):
    ex = open_executor(ExecutorParams(kind="ray", num_gpus_per_worker=1), lambda: None)
    with pytest.raises(UserError, match=r"GPU 2 needed .* 0 in the cluster"), ex:
        list(ex.map(lambda engine, jobs: jobs, [[1]]))


def test_unreachable_address_fails_fast_with_the_fix():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    ex = open_executor(ExecutorParams(kind="ray", address=f"127.0.0.1:{port}"), lambda: None)
    with pytest.raises(UserError, match=rf"127\.0\.0\.1:{port}.*ray start --head"), ex:
        list(ex.map(lambda engine, jobs: jobs, [[1]]))
    assert time.perf_counter() - t0 < 10


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UserError, match=r"pip install -e \.\[ray\]"):
        open_executor(RAY, lambda: None)
    assert open_executor(None, lambda: None).stats == {}  # local needs no ray
