"""Flyte tasks of the data half: config → world → synthesis → quality gates → summary."""

from __future__ import annotations

import os
import socket
import time
import typing
from datetime import datetime
from pathlib import Path

from flytekit import Cache, Resources, current_context, task
from flytekit.types.directory import FlyteDirectory
from flytekit.types.error import FlyteError

from containers.images import DATA_IMAGE
from deepresearch.config import PipelineConfig, load_config
from deepresearch.stages import StageResult, quality_stage, synthesis_stage, world_stage
from deepresearch.tracking import fail_open_runs, finish_run, preflight, start_parent_run

# Bump a stage's version when its code changes the artifact it produces.
WORLD_VERSION = "world-v1"
SYNTHESIS_VERSION = "synthesis-v2"  # v2: training tasks only (entity split), distinct questions
QUALITY_VERSION = "quality-v1"

# The parent run id changes on every execution; it must not bust the cache.
_IGNORE_RUN = ("parent_run_id",)

# What every stage task returns: its artifact, its MLflow child run ("" untracked) and its row of the
# pipeline summary (`deepresearch.summary.stage_record`: stage, wall seconds, what it produced).
StageOut = typing.NamedTuple("StageOut", [("directory", FlyteDirectory), ("run_id", str), ("summary", str)])


_PROCESS_START = time.time()


def _execution_id() -> str:
    """The Flyte execution name; local executions (all named "local") get a per-process id."""
    try:
        name = current_context().execution_id.name
    except Exception:  # noqa: BLE001 - outside a Flyte context
        name = "local"
    if name == "local":
        return f"local-{socket.gethostname()}-{os.getpid()}-{int(_PROCESS_START)}"
    return name


def _workdir(name: str) -> Path:
    p = Path(current_context().working_directory) / name
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def stage_out(stage: str, path: str | Path, run_id: str | None, seconds: float, **facts: typing.Any) -> StageOut:
    """A stage task's outputs: the directory it wrote, its MLflow run id and its summary record.

    `seconds` and `facts` as in `deepresearch.summary.stage_record`.
    """
    from deepresearch.summary import stage_record

    return StageOut(FlyteDirectory(str(path)), run_id or "", stage_record(stage, seconds, **facts))


def _data_out(res: StageResult) -> StageOut:
    keep = {k: v for k, v in res.manifest.items() if k in ("counts", "datasets", "digest", "index")}
    return stage_out(res.stage, res.path, res.run_id, res.seconds, **keep)


@task(container_image=DATA_IMAGE, requests=Resources(cpu="1", mem="1Gi"))
def resolve_config(
    config: str, overrides: typing.List[str], kickoff_time: typing.Optional[datetime] = None
) -> str:
    """Load and validate the YAML config with dotted overrides; returns canonical JSON (the cache key).

    A scheduled run passes its kickoff time, which selects fresh data: see `fresh_data_overrides`.
    """
    from deepresearch.config import fresh_data_overrides

    extra = fresh_data_overrides(load_config(config, overrides), kickoff_time) if kickoff_time else []
    return load_config(config, list(overrides) + extra).to_json()


@task(container_image=DATA_IMAGE, requests=Resources(cpu="1", mem="1Gi"))
def start_tracking(config_json: str) -> str:
    """Check the tracking store and Flyte's local cache, then open the MLflow parent run of this execution;
    returns its run id. A stale cache entry (its output directory gone, or its MLflow run missing from
    the store) stops the workflow here, with one line naming it, before a cache hit could use it."""
    from tasks.cache import check_local_cache

    cfg = PipelineConfig.from_json(config_json)
    preflight(cfg)
    check_local_cache(cfg)
    return start_parent_run(cfg, "full", tags={"flyte.execution_id": _execution_id()})


@task(
    container_image=DATA_IMAGE,
    cache=Cache(version=WORLD_VERSION, ignored_inputs=_IGNORE_RUN),
    retries=2,
    requests=Resources(cpu="2", mem="4Gi"),
)
def build_world(config_json: str, parent_run_id: str) -> StageOut:
    """Generate the research world and its search index."""
    cfg = PipelineConfig.from_json(config_json)
    res = world_stage(cfg, _workdir("world"), parent_run_id, _execution_id())
    return _data_out(res)


@task(
    container_image=DATA_IMAGE,
    cache=Cache(version=SYNTHESIS_VERSION, ignored_inputs=_IGNORE_RUN),
    retries=2,
    requests=Resources(cpu="2", mem="4Gi"),
)
def synthesize(config_json: str, world: FlyteDirectory, parent_run_id: str) -> StageOut:
    """Synthesize deep-search and deep-research tasks and scripted-expert trajectories."""
    cfg = PipelineConfig.from_json(config_json)
    res = synthesis_stage(cfg, Path(world.download()), _workdir("raw"), parent_run_id, _execution_id())
    return _data_out(res)


@task(
    container_image=DATA_IMAGE,
    cache=Cache(version=QUALITY_VERSION, ignored_inputs=_IGNORE_RUN),
    retries=2,
    requests=Resources(cpu="1", mem="2Gi"),
)
def quality_gates(config_json: str, raw: FlyteDirectory, parent_run_id: str) -> StageOut:
    """Filter trajectories and validate the datasets; a failed expectation suite stops the workflow."""
    cfg = PipelineConfig.from_json(config_json)
    res = quality_stage(cfg, Path(raw.download()), _workdir("datasets"), parent_run_id, _execution_id())
    return _data_out(res)


@task(container_image=DATA_IMAGE, requests=Resources(cpu="1", mem="1Gi"))
def summarize(
    config_json: str,
    parent_run_id: str,
    world: FlyteDirectory,
    datasets: FlyteDirectory,
    stage_summaries: typing.List[str],
    stage_run_ids: typing.List[str],
) -> str:
    """Close the parent run and print what was produced and where; returns the summary as markdown.

    `stage_summaries` and `stage_run_ids` are the `summary` and `run_id` outputs of every stage, in order.
    """
    from deepresearch.summary import render_summary

    cfg = PipelineConfig.from_json(config_json)
    text = render_summary(
        cfg,
        parent_run_id=parent_run_id,
        world_dir=world.path,
        datasets_dir=datasets.path,
        stage_summaries=stage_summaries,
        stage_run_ids=stage_run_ids,
        execution_id=_execution_id(),
    )
    finish_run(cfg, parent_run_id)
    return text


@task(container_image=DATA_IMAGE, requests=Resources(cpu="1", mem="1Gi"))
def mark_failed(
    config: str,
    overrides: typing.List[str],
    kickoff_time: typing.Optional[datetime] = None,
    err: typing.Optional[FlyteError] = None,
) -> None:
    """Failure handler: close this execution's open MLflow runs as FAILED, with the error."""
    cfg = load_config(config, overrides)
    message = f"{err.failed_node_id}: {err.message}" if err is not None else "workflow failed"
    fail_open_runs(cfg, _execution_id(), message)
