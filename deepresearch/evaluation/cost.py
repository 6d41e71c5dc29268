"""Cost per report: context tokens, tool calls, turns and wall time, from trajectories.

    summary = cost_summary(trajectories)              # wall time from metadata["wall_s"] when recorded
    summary = cost_summary(trajectories, wall_s=[...])  # or measured by the caller, one per trajectory

Tokens are `Trajectory.tokens` (the context length at the end of the episode: what the report
cost to produce, prompt and observations included).
"""

from __future__ import annotations

from statistics import fmean, median
from typing import Sequence

from pydantic import BaseModel, ConfigDict

from deepresearch.agent.schema import Trajectory

WALL_KEY = "wall_s"  # Trajectory.metadata key an evaluation harness records the episode's wall time under


class CostSummary(BaseModel):
    """Mean and median cost per report; wall-time fields are None when no wall time was recorded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int
    tokens_mean: float
    tokens_median: float
    tool_calls_mean: float
    tool_calls_median: float
    turns_mean: float
    wall_s_mean: float | None = None
    wall_s_median: float | None = None


def cost_summary(trajectories: Sequence[Trajectory], *, wall_s: Sequence[float] | None = None) -> CostSummary:
    """Aggregate the cost of a set of episodes.

    Args:
        trajectories: one per report (at least one).
        wall_s: wall-clock seconds per trajectory, same order; default: each trajectory's
            `metadata["wall_s"]`, used only if every trajectory has it.
    Raises:
        ValueError: on no trajectories or a `wall_s` of the wrong length.
    """
    if not trajectories:
        raise ValueError("no trajectories to aggregate")
    if wall_s is None:
        recorded = [t.metadata.get(WALL_KEY) for t in trajectories]
        wall = [float(w) for w in recorded] if all(w is not None for w in recorded) else None
    else:
        if len(wall_s) != len(trajectories):
            raise ValueError(f"{len(wall_s)} wall times for {len(trajectories)} trajectories")
        wall = [float(w) for w in wall_s]
    tokens = [t.tokens for t in trajectories]
    calls = [t.tool_calls for t in trajectories]
    return CostSummary(
        n=len(trajectories),
        tokens_mean=fmean(tokens),
        tokens_median=float(median(tokens)),
        tool_calls_mean=fmean(calls),
        tool_calls_median=float(median(calls)),
        turns_mean=fmean(t.turns for t in trajectories),
        wall_s_mean=fmean(wall) if wall else None,
        wall_s_median=float(median(wall)) if wall else None,
    )
