"""GRPO stage: prompts tokenized as SFT/eval see them, the batch check, and (slow) real tiny-model runs: weights move,
valid HR is logged, a SIGKILLed run resumes from its checkpoint, a 2-process accelerate (gloo) run finishes."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from grpo_project import ITEMS, STAGE, TITLES, make_project, samples, warm_policy

from mllmrec import paths
from mllmrec.config import GrpoParams, PromptParams
from mllmrec.prompts import ItemText, build_messages, render_prompt
from mllmrec.training.run import training_dtype

# what one process and two processes must both produce
MODEL_FILES = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "grpo_info.json"}
CURVE_SERIES = ["reward", "reward_hit", "frac_reward_zero_std", "kl", "loss", "learning_rate"]  # every step has them
VALID_SERIES = ["valid_HR@1", "valid_HR@3", "valid_NDCG@1", "valid_NDCG@3"]
SMOLLM = Path(__file__).resolve().parents[1] / "models" / "smollm2-135m-instruct"


ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}  # tiny model: threads only fight


def run_stage(root: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = ENV
    return subprocess.run(
        [sys.executable, str(STAGE)], cwd=root, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def read_series(root: Path, name: str, live: Path = paths.GRPO_LIVE_PLOTS) -> dict[int, float]:
    """One DVCLive series file of the stage: step -> value (a step logged twice would fail here)."""
    with (root / paths.live_series(live, name)).open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert rows and list(rows[0]) == ["step", name]  # no timestamp column
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(set(steps)), steps
    return {int(r["step"]): float(r[name]) for r in rows}


@pytest.fixture(scope="module")
def warmed(tiny_lm_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("warm") / "sft"
    warm_policy(tiny_lm_dir, out, samples(16, "train", 0))
    return out


@pytest.mark.parametrize("model", ["tiny", "smollm2"])
def test_string_prompt_tokens_equal_conversational(model, tiny_lm_dir):
    """What TRL tokenizes for our string prompt == what its conversational path would build (and what eval scores)."""
    from transformers import AutoTokenizer

    if model == "smollm2" and not SMOLLM.exists():
        pytest.skip("models/smollm2-135m-instruct not built (dvc repro models)")
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir if model == "tiny" else SMOLLM)
    texts = {i: ItemText(t, "a dark poster") for i, t in zip(ITEMS, TITLES)}
    s = samples(1, "train", 0).row(0, named=True)
    for cot in (None, "Step 1: likes 90s films."):
        messages = build_messages(s, texts, PromptParams(captions="all"), cot=cot)
        prompt = render_prompt(tok, messages, None)
        trl_string_ids = tok(text=[prompt])["input_ids"][0]  # GRPOTrainer._tokenize_prompts, string prompts
        conversational = tok.apply_chat_template(
            [messages], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"][0]
        eval_ids = tok(prompt, add_special_tokens=False)["input_ids"]  # mllmrec.evaluation.likelihood / sft
        assert trl_string_ids == conversational == eval_ids


def test_batch_not_divisible_fails_before_training(tmp_path, warmed, tiny_lm_dir):
    with pytest.raises(ValueError, match="not divisible by num_generations"):
        GrpoParams(batch_size=3, grad_accum=1, num_generations=4)
    GrpoParams(batch_size=2, grad_accum=1, num_generations=4, launch={"num_processes": 2})  # 2 × 1 × 2 = 4: fine
    root = make_project(tmp_path, tiny_lm_dir, {"batch_size": 3, "grad_accum": 1}, warmed=warmed)
    t = time.time()
    r = run_stage(root)
    assert r.returncode == 2 and "not divisible by num_generations" in r.stderr
    assert time.time() - t < 30 and not (root / "checkpoints").exists()  # nothing loaded, nothing trained


def test_launch_command():
    from mllmrec.config import LaunchParams
    from mllmrec.launch import launch_command

    cmd = launch_command(LaunchParams(num_processes=2), ["stages/grpo.py"])
    assert cmd[1:] == [
        "launch",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--multi_gpu",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "stages/grpo.py",
    ]
    cfg = Path(__file__).resolve().parents[1] / "configs/accelerate/deepspeed_zero3.yaml"
    assert "--config_file" in launch_command(LaunchParams(num_processes=4, config_file=str(cfg)), ["x.py"])


def test_multi_node_launch_takes_the_rank_from_the_environment(monkeypatch):
    from pydantic import ValidationError

    from mllmrec.config import LaunchParams
    from mllmrec.errors import UserError
    from mllmrec.launch import launch_command

    two = LaunchParams(num_processes=16, num_machines=2, main_process_ip="10.0.0.1", main_process_port=29600)
    monkeypatch.setenv("MLLMREC_MACHINE_RANK", "1")
    cmd = launch_command(two, ["stages/sft.py"])
    assert (
        cmd[1:11]
        == [
            "launch",
            "--num_processes",
            "16",
            "--num_machines",
            "2",
            "--machine_rank",
            "1",
            "--main_process_ip",
            "10.0.0.1",
            "--main_process_port",
        ]
        and cmd[11] == "29600"
    )
    monkeypatch.setenv("MLLMREC_MACHINE_RANK", "2")
    with pytest.raises(UserError, match="MLLMREC_MACHINE_RANK='2': expected 0 .. 1"):
        launch_command(two, ["stages/sft.py"])
    with pytest.raises(ValidationError, match="needs launch.main_process_ip"):
        LaunchParams(num_processes=2, num_machines=2)
    with pytest.raises(ValidationError, match="not a multiple of launch.num_machines"):
        LaunchParams(num_processes=3, num_machines=2, main_process_ip="10.0.0.1")


def test_vllm_server_check_names_the_fix_or_passes(tmp_path):
    import http.server
    import socket
    import threading

    from mllmrec.errors import UserError
    from mllmrec.training.grpo import check_vllm_server

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health/" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_vllm_server(f"http://127.0.0.1:{server.server_port}")  # a live server: no error
    finally:
        server.shutdown()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match=f"no vLLM server answers at http://127.0.0.1:{port}/health/.*trl vllm-serve"):
        check_vllm_server(f"http://127.0.0.1:{port}", timeout_s=2)


def weights_differ(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return any(not (wa[k].to(wb[k].dtype) == wb[k]).all() for k in wa)  # b's dtype: a cast alone is no change


@pytest.mark.slow
def test_grpo_trains_logs_valid_hr_and_resumes_after_sigkill(tmp_path, warmed, tiny_lm_dir):
    root = make_project(tmp_path, tiny_lm_dir, {"max_steps": 4, "save_steps": 2}, warmed=warmed)
    env = ENV
    proc = subprocess.Popen(
        [sys.executable, str(STAGE)], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    first = root / "checkpoints/grpo/checkpoint-2/trainer_state.json"
    deadline = time.time() + 240
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.exists(), proc.communicate()[0][-3000:] if proc.poll() is not None else "no checkpoint in time"
    proc.send_signal(signal.SIGKILL)  # a real kill: no cleanup handlers run
    proc.wait()
    assert not (root / "models/grpo").exists()

    r = run_stage(root)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from" in r.stdout and "checkpoint-" in r.stdout
    info = json.loads((root / "models/grpo/grpo_info.json").read_text())
    assert info["resumed_from_step"] >= 2 and info["global_step"] == 4
    assert info["dtype"] == str(training_dtype("auto")).removeprefix("torch.")  # params say auto
    assert weights_differ(root / "models/sft", root / "models/grpo")  # the merged LoRA changed the policy
    assert {p.name for p in (root / "models/grpo").iterdir()} >= MODEL_FILES

    for name in CURVE_SERIES:  # steps before the kill survive in the checkpoint, none logged twice
        assert list(read_series(root, name)) == [1, 2, 3, 4], name
    for name in VALID_SERIES:
        assert list(read_series(root, name)) == [0, 2, 4], name  # monitor.every = 2, and the SFT starting point
    assert all(0 <= v <= 1 for v in read_series(root, "valid_HR@1").values())
    summary = json.loads((root / paths.GRPO_LIVE_METRICS).read_text())  # what `dvc exp show` reads
    assert summary["step"] == 4 and summary["reward"] == read_series(root, "reward")[4]
    lines = (root / "data/grpo/completions.jsonl").read_text().splitlines()
    assert lines and {"step", "sample_id", "has_cot", "completion", "rewards", "advantage"} <= set(json.loads(lines[0]))
    trained = set(pl.read_parquet(root / "data/augment/grpo.parquet")["sample_id"])
    assert all(json.loads(line)["sample_id"] in trained for line in lines)  # each completion names its prompt's sample
    steps = [json.loads(line)["step"] for line in lines]
    assert steps == sorted(steps) and set(steps) == {1, 2, 3, 4}  # redone steps are not logged twice


@pytest.mark.slow
def test_two_process_accelerate_run(tmp_path, warmed, tiny_lm_dir):
    """`launch.num_processes: 2` re-execs under accelerate (gloo on CPU); same artifacts as one process."""
    root = make_project(
        tmp_path,
        tiny_lm_dir,
        {"max_steps": 2, "batch_size": 2, "grad_accum": 2, "launch": {"num_processes": 2}},
        warmed=warmed,
    )
    r = run_stage(root, timeout=400)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert "accelerate" in r.stdout and "launch" in r.stdout
    info = json.loads((root / "models/grpo/grpo_info.json").read_text())
    assert info["world_size"] == 2 and info["global_step"] == 2
    assert {p.name for p in (root / "models/grpo").iterdir()} >= MODEL_FILES
    assert list(read_series(root, "reward")) == [1, 2]  # the main process alone writes: no step twice
    assert list(read_series(root, "valid_HR@1")) == [0, 2]
    assert weights_differ(root / "models/sft", root / "models/grpo")


@pytest.mark.slow
def test_two_process_accelerate_sft(tmp_path, tiny_lm_dir):
    """The sft stage goes through the same launcher: 2 gloo ranks on CPU, same artifacts as one process."""
    import yaml
    from test_sft import project  # the sft helper's minimal project (params + inputs)

    proj = project(tmp_path, tiny_lm_dir)
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["sft"].update(max_steps=2, save_steps=2, launch={"num_processes": 2})
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    r = subprocess.run(
        [sys.executable, str(STAGE.parent / "sft.py")],
        cwd=proj,
        capture_output=True,
        text=True,
        timeout=400,
        env=ENV,
        check=False,
    )
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert "accelerate launch" in r.stdout
    info = json.loads((proj / "models/sft/sft_info.json").read_text())
    assert info["global_step"] == 2
    assert {"config.json", "model.safetensors", "tokenizer.json", "sft_info.json"} <= {
        p.name for p in (proj / "models/sft").iterdir()
    }
    assert list(read_series(proj, "loss", paths.SFT_LIVE_PLOTS)) == [1, 2]  # the main process alone writes
