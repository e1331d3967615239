"""Multi-process training: a stage asked for N > 1 processes re-execs itself under `accelerate launch`.

    from mllmrec.launch import maybe_relaunch
    maybe_relaunch(params.launch, "grpo")   # first thing in a training stage's main(); returns if nothing to do

- `launch.num_processes: 1` (default): runs in this process, nothing changes.
- `launch.num_processes: N`, `config_file: null`: `accelerate launch --multi_gpu --num_processes N` = DDP. On a box
  without CUDA the ranks use gloo on CPU (ACCELERATE_USE_CPU=true; the tests run 2 such processes).
- `config_file: configs/accelerate/deepspeed_zero3.yaml` (or fsdp.yaml, deepspeed_zero2.yaml): large models; the
  file's num_processes is overridden by `launch.num_processes` so params stay the one source of truth.
- `num_machines: M`, `main_process_ip`: M nodes, num_processes / M ranks on each; every node runs the same stage
  with the same params, its rank from MLLMREC_MACHINE_RANK (docs/scaling.md).
The child processes see WORLD_SIZE and skip this (no recursion); the parent waits and exits with the child's code,
so DVC sees one command that succeeds or fails as a whole.
"""

import os
import shutil
import subprocess
import sys

from mllmrec.config import LaunchParams
from mllmrec.errors import UserError


def in_distributed_child() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or "LOCAL_RANK" in os.environ


def launch_command(launch: LaunchParams, argv: list[str]) -> list[str]:
    """The `accelerate launch` command line that re-runs `argv` (script + args) in N processes."""
    accelerate = shutil.which("accelerate") or "accelerate"
    cmd = [
        accelerate,
        "launch",
        "--num_processes",
        str(launch.num_processes),
        "--num_machines",
        str(launch.num_machines),
    ]
    if launch.num_machines > 1:
        cmd += [
            "--machine_rank",
            str(machine_rank(launch)),
            "--main_process_ip",
            str(launch.main_process_ip),
            "--main_process_port",
            str(launch.main_process_port),
        ]
    if launch.config_file:
        if not os.path.exists(launch.config_file):
            raise UserError(
                f"params.yaml: launch.config_file {launch.config_file!r} not found (see configs/accelerate/)"
            )
        cmd += ["--config_file", launch.config_file]
    else:
        cmd += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]  # plain DDP; dtype from params
    return cmd + argv


def machine_rank(launch: LaunchParams) -> int:
    """This node's rank, from MLLMREC_MACHINE_RANK (params are the same on every node, so it cannot live there)."""
    raw = os.environ.get("MLLMREC_MACHINE_RANK", "0")
    if not raw.isdigit() or int(raw) >= launch.num_machines:
        raise UserError(
            f"MLLMREC_MACHINE_RANK={raw!r}: expected 0 .. {launch.num_machines - 1} "
            f"(launch.num_machines = {launch.num_machines}); 0 is the main node"
        )
    return int(raw)


def maybe_relaunch(launch: LaunchParams, stage: str) -> None:
    """Re-exec the running script under accelerate when more than one process is asked for (never returns then)."""
    if launch.num_processes <= 1 or in_distributed_child():
        return
    env = dict(os.environ)
    import torch

    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "true"  # accelerate's MULTI_CPU: gloo ranks on CPU
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // launch.num_processes)))
    elif torch.cuda.device_count() < launch.num_processes // launch.num_machines:
        raise UserError(
            f"params.yaml: {stage}.launch.num_processes = {launch.num_processes} over "
            f"{launch.num_machines} machine(s) needs {launch.num_processes // launch.num_machines} GPU(s) "
            f"per machine, but only {torch.cuda.device_count()} are visible"
        )
    cmd = launch_command(launch, list(sys.argv))  # accelerate runs the script with this interpreter
    print(f"{stage}: {launch.num_processes} processes: {' '.join(cmd)}", flush=True)
    sys.exit(subprocess.run(cmd, env=env, check=False).returncode)
