"""The whole pipeline as one Flyte workflow.

Locally (tiny config, CPU, minutes):
    pyflyte run workflows/full.py full --config configs/tiny.yaml
With overrides:
    pyflyte run workflows/full.py full --config configs/tiny.yaml --overrides '["synthesis.n_deep_search=8"]'
On a cluster:
    pyflyte run --remote workflows/full.py full --config configs/small.yaml

For now: world → synthesis → quality gates (the data half); training stages come next.
"""

from __future__ import annotations

import typing

from flytekit import workflow
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

Outputs = typing.NamedTuple(
    "Outputs", [("world", FlyteDirectory), ("datasets", FlyteDirectory), ("summary", str)]
)


@workflow(on_failure=mark_failed)
def full(config: str = "configs/tiny.yaml", overrides: typing.List[str] = []) -> Outputs:  # noqa: B006
    """Run the Step-DeepResearch pipeline; returns the world, the quality-gated datasets and a summary."""
    cfg = resolve_config(config=config, overrides=overrides)
    parent = start_tracking(config_json=cfg)
    world = build_world(config_json=cfg, parent_run_id=parent)
    raw = synthesize(config_json=cfg, world=world.directory, parent_run_id=parent)
    data = quality_gates(config_json=cfg, raw=raw.directory, parent_run_id=parent)
    summary = summarize(
        config_json=cfg,
        parent_run_id=parent,
        world=world.directory,
        datasets=data.directory,
        stage_summaries=[world.summary, raw.summary, data.summary],
        stage_run_ids=[world.run_id, raw.run_id, data.run_id],
    )
    return Outputs(world=world.directory, datasets=data.directory, summary=summary)
