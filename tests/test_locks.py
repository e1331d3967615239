"""The hashed locks (requirements/*.txt, written by scripts/lock.sh) pin every dependency pyproject.toml declares,
inside its declared range, with the exact torch build; the README and CI install from them."""

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pins(lock: str) -> dict[str, tuple[Version, int]]:
    """name -> (pinned version, number of hashes) from a `uv pip compile --generate-hashes` file."""
    text = (ROOT / "requirements" / lock).read_text()
    out = {}
    pin = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)((?:\s*\\\s*\n\s*--hash=sha256:[0-9a-f]{64})*)", re.MULTILINE)
    for m in pin.finditer(text):
        out[canonicalize_name(m[1])] = (Version(m[2]), m[3].count("--hash="))
    return out


def declared(*extras: str) -> list[Requirement]:
    reqs = PYPROJECT["dependencies"] + [r for e in extras for r in PYPROJECT["optional-dependencies"][e]]
    return [Requirement(r) for r in reqs]


@pytest.mark.parametrize("lock, extras, torch_local", [("cpu.txt", ("dev",), "cpu"), ("gpu.txt", ("gpu",), None)])
def test_lock_pins_every_declared_dependency_in_range_with_hashes(lock, extras, torch_local):
    locked = pins(lock)
    problems = []
    for req in declared(*extras):
        name = canonicalize_name(req.name)
        if name not in locked:
            problems.append(f"{req} is not pinned")
        elif not req.specifier.contains(locked[name][0], prereleases=True):
            problems.append(f"{req} but the lock pins {locked[name][0]}")
    problems += [f"{n} has no --hash" for n, (_, hashes) in locked.items() if not hashes]
    assert not problems, f"requirements/{lock} is stale: {problems}; refresh it with `bash scripts/lock.sh`"
    assert locked["torch"][0].local == torch_local, f"requirements/{lock}: torch {locked['torch'][0]}"


def test_cpu_and_gpu_locks_use_the_same_torch_release():
    cpu, gpu = pins("cpu.txt")["torch"][0], pins("gpu.txt")["torch"][0]
    assert cpu.public == gpu.public, (cpu, gpu)


def test_readme_and_ci_install_from_the_cpu_lock():
    from test_readme import readme_commands

    for cmd in readme_commands():
        assert "pip install -r requirements/cpu.txt" in cmd and "pip install --no-deps -e ." in cmd, cmd
