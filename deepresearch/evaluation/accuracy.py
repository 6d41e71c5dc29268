"""Deep-search accuracy: exact match and token F1 with SQuAD-style normalization.

    summary = evaluate_deep_search(tasks, {task.task_id: answer, ...})
    summary.exact_match, summary.f1

Both take the max over the gold answer and its aliases. Normalization is the one synthesis uses
to decide success (`synthesis.run.normalize_answer`: lower-case, strip punctuation and the
articles a/an/the, collapse whitespace), so EM here equals `deep_search_correct`.
"""

from __future__ import annotations

from collections import Counter
from statistics import fmean
from typing import Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from deepresearch.synthesis.run import normalize_answer
from deepresearch.synthesis.schema import DeepSearchTask


def exact_match(prediction: str | None, golds: Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized gold answer, else 0.0."""
    if not prediction or not golds:
        return 0.0
    got = normalize_answer(prediction)
    return float(any(got == normalize_answer(g) for g in golds))


def _f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:  # SQuAD: an empty side scores 1 only if both are empty
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str | None, golds: Sequence[str]) -> float:
    """SQuAD token F1 (bag of normalized tokens), max over the gold answers; 0.0 without a prediction."""
    if not prediction or not golds:
        return 0.0
    return max(_f1(prediction, g) for g in golds)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TaskAccuracy(_Frozen):
    task_id: str
    prediction: str | None
    exact_match: float
    f1: float


class AccuracySummary(_Frozen):
    """Deep-search accuracy over a set of questions."""

    n: int
    exact_match: float
    f1: float
    per_task: list[TaskAccuracy]


def evaluate_deep_search(tasks: Sequence[DeepSearchTask], answers: Mapping[str, str | None]) -> AccuracySummary:
    """Score each task's answer against its answer + aliases; a missing answer scores 0.

    Args:
        tasks: held-out deep-search tasks.
        answers: task_id → the agent's final answer (None when it gave none).
    Raises:
        ValueError: if a task has no entry in `answers` (pass None for a failed episode).
    """
    if not tasks:
        raise ValueError("no tasks to evaluate")
    missing = [t.task_id for t in tasks if t.task_id not in answers]
    if missing:
        raise ValueError(f"no answer entry for {len(missing)} task(s): {missing[:5]}; pass None for a failed episode")
    per_task = []
    for t in tasks:
        golds = [t.answer, *t.aliases]
        pred = answers[t.task_id]
        per_task.append(
            TaskAccuracy(task_id=t.task_id, prediction=pred, exact_match=exact_match(pred, golds), f1=token_f1(pred, golds))
        )
    return AccuracySummary(
        n=len(per_task),
        exact_match=fmean(p.exact_match for p in per_task),
        f1=fmean(p.f1 for p in per_task),
        per_task=per_task,
    )
