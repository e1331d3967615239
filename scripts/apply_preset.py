"""Apply a params preset (e.g. the paper's GPU configuration) onto params.yaml, keeping its comments.

    python scripts/apply_preset.py presets/paper-movielens.yaml              # edits params.yaml in place
    python scripts/apply_preset.py presets/paper-movielens.yaml --check      # validate only, write nothing
    python scripts/apply_preset.py presets/paper-netflix.yaml --params other/params.yaml

The preset is a partial params.yaml: its mappings are merged key by key into the current file (lists and scalars
replace). Before anything is written, every section of the merged result is validated by its pydantic model
(mllmrec.config: section `draft_cot` -> DraftCotParams, ...; extra keys are errors), so a typo or a stale key fails
here, not hours into a GPU run. Then `dvc repro` (or `dvc exp run`) runs the pipeline with it; git shows the diff.
"""

import io
import sys
from pathlib import Path

import typer
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedSeq

from mllmrec.cli import run
from mllmrec.config import read_yaml, section_model
from mllmrec.errors import UserError


def merge(base, patch, path: str = ""):
    """Recursive merge of mappings into ruamel's round-trip map (comments on untouched keys survive)."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value, f"{path}{key}.")
        elif isinstance(value, list):  # flow style, `[9]`: a block list replacing a section's last key landed after
            base[key] = CommentedSeq(value)  # the comment block that follows it (ruamel), i.e. in the next section
            base[key].fa.set_flow_style()
        else:
            base[key] = value
    return base


def validate(params: dict, source: str) -> None:
    problems = []
    for name, body in params.items():
        model = section_model(name)
        if model is None:
            problems.append(f"{name}: unknown section (no pydantic model for it in mllmrec.config)")
            continue
        try:
            model.model_validate(body)
        except Exception as e:  # noqa: BLE001 - pydantic ValidationError or a UserError from a validator: report all
            problems.append(f"{name}: {e}")
    if problems:
        raise UserError(f"{source}: the merged params do not validate:\n" + "\n".join(problems))


def apply(preset: Path, params_file: Path, check: bool = False) -> dict:
    yaml = YAML()  # round-trip: keeps comments and key order of params.yaml
    yaml.preserve_quotes = True
    patch = read_yaml(preset, "preset (see presets/)")
    read_yaml(params_file)  # the same file errors as every stage, before the round-trip load below
    params = yaml.load(params_file.read_text())
    merged = merge(params, patch)
    plain = YAML(typ="safe").load(_dump(yaml, merged))  # plain dicts/lists for pydantic
    validate(plain, f"{params_file} + {preset}")
    if not check:
        tmp = params_file.with_name(params_file.name + ".tmp")
        tmp.write_text(_dump(yaml, merged))
        tmp.replace(params_file)
    return plain


def _dump(yaml, data) -> str:
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()


def main(
    preset: Path,
    params: Path = Path("params.yaml"),
    check: bool = typer.Option(False, help="validate the merged params only; write nothing"),
) -> None:
    merged = apply(preset, params, check)
    policy = merged.get("models", {}).get("policy", {}).get("model")
    print(
        f"{preset} {'validates against' if check else 'applied to'} {params} ({len(merged)} sections; policy "
        f"{policy}). Next: `dvc status`, then `dvc repro` (or `dvc exp run -n <name>`).",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run(main)
