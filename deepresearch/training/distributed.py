"""Process-group plumbing for the training loop: one process or many, same code path.

In-process (tests, notebooks, a single-GPU stage): `init_distributed()` makes a process group of one
over an in-memory store (no port, no launcher variables written), and DeepSpeed runs as usual.
Only LOCAL_RANK=0 is set in `os.environ`, because DeepSpeed's engine reads it there.

Under torchrun / torch elastic (Flyte's `Elastic` task config, a PyTorchJob): the launcher sets
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `init_distributed()` joins that job.
WORLD_SIZE in the environment is what says "launched". The backend is NCCL on GPU and gloo on CPU
(DeepSpeed's CPU accelerator).

Two CPU processes for tests and benchmarks:

    launch_local("tests.test_training_loop:worker", ["--out", "/tmp/run"], nproc=2)

runs `python -m torch.distributed.run --standalone --nproc-per-node 2 -m deepresearch.training.distributed
tests.test_training_loop:worker --out /tmp/run`; each worker calls `worker(["--out", "/tmp/run"])`.
"""

from __future__ import annotations

import importlib
import os
import runpy
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from deepresearch.errors import DeepResearchError

REPO_ROOT = Path(__file__).resolve().parents[2]
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class TrainingError(DeepResearchError):
    """A training run cannot start or go on: bad layout, broken checkpoint, inconsistent data or loss."""


class DistributedError(TrainingError):
    """The distributed environment is incomplete, or a launched worker group failed."""


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int  # global rank, 0 .. world_size - 1
    world_size: int  # processes in the job (nnodes * nproc_per_node)
    local_rank: int  # rank on this node: the GPU index on GPU machines
    launched: bool  # started by torchrun / torch elastic (False: a world of one in this process)

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs, prints and writes shared artifacts."""
        return self.rank == 0


def dist_env() -> DistEnv:
    """This process's place in the job, from the torchrun variables; a world of one without WORLD_SIZE.

    Returns:
        The DistEnv.
    Raises:
        DistributedError: WORLD_SIZE is set but another torchrun variable is missing, or one is not a number.
    """
    if "WORLD_SIZE" not in os.environ:
        return DistEnv(rank=0, world_size=1, local_rank=0, launched=False)
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise DistributedError(
            f"incomplete distributed environment: WORLD_SIZE is set but {', '.join(missing)} missing "
            "(launch with torchrun / an Elastic task, or unset WORLD_SIZE to train in one process)"
        )
    try:
        return DistEnv(
            rank=int(os.environ["RANK"]),
            world_size=int(os.environ["WORLD_SIZE"]),
            local_rank=int(os.environ["LOCAL_RANK"]),
            launched=True,
        )
    except ValueError as e:
        raise DistributedError(f"a torchrun variable is not an integer: {e}") from None


def on_gpu() -> bool:
    """True when CUDA is usable: NCCL + bf16; otherwise gloo + fp32 on DeepSpeed's CPU accelerator."""
    import torch

    return torch.cuda.is_available()


def cpu_threads_per_process() -> int:
    """Intra-op threads for one of the LOCAL_WORLD_SIZE processes sharing this machine's CPUs: the cores
    this process may run on, divided among them (at least 1).

    torchrun and flytekit's Elastic set OMP_NUM_THREADS=1 whenever they start more than one process, and a
    local Flyte execution keeps that setting in its own environment: a later one-process stage inherited
    one thread of the machine's two (measured: tiny SFT at 4,300 instead of ~8,000 tokens/s).
    """
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, len(os.sched_getaffinity(0)) // local)


def init_distributed() -> DistEnv:
    """Join the launched job, or create a process group of one in this process; idempotent.

    Returns:
        This process's DistEnv.
    Raises:
        DistributedError: an incomplete torchrun environment.
    """
    from deepresearch.console import quiet, without_prints

    quiet()  # before deepspeed's first import, which logs the accelerator it picked
    import deepspeed
    import torch

    env = dist_env()
    backend = "nccl" if on_gpu() else "gloo"
    if on_gpu():
        torch.cuda.set_device(env.local_rank)
    if not torch.distributed.is_initialized():
        if not env.launched:
            # An in-memory store: no port to pick or leak into child processes' environments.
            os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed's engine reads it from the environment
            torch.distributed.init_process_group(
                backend, store=torch.distributed.HashStore(), rank=0, world_size=1
            )
        with without_prints(r"^DeepSpeed \S+ built successfully$"):  # its CPU allreduce op, compiled
            deepspeed.init_distributed(dist_backend=backend, verbose=False)  # env:// when launched
    return env


def is_main_process() -> bool:
    """Rank 0 of the initialised process group (or of the environment, before initialisation)."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    """Wait for every rank (a no-op outside a process group)."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def launch_local(
    target: str,
    args: Sequence[str] = (),
    nproc: int = 2,
    *,
    env: dict[str, str] | None = None,
    timeout_s: float | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run `target` in `nproc` local processes under torchrun (`torch.distributed.run --standalone`).

    Args:
        target: "package.module:function" (each worker calls `function(list(args))`) or "package.module"
            (run as `python -m package.module *args` in each worker).
        args: command-line arguments handed to the target.
        nproc: processes on this machine (world size).
        env: extra environment variables for the workers (on top of `child_env()`).
        timeout_s: kill the whole group after this many seconds (None: no limit).
        check: raise when the group fails.
    Returns:
        The CompletedProcess of the launcher (stdout and stderr captured as text, ranks interleaved).
    Raises:
        DistributedError: `check` and a non-zero exit; the message carries the end of the output.
        subprocess.TimeoutExpired: the group ran past `timeout_s`.
    """
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
        "--nproc-per-node", str(nproc), "-m", "deepresearch.training.distributed", target, *args,
    ]  # fmt: skip
    full_env = child_env(env)
    proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout_s)
    if check and proc.returncode != 0:
        tail = (proc.stdout[-3000:] + "\n" + proc.stderr[-6000:]).strip()
        raise DistributedError(
            f"launch_local({target!r}, nproc={nproc}) exited with {proc.returncode}:\n{tail}"
        )
    return proc


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a training subprocess started from this one.

    The torchrun variables are removed (a parent that is itself a rank, or ran an in-process
    world of one, must not hand its place to the child), the repo root is prepended to PYTHONPATH
    (so modules outside the installed packages, like tests, import), OMP_NUM_THREADS defaults to 1
    (as torchrun's), then `extra` is applied.
    """
    env = dict(os.environ)
    for var in TORCHRUN_VARS:
        env.pop(var, None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra or {})
    return env


def _run_target(target: str, args: list[str]) -> None:
    """Import and run a launch target (see `launch_local`)."""
    if ":" in target:
        module_name, fn_name = target.split(":", 1)
        fn = getattr(importlib.import_module(module_name), fn_name, None)
        if fn is None:
            raise DistributedError(
                f"launch target {target!r}: module {module_name} has no attribute {fn_name!r}"
            )
        fn(args)
    else:
        sys.argv = [target, *args]
        runpy.run_module(target, run_name="__main__", alter_sys=True)


def main(argv: list[str] | None = None) -> None:
    """Worker entry point: `python -m deepresearch.training.distributed TARGET [ARGS...]`."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit(
            "usage: python -m deepresearch.training.distributed package.module[:function] [args...]"
        )
    _run_target(argv[0], argv[1:])


if __name__ == "__main__":
    main()
