"""Rubric compliance, the ResearchRubrics formula, per report and averaged over held-out tasks.

    summary = evaluate_compliance(tasks, {task.sample_id: report, ...}, GroundTruthLabeler())
    summary.mean, summary.mean_binary                     # or a trained judge: Judge.load(...)

Per report (ResearchRubrics): score = Σᵢ wᵢ·sᵢ / Σ_{wᵢ>0} wᵢ with s = 1 (satisfied), 0.5 (partially),
0 (not); the binary variant counts partially as 0. A penalty item (w < 0) labelled satisfied
(= triggered) adds its negative weight. The formula is `synthesis.rubrics.rubric_score`, shared
with synthesis so the data stage and the evaluation grade alike. A task without a report (the
agent failed or ran out of budget) scores 0.
"""

from __future__ import annotations

from statistics import fmean
from typing import Mapping, Protocol, Sequence

from pydantic import BaseModel, ConfigDict

from deepresearch.synthesis.rubrics import check_label, rubric_score
from deepresearch.synthesis.schema import Label, ResearchTask, RubricItem


class Labeler(Protocol):
    """Labels one report's rubric items: the ground-truth checker or a trained `judge.model.Judge`."""

    def label(self, report: str, items: Sequence[RubricItem]) -> list[Label]: ...


class GroundTruthLabeler:
    """Labels by each item's `check` (synthetic tasks only; real ResearchRubrics items need a judge)."""

    def label(self, report: str, items: Sequence[RubricItem]) -> list[Label]:
        out: list[Label] = []
        for i, it in enumerate(items):
            if it.check is None:
                raise ValueError(f"rubric item {i} ({it.criterion!r}) has no check; grade it with a trained judge")
            out.append(check_label(it.check, report))
        return out


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TaskCompliance(_Frozen):
    """One report's compliance."""

    sample_id: str
    score: float  # satisfied 1, partially 0.5, not 0
    binary_score: float  # partially counts 0
    labels: list[Label]  # one per rubric item ([] when there was no report)


class ComplianceSummary(_Frozen):
    """Compliance over a set of tasks."""

    n: int
    mean: float
    mean_binary: float
    per_task: list[TaskCompliance]


def compliance_score(items: Sequence[RubricItem], labels: Sequence[Label], *, binary: bool = False) -> float:
    """ResearchRubrics compliance of one report (see the module docstring)."""
    return rubric_score(list(items), list(labels), binary=binary)


def evaluate_compliance(
    tasks: Sequence[ResearchTask], reports: Mapping[str, str | None], labeler: Labeler
) -> ComplianceSummary:
    """Grade each task's report and average.

    Args:
        tasks: the held-out research tasks.
        reports: sample_id → final report (None or "" when the agent produced none).
        labeler: GroundTruthLabeler() or a trained Judge.
    Returns:
        Per-task scores (in task order) and their means.
    Raises:
        ValueError: if a task has no entry in `reports` (pass None for a failed episode).
    """
    if not tasks:
        raise ValueError("no tasks to evaluate")
    missing = [t.sample_id for t in tasks if t.sample_id not in reports]
    if missing:
        raise ValueError(f"no report entry for {len(missing)} task(s): {missing[:5]}; pass None for a failed episode")
    per_task = []
    for t in tasks:
        report = reports[t.sample_id]
        if not report:
            per_task.append(TaskCompliance(sample_id=t.sample_id, score=0.0, binary_score=0.0, labels=[]))
            continue
        labels = labeler.label(report, t.rubrics)
        if len(labels) != len(t.rubrics):
            raise ValueError(f"{t.sample_id}: the labeler gave {len(labels)} labels for {len(t.rubrics)} items")
        per_task.append(
            TaskCompliance(
                sample_id=t.sample_id,
                score=compliance_score(t.rubrics, labels),
                binary_score=compliance_score(t.rubrics, labels, binary=True),
                labels=list(labels),
            )
        )
    return ComplianceSummary(
        n=len(per_task),
        mean=fmean(p.score for p in per_task),
        mean_binary=fmean(p.binary_score for p in per_task),
        per_task=per_task,
    )
