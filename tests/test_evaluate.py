"""The evaluate stage end to end on a tiny policy: both protocols' metrics and predictions, and (slow) a 2-process
accelerate run (gloo on CPU) whose merged outputs equal the 1-process outputs row for row."""

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from grpo_project import ITEMS, TITLES, samples

STAGE = Path(__file__).resolve().parents[1] / "stages" / "evaluate.py"
ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}  # tiny model: threads only fight


def project(root: Path, tiny_lm_dir: Path, num_processes: int = 1, engine: str = "transformers") -> Path:
    (root / "data/ingest").mkdir(parents=True)
    (root / "data/split").mkdir(parents=True)
    pl.DataFrame({"item_id": ITEMS, "title": TITLES}).write_parquet(root / "data/ingest/items.parquet")
    pl.concat([samples(4, "train", 0), samples(7, "test", 2)]).write_parquet(root / "data/split/candidates_n3.parquet")
    spec = {"engine": engine, "model": str(tiny_lm_dir), "dtype": "float32", "batch_size": 2}
    params = {
        "eval": {"ks": [1, 3], "split": "test", "bootstrap": 50, "seed": 0},
        "evaluate": {"max_new_tokens": 12, "launch": {"num_processes": num_processes}, "position_check": [3]},
        "prompt": {"captions": "none"},
        "models": {
            "captioner": {"engine": "pixel_describer", "model": "pixel-describer"},
            "drafter": spec,
            "editor": spec,
            "policy": spec,
        },
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def run_stage(root: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(STAGE), "zeroshot"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny_lm_dir", "tiny_item_lm_dir"])
def test_evaluate_one_then_two_processes_same_outputs(tmp_path, model, request):
    """Also for a policy with collaborative item tokens (one-forward ranking, prompts batched across samples)."""
    tiny_lm_dir = request.getfixturevalue(model)
    one = project(tmp_path / "one", tiny_lm_dir)
    r = run_stage(one)
    assert r.returncode == 0, r.stderr[-3000:]
    preds = pl.read_parquet(one / "data/predictions/zeroshot.parquet")
    test_ids = samples(7, "test", 2)["sample_id"].to_list()
    for protocol in ("likelihood", "generative"):
        p = preds.filter(pl.col("protocol") == protocol)
        assert p["sample_id"].to_list() == test_ids  # every test sample once, in candidate-file order
        m = json.loads((one / f"metrics/zeroshot-{protocol}.json").read_text())["n3"]
        assert m["n"] == 7 and 0 <= m["HR@1"] <= m["HR@3"] <= 1 and 0 <= m["valid_rate"] <= 1
    assert preds.filter(pl.col("protocol") == "likelihood")["valid"].all()  # a ranking always exists
    position = json.loads((one / "metrics/zeroshot-likelihood.json").read_text())["n3"]["position"]
    assert set(position) == {"HR@1", "reversed", "shuffled", "flagged"} and 0 <= position["reversed"]["p"] <= 1
    # stderr is a pipe here, as in `dvc repro > log`: progress still shows, as plain lines
    ranking = "item-token ranking" if model == "tiny_item_lm_dir" else "likelihood ranking"
    assert f"{ranking}: 7/7 (100%)" in r.stderr and "generating: " in r.stderr

    two = project(tmp_path / "two", tiny_lm_dir, num_processes=2)
    r = run_stage(two, timeout=400)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert "accelerate launch" in r.stdout
    # shards merged back: the same rows in the same order, so the same metrics and CIs
    assert pl.read_parquet(two / "data/predictions/zeroshot.parquet").equals(preds)
    for protocol in ("likelihood", "generative"):
        name = f"metrics/zeroshot-{protocol}.json"
        assert (two / name).read_text() == (one / name).read_text()


def test_sharding_needs_the_transformers_engine(tmp_path, tiny_lm_dir):
    root = project(tmp_path, tiny_lm_dir, num_processes=2, engine="vllm")
    r = run_stage(root, timeout=60)
    assert r.returncode != 0 and "evaluate.launch.num_processes" in r.stderr and "Traceback" not in r.stderr
    assert not (root / "data/predictions").exists()


def test_ray_and_several_processes_are_refused_together(tmp_path, tiny_lm_dir):
    root = project(tmp_path, tiny_lm_dir, num_processes=2)
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump({**params, "executor": {"kind": "ray"}}, sort_keys=False))
    r = run_stage(root, timeout=60)
    assert r.returncode == 2 and "pick one" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (root / "data/predictions").exists()
