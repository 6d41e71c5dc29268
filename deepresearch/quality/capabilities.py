"""Quality gates of the capability datasets (synthesis/capabilities.py), run by `run_quality_gates`.

Every dataset present in RAW (`RAW/<name>/tasks.jsonl`) goes through the same steps as deep search:
near-duplicate tasks, task membership, repetition loops, citations, shortest successful trajectory;
planning adds the trajectory-consistency filter before the shortest-successful step (a trajectory
whose todo list, opened pages or citations depart from the preset plan is dropped, reason
`plan_*`, so the rejection rate is the step's 1 - pass rate in the quality report and MLflow), and
the text pairs of query_report are checked for citations that resolve to their sources. Then each
dataset's two expectation suites (`<name>.tasks`, `<name>.trajectories`, quality/capability_suites.py).

    gated = gate_capabilities(cfg.quality, raw_dir)   # name -> (tasks, trajectories, DatasetReport)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from deepresearch.agent.schema import Trajectory, extract_citations
from deepresearch.config import QualityConfig
from deepresearch.quality.filters import (
    Drop,
    FilterResult,
    drop_near_duplicate_tasks,
    drop_repetition_loops,
    keep_shortest_successful,
    require_valid_citations,
)
from deepresearch.synthesis.capability_schema import TASK_MODELS, TEXT_ONLY, task_prompt

if TYPE_CHECKING:
    import pandas as pd

    from deepresearch.quality.records import DatasetReport

REASON_INVALID_SOURCE = "invalid_source_citation"  # a pair's report cites a page outside its sources
REASON_SHORT_REPORT = "short_report"
MIN_REPORT_CHARS = 50


def present(raw_dir: Path) -> list[str]:
    """Capability datasets found in RAW, in TASK_MODELS order."""
    return [name for name in TASK_MODELS if (Path(raw_dir) / name / "tasks.jsonl").is_file()]


def _plan_filter(tasks_by_id: dict, trajs: Sequence[Trajectory]) -> FilterResult[Trajectory]:
    from deepresearch.synthesis.planning import plan_consistency

    kept, dropped = [], []
    for t in trajs:
        ok, why = plan_consistency(tasks_by_id[t.task_id], t)
        if ok:
            kept.append(t)
        else:
            reason, _, detail = why.partition(": ")
            dropped.append(Drop(t.trajectory_id, reason, detail))
    return FilterResult(kept, dropped)


def _pair_filter(pairs: Sequence) -> FilterResult:
    kept, dropped = [], []
    for p in pairs:
        bad = [c for c in extract_citations(p.report) if c not in p.sources]
        if bad:
            dropped.append(Drop(p.task_id, REASON_INVALID_SOURCE, f"cites {bad} outside {p.sources}"))
        elif len(p.report.strip()) < MIN_REPORT_CHARS:
            dropped.append(Drop(p.task_id, REASON_SHORT_REPORT, f"{len(p.report.strip())} chars"))
        else:
            kept.append(p)
    return FilterResult(kept, dropped)


def _gate(name: str, tasks: list, trajs: list[Trajectory], cfg: QualityConfig) -> tuple[list, list[Trajectory], DatasetReport]:
    from deepresearch.quality.records import (
        REASON_TASK_REMOVED,
        REASON_UNKNOWN_TASK,
        DatasetReport,
        filter_step,
        pass_rate,
    )

    steps = []
    dedup = drop_near_duplicate_tasks(tasks, task_prompt, cfg.minhash_threshold, cfg.minhash_num_perm)
    steps.append(filter_step("near_duplicate_tasks", "tasks", len(tasks), dedup))
    kept_tasks = dedup.kept
    if name in TEXT_ONLY:  # text pairs: no episodes to filter
        pairs = _pair_filter(kept_tasks)
        steps.append(filter_step("source_citations", "tasks", len(kept_tasks), pairs))
        report = DatasetReport(name=name, tasks_in=len(tasks), tasks_out=len(pairs.kept), trajectories_in=0,
                               trajectories_out=0, steps=steps, pass_rates={"tasks": pass_rate(len(pairs.kept), len(tasks))})
        return pairs.kept, [], report
    kept_ids = {t.task_id for t in kept_tasks}
    removed = {d.id for s in (dedup,) for d in s.dropped}
    member_kept, member_dropped = [], []
    for t in trajs:
        if t.task_id in kept_ids:
            member_kept.append(t)
        else:
            reason = REASON_TASK_REMOVED if t.task_id in removed else REASON_UNKNOWN_TASK
            member_dropped.append(Drop(t.trajectory_id, reason, f"task {t.task_id}"))
    steps.append(filter_step("task_membership", "trajectories", len(trajs), FilterResult(member_kept, member_dropped)))
    rep = drop_repetition_loops(member_kept, cfg.ngram_n, cfg.max_ngram_repeats, cfg.max_identical_tool_calls)
    steps.append(filter_step("repetition", "trajectories", len(member_kept), rep))
    cites = require_valid_citations(rep.kept, cfg.require_citations)
    steps.append(filter_step("citations", "trajectories", len(rep.kept), cites))
    current = cites.kept
    if name == "planning":
        plan = _plan_filter({t.task_id: t for t in kept_tasks}, current)
        steps.append(filter_step("plan_consistency", "trajectories", len(current), plan))
        current = plan.kept
    shortest = keep_shortest_successful(current)
    steps.append(filter_step("shortest_successful", "trajectories", len(current), shortest))
    pass_rates = {
        "tasks": pass_rate(len(kept_tasks), len(tasks)),
        "trajectories": pass_rate(len(shortest.kept), len(trajs)),
        "raw_success": pass_rate(sum(t.success is True for t in trajs), len(trajs)),
        "tasks_solved": pass_rate(len(shortest.kept), len(kept_tasks)),
    }
    if name == "planning":
        pass_rates["plan_consistency"] = pass_rate(len(current), len(cites.kept))
    report = DatasetReport(name=name, tasks_in=len(tasks), tasks_out=len(kept_tasks), trajectories_in=len(trajs),
                           trajectories_out=len(shortest.kept), steps=steps, pass_rates=pass_rates)
    return kept_tasks, shortest.kept, report


def capability_trajectory_frame(name: str, tasks: Sequence, trajs: Sequence[Trajectory]) -> pd.DataFrame:
    """The gate's trajectory frame plus the columns of `name`'s own trajectory expectations."""
    from deepresearch.quality.records import trajectory_frame

    df = trajectory_frame(trajs)
    by_id = {t.task_id: t for t in tasks}
    if name == "planning":
        from deepresearch.synthesis.planning import plan_consistency

        df["plan_consistent"] = [plan_consistency(by_id[t.task_id], t)[0] for t in trajs]
        df = df.astype({"plan_consistent": "bool"})
    if name == "verification":
        from deepresearch.synthesis.verification import verification_success

        df["conflict_resolved"] = [verification_success(by_id[t.task_id], t.answer)[0] for t in trajs]
        df = df.astype({"conflict_resolved": "bool"})
    if name == "long_summary":
        df["read_stored_output"] = [any(m.role == "tool" and m.name == "file" for m in t.messages) for t in trajs]
        df = df.astype({"read_stored_output": "bool"})
    return df


def capability_task_frame(name: str, tasks: Sequence) -> pd.DataFrame:
    """One row per kept task with the columns of `name`'s task suite."""
    import pandas as pd

    rows = []
    for t in tasks:
        row = {"task_id": t.task_id, "prompt": task_prompt(t), "target": t.target}
        if hasattr(t, "answer"):
            row["answer"] = t.answer
        if hasattr(t, "hops"):
            row["hops"] = int(t.hops)
        if hasattr(t, "difficulty"):
            row["solver_solved"] = bool(t.difficulty.solved) if t.difficulty is not None else False
        if name == "planning":
            row["n_plan_steps"] = len(t.plan)
            row["n_sections"] = len(t.sections)
        if name == "deep_search_subgraph":
            row["n_constraints"] = len(t.constraints)
            row["n_nodes"] = len(t.nodes)
            # every clause alone leaves several candidates (so none can be dropped)
            row["min_candidates"] = min(len(c.candidates) for c in t.constraints)
        if name == "wiki_walk":
            row["n_evidence_pages"] = len(set(t.evidence))
            row["n_walk_pages"] = len(t.walk)
        if name == "verification":
            row["n_draft_claims"] = len(t.draft)
            row["authority_margin"] = t.authority - t.wrong_authority
            row["year_margin"] = t.authority_year - t.wrong_year
        if name == "query_report":
            row["report_len"] = len(t.report)
            row["n_sources"] = len(t.sources)
        if name == "long_summary":
            row["n_pages"] = len(t.doc_ids)
        rows.append(row)
    return pd.DataFrame(rows)


def gate_capabilities(cfg: QualityConfig, raw_dir: Path) -> tuple[dict[str, tuple[list, list[Trajectory], DatasetReport]], list[str]]:
    """Gate and validate every capability dataset in RAW.

    Returns:
        ({name: (kept tasks, kept trajectories, DatasetReport with its suites)}, relative RAW paths read).
    """
    from deepresearch.quality.expectations import validate_dataset
    from deepresearch.quality.records import check_unique_task_ids, read_jsonl

    out = {}
    read = []
    for name in present(raw_dir):
        tasks_path = Path(raw_dir) / name / "tasks.jsonl"
        tasks = read_jsonl(tasks_path, TASK_MODELS[name])
        check_unique_task_ids(tasks_path, tasks)
        traj_path = Path(raw_dir) / name / "trajectories.jsonl"
        trajs = read_jsonl(traj_path, Trajectory) if traj_path.is_file() else []
        read += [f"{name}/tasks.jsonl"] + ([f"{name}/trajectories.jsonl"] if traj_path.is_file() else [])
        kept_tasks, kept_trajs, rep = _gate(name, tasks, trajs, cfg)
        suites = [validate_dataset(f"{name}.tasks", capability_task_frame(name, kept_tasks), cfg.expectations)]
        if name not in TEXT_ONLY:
            suites.append(validate_dataset(f"{name}.trajectories", capability_trajectory_frame(name, kept_tasks, kept_trajs),
                                           cfg.expectations, require_citations=cfg.require_citations))
        out[name] = (kept_tasks, kept_trajs, rep.model_copy(update={"suites": suites}))
    return out, read
