"""Synthesis stage: tasks from the world, trajectories for them by the scripted expert.

    manifest = synthesize(cfg, world_dir=Path("out/world"), out_dir=Path("out/raw"))

Writes (atomically: a temp directory renamed into place)
    out_dir/deep_search/{tasks,trajectories}.jsonl
    out_dir/deep_research/{tasks,trajectories}.jsonl
    out_dir/<capability>/{tasks,trajectories}.jsonl   the capability datasets (synthesis/capabilities.py)
    out_dir/manifest.json     counts, success rates, injected-error rate, sha256 of each file
Same config + world → hash-identical files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from pydantic import BaseModel

from deepresearch.agent.episode import play_episode
from deepresearch.agent.policies.scripted import ScriptedExpert
from deepresearch.agent.schema import Trajectory
from deepresearch.config import PipelineConfig
from deepresearch.io import atomic_dir, atomic_write_text, content_digest, file_hashes, file_sha256
from deepresearch.search.backend import SearchBackend, open_backend
from deepresearch.synthesis.answers import deep_search_correct, normalize_answer  # noqa: F401 (re-exported)
from deepresearch.synthesis.capabilities import (
    deep_search_candidates,
    filter_deep_search,
    synthesize_capabilities,
)
from deepresearch.synthesis.rubrics import grade_report, rubric_score
from deepresearch.synthesis.schema import DeepSearchTask, ResearchTask
from deepresearch.synthesis.split import training_tasks
from deepresearch.world.schema import World

DATASETS = ("deep_search", "deep_research")


def research_success(task: ResearchTask, report: str | None) -> tuple[bool, float, list[str]]:
    """Success = every positive item satisfied and no penalty triggered. Returns (success, score, labels)."""
    if not report:
        return False, 0.0, []
    labels = grade_report(task, report)
    ok = all(
        (lab == "satisfied") if it.weight > 0 else (lab == "not") for it, lab in zip(task.rubrics, labels)
    )
    return ok, rubric_score(task.rubrics, labels), list(labels)


def grade(task: DeepSearchTask | ResearchTask, traj: Trajectory) -> Trajectory:
    """Label a trajectory with ground-truth success: the exact answer (deep search), every rubric check
    (research: also `rubric_score` and `rubric_labels` in its metadata). Only an answered episode succeeds."""
    meta = dict(traj.metadata)
    if isinstance(task, DeepSearchTask):
        success = traj.outcome == "answered" and deep_search_correct(task, traj.answer)
    else:
        ok, score, labels = research_success(task, traj.answer)
        success = traj.outcome == "answered" and ok
        meta.update(rubric_score=round(score, 6), rubric_labels=labels)
    return traj.model_copy(update={"success": success, "metadata": meta})


def run_task(
    expert: ScriptedExpert,
    task: DeepSearchTask | ResearchTask,
    cfg: PipelineConfig,
    search: SearchBackend,
    attempt: int,
) -> Trajectory:
    """One scripted-expert episode on `task` (`agent.episode.play_episode`), graded with ground truth."""
    traj = play_episode(expert, task, cfg.agent, search, seed=f"{cfg.synthesis.seed}:{task.task_id}:{attempt}",
                        trajectory_id=f"{task.task_id}:a{attempt}")
    meta = dict(traj.metadata, attempt=attempt, injected_errors=expert.injected_errors)
    return grade(task, traj.model_copy(update={"metadata": meta}))


def _dump(models: Iterable[BaseModel]) -> str:
    return "".join(json.dumps(m.model_dump(mode="json"), sort_keys=True, ensure_ascii=False) + "\n" for m in models)


def synthesize(cfg: PipelineConfig, world_dir: Path, out_dir: Path, *, progress: bool = True) -> dict:
    """Build tasks and expert trajectories for both capabilities; returns the manifest.

    Args:
        cfg: the pipeline config (world, agent and synthesis sections are used).
        world_dir: a directory written by `deepresearch world build`.
        out_dir: where the raw datasets go; replaced atomically.
    """
    from rich.progress import Progress

    world_dir, out_dir = Path(world_dir), Path(out_dir)
    world = World.load(world_dir)
    search = open_backend(cfg.search, world_dir)
    sc = cfg.synthesis
    # training tasks only: none targets a held-out entity (synthesis/split.py)
    ds_tasks, dr_tasks = training_tasks(world, sc, n_deep_search=deep_search_candidates(cfg),
                                        n_deep_research=sc.n_deep_research, seed=sc.seed)
    ds_tasks, ds_difficulty = filter_deep_search(cfg, world, search, ds_tasks)  # as configured; else unchanged
    expert = ScriptedExpert(cfg.agent, world, tool_error_rate=sc.tool_error_rate, detour_rate=sc.detour_rate)

    trajs: dict[str, list[Trajectory]] = {name: [] for name in DATASETS}
    jobs = [("deep_search", t) for t in ds_tasks] + [("deep_research", t) for t in dr_tasks]
    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task("synthesis: expert trajectories", total=len(jobs) * sc.attempts_per_task)
        for name, task in jobs:
            for attempt in range(sc.attempts_per_task):
                trajs[name].append(run_task(expert, task, cfg, search, attempt))
                bar.advance(job)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir) as tmp:
        for name, tasks in (("deep_search", ds_tasks), ("deep_research", dr_tasks)):
            (tmp / name).mkdir()
            (tmp / name / "tasks.jsonl").write_text(_dump(tasks))
            (tmp / name / "trajectories.jsonl").write_text(_dump(trajs[name]))
        cap_stats = synthesize_capabilities(cfg, world, search, tmp, progress=progress)
        digests = file_hashes(tmp)
        stats = {}
        for name in DATASETS:
            ts = trajs[name]
            stats[name] = {
                "tasks": len(ds_tasks if name == "deep_search" else dr_tasks),
                "trajectories": len(ts),
                "success_rate": round(sum(bool(t.success) for t in ts) / max(1, len(ts)), 6),
                "with_injected_errors": sum(1 for t in ts if t.metadata.get("injected_errors", 0) > 0),
                "mean_tool_calls": round(sum(t.tool_calls for t in ts) / max(1, len(ts)), 3),
            }
        stats["deep_search"].update(ds_difficulty)
        stats.update(cap_stats)
        manifest = {
            "stage": "synthesis",
            "config_hash": cfg.hash,
            "world_manifest_sha256": file_sha256(world_dir / "manifest.json"),
            "datasets": stats,
            "sha256": digests,
            "digest": content_digest(digests),
        }
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
