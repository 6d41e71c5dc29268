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
"""

from __future__ import annotations

from typing import Sequence

from deepresearch.synthesis.schema import LABELS


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
