"""The packages of src/mllmrec are layers: a module imports only from its own layer or a lower one, so each idea has
one home and nothing low depends on something built on top of it. Checked with `ast` on every import, function-level
ones included (a lazy import is still a dependency).

.venv/bin/pytest tests/test_layers.py -q
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mllmrec"

# bottom-up; a top-level module (mllmrec/<name>.py) is its own entry, a package (mllmrec/<name>/) one for all of it
LAYERS = [
    # base: what every stage shares (params, errors, files, artifact paths, typed reports, caches, the prompt
    # renderer, title matching, item co-occurrence)
    {"__init__", "cli", "config", "environment", "errors", "executor", "io", "launch", "partcache", "paths"}
    | {"cooccurrence", "progress", "prompts", "reports", "titles"},
    {"engines"},  # model backends: text/image in, text out
    {"data"},  # datasets, images, captions, splits
    {"cot"},  # CoT drafting, refinement, the leak audit, confidence
    {"evaluation"},  # candidates, scoring protocols, metrics, reports
    {"training"},  # augment, SFT, GRPO (their valid monitor scores through evaluation)
    {"experiments"},  # the ablation grid: trains, evaluates and compares whole runs
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}

# Upward imports that exist on purpose, each with why: (importing module, imported module).
EXCEPTIONS = {
    # a cache key needs the pixel describer's and the image tagger's identity (their algorithm version and package
    # versions) without loading a model; both live with their engines, imported lazily for those two engine kinds
    ("mllmrec.partcache", "mllmrec.engines.pixel_describer"),
    ("mllmrec.partcache", "mllmrec.engines.image_tagger"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_key(module: str) -> str:
    """mllmrec.cot.leak -> "cot"; mllmrec.titles -> "titles"; mllmrec -> "__init__"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def is_module(name: str) -> bool:
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def project_imports(path: Path) -> set[str]:
    """Every mllmrec module `path` imports, anywhere in the file: `from mllmrec.engines import image_tagger` counts
    as mllmrec.engines.image_tagger, `from mllmrec.cot.leak import find_leaks` as mllmrec.cot.leak."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "mllmrec"}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; the layer check reads absolute ones only"
            if node.module and node.module.split(".")[0] == "mllmrec":
                found |= {
                    f"{node.module}.{a.name}" if is_module(f"{node.module}.{a.name}") else node.module
                    for a in node.names
                }
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_package_and_top_level_module_has_a_layer():
    unplaced = sorted({layer_key(module_name(p)) for p in SOURCES} - set(LAYER))
    assert not unplaced, f"add {unplaced} to a layer in LAYERS (tests/test_layers.py)"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_or_stay_in_the_layer(path):
    me = module_name(path)
    upward = sorted(
        f"{me} (layer {LAYER[layer_key(me)]}) imports {target} (layer {LAYER[layer_key(target)]})"
        for target in project_imports(path)
        if LAYER[layer_key(target)] > LAYER[layer_key(me)] and (me, target) not in EXCEPTIONS
    )
    assert not upward, "upward imports (move the code down, or the importer up):\n" + "\n".join(upward)


def test_every_exception_is_still_needed():
    """An exception whose import is gone must go too, or it would silently allow the next upward import."""
    present = {(module_name(p), t) for p in SOURCES for t in project_imports(p)}
    assert not EXCEPTIONS - present, f"stale EXCEPTIONS: {sorted(EXCEPTIONS - present)}"
