"""The software a run used: Python, the torch build and the packages that change numbers.

    from mllmrec.environment import versions
    versions()   # {"python": "3.11.9", "cpu": "AMD EPYC", "torch": "2.13.0+cpu", "torch_cuda": None, "cpu_capability": "AVX512", ...}

The report stage writes it next to the numbers (metrics/environment.json, the last line of metrics/report.md) and
the training stages into their info files, so two runs whose numbers differ can be told apart by what they ran on.
No hostname, user or time: the record is equal on two machines of the same kind with the same lock installed.
`cpu` (the CPU model) and `cpu_capability` (the instruction set torch's CPU kernels dispatch to) are there because
float results differ across CPU models: the same lock gave other SASRec and zero-shot numbers on another CPU.
"""

import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# the packages whose version can change a number this pipeline writes
PACKAGES = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "tokenizers",
    "safetensors",
    "numpy",
    "polars",
    "pyarrow",
    "vllm",
)


def cpu_model() -> str | None:
    """The CPU's model name (Linux /proc/cpuinfo; platform.processor() elsewhere), None when unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def versions() -> dict:
    import torch

    out = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "torch_cuda": torch.version.cuda,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None  # e.g. vllm on a CPU box
    return out
