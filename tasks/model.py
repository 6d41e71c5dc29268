"""Flyte tasks of the model half around the training stages: base model, judge data, PPO, evaluation.

The training stages themselves (mid1, mid2, SFT, judge) are `tasks.train.train_stage` (torch elastic +
DeepSpeed). PPO runs as a Ray task (a RayJob on a cluster: KubeRay head + workers for the rollout
actors); locally it starts Ray in-process.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from flytekit import Cache, Deck, Resources, task
from flytekit.types.directory import FlyteDirectory

from containers.images import DATA_IMAGE, EVAL_IMAGE, ROLLOUT_IMAGE, TRAIN_IMAGE
from deepresearch.config import PipelineConfig
from tasks.data import StageOut, _execution_id, _workdir, stage_out

# Bump a stage's version when its code changes the artifact it produces (v2: every task returns a StageOut,
# and a cached output of the old shape would not load).
BASE_VERSION = "base-v2"
JUDGE_DATA_VERSION = "judge-data-v2"
PPO_VERSION = "ppo-v2"
EVAL_VERSION = "eval-v3"  # v3: held-out split by entity, intervals, probe, promotion against the champion
_IGNORE_RUN = ("parent_run_id",)


@task(
    container_image=TRAIN_IMAGE,
    cache=Cache(version=BASE_VERSION, ignored_inputs=_IGNORE_RUN),
    retries=2,
    requests=Resources(cpu="2", mem="4Gi"),
)
def build_base(config_json: str, world: FlyteDirectory, datasets: FlyteDirectory, parent_run_id: str) -> StageOut:
    """The base checkpoint: tiny (tokenizer trained on the corpus + random init) or a registry model."""
    from deepresearch.modeling.base import build_base as build
    from deepresearch.stages import world_digest
    from deepresearch.tracking import stage_run
    from deepresearch.training.stage import artifact_digest

    cfg = PipelineConfig.from_json(config_json)
    out = _workdir("base")
    world_dir, datasets_dir = Path(world.download()), Path(datasets.download())
    t0 = time.perf_counter()
    with stage_run(cfg, parent_run_id, "base", flyte_execution_id=_execution_id()) as run:
        # the tiny tokenizer is trained on both: they are the base model's lineage
        run.log_dataset(world_dir, name="world", context="input", digest=world_digest(world_dir))
        run.log_dataset(datasets_dir, name="base_data", context="input", digest=artifact_digest(datasets_dir))
        info = build(cfg, world_dir, datasets_dir, out)
        run.log_metrics({"base/vocab_size": info["vocab_size"], "base/parameters": info["parameters"]})
        run.set_tags({"output.path": str(out), "model.digest": artifact_digest(out)})
    return stage_out("base", out, run.run_id, time.perf_counter() - t0,
                     produced=f"{info['parameters']:,} parameters, vocabulary {info['vocab_size']:,}")


@task(
    container_image=DATA_IMAGE,
    cache=Cache(version=JUDGE_DATA_VERSION, ignored_inputs=_IGNORE_RUN),
    retries=2,
    requests=Resources(cpu="2", mem="4Gi"),
)
def judge_data(config_json: str, world: FlyteDirectory, parent_run_id: str) -> StageOut:
    """(report, rubric item, label) pairs of controlled quality, labels known by construction; held-out split."""
    from deepresearch.judge.data import build_judge_dataset
    from deepresearch.stages import world_digest
    from deepresearch.tracking import stage_run
    from deepresearch.training.stage import artifact_digest

    cfg = PipelineConfig.from_json(config_json)
    out = _workdir("judge_data")
    world_dir = Path(world.download())
    t0 = time.perf_counter()
    with stage_run(cfg, parent_run_id, "judge_data", flyte_execution_id=_execution_id()) as run:
        run.log_dataset(world_dir, name="world", context="input", digest=world_digest(world_dir))
        manifest = build_judge_dataset(cfg, world_dir, out)
        run.log_dict(json.loads(json.dumps(manifest, default=str)), "judge_data_manifest.json")
        # the digest the judge's training run logs this directory under (run_stage: artifact_digest),
        # so that `deepresearch lineage` finds this run as its producer
        run.set_tags({"output.path": str(out), "dataset.digest": artifact_digest(out)})
    ex = manifest["examples"]
    return stage_out("judge_data", out, run.run_id, time.perf_counter() - t0,
                     produced=f"{ex['train']} train / {ex['heldout']} held-out pairs from {manifest['tasks']} tasks")


def _ray_config():
    from flytekitplugins.ray import HeadNodeConfig, RayJobConfig, WorkerNodeConfig

    from deepresearch.config import load_config
    from workflows.infra import compile_config_path, infra

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
    cache=Cache(version=PPO_VERSION, ignored_inputs=_IGNORE_RUN),
    retries=1,
    requests=Resources(cpu="2", mem="8Gi"),
)
def ppo(
    config_json: str, policy: FlyteDirectory, judge: FlyteDirectory, world: FlyteDirectory, parent_run_id: str
) -> StageOut:
    """PPO with a learned critic: Ray rollout actors run the agent with its tools; rewards from the judge."""
    from deepresearch.rl.train import run_ppo

    cfg = PipelineConfig.from_json(config_json)
    res = run_ppo(
        cfg,
        policy_dir=Path(policy.download()),
        judge_dir=Path(judge.download()),
        world_dir=Path(world.download()),
        out=_workdir("rl"),
        parent_run_id=parent_run_id,
        execution_id=_execution_id(),
    )
    curve = " → ".join(f"{r:.3f}" for r in res.reward_curve)
    return stage_out("rl", res.path, res.run_id, res.seconds,
                     produced=f"{res.steps} PPO steps, {res.episodes} episodes, reward {curve}")


@task(
    container_image=EVAL_IMAGE,
    cache=Cache(version=EVAL_VERSION, ignored_inputs=_IGNORE_RUN),
    retries=1,
    requests=Resources(cpu="2", mem="4Gi"),
    enable_deck=True,
)
def evaluate(
    config_json: str,
    world: FlyteDirectory,
    base: FlyteDirectory,
    mid: FlyteDirectory,
    sft: FlyteDirectory,
    rl: FlyteDirectory,
    judge: FlyteDirectory,
    parent_run_id: str,
) -> StageOut:
    """Every checkpoint on the held-out tasks (plus the scripted expert as a reference), with bootstrap
    intervals, paired differences and the next-action probe; the registry's champion evaluated on the same
    tasks; the RL policy and the judge registered and promoted only when they win
    (`deepresearch.evaluation.promotion.evaluation_stage`, which `deepresearch evaluate` runs too).

    The output directory is the report's; its summary record carries every checkpoint's metrics."""
    from deepresearch.evaluation.promotion import evaluation_stage

    cfg = PipelineConfig.from_json(config_json)
    out = _workdir("evaluation")
    checkpoints = {
        "base": base.download(), "mid-trained": mid.download(), "sft": sft.download(), "rl": rl.download(),
        "expert": "expert",
    }
    res = evaluation_stage(cfg, Path(world.download()), checkpoints, out, judge_dir=Path(judge.download()),
                           candidate="rl", baseline="sft", parent_run_id=parent_run_id, execution_id=_execution_id())
    Deck("evaluation", (out / "report.html").read_text())
    ev = res.evaluation
    produced = f"{len(ev.checkpoints)} checkpoints × {ev.checkpoints[0].episodes} held-out tasks"
    for name, applied in (("policy", res.policy_version), ("judge", res.judge_version)):
        if applied is not None:
            produced += f"; {name} v{applied.version} {'promoted to champion' if applied.promoted else 'not promoted'}"
    probe = {name: {k: [s.n, s.correct] for k, s in caps["all"].items() if s.n} for name, caps in ev.probe.items()}
    return stage_out("evaluation", out, res.run_id, res.seconds, produced=produced,
                     checkpoints={m.name: m.model_dump(mode="json") for m in ev.checkpoints},
                     differences=[d.model_dump(mode="json") for d in ev.differences], probe=probe)
