"""The atomic-capability datasets beyond deep_search and deep_research, built inside the synthesis stage.

    stats = synthesize_capabilities(cfg, world, search, out_dir)   # called by synthesis.run.synthesize

For every dataset of `cfg.capabilities` with n > 0 (in this order: planning, deep_search_subgraph,
wiki_walk, verification, query_report, url_qa, long_summary) it builds tasks on the training side of
the entity split (synthesis/split.py), passes question datasets through the difficulty filter when
`capabilities.difficulty_filter.apply_to` names them, runs the capability expert on each task
(`capabilities.attempts_per_task` attempts) and writes

    out_dir/<name>/tasks.jsonl           the tasks (text pairs for query_report)
    out_dir/<name>/trajectories.jsonl    expert trajectories, labelled with success (empty for query_report)

Returns per-dataset numeric stats for the synthesis manifest (and so for MLflow: synthesis/<name>/<stat>),
among them the difficulty filter's pass/drop counts per hop count. Same config + world → the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from deepresearch.agent.schema import Trajectory
from deepresearch.synthesis.capability_schema import (
    TEXT_ONLY,
    LongSummaryTask,
    PlanningTask,
    SubgraphTask,
    UrlQATask,
    VerificationTask,
    WikiWalkTask,
)

if TYPE_CHECKING:
    from deepresearch.config import PipelineConfig
    from deepresearch.search.backend import SearchBackend
    from deepresearch.world.schema import World

CAPABILITY_DATASETS = ("planning", "deep_search_subgraph", "wiki_walk", "verification", "query_report", "url_qa",
                       "long_summary")


def training_entities(cfg: PipelineConfig, world: World) -> frozenset[str]:
    """The entities training tasks may target (synthesis/split.py)."""
    from deepresearch.synthesis.split import entity_split

    return entity_split(world, fraction=cfg.synthesis.heldout_fraction, seed=cfg.synthesis.split_seed).train


def build_tasks(cfg: PipelineConfig, world: World, search: SearchBackend | None) -> tuple[dict[str, list], dict[str, dict]]:
    """Tasks of every configured capability dataset, and the difficulty filter's stats per filtered dataset.

    `search` is needed only by the difficulty filter (None: no dataset may be filtered).
    """
    from deepresearch.synthesis.difficulty import difficulty_filter, make_solver
    from deepresearch.synthesis.long_summary import synthesize_long_summary
    from deepresearch.synthesis.planning import synthesize_planning
    from deepresearch.synthesis.query_report import synthesize_query_report
    from deepresearch.synthesis.subgraph import synthesize_subgraph
    from deepresearch.synthesis.url_qa import synthesize_url_qa
    from deepresearch.synthesis.verification import synthesize_verification
    from deepresearch.synthesis.wiki_walk import synthesize_wiki_walk

    caps, seed = cfg.capabilities, cfg.synthesis.seed
    train = training_entities(cfg, world)
    df = caps.difficulty_filter
    filtered = set(df.apply_to)
    solver = None

    def wanted(name: str) -> int:
        n = getattr(caps, name).n
        return int(n * df.oversample + 0.999) if name in filtered else n

    def maybe_filter(name: str, tasks: list) -> list:
        nonlocal solver
        if name not in filtered:
            return tasks
        if solver is None:
            if search is None:
                raise ValueError("the difficulty filter needs a search backend")
            solver = make_solver(df.solver, cfg, world, search)
        kept, stats[name] = difficulty_filter(tasks, solver, df.solver, n=getattr(caps, name).n)
        return kept

    stats: dict[str, dict] = {}
    out: dict[str, list] = {}
    if caps.planning.n:
        out["planning"] = synthesize_planning(world, caps.planning.n, min_sections=caps.planning.min_sections,
                                              max_sections=caps.planning.max_sections, seed=seed, targets=train)
    if caps.deep_search_subgraph.n:
        c = caps.deep_search_subgraph
        out["deep_search_subgraph"] = maybe_filter("deep_search_subgraph", synthesize_subgraph(
            world, wanted("deep_search_subgraph"), min_nodes=c.min_nodes, max_nodes=c.max_nodes,
            n_constraints=c.constraints, seed=seed, targets=train))
    if caps.wiki_walk.n:
        c = caps.wiki_walk
        out["wiki_walk"] = maybe_filter("wiki_walk", synthesize_wiki_walk(
            world, wanted("wiki_walk"), min_links=c.min_links, max_links=c.max_links, seed=seed, targets=train))
    if caps.verification.n:
        out["verification"] = synthesize_verification(world, caps.verification.n, seed=seed, targets=train)
    if caps.query_report.n:
        out["query_report"] = synthesize_query_report(world, caps.query_report.n, seed=seed, targets=train,
                                                      reports=out.get("planning", []))
    if caps.url_qa.n:
        out["url_qa"] = synthesize_url_qa(world, caps.url_qa.n, seed=seed, targets=train)
    if caps.long_summary.n:
        out["long_summary"] = synthesize_long_summary(world, caps.long_summary.n, seed=seed, targets=train,
                                                      min_chars=cfg.agent.max_observation_chars)
    return out, stats


def deep_search_candidates(cfg: PipelineConfig) -> int:
    """Deep-search questions to build: `synthesis.n_deep_search`, times the oversampling when the
    difficulty filter applies to deep_search (it keeps at most n_deep_search of them)."""
    df = cfg.capabilities.difficulty_filter
    n = cfg.synthesis.n_deep_search
    return int(n * df.oversample + 0.999) if "deep_search" in df.apply_to else n


def filter_deep_search(cfg: PipelineConfig, world: World, search: SearchBackend, tasks: list) -> tuple[list, dict]:
    """The deep-search questions the reference solver does not answer (at most `synthesis.n_deep_search`),
    and flat stats for the manifest; unchanged tasks and no stats when deep_search is not filtered."""
    from deepresearch.synthesis.difficulty import difficulty_filter, make_solver

    df = cfg.capabilities.difficulty_filter
    if "deep_search" not in df.apply_to:
        return tasks, {}
    kept, filt = difficulty_filter(tasks, make_solver(df.solver, cfg, world, search), df.solver,
                                   n=cfg.synthesis.n_deep_search)
    return kept, {k: v for k, v in _dataset_stats("deep_search", 0, [], [], filt).items() if k.startswith("difficulty")}


def _answer_correct(task: Any, traj: Trajectory) -> tuple[bool, str]:
    from deepresearch.synthesis.difficulty import is_correct

    ok = is_correct(task, traj.answer)
    return ok, "" if ok else f"answer {traj.answer!r} is not {task.answer!r}"


def _planning_success(task: PlanningTask, traj: Trajectory) -> tuple[bool, str]:
    missing = [s for s in task.sections if s not in (traj.answer or "")]
    return (False, f"sections missing: {missing}") if missing else (True, "")


def _verification(task: VerificationTask, traj: Trajectory) -> tuple[bool, str]:
    from deepresearch.synthesis.verification import verification_success

    return verification_success(task, traj.answer)


def _long_summary(task: LongSummaryTask, traj: Trajectory) -> tuple[bool, str]:
    from deepresearch.synthesis.long_summary import long_summary_success

    return long_summary_success(task, traj.answer)


# Ground-truth success of one trajectory, per task kind.
SUCCESS: dict[type, Callable[[Any, Trajectory], tuple[bool, str]]] = {
    PlanningTask: _planning_success,
    SubgraphTask: _answer_correct,
    WikiWalkTask: _answer_correct,
    VerificationTask: _verification,
    UrlQATask: _answer_correct,
    LongSummaryTask: _long_summary,
}


def run_capability_task(expert, task: Any, cfg: PipelineConfig, search: SearchBackend, attempt: int) -> Trajectory:
    """One expert episode on a capability task (`agent.episode.play_episode`), labelled with ground-truth
    success."""
    from deepresearch.agent.episode import play_episode

    traj = play_episode(expert, task, cfg.agent, search, seed=f"{cfg.synthesis.seed}:{task.task_id}:{attempt}",
                        trajectory_id=f"{task.task_id}:a{attempt}")
    ok, why = SUCCESS[type(task)](task, traj)
    meta = dict(traj.metadata, attempt=attempt, injected_errors=expert.injected_errors)
    if why:
        meta["failure"] = why
    if expert.deviation:
        meta["plan_deviation"] = expert.deviation
    return traj.model_copy(update={"success": traj.outcome == "answered" and ok, "metadata": meta})


def _dump(models: Sequence[BaseModel]) -> str:
    return "".join(json.dumps(m.model_dump(mode="json"), sort_keys=True, ensure_ascii=False) + "\n" for m in models)


def _dataset_stats(name: str, requested: int, tasks: list, trajs: list[Trajectory], filt: dict | None) -> dict:
    calls = sum(t.tool_calls for t in trajs)
    injected = sum(t.metadata.get("injected_errors", 0) for t in trajs)
    stats: dict[str, float | int] = {
        "requested": requested,
        "tasks": len(tasks),
        "trajectories": len(trajs),
        "success_rate": round(sum(bool(t.success) for t in trajs) / max(1, len(trajs)), 6),
        "with_injected_errors": sum(1 for t in trajs if t.metadata.get("injected_errors", 0) > 0),
        # injected faulty calls per tool call (the paper's 5-10 % for verification)
        "injected_error_rate": round(injected / calls, 6) if calls else 0.0,
        "mean_tool_calls": round(calls / max(1, len(trajs)), 3),
    }
    if name == "planning":
        stats["plan_deviations"] = sum(1 for t in trajs if t.metadata.get("plan_deviation"))
    if filt is not None:
        stats.update({"difficulty_attempted": filt["attempted"], "difficulty_kept": filt["kept"],
                      "difficulty_dropped": filt["dropped"], "difficulty_pass_rate": filt["pass_rate"] or 0.0})
        for hops, c in filt["by_hops"].items():
            stats[f"difficulty_hops{hops}_kept"] = c["kept"]
            stats[f"difficulty_hops{hops}_dropped"] = c["dropped"]
    return stats


def synthesize_capabilities(
    cfg: PipelineConfig, world: World, search: SearchBackend, out_dir: Path, *, progress: bool = True
) -> dict[str, dict]:
    """Build, run and write every configured capability dataset into `out_dir` (see module docstring)."""
    from rich.progress import Progress

    from deepresearch.synthesis.capability_expert import CapabilityExpert

    tasks, filt = build_tasks(cfg, world, search)
    caps = cfg.capabilities
    expert = CapabilityExpert(cfg.agent, world, tool_error_rate=cfg.synthesis.tool_error_rate,
                              detour_rate=0.0, plan_deviation_rate=caps.planning.deviation_rate)
    verifier = CapabilityExpert(cfg.agent, world, tool_error_rate=caps.verification.tool_error_rate)
    trajs: dict[str, list[Trajectory]] = {name: [] for name in tasks}
    jobs = [(name, t) for name, ts in tasks.items() if name not in TEXT_ONLY for t in ts]
    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task("synthesis: capability trajectories", total=len(jobs) * caps.attempts_per_task)
        for name, task in jobs:
            for attempt in range(caps.attempts_per_task):
                who = verifier if name == "verification" else expert
                trajs[name].append(run_capability_task(who, task, cfg, search, attempt))
                bar.advance(job)
    stats = {}
    for name, ts in tasks.items():
        (out_dir / name).mkdir()
        (out_dir / name / "tasks.jsonl").write_text(_dump(ts))
        (out_dir / name / "trajectories.jsonl").write_text(_dump(trajs[name]))
        stats[name] = _dataset_stats(name, getattr(caps, name).n, ts, trajs[name], filt.get(name))
    return stats
