"""The whole pipeline as one Flyte workflow, plus its weekly retraining schedule.

Locally (tiny config, CPU):
    pyflyte run workflows/full.py full --config configs/tiny.yaml
On a cluster (task sizes from the config's `infra` section, see workflows/infra.py):
    pyflyte run --remote workflows/full.py full --config configs/small.yaml
Scheduled retraining (`full_weekly`, activated with `pyflyte register --activate-launchplans`):
each kickoff passes its time as `kickoff_time`, which selects fresh data (a new world seed).

    world → synthesis → quality → base model → mid-training 1 → mid-training 2 → SFT
          → judge data → judge → PPO (Ray rollouts, judge rewards) → evaluation (+ promotion)
"""

from __future__ import annotations

import typing
from datetime import datetime

from flytekit import CronSchedule, LaunchPlan, workflow
from flytekit.types.directory import FlyteDirectory

from deepresearch.config import load_config
from tasks.data import mark_failed, resolve_config, start_tracking
from tasks.model import build_base, evaluate, judge_data, ppo
from tasks.train import train_task_for
from workflows.data import data_nodes, summary_node
from workflows.infra import compile_config_path, infra
from workflows.infra import overrides as sized

Outputs = typing.NamedTuple(
    "Outputs",
    [("world", FlyteDirectory), ("datasets", FlyteDirectory), ("policy", FlyteDirectory),
     ("report", FlyteDirectory), ("summary", str)],
)

# Elastic shapes (nodes × processes) are fixed at compile time, like resources.
_SHAPES = load_config(compile_config_path())


@workflow(on_failure=mark_failed)
def full(
    config: str = "configs/tiny.yaml",
    overrides: typing.List[str] = [],  # noqa: B006 - Flyte workflow defaults are literals
    kickoff_time: typing.Optional[datetime] = None,
) -> Outputs:
    """Run the Step-DeepResearch recipe end to end; returns datasets, the RL policy, the evaluation report."""
    cfg = resolve_config(config=config, overrides=overrides, kickoff_time=kickoff_time)
    parent = start_tracking(config_json=cfg)
    world, raw, gated = data_nodes(cfg, parent)

    base = build_base(config_json=cfg, world=world.directory, datasets=gated.directory, parent_run_id=parent)
    t = _SHAPES.training
    mid1 = train_task_for(t.mid1)(
        config_json=cfg, stage="mid1", init_model=base.directory, data=gated.directory, parent_run_id=parent,
        world=world.directory,
    ).with_overrides(**sized("train"))
    mid2 = train_task_for(t.mid2)(
        config_json=cfg, stage="mid2", init_model=mid1.directory, data=gated.directory, parent_run_id=parent
    ).with_overrides(**sized("train"))
    sft = train_task_for(t.sft)(
        config_json=cfg, stage="sft", init_model=mid2.directory, data=gated.directory, parent_run_id=parent
    ).with_overrides(**sized("train"))

    pairs = judge_data(config_json=cfg, world=world.directory, parent_run_id=parent).with_overrides(**sized("data"))
    judge = train_task_for(_SHAPES.judge.train)(
        config_json=cfg, stage="judge", init_model=sft.directory, data=pairs.directory, parent_run_id=parent
    ).with_overrides(**sized("train"))

    policy = ppo(config_json=cfg, policy=sft.directory, judge=judge.directory, world=world.directory,
                 parent_run_id=parent)
    report = evaluate(
        config_json=cfg, world=world.directory, base=base.directory, mid=mid2.directory, sft=sft.directory,
        rl=policy.directory, judge=judge.directory, parent_run_id=parent,
    ).with_overrides(**sized("eval"))
    summary = summary_node(
        cfg, parent, world, gated, [world, raw, gated, base, mid1, mid2, sft, pairs, judge, policy, report]
    )
    return Outputs(world=world.directory, datasets=gated.directory, policy=policy.directory,
                   report=report.directory, summary=summary)


full_weekly = LaunchPlan.get_or_create(
    full,
    name="full_weekly",
    default_inputs={"config": compile_config_path()},
    schedule=CronSchedule(schedule=infra().schedule, kickoff_time_input_arg="kickoff_time"),
)
