"""The tasks a PPO step plays, and their rewards.

    pools = rl_task_pools(cfg, world)          # (deep-search pool, research pool), training side of the split
    tasks = step_tasks(cfg, pools, step)       # step `step`'s tasks: deep search first, then research
    rewards = score_episodes(tasks, episodes, judge)   # judge.reward.score_trajectories of the episodes

`episodes_per_step / samples_per_task` tasks per step, each played `samples_per_task` times in a row,
deep search and deep research mixed in the SFT proportion
(`training.sft_deep_search_ratio`), drawn from pools synthesized from the world with `rl.seed` on the
training side of the entity split (`synthesis.split.training_tasks`), so RL never trains on a
held-out target or question. Steps walk each pool in a seeded order, reshuffled on every pass, so step s draws the
same tasks whatever ran before it. Rewards are defined in `deepresearch.judge.reward`.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Sequence, Union

from deepresearch.config import PipelineConfig
from deepresearch.errors import DeepResearchError

if TYPE_CHECKING:
    from deepresearch.judge.reward import PairLabeler
    from deepresearch.rl.buffer import Episode
    from deepresearch.synthesis.schema import DeepSearchTask, ResearchTask
    from deepresearch.world.schema import World

    Task = Union[DeepSearchTask, ResearchTask]


class PPOError(DeepResearchError):
    """The PPO stage cannot start or go on (bad layout, no tasks, off-policy rollouts)."""


def split_episodes(n: int, deep_search_ratio: float) -> tuple[int, int]:
    """How many of `n` episodes are deep search and how many deep research.

    Both capabilities get at least one episode when n >= 2 and the ratio is strictly between 0 and 1.

    Args:
        n: episodes per step.
        deep_search_ratio: fraction of deep-search episodes.
    Returns:
        (n_deep_search, n_deep_research), summing to n.
    """
    n_ds = int(round(n * deep_search_ratio))
    if n >= 2 and 0.0 < deep_search_ratio < 1.0:
        n_ds = min(max(n_ds, 1), n - 1)
    return n_ds, n - n_ds


def rl_task_pools(cfg: PipelineConfig, world: World) -> tuple[list[DeepSearchTask], list[ResearchTask]]:
    """The RL task pools: training-side tasks (targets outside the held-out entities) synthesized with `rl.seed`.

    Each pool has as many tasks as the synthesis stage makes for that capability (a size the world
    is known to support), at most as many as the run's steps need.

    Args:
        cfg: the pipeline config (rl, synthesis, training sections).
        world: the loaded world.
    Returns:
        (deep-search pool, research pool); a pool is empty only when its capability gets no episodes.
    Raises:
        PPOError: the training side of the world cannot supply the pools.
    """
    from deepresearch.synthesis.split import training_tasks

    rl, syn = cfg.rl, cfg.synthesis
    n_ds, n_dr = split_episodes(rl.tasks_per_step, cfg.training.sft_deep_search_ratio)
    try:
        return training_tasks(world, syn, n_deep_search=min(syn.n_deep_search, n_ds * rl.steps),
                              n_deep_research=min(syn.n_deep_research, n_dr * rl.steps), seed=rl.seed)
    except ValueError as e:
        raise PPOError(f"no RL task pool (rl.seed={rl.seed}): {e}") from e


def pool_slice(pool: Sequence[Any], start: int, count: int, *, seed: str) -> list[Any]:
    """Items `start .. start + count - 1` of an endless walk through `pool`, reshuffled on every pass.

    Pure: the same (pool, start, count, seed) gives the same items, so step s of a run draws the
    same tasks whatever ran before it.

    Args:
        pool: the items (non-empty when count > 0).
        start: position of the first item in the walk.
        count: items to take.
        seed: the shuffles' seed; pass p uses random.Random(f"{seed}:{p}").
    Returns:
        `count` items.
    """
    out = []
    orders: dict[int, list[int]] = {}
    for i in range(start, start + count):
        p, k = divmod(i, len(pool))
        if p not in orders:
            orders[p] = list(range(len(pool)))
            random.Random(f"{seed}:{p}").shuffle(orders[p])
        out.append(pool[orders[p][k]])
    return out


def step_tasks(cfg: PipelineConfig, pools: tuple[list, list], step: int) -> list[Task]:
    """The tasks of PPO step `step` (0-based), one entry per episode: deep-search ones first, then
    research ones, each task `rl.samples_per_task` times in a row."""
    n_ds, n_dr = split_episodes(cfg.rl.tasks_per_step, cfg.training.sft_deep_search_ratio)
    ds, dr = pools
    seed = f"rl:{cfg.rl.seed}"
    tasks = pool_slice(ds, step * n_ds, n_ds, seed=f"{seed}:deep_search") + pool_slice(
        dr, step * n_dr, n_dr, seed=f"{seed}:deep_research"
    )
    return [t for t in tasks for _ in range(cfg.rl.samples_per_task)]


def task_groups(tasks: Sequence[Task]) -> list[int]:
    """For each episode's task, the index of its task among the step's distinct tasks (first seen, first)."""
    ids: dict[str, int] = {}
    return [ids.setdefault(t.task_id, len(ids)) for t in tasks]


def informative_episodes(tasks: Sequence[Task], rewards: Sequence[float]) -> list[int]:
    """Indices of the episodes whose task's samples did not all earn the same reward."""
    by_task: dict[str, set[float]] = {}
    for t, r in zip(tasks, rewards):
        by_task.setdefault(t.task_id, set()).add(r)
    return [i for i, t in enumerate(tasks) if len(by_task[t.task_id]) > 1]


def score_episodes(tasks: Sequence[Task], episodes: Sequence[Episode], judge: PairLabeler) -> list[float]:
    """`judge.reward.score_trajectories` of RL episodes (what `collect` returned for `tasks`)."""
    from deepresearch.judge.reward import score_trajectories

    return score_trajectories(tasks, [ep.trajectory for ep in episodes], judge)
