"""Percentile-bootstrap intervals over held-out tasks: one checkpoint's mean, and a paired difference.

    idx = resample_indices(n_tasks, n_resamples=1000, seed=[0, 7])        # (B, n) task indices
    est = bootstrap_mean([1, 0, 1, 1], n_resamples=1000, seed=0)          # Estimate(value, ci_low, ci_high)
    diff = paired_bootstrap_diff(rl_per_task, sft_per_task, n_resamples=1000, seed=0)

The unit of resampling is the task: every metric of the evaluation is a mean over held-out tasks, so
a resample draws n task indices with replacement and recomputes the mean. A *paired* interval of
`a − b` draws the same task indices for both checkpoints (equivalently, resamples the per-task
differences), which removes the task-to-task variance both share — the usual case: two checkpoints
that fail on the same hard tasks. The interval is the (1 ± confidence)/2 quantiles of the resampled
means (Efron & Tibshirani 1993, ch. 13). `elo.py` resamples its task set with `resample_indices` too.

Same inputs and seed → the same interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A mean over tasks and its percentile-bootstrap interval."""

    value: float
    ci_low: float
    ci_high: float
    n: int  # tasks

    def excludes_loss(self) -> bool:
        """True when no value of the interval is negative (for a difference a − b: b's lead is ruled out)."""
        return self.ci_low >= 0.0


def resample_indices(n: int, *, n_resamples: int, seed: int | Sequence[int]) -> np.ndarray:
    """(n_resamples, n) indices into n tasks, drawn with replacement from a seeded generator.

    Args:
        n: tasks (≥ 1).
        n_resamples: bootstrap resamples (≥ 1).
        seed: anything `np.random.default_rng` takes (an int or a list of ints).
    """
    if n < 1 or n_resamples < 1:
        raise ValueError(f"need at least one task and one resample, got n={n}, n_resamples={n_resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def bootstrap_mean(
    values: Sequence[float], *, n_resamples: int = 1000, confidence: float = 0.95, seed: int | Sequence[int] = 0
) -> Estimate:
    """The mean of per-task `values` and its percentile-bootstrap interval.

    Args:
        values: (n,) one value per task, n ≥ 1.
        n_resamples: bootstrap resamples.
        confidence: interval mass, e.g. 0.95 → the 2.5 % and 97.5 % quantiles.
        seed: seeds the resampling.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = np.asarray(values, dtype=np.float64)  # (n,)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"need a non-empty 1-D sequence of per-task values, got shape {x.shape}")
    means = x[resample_indices(x.size, n_resamples=n_resamples, seed=seed)].mean(axis=1)  # (B,)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Estimate(value=float(x.mean()), ci_low=float(lo), ci_high=float(hi), n=int(x.size))


def paired_bootstrap_diff(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int | Sequence[int] = 0,
) -> Estimate:
    """mean(a) − mean(b) over the same tasks, with a paired percentile-bootstrap interval.

    Args:
        a, b: (n,) per-task values of two checkpoints, aligned: a[i] and b[i] are the same task.
        n_resamples, confidence, seed: see `bootstrap_mean`.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired values must align task by task, got {x.shape} and {y.shape}")
    return bootstrap_mean(x - y, n_resamples=n_resamples, confidence=confidence, seed=seed)
