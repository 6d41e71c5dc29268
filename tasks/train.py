"""Flyte tasks of the training stages (mid-training 1/2, SFT, judge): torch elastic + DeepSpeed.

    sft = train_stage(config_json=cfg, stage="sft", init_model=mid2.directory, data=datasets, parent_run_id=parent)
    mid1 = train_stage(config_json=cfg, stage="mid1", init_model=base.directory, data=datasets,
                       parent_run_id=parent, world=world)
    # each returns a StageOut: .directory (the HF checkpoint), .run_id, .summary (its row of the summary)

`train_stage` runs as `Elastic(nnodes=1, nproc_per_node=2)`: locally flytekit spawns two worker
processes on this machine (gloo on CPU); on a cluster the pod runs torch elastic itself, and
nnodes > 1 becomes a PyTorchJob (training-operator, NCCL). Every worker runs the task body; rank 0's
return value is the task's output.

Sizing per stage. Flyte fixes a task's `task_config` when it is decorated, and
`node.with_overrides(task_config=...)` does not give one node its own: it replaces the config of the
task object itself (flytekit 1.16 `Node.with_overrides` assigns `run_entity._task_config`), so every
node of that task, in every workflow, ends up with the last override. A stage whose elastic shape
differs therefore gets its own task variant, `train_stage_{nnodes}x{nproc}`, built on first access
(the module's `__getattr__`), named by its shape, so the task resolver finds it again by that name
in the pod. The workflow picks the variant from the compile-time config (workflows/infra.py):

    from tasks.train import train_task_for
    stage_cfg = load_config(compile_config_path()).training.sft
    sft = train_task_for(stage_cfg)(config_json=cfg, stage="sft", init_model=..., data=..., parent_run_id=...)
    sft = sft.with_overrides(**sized("train"))          # requests/limits/accelerator: node-level, safe

Worker processes must import this module and the library: both are installed (editable) in the uv
environment and in the images (PYTHONPATH=/root); `make` also exports PYTHONPATH=repo root.

All ranks of one stage share a run directory (checkpoints, then the HF export): $DEEPRESEARCH_TRAIN_DIR
(default: <tmp>/deepresearch-train), one subdirectory per (code version, config, stage, inputs), so a
retried task resumes from its latest checkpoint. On a cluster, mount a persistent volume there for
retries to find it (and a shared one when nnodes > 1).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time
import types
import typing
from pathlib import Path

from flytekit import Cache, Resources, current_context, task
from flytekit.types.directory import FlyteDirectory
from flytekitplugins.kfpytorch import Elastic

from containers.images import TRAIN_IMAGE
from deepresearch.config import TrainStageConfig
from tasks.data import StageOut, stage_out

# Bump when the training code changes the model it produces (also part of the run directory's name).
TRAIN_VERSION = "train-v1"
# The task's cache version: TRAIN_VERSION plus the shape of its outputs (a cached output of another
# shape would not load), kept apart so that a change of outputs alone leaves the run directories be.
CACHE_VERSION = f"{TRAIN_VERSION}.stageout"
TRAIN_DIR_ENV = "DEEPRESEARCH_TRAIN_DIR"
DEFAULT_SHAPE = (1, 2)  # (nnodes, nproc_per_node) of `train_stage`
_VARIANT = re.compile(r"train_stage_(\d+)x(\d+)")

_TASK_KWARGS = dict(
    container_image=TRAIN_IMAGE,
    # a new parent run must not bust the cache
    cache=Cache(version=CACHE_VERSION, ignored_inputs=("parent_run_id",)),
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


def _execution_id() -> str:
    """The Flyte execution name ("local" in local runs, whose workers see an empty name)."""
    try:
        return current_context().execution_id.name or "local"
    except Exception:  # noqa: BLE001 - outside a Flyte context
        return "local"


def _identity(d: FlyteDirectory | None) -> str | None:
    return None if d is None else (d.remote_source or str(d.path))


def run_dir(
    config_json: str,
    stage: str,
    init_model: FlyteDirectory,
    data: FlyteDirectory,
    world: FlyteDirectory | None = None,
) -> Path:
    """The run directory every rank of this stage computes alike (see module docstring)."""
    ident = [TRAIN_VERSION, config_json, stage, _identity(init_model), _identity(data), _identity(world)]
    key = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]
    base = Path(os.environ.get(TRAIN_DIR_ENV) or Path(tempfile.gettempdir()) / "deepresearch-train")
    return base / f"{stage}-{key}"


def _worker_seconds() -> float:
    """Wall seconds since this worker process started: a training stage's start-up (interpreter, torch
    and DeepSpeed imports, rendezvous, downloads) is as much its cost as the training itself."""
    import psutil  # a DeepSpeed dependency

    return time.time() - psutil.Process().create_time()


def _train(
    config_json: str,
    stage: str,
    init_model: FlyteDirectory,
    data: FlyteDirectory,
    parent_run_id: str,
    world: FlyteDirectory | None,
) -> StageOut:
    """The body of every train task variant (runs on every rank; rank 0's return is the task's)."""
    from deepresearch.config import PipelineConfig
    from deepresearch.training.distributed import barrier, init_distributed
    from deepresearch.training.stage import run_stage

    cfg = PipelineConfig.from_json(config_json)
    env = init_distributed()
    inputs = [d for d in (init_model, data, world) if d is not None]
    if env.local_rank == 0:  # one download per node, into the local path all of its ranks share
        for d in inputs:
            d.download()
    barrier()  # the other ranks read the same local paths, never download themselves
    res = run_stage(
        cfg,
        stage,
        init_model=Path(init_model.path),
        data=Path(data.path),
        out=run_dir(config_json, stage, init_model, data, world),
        world=Path(world.path) if world is not None else None,
        parent_run_id=parent_run_id,
        execution_id=_execution_id(),
    )
    seconds = _worker_seconds()
    produced = f"{res.steps} steps, loss {res.first_loss:.2f} → {res.final_loss:.2f}, {res.tokens:,} tokens"
    if "judge/heldout_macro_f1" in res.metrics:
        produced += f", held-out macro-F1 {res.metrics['judge/heldout_macro_f1']:.2f}"
    produced += f"; {seconds - res.seconds:.0f} s of process start-up"
    return stage_out(stage, res.path, res.run_id, seconds, produced=produced, stage_seconds=round(res.seconds, 2))


@task(
    task_config=elastic_for(TrainStageConfig(nnodes=DEFAULT_SHAPE[0], nproc_per_node=DEFAULT_SHAPE[1])),
    **_TASK_KWARGS,
)
def train_stage(
    config_json: str,
    stage: str,
    init_model: FlyteDirectory,
    data: FlyteDirectory,
    parent_run_id: str,
    world: typing.Optional[FlyteDirectory] = None,
) -> StageOut:
    """Train one stage ("mid1", "mid2", "sft" or "judge") from `init_model` on `data`; returns the HF directory
    (with the stage's MLflow run id and summary record).

    `world` is needed by mid1 only (it trains on the world's documents). Two processes on one node;
    other shapes: `train_task_for(stage_cfg)`.
    """
    return _train(config_json, stage, init_model, data, parent_run_id, world)


_variants: dict[tuple[int, int], object] = {}


def _make_variant(nnodes: int, nproc: int):
    """`train_stage` under the name `train_stage_{nnodes}x{nproc}`, with that Elastic config.

    The function is a copy of train_stage's module-level function under the new name (not a closure:
    Flyte's default resolver refuses nested functions, and finds this one again by its name).
    """
    template = train_stage.task_function
    name = f"train_stage_{nnodes}x{nproc}"
    fn = types.FunctionType(
        template.__code__, template.__globals__, name, template.__defaults__, template.__closure__
    )
    fn.__qualname__ = name
    fn.__module__ = template.__module__
    fn.__annotations__ = dict(template.__annotations__)
    fn.__doc__ = f"{template.__doc__.splitlines()[0]}\n\n    {nnodes} node(s) × {nproc} process(es) each.\n"
    return task(
        task_config=elastic_for(TrainStageConfig(nnodes=nnodes, nproc_per_node=nproc)), **_TASK_KWARGS
    )(fn)


def __getattr__(name: str):
    """`train_stage_{N}x{P}`: the train task for N nodes × P processes (built once, on first access)."""
    m = _VARIANT.fullmatch(name)
    if m is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    shape = (int(m[1]), int(m[2]))
    if shape == DEFAULT_SHAPE:
        return train_stage
    if shape not in _variants:
        if min(shape) < 1:
            raise AttributeError(f"{name}: nnodes and nproc_per_node must be >= 1")
        _variants[shape] = _make_variant(*shape)
    return _variants[shape]


def train_task_for(cfg: TrainStageConfig):
    """The train task whose Elastic config matches the stage's `nnodes` × `nproc_per_node`."""
    return getattr(sys.modules[__name__], f"train_stage_{cfg.nnodes}x{cfg.nproc_per_node}")
