"""Flyte tasks of the data half: config → world → synthesis → quality gates → summary.

`resolve_config` cuts the validated config into one `StageConfig` per stage (its cache key) plus the
whole config as JSON (for the parent run and the summary, which are never cached); `start_tracking`
opens the parent run and returns the `RunContext` every stage task takes, outside its cache key.
"""

from __future__ import annotations

import typing
from datetime import datetime
from pathlib import Path

from flytekit import Cache, Resources, task
from flytekit.types.directory import FlyteDirectory
from flytekit.types.error import FlyteError
from flytekit.types.file import FlyteFile

from containers.images import DATA_IMAGE
from deepresearch.config import STAGE_INPUTS, PipelineConfig, RunContext, StageConfig, load_config
from deepresearch.stages import StageResult, quality_stage, synthesis_stage, world_stage
from deepresearch.tracking import fail_open_runs, finish_run, preflight, start_parent_run
from tasks.common import IGNORE_RUN, StageOut, execution_id, stage_out, workdir

__all__ = ["StageOut", "stage_out"]  # re-exported: what every stage task returns

# Bump a stage's version when its code changes the artifact it produces.
WORLD_VERSION = "world-v1"
SYNTHESIS_VERSION = "synthesis-v2"  # v2: training tasks only (entity split), distinct questions
QUALITY_VERSION = "quality-v1"

# The whole config (JSON) and one StageConfig per stage, named as in STAGE_INPUTS.
Resolved = typing.NamedTuple(
    "Resolved", [("pipeline", str), *((stage, StageConfig) for stage in STAGE_INPUTS)]  # type: ignore[misc]
)


def _data_out(res: StageResult, run: RunContext) -> StageOut:
    keep = {k: v for k, v in res.manifest.items() if k in ("counts", "datasets", "digest", "index")}
    return stage_out(res.stage, res.path, res.run_id, res.seconds, run=run, **keep)


@task(container_image=DATA_IMAGE, requests=Resources(cpu="1", mem="1Gi"))
def resolve_config(
    config: str, overrides: typing.List[str], kickoff_time: typing.Optional[datetime] = None
) -> Resolved:
    """Load and validate the YAML config with dotted overrides; returns it as canonical JSON and, per stage,
    the part that stage reads (`StageConfig.of`), its cache key.

    A scheduled run passes its kickoff time, which selects fresh data: see `fresh_data_overrides`.
    """
    from deepresearch.config import fresh_data_overrides

    extra = fresh_data_overrides(load_config(config, overrides), kickoff_time) if kickoff_time else []
    cfg = load_config(config, list(overrides) + extra)
    return Resolved(cfg.to_json(), *(StageConfig.of(cfg, stage) for stage in STAGE_INPUTS))


@task(container_image=DATA_IMAGE, requests=Resources(cpu="1", mem="1Gi"))
def start_tracking(pipeline: str) -> RunContext:
    """Check the tracking store and Flyte's local cache, then open the MLflow parent run of this execution;
    returns the run context every stage gets. Stale cache entries (an output directory gone, or an MLflow
    run the store lacks) are evicted first, with one line each, so those stages run again instead of
    handing later stages a dangling path or run id (`tasks.cache`)."""
    from tasks.cache import evict_stale

    cfg = PipelineConfig.from_json(pipeline)
    preflight(cfg)
    evict_stale(cfg)
    ex = execution_id()
    parent = start_parent_run(cfg, "full", tags={"flyte.execution_id": ex})
    return RunContext.of(cfg, parent_run_id=parent, execution_id=ex)


@task(
    container_image=DATA_IMAGE,
    cache=Cache(version=WORLD_VERSION, ignored_inputs=IGNORE_RUN),
    retries=2,
    requests=Resources(cpu="2", mem="4Gi"),
)
def build_world(cfg: StageConfig, run: RunContext) -> StageOut:
    """Generate the research world and its search index."""
    return _data_out(world_stage(cfg.view(run), workdir("world"), run.parent_run_id, run.execution_id), run)


@task(
    container_image=DATA_IMAGE,
    cache=Cache(version=SYNTHESIS_VERSION, ignored_inputs=IGNORE_RUN),
    retries=2,
    requests=Resources(cpu="2", mem="4Gi"),
)
def synthesize(cfg: StageConfig, world: FlyteDirectory, run: RunContext) -> StageOut:
    """Synthesize deep-search and deep-research tasks and scripted-expert trajectories."""
    res = synthesis_stage(cfg.view(run), Path(world.download()), workdir("raw"), run.parent_run_id, run.execution_id)
    return _data_out(res, run)


@task(
    container_image=DATA_IMAGE,
    cache=Cache(version=QUALITY_VERSION, ignored_inputs=IGNORE_RUN),
    retries=2,
    requests=Resources(cpu="1", mem="2Gi"),
)
def quality_gates(cfg: StageConfig, raw: FlyteDirectory, run: RunContext) -> StageOut:
    """Filter trajectories and validate the datasets; a failed expectation suite stops the workflow."""
    res = quality_stage(cfg.view(run), Path(raw.download()), workdir("datasets"), run.parent_run_id, run.execution_id)
    return _data_out(res, run)


@task(container_image=DATA_IMAGE, requests=Resources(cpu="1", mem="1Gi"))
def summarize(
    pipeline: str,
    run: RunContext,
    world: FlyteDirectory,
    datasets: FlyteDirectory,
    stage_summaries: typing.List[str],
    stage_run_ids: typing.List[str],
) -> FlyteFile:
    """Print what was produced and where, put that summary on the parent run (with a link to each stage's
    run, cached ones marked: `deepresearch.summary.log_summary`) and close it; returns the summary as a
    markdown file.

    `stage_summaries` and `stage_run_ids` are the `summary` and `run_id` outputs of every stage, in order.
    A file, not the text: `pyflyte run` prints a workflow's outputs after the run, and a path there is one
    short line under the summary it just printed, where the text would be the whole summary again, escaped.
    """
    from deepresearch.io import atomic_write_text
    from deepresearch.summary import log_summary, render_summary

    cfg = PipelineConfig.from_json(pipeline)
    text = render_summary(
        cfg,
        parent_run_id=run.parent_run_id,
        world_dir=world.path,
        datasets_dir=datasets.path,
        stage_summaries=stage_summaries,
        stage_run_ids=stage_run_ids,
        execution_id=run.execution_id,
    )
    log_summary(cfg, parent_run_id=run.parent_run_id, text=text, stage_summaries=stage_summaries,
                stage_run_ids=stage_run_ids, execution_id=run.execution_id)
    finish_run(cfg, run.parent_run_id)
    path = workdir("summary.md")
    atomic_write_text(path, text)
    return FlyteFile(str(path))


@task(container_image=DATA_IMAGE, requests=Resources(cpu="1", mem="1Gi"))
def mark_failed(
    config: str,
    overrides: typing.List[str],
    kickoff_time: typing.Optional[datetime] = None,
    err: typing.Optional[FlyteError] = None,
) -> None:
    """Failure handler: close this execution's open MLflow runs as FAILED, with the error (the parent run and
    every stage run, training workers' included: all are tagged with `execution_id()`)."""
    cfg = load_config(config, overrides)
    message = f"{err.failed_node_id}: {err.message}" if err is not None else "workflow failed"
    fail_open_runs(cfg, execution_id(), message)
