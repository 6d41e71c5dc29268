"""The whole pipeline as one Flyte workflow, plus its weekly retraining schedule.

Locally (tiny config, CPU):
    pyflyte run workflows/full.py full --config configs/tiny.yaml
On a cluster (task sizes from the config's `infra` section, see tasks/infra.py):
    pyflyte run --remote workflows/full.py full --config configs/small.yaml
Scheduled retraining (`full_weekly`, activated with `pyflyte register --activate-launchplans`):
each kickoff passes its time as `kickoff_time`, which selects fresh data (a new world seed).

    world → synthesis → quality → base model → mid-training 1 → mid-training 2 → SFT
          → judge data → judge → PPO (Ray rollouts, judge rewards) → evaluation (+ promotion)

Each stage task takes only the config its stage reads (`resolve_config`'s `StageConfig` for it, per
`deepresearch.config.STAGE_INPUTS`) and its upstream artifacts: its cache key. So changing `rl.*` re-runs
PPO and evaluation only; `training.sft.*` re-runs SFT, the judge (trained from SFT's backbone), PPO and
evaluation; `tracking.*`, `infra.*` and `storage.*` re-run nothing.

From a stage to its code:

| stage | task | library entry point | algorithm |
|---|---|---|---|
| world | `tasks.data.build_world` | `deepresearch.stages.world_stage` | `world/build.py`, `world/generator.py`, `search/embedded.py` |
| synthesis | `tasks.data.synthesize` | `deepresearch.stages.synthesis_stage` | `synthesis/run.py` |
| quality | `tasks.data.quality_gates` | `deepresearch.stages.quality_stage` | `quality/gate.py`, `quality/filters.py`, `quality/expectations.py` |
| base | `tasks.model.build_base` | `deepresearch.stages.base_stage` | `modeling/base.py`, `modeling/tokenizer.py` |
| mid1, mid2, sft | `tasks.train.train_stage*` | `deepresearch.stages.train_stage` | `training/stage.py`, `training/loop.py`, `training/data.py` |
| judge_data | `tasks.model.judge_data` | `deepresearch.stages.judge_data_stage` | `judge/data.py` |
| judge | `tasks.train.train_stage*` | `deepresearch.stages.train_stage` | `training/stage.py`, `judge/model.py` |
| rl | `tasks.model.ppo` | `deepresearch.stages.ppo_stage` | `rl/train.py`, `rl/learner.py`, `rl/ppo.py`, `rl/rollout.py` |
| evaluation | `tasks.model.evaluate` | `deepresearch.stages.evaluation_stage` | `evaluation/promotion.py`, `evaluation/run.py` |

(`tasks.train.train_stage*`: the task of the stage's elastic shape, `train_task_for`.)
"""

from __future__ import annotations

import typing
from datetime import datetime

from flytekit import CronSchedule, LaunchPlan, workflow
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile

from deepresearch.config import load_config
from tasks.data import mark_failed, resolve_config, start_tracking
from tasks.infra import compile_config_path, infra
from tasks.infra import overrides as sized
from tasks.model import build_base, evaluate, judge_data, ppo
from tasks.train import train_task_for
from workflows.data import data_nodes, summary_node

Outputs = typing.NamedTuple(
    "Outputs",
    [("world", FlyteDirectory), ("datasets", FlyteDirectory), ("policy", FlyteDirectory),
     ("report", FlyteDirectory), ("summary", FlyteFile)],  # summary: the markdown file `summarize` wrote
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
    run = start_tracking(pipeline=cfg.pipeline)
    world, raw, gated = data_nodes(cfg, run)

    base = build_base(cfg=cfg.base, world=world.directory, datasets=gated.directory, run=run)
    t = _SHAPES.training
    mid1 = train_task_for(t.mid1)(
        cfg=cfg.mid1, init_model=base.directory, data=gated.directory, run=run, world=world.directory
    ).with_overrides(**sized("train"))
    mid2 = train_task_for(t.mid2)(
        cfg=cfg.mid2, init_model=mid1.directory, data=gated.directory, run=run
    ).with_overrides(**sized("train"))
    sft = train_task_for(t.sft)(
        cfg=cfg.sft, init_model=mid2.directory, data=gated.directory, run=run
    ).with_overrides(**sized("train"))

    pairs = judge_data(cfg=cfg.judge_data, world=world.directory, run=run).with_overrides(**sized("data"))
    judge = train_task_for(_SHAPES.judge.train)(
        cfg=cfg.judge, init_model=sft.directory, data=pairs.directory, run=run
    ).with_overrides(**sized("train"))

    policy = ppo(cfg=cfg.rl, policy=sft.directory, judge=judge.directory, world=world.directory, run=run)
    report = evaluate(
        cfg=cfg.evaluation, world=world.directory, base=base.directory, mid=mid2.directory, sft=sft.directory,
        rl=policy.directory, judge=judge.directory, run=run,
    ).with_overrides(**sized("eval"))
    summary = summary_node(
        cfg, run, world, gated, [world, raw, gated, base, mid1, mid2, sft, pairs, judge, policy, report]
    )
    return Outputs(world=world.directory, datasets=gated.directory, policy=policy.directory,
                   report=report.directory, summary=summary)


full_weekly = LaunchPlan.get_or_create(
    full,
    name="full_weekly",
    default_inputs={"config": compile_config_path()},
    schedule=CronSchedule(schedule=infra().schedule, kickoff_time_input_arg="kickoff_time"),
)
