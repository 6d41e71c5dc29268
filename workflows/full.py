"""The whole pipeline as one Flyte workflow, plus its weekly retraining schedule.

Locally (tiny config, CPU, minutes):
    pyflyte run workflows/full.py full --config configs/tiny.yaml
With overrides:
    pyflyte run workflows/full.py full --config configs/tiny.yaml --overrides '["synthesis.n_deep_search=8"]'
On a cluster (task resources come from the config's `infra` section, see workflows/infra.py):
    pyflyte run --remote workflows/full.py full --config configs/small.yaml
Scheduled retraining (`full_weekly`, activated with `pyflyte register --activate-launchplans`):
each kickoff passes its time as `kickoff_time`, which selects fresh data sources (a new world seed).

For now: world → synthesis → quality gates (the data half); training stages come next.
"""

from __future__ import annotations

import typing
from datetime import datetime

from flytekit import CronSchedule, LaunchPlan, workflow
from flytekit.types.directory import FlyteDirectory

from tasks.data import (
    build_world,
    mark_failed,
    quality_gates,
    resolve_config,
    start_tracking,
    summarize,
    synthesize,
)
from workflows.infra import compile_config_path, infra
from workflows.infra import overrides as sized

Outputs = typing.NamedTuple("Outputs", [("world", FlyteDirectory), ("datasets", FlyteDirectory), ("summary", str)])


@workflow(on_failure=mark_failed)
def full(
    config: str = "configs/tiny.yaml",
    overrides: typing.List[str] = [],  # noqa: B006 - Flyte workflow defaults are literals
    kickoff_time: typing.Optional[datetime] = None,
) -> Outputs:
    """Run the Step-DeepResearch pipeline; returns the world, the quality-gated datasets and a summary."""
    cfg = resolve_config(config=config, overrides=overrides, kickoff_time=kickoff_time)
    parent = start_tracking(config_json=cfg)
    world = build_world(config_json=cfg, parent_run_id=parent).with_overrides(**sized("data"))
    raw = synthesize(config_json=cfg, world=world.directory, parent_run_id=parent).with_overrides(**sized("data"))
    data = quality_gates(config_json=cfg, raw=raw.directory, parent_run_id=parent).with_overrides(**sized("data"))
    summary = summarize(
        config_json=cfg,
        parent_run_id=parent,
        world=world.directory,
        datasets=data.directory,
        stage_summaries=[world.summary, raw.summary, data.summary],
        stage_run_ids=[world.run_id, raw.run_id, data.run_id],
    )
    return Outputs(world=world.directory, datasets=data.directory, summary=summary)


full_weekly = LaunchPlan.get_or_create(
    full,
    name="full_weekly",
    default_inputs={"config": compile_config_path()},
    schedule=CronSchedule(schedule=infra().schedule, kickoff_time_input_arg="kickoff_time"),
)
