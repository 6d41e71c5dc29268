"""What every stage task shares: its outputs (`StageOut`), the execution id, its working directory.

    run = start_tracking(pipeline=cfg.pipeline)            # a RunContext: parent run, execution id, store
    world = build_world(cfg=cfg.world, run=run)            # StageConfig in (the cache key), StageOut out

A stage task takes its `StageConfig` (what it reads: its cache key), its upstream directories, and the
`RunContext`, which Flyte leaves out of the key (`IGNORE_RUN`).
"""

from __future__ import annotations

import os
import socket
import time
import typing
from pathlib import Path

from flytekit import current_context
from flytekit.types.directory import FlyteDirectory

from deepresearch.config import RunContext

# The run context (parent run, execution id, tracking store, storage) changes on every execution, and
# never changes what a stage produces: it must not bust the cache.
IGNORE_RUN = ("run",)

# What every stage task returns: its artifact, its MLflow child run ("" untracked) and its row of the
# pipeline summary (`deepresearch.summary.stage_record`: stage, wall seconds, the execution and parent
# run it ran under, what it produced). A cache hit hands all three on from the execution that produced them.
StageOut = typing.NamedTuple("StageOut", [("directory", FlyteDirectory), ("run_id", str), ("summary", str)])

_PROCESS_START = time.time()


def execution_id() -> str:
    """The Flyte execution name; local executions (all named "local") get an id of this process.

    The one place it is computed: `start_tracking` puts it in the `RunContext` every stage gets (so the
    spawned workers of a local training stage tag their runs with it too), and `mark_failed`, which runs
    in the same process, closes every run tagged with it."""
    try:
        name = current_context().execution_id.name
    except Exception:  # noqa: BLE001 - outside a Flyte context
        name = "local"
    if not name or name == "local":
        return f"local-{socket.gethostname()}-{os.getpid()}-{int(_PROCESS_START)}"
    return name


def workdir(name: str) -> Path:
    """A fresh path under the task's working directory for its output directory."""
    p = Path(current_context().working_directory) / name
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def stage_out(
    stage: str, path: str | Path, run_id: str | None, seconds: float, *, run: RunContext, **facts: typing.Any
) -> StageOut:
    """A stage task's outputs: the directory it wrote, its MLflow run id and its summary record.

    `seconds` and `facts` as in `deepresearch.summary.stage_record`; `run`: the task's run context (its
    execution and parent run go into the record).
    """
    from deepresearch.summary import stage_record

    record = stage_record(stage, seconds, execution_id=run.execution_id, parent_run_id=run.parent_run_id, **facts)
    return StageOut(FlyteDirectory(str(path)), run_id or "", record)
