"""Elo ratings of checkpoints from pairwise comparisons on the same held-out tasks, with bootstrap CIs.

    scores = {"sft": {"dr-1000-00000": 0.61, ...}, "rl": {...}, "scripted": {...}}
    for r in elo_with_ci(scores, k=16, n_bootstrap=200, seed=0):
        print(r.name, r.rating, r.ci_low, r.ci_high)

Games. For every task and every pair of checkpoints that both have a score on it, the higher score
wins (1), the lower loses (0), equal scores (within `tie_tol`) tie (0.5).

Ratings: sequential Elo, averaged over orders. Starting from `base` (1000) for everyone, each game
moves the two ratings by ±k·(s − E), E = 1 / (1 + 10^((R_b − R_a)/400)). Sequential Elo depends on
the order of the games, which has no meaning here (all checkpoints answered the same fixed tasks),
so the point estimate is the mean over `n_orders` seeded random orders. Elo was chosen over a
Bradley–Terry MLE because the MLE diverges when a checkpoint wins every game (common with few
tasks), while Elo stays bounded by k; the mean rating is always `base` (each update is zero-sum).

Confidence intervals: percentile bootstrap over tasks — resample the task ids with replacement
(`intervals.resample_indices`, the evaluation's one bootstrap; all games of a drawn task come along,
a task drawn twice plays twice), rate again (with `n_orders` orders), and take the (1 ± confidence)/2
quantiles of each checkpoint's ratings.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from deepresearch.evaluation.intervals import resample_indices


class EloResult(BaseModel):
    """One checkpoint's rating and its bootstrap confidence interval."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    rating: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Game:
    """One comparison on one task: `score_a` is a's result (1 win, 0.5 tie, 0 loss)."""

    task_id: str
    a: str
    b: str
    score_a: float


def pairwise_games(scores: Mapping[str, Mapping[str, float]], *, tie_tol: float = 1e-9) -> list[Game]:
    """Every pair of checkpoints on every task both scored; in sorted task order, then name order.

    Args:
        scores: checkpoint name → task id → score (e.g. compliance, or EM for deep search).
        tie_tol: scores closer than this tie.
    """
    names = sorted(scores)
    tasks = sorted({t for s in scores.values() for t in s})
    games = []
    for t in tasks:
        for a, b in combinations(names, 2):
            if t in scores[a] and t in scores[b]:
                diff = scores[a][t] - scores[b][t]
                games.append(Game(t, a, b, 0.5 if abs(diff) <= tie_tol else float(diff > 0)))
    return games


def _elo_over_orders(
    a: np.ndarray, b: np.ndarray, s: np.ndarray, orders: np.ndarray, n_players: int, *, k: float, base: float
) -> np.ndarray:
    """Sequential Elo for P orders at once; returns the (n_players,) mean over orders.

    Args:
        a, b: (G,) player indices of each game; s: (G,) a's result.
        orders: (P, G) game indices, one row per order.
    """
    P, G = orders.shape
    R = np.full((P, n_players), base, dtype=np.float64)  # (P, M)
    rows = np.arange(P)
    for g in range(G):
        gi = orders[:, g]  # (P,) the g-th game of each order
        ia, ib = a[gi], b[gi]
        expected = 1.0 / (1.0 + 10.0 ** ((R[rows, ib] - R[rows, ia]) / 400.0))  # (P,)
        delta = k * (s[gi] - expected)
        R[rows, ia] += delta
        R[rows, ib] -= delta
    return R.mean(axis=0)


def elo_ratings(
    games: Sequence[Game],
    names: Sequence[str],
    *,
    k: float = 16.0,
    base: float = 1000.0,
    n_orders: int = 32,
    seed: int = 0,
) -> dict[str, float]:
    """Elo ratings averaged over `n_orders` seeded orders of `games` (see the module docstring).

    Args:
        games: the comparisons; every name in them must be in `names`.
        names: all checkpoints (one without games keeps `base`).
        k: Elo K-factor.
        base: starting rating.
        n_orders: random orders averaged; 1 with a single game is the textbook update.
        seed: seeds the orders.
    """
    idx = {n: i for i, n in enumerate(names)}
    unknown = sorted(({g.a for g in games} | {g.b for g in games}) - set(idx))
    if unknown:
        raise ValueError(f"games name checkpoints {unknown} that are not in names {list(names)}")
    if not games:
        return {n: base for n in names}
    a = np.array([idx[g.a] for g in games])
    b = np.array([idx[g.b] for g in games])
    s = np.array([g.score_a for g in games], dtype=np.float64)
    rng = np.random.default_rng(seed)
    orders = rng.permuted(np.tile(np.arange(len(games)), (n_orders, 1)), axis=1)  # (P, G)
    r = _elo_over_orders(a, b, s, orders, len(names), k=k, base=base)
    return {n: float(r[i]) for n, i in idx.items()}


def elo_with_ci(
    scores: Mapping[str, Mapping[str, float]],
    *,
    k: float = 16.0,
    base: float = 1000.0,
    n_bootstrap: int = 200,
    n_orders: int = 32,
    confidence: float = 0.95,
    seed: int = 0,
    tie_tol: float = 1e-9,
) -> list[EloResult]:
    """Elo ratings with percentile-bootstrap intervals (tasks resampled with replacement), best first.

    Args:
        scores: checkpoint name → task id → score; at least two checkpoints.
        k, base, n_orders: see `elo_ratings`.
        n_bootstrap: bootstrap resamples of the task set.
        confidence: interval mass, e.g. 0.95 → the 2.5 % and 97.5 % quantiles.
        seed: seeds the orders and the resampling; same inputs and seed → the same results.
        tie_tol: see `pairwise_games`.
    """
    if len(scores) < 2:
        raise ValueError(f"Elo needs at least two checkpoints, got {sorted(scores)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    names = sorted(scores)
    games = pairwise_games(scores, tie_tol=tie_tol)
    if not games:
        raise ValueError("no task was scored by two checkpoints: nothing to compare")
    point = elo_ratings(games, names, k=k, base=base, n_orders=n_orders, seed=seed)

    idx = {n: i for i, n in enumerate(names)}
    a = np.array([idx[g.a] for g in games])
    b = np.array([idx[g.b] for g in games])
    s = np.array([g.score_a for g in games], dtype=np.float64)
    tasks = sorted({g.task_id for g in games})
    by_task = {t: np.array([i for i, g in enumerate(games) if g.task_id == t]) for t in tasks}
    draws = resample_indices(len(tasks), n_resamples=n_bootstrap, seed=[seed, 1])  # (B, T)
    rng = np.random.default_rng([seed, 2])  # the resamples' orders: a stream apart from the point estimate's
    boot = np.empty((n_bootstrap, len(names)))  # (B, M)
    for r, drawn in enumerate(draws):
        game_idx = np.concatenate([by_task[tasks[i]] for i in drawn])
        orders = rng.permuted(np.tile(game_idx, (n_orders, 1)), axis=1)  # (P, G')
        boot[r] = _elo_over_orders(a, b, s, orders, len(names), k=k, base=base)
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2], axis=0)  # (M,) each
    results = [EloResult(name=n, rating=point[n], ci_low=float(lo[i]), ci_high=float(hi[i])) for n, i in idx.items()]
    return sorted(results, key=lambda r: (-r.rating, r.name))
