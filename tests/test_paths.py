"""Artifact paths have one owner, mllmrec.paths, and each stage script reads and writes exactly what dvc.yaml declares.

Every stage script declares `READS` and `WRITES` from mllmrec.paths (a list, or a dict by the cmd's argument for a
script that several dvc.yaml stages run: `baseline.py random`, `evaluate.py sft`). For every stage of dvc.yaml,
`foreach` expanded:
- READS == its deps less code (src/, stages/), and every path argument of its cmd is among them;
- WRITES == its outs + metrics + plots;
- the script spells no data/, metrics/, plots/ or models/ path of its own (ast: every string outside docstrings);
- every `paths.X` it uses is one of its declared paths, inside one (a file of a declared folder) or, for a function
  such as `paths.candidates(n)`, a pattern that matches one.
A path params.yaml sets is `paths.param("key")`, spelled `${key}` as in dvc.yaml; `${item}` / `${key}` of a foreach
are expanded here, the params ones compared as written.

.venv/bin/pytest tests/test_paths.py -q
"""

import ast
import fnmatch
import importlib.util
import re
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from mllmrec import paths

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
ARTIFACT = re.compile(
    r"^(data|metrics|plots|models|dvclive)/"
)  # a path a stage takes from mllmrec.paths ("models" alone: params)

# Stages whose scripts do not declare READS / WRITES yet. TEMPORARY: stages/sft.py and stages/grpo.py are being
# restructured on another branch (they still spell their paths); remove an entry once its script uses mllmrec.paths
# (strict xfail: the test fails as soon as the stage passes, so the entry cannot go stale).
PENDING: dict[str, str] = {}  # stage script -> why it is not checked yet (strict xfail: remove once it passes)


def _expand(body: object, item: object, key: str | None) -> object:
    """A foreach body with `${item}`, `${item.<field>}` and `${key}` filled in (params `${...}` stay as written)."""
    if isinstance(body, dict):
        return {_expand(k, item, key): _expand(v, item, key) for k, v in body.items()}
    if isinstance(body, list):
        return [_expand(v, item, key) for v in body]
    if not isinstance(body, str):
        return body

    def fill(m: re.Match) -> str:
        name = m.group(1)
        if name == "key" and key is not None:
            return key
        if name == "item":
            return str(item)
        return str(item[name.removeprefix("item.")]) if name.startswith("item.") else m.group(0)

    return re.sub(r"\$\{([^}]+)\}", fill, body)


def dvc_stages() -> dict[str, dict]:
    """Every stage of dvc.yaml by the name `dvc repro` gives it (`baseline@random`), foreach expanded."""
    out = {}
    for name, stage in DVC["stages"].items():
        if "foreach" not in stage:
            out[name] = stage
            continue
        each = stage["foreach"]
        pairs = each.items() if isinstance(each, dict) else ((None, v) for v in each)
        for key, item in pairs:
            out[f"{name}@{key if key is not None else item}"] = _expand(stage["do"], item, key)
    return out


STAGES = dvc_stages()


def _names(entries: list) -> set[str]:
    """Paths of a deps/outs/metrics/plots list (an entry with options is a one-key mapping)."""
    return {next(iter(e)) if isinstance(e, dict) else e for e in entries}


def declared(stage: dict) -> tuple[set[str], set[str]]:
    """(what dvc.yaml says the stage reads beyond code, what it writes)."""
    reads = {d for d in _names(stage.get("deps", [])) if not d.startswith(("src/", "stages/"))}
    writes = set().union(*(_names(stage.get(k, [])) for k in ("outs", "metrics", "plots")))
    return reads, writes


def script_and_arg(stage: dict) -> tuple[Path, str | None]:
    """`python stages/<x>.py [arg ...]` -> (the script, its first argument)."""
    words = stage["cmd"].split()
    return ROOT / words[1], (words[2] if len(words) > 2 else None)


@cache
def load(script: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"stage_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # stages run main() only under __main__
    return module


def as_text(path: Path | str) -> str:
    return path.as_posix() if isinstance(path, Path) else path


def stage_lists(module: ModuleType, arg: str | None) -> tuple[list[str], list[str]]:
    """The script's READS / WRITES for this stage (by the cmd's argument when they are dicts)."""
    pick = [module.READS, module.WRITES]
    pick = [p[arg] if isinstance(p, dict) else p for p in pick]
    return [as_text(p) for p in pick[0]], [as_text(p) for p in pick[1]]


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring nodes (module, classes, functions): prose may name paths."""
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef))]
    return {
        id(n.body[0].value)
        for n in nodes
        if n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
    }


def artifact_literals(script: Path) -> list[str]:
    """`line: text` of every string in the script that spells an artifact path (f-string pieces included)."""
    tree = ast.parse(script.read_text(), str(script))
    skip = _docstrings(tree)
    return [
        f"{n.lineno}: {n.value!r}"
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip and ARTIFACT.match(n.value)
    ]


def used_paths(script: Path) -> dict[str, str]:
    """`paths.X` the script uses -> the path it stands for (a function: its pattern, called with "*")."""
    used = {}
    for n in ast.walk(ast.parse(script.read_text(), str(script))):
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "paths":
            value = getattr(paths, n.attr)
            if n.attr != "param":  # a params-set path: its key is checked through READS / WRITES
                used[n.attr] = as_text(value("*") if callable(value) else value)
    return used


def covered(path: str, declared_paths: set[str]) -> bool:
    """`path` is a declared path, inside a declared folder, or a pattern matching a declared path."""
    return any(path == d or path.startswith(d + "/") or fnmatch.fnmatchcase(d, path) for d in declared_paths)


def _cases():
    for name, stage in sorted(STAGES.items()):
        base = name.split("@")[0]
        marks = [pytest.mark.xfail(strict=True, reason=PENDING[base])] if base in PENDING else []
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_cases()))
def test_stage_declares_what_dvc_yaml_declares(name):
    stage = STAGES[name]
    script, arg = script_and_arg(stage)
    reads, writes = stage_lists(load(script), arg)
    dvc_reads, dvc_writes = declared(stage)
    assert len(reads) == len(set(reads)) and len(writes) == len(set(writes)), f"{script.name}: a path twice"
    assert set(reads) == dvc_reads, (
        f"{name}: {script.name} READS {sorted(set(reads) - dvc_reads)} not in dvc.yaml deps; "
        f"dvc.yaml deps {sorted(dvc_reads - set(reads))} not in READS"
    )
    assert set(writes) == dvc_writes, (
        f"{name}: {script.name} WRITES {sorted(set(writes) - dvc_writes)} not in dvc.yaml outs/metrics/plots; "
        f"dvc.yaml outs/metrics/plots {sorted(dvc_writes - set(writes))} not in WRITES"
    )
    cmd_paths = {w for w in stage["cmd"].split()[2:] if "/" in w}
    assert cmd_paths <= set(reads), f"{name}: the cmd passes {sorted(cmd_paths - set(reads))}, not in READS"


@pytest.mark.parametrize("name", list(_cases()))
def test_stage_takes_every_path_from_mllmrec_paths(name):
    script, _ = script_and_arg(STAGES[name])
    literals = artifact_literals(script)
    assert not literals, (
        f"{script.name}: artifact paths spelled in the script, take them from mllmrec.paths: {literals}"
    )
    module = load(script)
    mine = set()  # declared by any stage this script runs as (baseline.py sasrec branches on its argument)
    for other in STAGES.values():
        other_script, arg = script_and_arg(other)
        if other_script == script:
            reads, writes = stage_lists(module, arg)
            mine |= {*reads, *writes}
    stray = {attr: p for attr, p in used_paths(script).items() if not covered(p, mine)}
    assert not stray, f"{script.name} uses paths its dvc.yaml stage(s) do not declare: {stray}"


def test_every_stage_script_is_in_dvc_yaml():
    """A stage script outside dvc.yaml would escape the checks above."""
    run = {script_and_arg(s)[0].name for s in STAGES.values()}
    assert run == {p.name for p in (ROOT / "stages").glob("*.py")}


def test_top_level_plots_read_files_a_stage_writes():
    """dvc.yaml's `plots:` draw stage outputs (or the ablation table's, scripts/ablation.py)."""
    written = set().union(*(declared(s)[1] for s in STAGES.values())) | {paths.ABLATION_PLOTS.as_posix()}
    files = {f for plot in DVC["plots"] for spec in plot.values() if isinstance(spec.get("y"), dict) for f in spec["y"]}
    assert files and all(covered(f, written) for f in files), sorted(f for f in files if not covered(f, written))


def test_the_check_catches_a_stray_path(tmp_path):
    """The ast checks see a spelled path and a mllmrec.paths path outside the stage's declarations."""
    script = tmp_path / "stage.py"
    script.write_text(
        '"""Writes data/x/y.json (docstrings may say so)."""\n'
        "from mllmrec import paths\n"
        "OUT = f'metrics/{1}.json'\n"
        "paths.COT_METRICS, paths.candidates(3)\n"
    )
    assert artifact_literals(script) == ["3: 'metrics/'"]
    used = used_paths(script)
    assert used == {"COT_METRICS": "metrics/cot.json", "candidates": "data/split/candidates_n*.parquet"}
    assert covered(used["candidates"], {"data/split"}) and covered(used["candidates"], {paths.candidates(9).as_posix()})
    assert not covered(used["COT_METRICS"], {"metrics/random.json", "metrics/cot"})
