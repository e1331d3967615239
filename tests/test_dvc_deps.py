"""dvc.yaml's code deps equal the import graph: every project module a stage's entrypoint imports (transitively,
function-level imports included) is covered by one of its `deps`, and no listed code dep goes unimported.

A missing entry means `dvc repro` silently keeps stale results after that module changes; a stale one reruns a stage
for code it never runs. Also here: every stage that can be restored from DVC's run-cache is declared so that it is."""

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.exists():
            return cand
    return None


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import module`
    return names


def import_closure(entry: Path) -> set[Path]:
    """entry + every project file it reaches; package __init__ files on the way count too (they run on import)."""
    seen, todo = set(), [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_names(path):
            parts = name.split(".")
            todo += [m for i in range(1, len(parts) + 1) if (m := module_file(".".join(parts[:i])))]
    return seen


def code_deps(stage: dict) -> list[Path]:
    """Listed .py files and code folders (prompt templates are checked by the test below)."""
    deps = [ROOT / d for d in stage.get("deps", []) if isinstance(d, str) and d.startswith(("src/", "stages/"))]
    return [d for d in deps if d.suffix == ".py" or d.is_dir()]


def covers(dep: Path, path: Path) -> bool:
    return path == dep or dep in path.parents


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_code_deps_match_its_imports(name):
    stage = STAGES[name].get("do", STAGES[name])  # foreach stages keep their body under `do`
    entry = ROOT / stage["cmd"].split()[1]  # `python stages/<x>.py ...`
    assert entry.suffix == ".py" and entry.exists(), f"{name}: cmd does not run a project script: {stage['cmd']}"
    reached, deps = import_closure(entry), code_deps(stage)
    missing = sorted(
        str(p.relative_to(ROOT)) for p in reached if p.name != "__init__.py" and not any(covers(d, p) for d in deps)
    )
    stale = sorted(str(d.relative_to(ROOT)) for d in deps if not any(covers(d, p) for p in reached))
    assert not missing, f"dvc.yaml stage {name!r}: imported but not in deps: {missing}"
    assert not stale, f"dvc.yaml stage {name!r}: in deps but never imported: {stale}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_lists_the_prompt_templates_of_the_params_it_reads(name):
    """src/mllmrec/templates/<section>.txt is the default `<section>.prompt`: exactly the stages reading that params
    section list it, so editing a default prompt reruns them and nothing else."""
    stage = STAGES[name].get("do", STAGES[name])
    sections = {str(p).split(".")[0] for p in stage.get("params", []) if isinstance(p, str)}
    wanted = {
        f"src/mllmrec/templates/{t.stem}.txt" for t in (SRC / "mllmrec/templates").glob("*.txt") if t.stem in sections
    }
    listed = {d for d in stage.get("deps", []) if isinstance(d, str) and d.startswith("src/mllmrec/templates/")}
    assert listed == wanted, f"dvc.yaml stage {name!r}: template deps {sorted(listed)}, expected {sorted(wanted)}"


def out_entries(name: str, sections: tuple[str, ...] = ("outs",)) -> list[dict]:
    """A stage's `outs:` (or the given sections, e.g. metrics and plots too) as {path: props} dicts (a bare path has no
    props)."""
    body = STAGES[name].get("do", STAGES[name])
    return [o if isinstance(o, dict) else {o: {}} for section in sections for o in body.get(section, [])]


# Stages allowed to rerun in every queued experiment: seconds of work, and outputs DVC cannot parse as metrics/plots.
RERUNS = {"report"}
# Persist stages never get a run-cache entry (dvc/stage/cache.py `_can_hash`): they skip by their lock instead.
PERSIST = {n for n in STAGES if any((props or {}).get("persist") for o in out_entries(n) for props in o.values())}


@pytest.mark.parametrize("name", sorted(set(STAGES) - RERUNS - PERSIST))
def test_stage_gets_a_run_cache_entry(name):
    """DVC saves no run-cache entry for a stage with an uncached plain out (`outs: - x: {cache: false}`; metrics and
    plots are exempt: dvc/stage/__init__.py, `run_cache=not no_commit and not no_cache_outs`). Without the entry every
    queued experiment reruns the stage even when nothing it reads changed (the ablation grid's baselines, zero-shot
    evaluation and shared SFT)."""
    uncached = [path for out in out_entries(name) for path, props in out.items() if (props or {}).get("cache") is False]
    assert not uncached, f"dvc.yaml stage {name!r}: uncached outs {uncached}: declare them under metrics: or plots:"


def test_the_check_sees_function_level_imports(tmp_path):
    """engines are imported lazily inside build_engine: the walk must still reach them (else `evaluate` would pass
    without listing src/mllmrec/engines)."""
    reached = import_closure(SRC / "mllmrec/engines/__init__.py")
    assert SRC / "mllmrec/engines/transformers_engine.py" in reached


def test_no_stage_depends_on_a_file_inside_another_stages_folder_output():
    """A dep names another stage's output as that stage declares it: `data/item_tokens`, not
    `data/item_tokens/items.parquet`. For a path inside a folder output, DVC's experiment executor asks its data index
    (`_get_stage_files` -> `dvcfs.isdvc`), which loads the folder's `.dir` object named by the dvc.lock the experiment
    started from. In a clone that never ran that committed configuration the object is absent, and every queued
    experiment that restores such a stage from the run-cache failed with `failed to load directory` (the ablation
    grid's leaky-cot arm, its SFT restored from no-cot's, until sft listed the folder)."""
    outs = {path: name for name in STAGES for o in out_entries(name, ("outs", "metrics", "plots")) for path in o}
    inside = [
        f"{name}: {dep} (inside {owner}'s {out})"
        for name, stage in STAGES.items()
        for dep in stage.get("do", stage).get("deps", [])
        for out, owner in outs.items()
        if isinstance(dep, str) and dep.startswith(out.rstrip("/") + "/")
    ]
    assert not inside, f"dvc.yaml: depend on the folder output instead: {inside}"
