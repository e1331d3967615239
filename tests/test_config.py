"""Params validation: a wrong type or unknown key fails before any work, naming the key."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mllmrec.config import BaselinesParams, EvalParams, IngestParams, SplitParams, load_section, section_model
from mllmrec.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_every_params_section_validates():
    """Each top-level section of params.yaml has its pydantic model (`draft_cot` -> DraftCotParams) and passes it."""
    sections = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name in sections:
        model = section_model(name)
        assert model is not None, f"params.yaml section {name!r} has no model in mllmrec.config"
        load_section(name, model, ROOT / "params.yaml")
    assert {"ingest", "split", "eval", "baselines", "models", "sft", "grpo"} <= set(sections)


def test_wrong_type_names_the_key(tmp_path):
    p = write(tmp_path, "split:\n  min_inter: ten\n")
    with pytest.raises(UserError, match=r"split\.min_inter: .*integer.*'ten'"):
        load_section("split", SplitParams, p)


def test_unknown_key_names_the_key(tmp_path):
    p = write(tmp_path, "baselines:\n  sasrec:\n    hiden: 64\n")
    with pytest.raises(UserError, match=r"baselines\.sasrec\.hiden: Extra inputs are not permitted"):
        load_section("baselines", BaselinesParams, p)


def test_missing_section_and_bad_yaml(tmp_path):
    with pytest.raises(UserError, match="missing section 'eval'"):
        load_section("eval", EvalParams, write(tmp_path, "split: {}\n"))
    with pytest.raises(UserError, match="not valid YAML"):
        load_section("eval", EvalParams, write(tmp_path, "eval: [\n"))


def test_stage_fails_before_work_with_one_line(tmp_path):
    write(tmp_path, "ingest:\n  format: parquet\n  root: nowhere\n")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "stages/ingest.py")], cwd=tmp_path, capture_output=True, check=False, text=True
    )
    assert proc.returncode == 2
    assert "ingest.format" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()  # nothing was written


@pytest.mark.parametrize(
    "args, env, expected",
    [
        (["stages/evaluate.py", "--bogus"], {}, "No such option: --bogus"),
        (["stages/evaluate.py", "nosuch"], {}, "'nosuch' is not one of 'zeroshot', 'sft', 'grpo'"),
        (["stages/evaluate.py"], {}, "Missing argument"),
        (["stages/textualize.py"], {"MLLMREC_CACHE_ONLY": "maybe"}, "MLLMREC_CACHE_ONLY"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path, args, env, expected):
    """typer 0.29 raises its own copies of click's exceptions: they must still end in one line and exit 2."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / args[0]), *args[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **env},
    )
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize(
    "text, key",
    [
        (
            "ingest:\n  format: movielens_csv\n  root: x\n  encoding: utf-9\n",
            "ingest.encoding: Value error, unknown encoding",
        ),
        ("split:\n  num_negatives: [9, 0]\n", "split.num_negatives.1: Input should be greater than or equal to 1"),
        ("eval:\n  ks: [1, -5]\n", "eval.ks.1: Input should be greater than or equal to 1"),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path, text, key):
    name = text.split(":")[0]
    with pytest.raises(UserError, match=re.escape(key)):
        load_section(name, section_model(name), write(tmp_path, text))


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"eval:\n\tks: [1]\n", r"not valid YAML at line 2, column 1: found character '\\t'"),
        (b"eval:\n  ks: [1]\n  ks: [5]\n", r"not valid YAML at line 3, column 3: duplicate key 'ks'"),
        (b"eval:\n  seed: 0\neval:\n  seed: 1\n", "duplicate key 'eval'"),
        (b"- eval\n- split\n", "expected a mapping of sections at the top level, got a list"),
        (b"eval:\n  split: t\xe9st\n", r"not UTF-8 text \(byte 16\)"),
        (b"eval: {}\nevall:\n  seed: 0\n", r"unknown section\(s\) \['evall'\]"),
    ],
)
def test_every_broken_params_file_is_one_line_naming_it(tmp_path, content, expected):
    p = tmp_path / "params.yaml"
    p.write_bytes(content)
    with pytest.raises(UserError, match=expected) as e:
        load_section("eval", EvalParams, p)
    assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)


def test_a_folder_or_a_missing_file_is_one_line(tmp_path):
    (tmp_path / "params.yaml").mkdir()
    with pytest.raises(UserError, match="is a directory, expected the params file"):
        load_section("eval", EvalParams, tmp_path / "params.yaml")
    with pytest.raises(UserError, match="nope.yaml: params file not found"):
        load_section("eval", EvalParams, tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "content, expected",
    [
        ("sft:\n\tlr: 1\n", "not valid YAML at line 2"),
        ("sft:\n  lr: 1\n  lr: 2\n", "duplicate key 'lr'"),
        ("- sft\n", "got a list"),
    ],
)
def test_apply_preset_refuses_a_broken_preset_with_one_line(tmp_path, content, expected):
    preset = tmp_path / "bad.yaml"
    preset.write_text(content)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/apply_preset.py"), str(preset), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_column_mapped_to_two_roles_is_refused_at_params_load(tmp_path):
    p = write(
        tmp_path,
        "ingest:\n  format: csv\n  root: d\n  interactions_file: i.csv\n  titles_file: t.csv\n"
        "  interactions: {columns: {user: u, item: u, timestamp: t}}\n"
        "  titles: {columns: {item: id, title: name}}\n",
    )
    with pytest.raises(UserError, match=r"ingest\.interactions: Value error, columns: \['u'\] mapped to more than one"):
        load_section("ingest", IngestParams, p)
    p = write(
        tmp_path,
        "ingest:\n  format: csv\n  root: d\n  interactions_file: i.csv\n  titles_file: t.csv\n"
        "  interactions: {header: false, columns: {user: 0, item: true, timestamp: 2}}\n"
        "  titles: {columns: {item: id, title: name}}\n",
    )
    with pytest.raises(UserError, match=r"columns \['item'\]: a boolean is not a column"):
        load_section("ingest", IngestParams, p)
