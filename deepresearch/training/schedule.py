"""Learning-rate schedule: linear warmup, then cosine decay to `lr * min_lr_ratio` at `max_steps`.

    lr_at(step, cfg.training.sft)   # step = number of optimizer steps already taken (0-based)

The training loop sets the learning rate itself before every optimizer step (DeepSpeed's own
scheduler is not used), so the schedule is a pure function of the step number and a resumed run
gets exactly the learning rates of an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Protocol


class ScheduleConfig(Protocol):
    """The fields of `deepresearch.config.TrainStageConfig` the schedule reads."""

    lr: float
    min_lr_ratio: float
    warmup_steps: int
    max_steps: int


def lr_at(step: int, cfg: ScheduleConfig) -> float:
    """The learning rate of optimizer step `step` (0-based).

    Warmup: `lr * (step + 1) / warmup_steps` for `step < warmup_steps`, so the first step already
    moves (lr / warmup_steps) and step `warmup_steps - 1` reaches the peak `lr`.
    Decay: with `progress = (step - warmup_steps) / (max_steps - warmup_steps)` in [0, 1],
    `min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2`, `min_lr = lr * min_lr_ratio`;
    steps at or past `max_steps` stay at `min_lr`.

    Args:
        step: optimizer steps already taken; must be >= 0.
        cfg: the stage config (lr, min_lr_ratio, warmup_steps, max_steps).
    Returns:
        The learning rate as a float.
    Raises:
        ValueError: a negative step.
    """
    if step < 0:
        raise ValueError(f"lr_at: step must be >= 0, got {step}")
    peak, floor = cfg.lr, cfg.lr * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    if step >= cfg.max_steps:
        return floor
    progress = (step - cfg.warmup_steps) / (cfg.max_steps - cfg.warmup_steps)  # here warmup <= step < max
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
