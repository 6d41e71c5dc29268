"""Flyte tasks of the model half around the training stages: base model, judge data, PPO, evaluation.

The training stages themselves (mid1, mid2, SFT, judge) are `tasks.train` (torch elastic + DeepSpeed).
PPO runs as a Ray task (a RayJob on a cluster: KubeRay head + workers for the rollout actors); locally it
starts Ray in-process. Each task: download its inputs, call its `deepresearch.stages` function, wrap.
"""

from __future__ import annotations

import os
from pathlib import Path

from flytekit import Cache, Deck, Resources, task
from flytekit.deck import DeckField
from flytekit.types.directory import FlyteDirectory

from containers.images import DATA_IMAGE, EVAL_IMAGE, ROLLOUT_IMAGE, TRAIN_IMAGE
from deepresearch.config import RunContext, StageConfig
from tasks.common import IGNORE_RUN, StageOut, stage_out, workdir

# Bump a stage's version when its code changes the artifact it produces (v2: every task returns a StageOut,
# and a cached output of the old shape would not load).
BASE_VERSION = "base-v2"
JUDGE_DATA_VERSION = "judge-data-v2"
PPO_VERSION = "ppo-v2"
EVAL_VERSION = "eval-v3"  # v3: held-out split by entity, intervals, probe, promotion against the champion


@task(
    container_image=TRAIN_IMAGE,
    cache=Cache(version=BASE_VERSION, ignored_inputs=IGNORE_RUN),
    retries=2,
    requests=Resources(cpu="2", mem="4Gi"),
)
def build_base(cfg: StageConfig, world: FlyteDirectory, datasets: FlyteDirectory, run: RunContext) -> StageOut:
    """The base checkpoint: tiny (tokenizer trained on the corpus + random init) or a registry model."""
    from deepresearch.stages import base_stage

    res = base_stage(cfg.view(run), Path(world.download()), Path(datasets.download()), workdir("base"),
                     run.parent_run_id, run.execution_id)
    info = res.manifest
    return stage_out("base", res.path, res.run_id, res.seconds, run=run,
                     produced=f"{info['parameters']:,} parameters, vocabulary {info['vocab_size']:,}")


@task(
    container_image=DATA_IMAGE,
    cache=Cache(version=JUDGE_DATA_VERSION, ignored_inputs=IGNORE_RUN),
    retries=2,
    requests=Resources(cpu="2", mem="4Gi"),
)
def judge_data(cfg: StageConfig, world: FlyteDirectory, run: RunContext) -> StageOut:
    """(report, rubric item, label) pairs of controlled quality, labels known by construction; held-out split."""
    from deepresearch.stages import judge_data_stage

    res = judge_data_stage(cfg.view(run), Path(world.download()), workdir("judge_data"), run.parent_run_id,
                           run.execution_id)
    ex, tasks = res.manifest["examples"], res.manifest["tasks"]
    return stage_out("judge_data", res.path, res.run_id, res.seconds, run=run,
                     produced=f"{ex['train']} train / {ex['heldout']} held-out pairs from {tasks} tasks")


def _ray_config():
    from flytekitplugins.ray import HeadNodeConfig, RayJobConfig, WorkerNodeConfig

    from deepresearch.config import load_config
    from tasks.infra import compile_config_path, infra

    workers = load_config(compile_config_path()).rl.rollout_workers
    res = infra().rollout
    return RayJobConfig(
        head_node_config=HeadNodeConfig(requests=Resources(cpu=res.cpu, mem=res.mem)),
        worker_node_config=[
            WorkerNodeConfig(
                group_name="rollout",
                replicas=workers,
                requests=Resources(cpu=res.cpu, mem=res.mem, gpu=str(res.gpu) if res.gpu else None),
                limits=Resources(gpu=str(res.gpu)) if res.gpu else None,
            )
        ],
        shutdown_after_job_finishes=True,
        ttl_seconds_after_finished=600,
    )


# Local Ray workers must use this environment's Python, not a `uv run` copy of it (slow, see rl/rollout.py).
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


@task(
    container_image=ROLLOUT_IMAGE,
    task_config=_ray_config(),
    cache=Cache(version=PPO_VERSION, ignored_inputs=IGNORE_RUN),
    retries=1,
    requests=Resources(cpu="2", mem="8Gi"),
)
def ppo(
    cfg: StageConfig, policy: FlyteDirectory, judge: FlyteDirectory, world: FlyteDirectory, run: RunContext
) -> StageOut:
    """PPO with a learned critic: Ray rollout actors run the agent with its tools; rewards from the judge."""
    from deepresearch.stages import ppo_stage

    res = ppo_stage(cfg.view(run), policy_dir=Path(policy.download()), judge_dir=Path(judge.download()),
                    world_dir=Path(world.download()), out=workdir("rl"), parent_run_id=run.parent_run_id,
                    execution_id=run.execution_id)
    curve = " → ".join(f"{r:.3f}" for r in res.reward_curve)
    return stage_out("rl", res.path, res.run_id, res.seconds, run=run,
                     produced=f"{res.steps} PPO steps, {res.episodes} episodes, reward {curve}")


@task(
    container_image=EVAL_IMAGE,
    cache=Cache(version=EVAL_VERSION, ignored_inputs=IGNORE_RUN),
    retries=1,
    requests=Resources(cpu="2", mem="4Gi"),
    enable_deck=True,
    # flytekit's default tabs less "Dependencies": it runs `python -m pip`, which a uv environment lacks;
    # the image's packages are pinned by uv.lock and its tag
    deck_fields=(DeckField.SOURCE_CODE, DeckField.TIMELINE, DeckField.INPUT, DeckField.OUTPUT),
)
def evaluate(
    cfg: StageConfig,
    world: FlyteDirectory,
    base: FlyteDirectory,
    mid: FlyteDirectory,
    sft: FlyteDirectory,
    rl: FlyteDirectory,
    judge: FlyteDirectory,
    run: RunContext,
) -> StageOut:
    """Every checkpoint on the held-out tasks (plus the scripted expert as a reference), with bootstrap
    intervals, paired differences and the next-action probe; the registry's champion evaluated on the same
    tasks; the RL policy and the judge registered and promoted only when they win
    (`deepresearch.stages.evaluation_stage`, which `deepresearch evaluate` runs too).

    The output directory is the report's; its summary record carries every checkpoint's metrics."""
    from deepresearch.stages import evaluation_stage

    out = workdir("evaluation")
    checkpoints = {
        "base": base.download(), "mid-trained": mid.download(), "sft": sft.download(), "rl": rl.download(),
        "expert": "expert",
    }
    res = evaluation_stage(cfg.view(run), Path(world.download()), checkpoints, out, judge_dir=Path(judge.download()),
                           candidate="rl", baseline="sft", parent_run_id=run.parent_run_id,
                           execution_id=run.execution_id)
    Deck("evaluation", (out / "report.html").read_text())
    ev = res.evaluation
    produced = f"{len(ev.checkpoints)} checkpoints × {ev.checkpoints[0].episodes} held-out tasks"
    for name, applied in (("policy", res.policy_version), ("judge", res.judge_version)):
        if applied is not None:
            produced += f"; {name} v{applied.version} {'promoted to champion' if applied.promoted else 'not promoted'}"
    probe = {name: {k: [s.n, s.correct] for k, s in caps["all"].items() if s.n} for name, caps in ev.probe.items()}
    return stage_out("evaluation", out, res.run_id, res.seconds, run=run,
                     produced=produced, report=str(out / "report.md"),
                     checkpoints=[m.model_dump(mode="json") for m in ev.checkpoints],  # a list: the record's keys are sorted
                     differences=[d.model_dump(mode="json") for d in ev.differences], probe=probe,
                     confidence=ev.results.confidence)
