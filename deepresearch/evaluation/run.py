"""Evaluation stage: every checkpoint plays the same held-out tasks with the real tools.

    results = evaluate(cfg, world_dir, {"base": dir0, "sft": dir1, "rl": dir2}, out_dir, judge_dir=judge)

Held-out tasks come from the world with `evaluation.seed` (disjoint from the synthesis seed).
Per checkpoint: the rate of well-formed episodes (an `<answer>` and only valid tool calls),
deep-search exact match and F1, rubric compliance (ResearchRubrics formula, ground-truth labels; and
the trained judge's, when given), tokens / tool calls / wall time per report; then pairwise Elo
with bootstrap intervals, and a markdown + HTML report with plots.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from deepresearch.config import PipelineConfig


class EpisodeRecord(BaseModel):
    checkpoint: str
    task_id: str
    capability: str
    outcome: str
    well_formed: bool
    tool_calls: int
    tool_errors: int
    tokens: int
    wall_s: float
    score: float  # F1 (deep search) or ground-truth compliance (deep research)
    answer: str | None


class CheckpointMetrics(BaseModel):
    name: str
    episodes: int
    well_formed_rate: float
    exact_match: float
    f1: float
    compliance: float
    compliance_binary: float
    judge_compliance: float | None
    # mean RL reward (rl.train.score_trajectories: judge on reports, exact match on deep search,
    # the floor without an answer of its own); None without a judge
    mean_reward: float | None
    mean_tokens: float
    mean_tool_calls: float
    mean_wall_s: float


def _policies(spec: Any, cfg: PipelineConfig, world, n: int) -> tuple[list, Any]:
    """`n` policies for `n` concurrent episodes, and the batcher they share (None for the expert).

    A checkpoint directory → `n` HFPolicy sharing one model behind a `BatchingEngine` (their turns
    are decoded together); the string "expert" → scripted experts (a reference baseline).
    """
    if spec == "expert":
        from deepresearch.agent.policies.scripted import ScriptedExpert

        return [ScriptedExpert(cfg.agent, world) for _ in range(n)], None
    from transformers import AutoTokenizer

    from deepresearch.agent.policies.hf import HFPolicy
    from deepresearch.rl.batching import BatchingEngine
    from deepresearch.rl.engine import make_engine

    ev = cfg.evaluation
    tokenizer = AutoTokenizer.from_pretrained(str(spec))
    batcher = BatchingEngine(make_engine("transformers", spec), clients=n)
    return [HFPolicy(tokenizer, batcher, max_new_tokens=ev.max_new_tokens, temperature=ev.temperature)
            for _ in range(n)], batcher


def play(cfg: PipelineConfig, policy, task, search, *, seed: str):
    """One episode of `policy` on `task` in a fresh workspace; returns (trajectory, wall seconds)."""
    from deepresearch.agent.loop import make_tools, run_episode
    from deepresearch.agent.tools.base import EpisodeContext
    from deepresearch.synthesis.schema import DeepSearchTask

    prompt = task.question if isinstance(task, DeepSearchTask) else task.prompt
    policy.reset(task, seed=seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="eval-") as ws:
        ctx = EpisodeContext(workspace=Path(ws), agent=cfg.agent, search=search)
        try:
            kwargs = {"count_tokens": policy.count_tokens} if hasattr(policy, "count_tokens") else {}
            traj = run_episode(policy, prompt, task_id=task.task_id, capability=task.capability, ctx=ctx,
                               budget=cfg.agent.budget, tools=make_tools(), **kwargs)
        finally:
            ctx.close()
    return traj, time.perf_counter() - t0


def evaluate(
    cfg: PipelineConfig,
    world_dir: Path,
    checkpoints: dict[str, Any],
    out_dir: Path,
    *,
    judge_dir: Path | None = None,
    curves: dict[str, list[tuple[float, float]]] | None = None,
    tracker: Any = None,
    progress: bool = True,
) -> tuple[list[CheckpointMetrics], Path]:
    """Evaluate each checkpoint (name → HF dir, or "expert") on the held-out tasks; write the report.

    Returns:
        (metrics per checkpoint in the given order, path of report.md).
    """
    from rich.progress import Progress

    from deepresearch.evaluation.accuracy import token_f1
    from deepresearch.evaluation.elo import elo_with_ci
    from deepresearch.evaluation.report import CheckpointEval, EvalResults, write_report
    from deepresearch.search.backend import open_backend
    from deepresearch.synthesis.rubrics import grade_report, rubric_score
    from deepresearch.synthesis.run import deep_search_correct
    from deepresearch.synthesis.schema import DeepSearchTask
    from deepresearch.synthesis.split import heldout_tasks
    from deepresearch.world.schema import World

    world = World.load(world_dir)
    search = open_backend(cfg.search, world_dir)
    ds, dr = heldout_tasks(world, cfg.synthesis, cfg.evaluation)
    tasks = [*ds, *dr]
    judge = None
    if judge_dir is not None:
        from deepresearch.judge.model import Judge

        judge = Judge.load(judge_dir)

    records: list[EpisodeRecord] = []
    judge_scores: dict[str, list[float]] = {}
    rewards: dict[str, list[float]] = {}
    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task("evaluation", total=len(tasks) * len(checkpoints))
        for name, spec in checkpoints.items():
            policies, batcher = _policies(spec, cfg, world, len(tasks))

            def episode(i: int, policies=policies, batcher=batcher):
                task = tasks[i]
                with batcher.client() if batcher is not None else contextlib.nullcontext():
                    out = play(cfg, policies[i], task, search, seed=f"eval:{cfg.evaluation.seed}:{task.task_id}")
                bar.advance(job)
                return out

            # every held-out episode at once, one thread each: their turns are decoded in batches
            with ThreadPoolExecutor(max_workers=len(tasks), thread_name_prefix=f"eval-{name}") as pool:
                played = list(pool.map(episode, range(len(tasks))))
            if judge is not None:
                from deepresearch.rl.train import score_trajectories

                rewards[name] = score_trajectories(tasks, [traj for traj, _ in played], judge)
            for task, (traj, wall) in zip(tasks, played):
                answer = traj.answer if traj.outcome == "answered" else None
                if isinstance(task, DeepSearchTask):
                    score = token_f1(answer, [task.answer, *task.aliases])
                else:
                    score = rubric_score(task.rubrics, grade_report(task, answer)) if answer else 0.0
                    if judge is not None:
                        judged = rubric_score(task.rubrics, judge.label(answer, task.rubrics)) if answer else 0.0
                        judge_scores.setdefault(name, []).append(judged)
                records.append(EpisodeRecord(
                    checkpoint=name, task_id=task.task_id, capability=task.capability, outcome=traj.outcome,
                    well_formed=traj.outcome == "answered" and traj.tool_errors == 0,
                    tool_calls=traj.tool_calls, tool_errors=traj.tool_errors, tokens=traj.tokens,
                    wall_s=round(wall, 3), score=score, answer=answer,
                ))

    metrics: list[CheckpointMetrics] = []
    for name in checkpoints:
        mine = [r for r in records if r.checkpoint == name]
        dsr = [r for r in mine if r.capability == "deep_search"]
        drr = [r for r in mine if r.capability == "deep_research"]
        ems = [float(deep_search_correct(t, r.answer)) for t, r in zip(ds, dsr)]
        comp_bin = [
            rubric_score(t.rubrics, grade_report(t, r.answer or ""), binary=True) if r.answer else 0.0
            for t, r in zip(dr, drr)
        ]
        n = max(1, len(mine))
        metrics.append(CheckpointMetrics(
            name=name,
            episodes=len(mine),
            well_formed_rate=sum(r.well_formed for r in mine) / n,
            exact_match=sum(ems) / max(1, len(ems)),
            f1=sum(r.score for r in dsr) / max(1, len(dsr)),
            compliance=sum(r.score for r in drr) / max(1, len(drr)),
            compliance_binary=sum(comp_bin) / max(1, len(comp_bin)),
            judge_compliance=(sum(judge_scores[name]) / len(judge_scores[name])) if name in judge_scores else None,
            mean_reward=(sum(rewards[name]) / len(rewards[name])) if name in rewards else None,
            mean_tokens=sum(r.tokens for r in mine) / n,
            mean_tool_calls=sum(r.tool_calls for r in mine) / n,
            mean_wall_s=sum(r.wall_s for r in mine) / n,
        ))

    # Elo: on every held-out task, the checkpoint with the higher score wins.
    per_task = {name: {r.task_id: r.score for r in records if r.checkpoint == name} for name in checkpoints}
    elo = elo_with_ci(per_task, k=cfg.evaluation.elo_k, n_bootstrap=cfg.evaluation.elo_bootstrap,
                      seed=cfg.evaluation.seed) if len(checkpoints) > 1 else []
    results = EvalResults(
        title=f"Evaluation — pipeline '{cfg.name}' (config {cfg.hash})",
        checkpoints=[
            CheckpointEval(name=m.name, compliance=m.compliance, compliance_binary=m.compliance_binary,
                           exact_match=m.exact_match, f1=m.f1)
            for m in metrics
        ],
        elo=elo,
        curves=curves or {},
        notes=[f"{m.name}: well-formed {m.well_formed_rate:.0%}, {m.mean_tool_calls:.1f} tool calls, "
               f"{m.mean_tokens:.0f} tokens, {m.mean_wall_s:.1f} s per episode"
               + (f", judge compliance {m.judge_compliance:.3f}" if m.judge_compliance is not None else "")
               + (f", mean reward {m.mean_reward:.3f}" if m.mean_reward is not None else "")
               for m in metrics],
    )
    report = write_report(results, Path(out_dir))
    from deepresearch.world.schema import atomic_write_text

    atomic_write_text(Path(out_dir) / "episodes.jsonl", "".join(r.model_dump_json() + "\n" for r in records))
    if tracker is not None:
        from deepresearch.stages import world_digest
        from deepresearch.training.stage import artifact_digest

        # Lineage: each evaluated checkpoint (and the world) is an input of this run, by digest.
        tracker.log_dataset(Path(world_dir), name="world", context="input", digest=world_digest(Path(world_dir)))
        if judge_dir is not None:
            tracker.log_dataset(Path(judge_dir), name="judge", context="input", digest=artifact_digest(Path(judge_dir)))
        for name, spec in checkpoints.items():
            if spec != "expert":
                tracker.log_dataset(Path(spec), name=f"checkpoint_{name}", context="input",
                                    digest=artifact_digest(Path(spec)))
        for m in metrics:
            tracker.log_metrics({f"eval/{m.name}/{k}": v for k, v in m.model_dump().items()
                                 if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None})
        for e in elo:
            tracker.log_metrics({f"eval/{e.name}/elo": e.rating, f"eval/{e.name}/elo_ci_low": e.ci_low,
                                 f"eval/{e.name}/elo_ci_high": e.ci_high})
        tracker.log_artifact(Path(out_dir))
    return metrics, report
