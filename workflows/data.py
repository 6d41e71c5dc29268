"""The data half as its own workflow: world → synthesis → quality gates (its nodes and the closing
summary node are reused by `full`).

    pyflyte run workflows/data.py data --config configs/tiny.yaml
"""

from __future__ import annotations

import typing
from datetime import datetime

from flytekit import workflow
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile

from tasks.data import (
    build_world,
    mark_failed,
    quality_gates,
    resolve_config,
    start_tracking,
    summarize,
    synthesize,
)
from tasks.infra import overrides as sized

DataOutputs = typing.NamedTuple(
    "DataOutputs", [("world", FlyteDirectory), ("datasets", FlyteDirectory), ("summary", FlyteFile)]
)


def data_nodes(cfg, run):
    """The data half's nodes inside a workflow body (compile-time Python): world, synthesis, quality.

    Args:
        cfg: the `resolve_config` node (one StageConfig per stage); run: the `start_tracking` node.
    """
    world = build_world(cfg=cfg.world, run=run).with_overrides(**sized("data"))
    raw = synthesize(cfg=cfg.synthesis, world=world.directory, run=run).with_overrides(**sized("data"))
    data = quality_gates(cfg=cfg.quality, raw=raw.directory, run=run).with_overrides(**sized("data"))
    return world, raw, data


def summary_node(cfg, run, world, datasets, stages):
    """The node that ends a workflow (compile-time Python): closes the parent run and returns the summary
    (a markdown file).

    Args:
        world, datasets: the world and quality-gate nodes (their directories are listed as where things are).
        stages: every stage node (each returns a `StageOut`) in pipeline order; one summary row each.
    """
    return summarize(
        pipeline=cfg.pipeline,
        run=run,
        world=world.directory,
        datasets=datasets.directory,
        stage_summaries=[s.summary for s in stages],
        stage_run_ids=[s.run_id for s in stages],
    )


@workflow(on_failure=mark_failed)
def data(
    config: str = "configs/tiny.yaml",
    overrides: typing.List[str] = [],  # noqa: B006 - Flyte workflow defaults are literals
    kickoff_time: typing.Optional[datetime] = None,
) -> DataOutputs:
    """World, synthesized trajectories and quality-gated datasets, tracked in MLflow."""
    cfg = resolve_config(config=config, overrides=overrides, kickoff_time=kickoff_time)
    run = start_tracking(pipeline=cfg.pipeline)
    world, raw, gated = data_nodes(cfg, run)
    summary = summary_node(cfg, run, world, gated, [world, raw, gated])
    return DataOutputs(world=world.directory, datasets=gated.directory, summary=summary)
