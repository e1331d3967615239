"""The software a run used: Python, the torch build and the packages that change numbers.

    from mllmrec.environment import versions
    versions()   # {"python": "3.11.9", "torch": "2.13.0+cpu", "torch_cuda": None, "cpu_capability": "AVX512", ...}

The report stage writes it next to the numbers (metrics/environment.json, the last line of metrics/report.md) and
the training stages into their info files, so two runs whose numbers differ can be told apart by what they ran on.
No hostname, user or time: the record is equal on two machines of the same kind with the same lock installed.
`cpu_capability` is the instruction set torch's CPU kernels dispatch to: float results can differ across it.
"""

import platform
from importlib.metadata import PackageNotFoundError, version

# the packages whose version can change a number this pipeline writes
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers", "safetensors", "numpy",
            "polars", "pyarrow", "vllm")


def versions() -> dict:
    import torch

    out = {"python": platform.python_version(), "machine": platform.machine(),
           "torch_cuda": torch.version.cuda, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None  # e.g. vllm on a CPU box
    return out
