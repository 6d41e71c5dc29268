"""Rubric labels → RL reward: the asymmetric binary mapping of Step-DeepResearch (arXiv 2512.20491).

    item_reward("partially", 2.0)                          # 0.0: only "satisfied" earns a positive item
    report_reward(["satisfied", "satisfied"], [3.0, -2.0])  # (3·1 − 2·1) / 3 = 1/3

Per item i with weight wᵢ and judge label:
    positive item (wᵢ > 0):  rᵢ = 1 if satisfied, else 0   (partially earns nothing: the signal
                             rewards full compliance, which the paper found less noisy than 0.5)
    penalty item  (wᵢ < 0):  rᵢ = −1 if triggered ("satisfied"), else 0
Report:
    R = Σᵢ |wᵢ|·rᵢ / Σ_{wᵢ>0} wᵢ

Sign convention. A penalty's weight is stored negative (ResearchRubrics files do this) and its
reward is −1 when triggered; multiplying the two, wᵢ·rᵢ = (−3)·(−1) = +3, would *raise* the
reward for stating a stale figure. So the magnitude |wᵢ| carries the size and rᵢ carries the
sign. This equals the compliance formula's Σ wᵢ·sᵢ with s = 1 for a triggered penalty.
Worked example: items (+3, satisfied), (+2, partially), (−3, triggered):
    R = (3·1 + 2·0 + 3·(−1)) / (3 + 2) = 0 / 5 = 0      (untriggered penalty: 3 / 5 = 0.6)
R ranges over [−Σ_{w<0}|w| / Σ_{w>0} w, 1].

Episode rewards (`score_trajectories`: what PPO trains on and evaluation reports as mean reward),
one scalar per played episode:
    deep research  the trained judge labels the final report against every rubric item; `report_reward`
    deep search    1 if the answer matches the task's answer or an alias (normalized exact match), else 0:
                   a question with one checkable answer needs no judge, and exact match is the
                   metric evaluation reports, so the reward is that metric itself
    no answer      an episode that did not end with its own non-empty `<answer>` (budget exhausted,
                   forced answer, policy error) gets `no_answer_reward`, the lowest the task can
                   give: 0 for deep search; −Σ|penalty weights| / Σ positive weights for research —
                   never more than a bad report, so not answering is never a way to dodge penalties
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence, Union

from deepresearch.synthesis.schema import LABELS

if TYPE_CHECKING:
    from deepresearch.agent.schema import Trajectory
    from deepresearch.synthesis.schema import DeepSearchTask, ResearchTask

    Task = Union[DeepSearchTask, ResearchTask]


class PairLabeler(Protocol):
    """What episode scoring needs of the judge (`judge.model.Judge` is one)."""

    def label_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[str]:
        """One label per (report, criterion) pair."""


def _check_label(label: str) -> None:
    if label not in LABELS:
        raise ValueError(f"unknown rubric label {label!r}; expected one of {', '.join(LABELS)}")


def item_reward(label: str, weight: float) -> float:
    """rᵢ for one rubric item (see the module docstring); zero-weight items map as positive ones.

    Args:
        label: "satisfied", "partially" or "not" (for penalty items, "satisfied" = triggered).
        weight: the item's weight; negative marks a penalty item.
    Returns:
        1.0 or 0.0 for a positive item; −1.0 or 0.0 for a penalty item.
    Raises:
        ValueError: on an unknown label.
    """
    _check_label(label)
    if weight < 0:
        return -1.0 if label == "satisfied" else 0.0
    return 1.0 if label == "satisfied" else 0.0


def report_reward(labels: Sequence[str], weights: Sequence[float]) -> float:
    """R = Σᵢ |wᵢ|·rᵢ / Σ_{wᵢ>0} wᵢ over one report's rubric items.

    Args:
        labels: one label per item.
        weights: one weight per item, same order; at least one must be positive.
    Returns:
        The report's scalar reward (≤ 1; negative when triggered penalties outweigh what was earned).
    Raises:
        ValueError: on an unknown label, a length mismatch or no positive weight.
    """
    if len(labels) != len(weights):
        raise ValueError(f"{len(labels)} labels but {len(weights)} weights")
    positive = sum(w for w in weights if w > 0)
    if positive <= 0:
        raise ValueError("the rubric has no positive-weight item: the reward is undefined")
    return sum(abs(w) * item_reward(lab, w) for lab, w in zip(labels, weights)) / positive


def no_answer_reward(task: "Task") -> float:
    """The reward of an episode without an answer of its own: the lowest the task can give.

    Deep search: 0 (a wrong answer scores the same). Research: −Σ|w| over penalty items / Σ w over
    positive items, the value of a report that earns nothing and triggers every penalty (0 without
    penalty items).

    Raises:
        ValueError: a research task without a positive-weight item (its reward is undefined).
    """
    from deepresearch.synthesis.schema import DeepSearchTask

    if isinstance(task, DeepSearchTask):
        return 0.0
    positive = sum(it.weight for it in task.rubrics if it.weight > 0)
    if positive <= 0:
        raise ValueError(f"research task {task.task_id} has no positive-weight rubric item: its reward is undefined")
    return -sum(-it.weight for it in task.rubrics if it.weight < 0) / positive


def final_answer(traj: "Trajectory") -> str | None:
    """The answer an episode is scored on: its own final answer (outcome "answered", non-empty), else None."""
    if traj.outcome != "answered" or not traj.answer or not traj.answer.strip():
        return None
    return traj.answer


def score_trajectories(
    tasks: Sequence["Task"], trajectories: Sequence["Trajectory"], judge: PairLabeler
) -> list[float]:
    """One reward per played episode (see the module docstring); the judge labels all reports in one call.

    Args:
        tasks: the tasks, in the order of `trajectories`.
        trajectories: the episodes played on them.
        judge: the trained rubric judge.
    Returns:
        Rewards, in episode order.
    Raises:
        ValueError: the lengths differ, or an episode is of another task than its position says.
    """
    from deepresearch.synthesis.run import deep_search_correct
    from deepresearch.synthesis.schema import DeepSearchTask

    if len(tasks) != len(trajectories):
        raise ValueError(f"{len(tasks)} tasks but {len(trajectories)} episodes")
    rewards: list[float | None] = [None] * len(tasks)
    pairs: list[tuple[str, str]] = []
    judged: list[tuple[int, int, int]] = []  # (episode index, first pair, number of items)
    for i, (task, traj) in enumerate(zip(tasks, trajectories)):
        if traj.task_id != task.task_id:
            raise ValueError(f"episode {i} is of task {traj.task_id!r}, expected {task.task_id!r}")
        answer = final_answer(traj)
        if answer is None:
            rewards[i] = no_answer_reward(task)
        elif isinstance(task, DeepSearchTask):
            rewards[i] = 1.0 if deep_search_correct(task, answer) else 0.0
        else:
            judged.append((i, len(pairs), len(task.rubrics)))
            pairs.extend((answer, it.criterion) for it in task.rubrics)
    labels = judge.label_pairs(pairs) if pairs else []
    for i, first, n in judged:
        rewards[i] = report_reward(labels[first : first + n], [it.weight for it in tasks[i].rubrics])
    return [float(r) for r in rewards]
