#!/usr/bin/env bash
# Refresh the hashed locks from pyproject.toml's ranges (run after changing a dependency; commit both files):
#     bash scripts/lock.sh            # needs network access to the package index; installs uv in a temporary venv
# requirements/cpu.txt: runtime + dev + ray extras with the CPU torch build (README's two commands and .ci/run install it).
# requirements/gpu.txt: runtime + gpu extra (vllm) with the CUDA torch build that vllm pins.
# Both are resolved for Linux x86-64, CPython 3.11 (the CI machine); other platforms: regenerate with their
# --python-platform / --python-version, or install from pyproject's ranges (`pip install -e .`).
# Why uv: `uv pip compile --generate-hashes` writes a plain pip requirements file, so installing needs nothing but
# pip (`pip install -r`, hash-checked), while resolving for another platform (the GPU lock) works from a CPU box.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH=2.13.0  # the one torch release both stacks use (vllm 0.31 pins it)
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv" && "$venv/bin/pip" install -q uv
uv="$venv/bin/uv"
common=(--generate-hashes --custom-compile-command "bash scripts/lock.sh" --python-version 3.11 --python-platform x86_64-manylinux_2_28 --quiet)
# pip's own config (find-links, extra indexes, the CPU torch wheel) is honoured by pip, not by uv: pass it on
links=()
for d in ${PIP_FIND_LINKS:-}; do links+=(--find-links "$d"); done
for u in ${PIP_EXTRA_INDEX_URL:-$(pip config get global.extra-index-url 2>/dev/null || true)}; do
  links+=(--extra-index-url "$u")
done
# torch's exact build comes in on stdin ("-"): +cpu is PyTorch's CPU wheel, the plain version on PyPI is a CUDA build
echo "torch==$TORCH+cpu" | "$uv" pip compile pyproject.toml - --extra dev --extra ray -o requirements/cpu.txt "${common[@]}" \
  "${links[@]}" --index-strategy unsafe-best-match
echo "torch==$TORCH" | "$uv" pip compile pyproject.toml - --extra gpu -o requirements/gpu.txt "${common[@]}" --no-config
echo "requirements/cpu.txt: $(grep -c '==' requirements/cpu.txt) pins; requirements/gpu.txt: $(grep -c '==' requirements/gpu.txt) pins"
