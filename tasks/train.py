"""Flyte tasks of the training stages (mid-training 1/2, SFT, judge): torch elastic + DeepSpeed.

    sft = train_task_for(shape.training.sft)(cfg=cfg.sft, init_model=mid2.directory, data=datasets, run=run)
    mid1 = train_task_for(shape.training.mid1)(cfg=cfg.mid1, init_model=base.directory, data=datasets,
                                               run=run, world=world)
    # each returns a StageOut: .directory (the HF checkpoint), .run_id, .summary (its row of the summary)

The stage is the `StageConfig`'s (`cfg.stage`), and that config is all of the pipeline config the task's
cache key holds: `training.sft.*` for SFT, so a changed `rl.*` leaves every training stage cached.

A task runs as `Elastic(nnodes, nproc_per_node)`: locally flytekit spawns the worker processes on this
machine (gloo on CPU); on a cluster the pod runs torch elastic itself, and nnodes > 1 becomes a PyTorchJob
(training-operator, NCCL). Every worker runs the task body; rank 0's return value is the task's output.

Shapes. Flyte fixes a task's `task_config` when it is decorated, and `node.with_overrides(task_config=...)`
does not give one node its own: it replaces the config of the task object itself (flytekit 1.16
`Node.with_overrides` assigns `run_entity._task_config`), so every node of that task, in every workflow,
would end up with the last override. Each shape the configs use is therefore its own task, declared
below: `train_stage` (1 node × 2 processes, tiny.yaml) and `train_stage_{nnodes}x{nproc}`. The workflow
picks one with `train_task_for(stage_cfg)`, from the compile-time config (tasks/infra.py); a shape no
task declares is an error naming the ones that exist (declare a new one like the others).

Worker processes must import this module and the library: both are installed (editable) in the uv
environment and in the images (PYTHONPATH=/root); `make` also exports PYTHONPATH=repo root.

All ranks of one stage share a run directory (checkpoints, then the HF export): $DEEPRESEARCH_TRAIN_DIR
(default: <tmp>/deepresearch-train), one subdirectory per (code version, stage config, inputs), so a
retried task resumes from its latest checkpoint. On a cluster, mount a persistent volume there for
retries to find it (and a shared one when nnodes > 1).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import typing
from pathlib import Path

from flytekit import Cache, Resources, task
from flytekit.types.directory import FlyteDirectory
from flytekitplugins.kfpytorch import Elastic

from containers.images import TRAIN_IMAGE
from deepresearch.config import RunContext, StageConfig, TrainStageConfig
from deepresearch.errors import ConfigError
from tasks.common import IGNORE_RUN, StageOut, stage_out

# Bump when the training code changes the model it produces (also part of the run directory's name).
TRAIN_VERSION = "train-v1"
# The task's cache version: TRAIN_VERSION plus the shape of its outputs (a cached output of another
# shape would not load), kept apart so that a change of outputs alone leaves the run directories be.
CACHE_VERSION = f"{TRAIN_VERSION}.stageout"
TRAIN_DIR_ENV = "DEEPRESEARCH_TRAIN_DIR"

_TASK_KWARGS = dict(
    container_image=TRAIN_IMAGE,
    # a new parent run must not bust the cache
    cache=Cache(version=CACHE_VERSION, ignored_inputs=IGNORE_RUN),
    retries=2,  # a retry resumes from the latest checkpoint in the run directory
    requests=Resources(cpu="2", mem="8Gi"),  # the workflow sizes it from `infra.train`
    shared_memory=True,  # NCCL and DataLoader workers need more /dev/shm than a pod's default 64 MiB
)


def elastic_for(cfg: TrainStageConfig) -> Elastic:
    """The torch elastic launch of a stage: `cfg.nnodes` nodes × `cfg.nproc_per_node` processes each.

    Workers are spawned (not forked), and the rendezvous waits up to 15 minutes for slow pods.
    """
    # /dev/shm is sized by the task's `shared_memory` (the Elastic flag for it is deprecated)
    return Elastic(
        nnodes=cfg.nnodes, nproc_per_node=cfg.nproc_per_node, start_method="spawn", increase_shared_mem=False
    )


def _identity(d: FlyteDirectory | None) -> str | None:
    return None if d is None else (d.remote_source or str(d.path))


def run_dir(
    cfg: StageConfig,
    init_model: FlyteDirectory,
    data: FlyteDirectory,
    world: FlyteDirectory | None = None,
) -> Path:
    """The run directory every rank of this stage computes alike (see module docstring)."""
    ident = [TRAIN_VERSION, cfg.model_dump_json(), cfg.stage, _identity(init_model), _identity(data), _identity(world)]
    key = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]
    base = Path(os.environ.get(TRAIN_DIR_ENV) or Path(tempfile.gettempdir()) / "deepresearch-train")
    return base / f"{cfg.stage}-{key}"


def _worker_seconds() -> float:
    """Wall seconds since this worker process started: a training stage's start-up (interpreter, torch
    and DeepSpeed imports, rendezvous, downloads) is as much its cost as the training itself."""
    import psutil  # a DeepSpeed dependency

    return time.time() - psutil.Process().create_time()


def _train(
    cfg: StageConfig, init_model: FlyteDirectory, data: FlyteDirectory, run: RunContext, world: FlyteDirectory | None
) -> StageOut:
    """The body of every train task (runs on every rank; rank 0's return is the task's)."""
    from deepresearch.stages import train_stage as run_train_stage
    from deepresearch.training.distributed import barrier, init_distributed

    env = init_distributed()
    inputs = [d for d in (init_model, data, world) if d is not None]
    if env.local_rank == 0:  # one download per node, into the local path all of its ranks share
        for d in inputs:
            d.download()
    barrier()  # the other ranks read the same local paths, never download themselves
    res = run_train_stage(
        cfg.view(run),
        cfg.stage,
        init_model=Path(init_model.path),
        data=Path(data.path),
        out=run_dir(cfg, init_model, data, world),
        world=Path(world.path) if world is not None else None,
        parent_run_id=run.parent_run_id,
        execution_id=run.execution_id,  # the workflow's, as `mark_failed` looks it up (not this worker's)
    )
    seconds = _worker_seconds()
    produced = f"{res.steps} steps, loss {res.first_loss:.2f} → {res.final_loss:.2f}, {res.tokens:,} tokens"
    if "judge/heldout_macro_f1" in res.metrics:
        produced += f", held-out macro-F1 {res.metrics['judge/heldout_macro_f1']:.2f}"
    produced += f"; {seconds - res.seconds:.0f} s of process start-up"
    return stage_out(cfg.stage, res.path, res.run_id, seconds, run=run, produced=produced,
                     stage_seconds=round(res.seconds, 2))


def _train_task(nnodes: int, nproc_per_node: int):
    """The task decorator of the train task for `nnodes` × `nproc_per_node`."""
    return task(task_config=elastic_for(TrainStageConfig(nnodes=nnodes, nproc_per_node=nproc_per_node)), **_TASK_KWARGS)


# One task per elastic shape the configs use (module docstring: why not one task with overrides). Each has
# the same interface; `cfg.stage` says which stage ("mid1", "mid2", "sft" or "judge") it trains, from
# `init_model` on `data` (`world`: mid1 only, it trains on the world's documents).


@_train_task(1, 2)
def train_stage(
    cfg: StageConfig, init_model: FlyteDirectory, data: FlyteDirectory, run: RunContext,
    world: typing.Optional[FlyteDirectory] = None,
) -> StageOut:
    """Train one stage on 1 node × 2 processes (tiny.yaml); returns the HF directory, run id and summary record."""
    return _train(cfg, init_model, data, run, world)


@_train_task(1, 1)
def train_stage_1x1(
    cfg: StageConfig, init_model: FlyteDirectory, data: FlyteDirectory, run: RunContext,
    world: typing.Optional[FlyteDirectory] = None,
) -> StageOut:
    """Train one stage on 1 node × 1 process (small.yaml: one GPU)."""
    return _train(cfg, init_model, data, run, world)


@_train_task(2, 8)
def train_stage_2x8(
    cfg: StageConfig, init_model: FlyteDirectory, data: FlyteDirectory, run: RunContext,
    world: typing.Optional[FlyteDirectory] = None,
) -> StageOut:
    """Train one stage on 2 nodes × 8 processes (paper.yaml: the judge)."""
    return _train(cfg, init_model, data, run, world)


@_train_task(4, 8)
def train_stage_4x8(
    cfg: StageConfig, init_model: FlyteDirectory, data: FlyteDirectory, run: RunContext,
    world: typing.Optional[FlyteDirectory] = None,
) -> StageOut:
    """Train one stage on 4 nodes × 8 processes (paper.yaml: SFT)."""
    return _train(cfg, init_model, data, run, world)


@_train_task(8, 8)
def train_stage_8x8(
    cfg: StageConfig, init_model: FlyteDirectory, data: FlyteDirectory, run: RunContext,
    world: typing.Optional[FlyteDirectory] = None,
) -> StageOut:
    """Train one stage on 8 nodes × 8 processes (paper.yaml: mid-training)."""
    return _train(cfg, init_model, data, run, world)


TRAIN_TASKS = {
    (t.task_config.nnodes, t.task_config.nproc_per_node): t
    for t in (train_stage, train_stage_1x1, train_stage_2x8, train_stage_4x8, train_stage_8x8)
}


def train_task_for(cfg: TrainStageConfig):
    """The train task whose Elastic config matches the stage's `nnodes` × `nproc_per_node`."""
    shape = (cfg.nnodes, cfg.nproc_per_node)
    if shape not in TRAIN_TASKS:
        declared = ", ".join(f"{n}x{p}" for n, p in sorted(TRAIN_TASKS))
        raise ConfigError(
            f"no train task for {shape[0]} node(s) × {shape[1]} process(es); declared: {declared}. "
            f"Declare `train_stage_{shape[0]}x{shape[1]}` in tasks/train.py like the others."
        )
    return TRAIN_TASKS[shape]
