"""Training and held-out tasks: a split of the world's entities, and the tasks on each side of it.

    split = entity_split(world, fraction=cfg.synthesis.heldout_fraction, seed=cfg.synthesis.split_seed)
    ds, dr = training_tasks(world, cfg.synthesis, n_deep_search=160, n_deep_research=40, seed=cfg.synthesis.seed)
    held_ds, held_dr = heldout_tasks(world, cfg.synthesis, cfg.evaluation)
    check_disjoint([*ds, *dr], [*held_ds, *held_dr])     # raises SplitError on any shared target or text

The guarantee. Every entity is either a training or a held-out entity, decided by a hash of its id
and `synthesis.split_seed` alone (`is_heldout`: a share `synthesis.heldout_fraction` of the ids).
A task's *target* is the entity it asks about: the last entity of a deep-search path (the answer, or
the entity whose attribute is the answer) and the entity a research prompt is about. Every task
the pipeline trains on — the synthesis stage's (SFT, mid-training's reports, the judge's data) and
PPO's pool — is built by `training_tasks`, whose targets are training entities; the evaluation's
tasks are built by `heldout_tasks`, whose targets are held-out entities. So no held-out target is the
target of a training task, whatever the seeds and counts. Their question texts differ too: a question
names exactly one path and target (`synthesis.tasks`: unique start descriptions, single-tail hops)
and a research prompt names its entity by its unique name, so equal texts would mean equal targets.
`tests/test_split.py` checks both over whole runs of the builders.

The split depends on the entity id and `split_seed` only, not on the world or synthesis seeds: the
weekly fresh-data runs (`config.fresh_data_overrides`) change those, and on a fixed world (a
Wikidata5m dump) last week's champion must not have trained on this week's held-out targets. Adding
entities to a world never moves an existing entity across the split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deepresearch.errors import DeepResearchError
from deepresearch.synthesis.schema import DeepSearchTask, ResearchTask
from deepresearch.synthesis.tasks import synthesize_deep_search, synthesize_research

if TYPE_CHECKING:
    from deepresearch.config import EvalConfig, SynthesisConfig
    from deepresearch.world.schema import World

Task = DeepSearchTask | ResearchTask


class SplitError(DeepResearchError):
    """A training task and a held-out task share a target entity or a question text."""


def is_heldout(entity_id: str, *, fraction: float, seed: int) -> bool:
    """Whether `entity_id` is held out: sha256("<seed>:<id>") read as a number in [0, 1) is below `fraction`."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{entity_id}".encode()).digest()[:8], "big")
    return h / 2**64 < fraction


@dataclass(frozen=True)
class EntitySplit:
    """The world's entity ids, each on one side."""

    train: frozenset[str]
    heldout: frozenset[str]


def entity_split(world: World, *, fraction: float, seed: int) -> EntitySplit:
    """Split the world's entities by `is_heldout`."""
    held = frozenset(e for e in world.entities if is_heldout(e, fraction=fraction, seed=seed))
    return EntitySplit(train=frozenset(world.entities) - held, heldout=held)


def task_target(task: Task) -> str:
    """The entity a task asks about: a deep-search path's last entity, a research task's `about`."""
    if isinstance(task, DeepSearchTask):
        return task.path[-1]
    if not isinstance(task, ResearchTask):  # a capability dataset's task (synthesis/capability_schema.py)
        return task.target
    if task.about is None:
        raise SplitError(f"research task {task.sample_id} names no entity (`about`): it cannot be placed in the split")
    return task.about


def task_text(task: Task) -> str:
    """What the agent is asked: the question, or the research prompt."""
    if isinstance(task, (DeepSearchTask, ResearchTask)):
        return task.question if isinstance(task, DeepSearchTask) else task.prompt
    from deepresearch.synthesis.capability_schema import task_prompt

    return task_prompt(task)


def _split(world: World, syn: SynthesisConfig) -> EntitySplit:
    return entity_split(world, fraction=syn.heldout_fraction, seed=syn.split_seed)


def training_tasks(
    world: World, syn: SynthesisConfig, *, n_deep_search: int, n_deep_research: int, seed: int
) -> tuple[list[DeepSearchTask], list[ResearchTask]]:
    """Tasks to train on (synthesis, PPO): every target is a training entity.

    Args:
        world: the research world.
        syn: the synthesis section (hop range, held-out fraction, split seed).
        n_deep_search, n_deep_research: how many of each (0 → none).
        seed: the tasks' seed (`synthesis.seed` for the SFT data, `rl.seed` for PPO's pool).
    Raises:
        ValueError: the training side of the world cannot supply that many distinct tasks.
    """
    train = _split(world, syn).train
    ds = synthesize_deep_search(world, n_deep_search, min_hops=syn.min_hops, max_hops=syn.max_hops, seed=seed,
                                targets=train) if n_deep_search else []
    dr = synthesize_research(world, n_deep_research, seed=seed, about=train) if n_deep_research else []
    return ds, dr


def heldout_tasks(world: World, syn: SynthesisConfig, ev: EvalConfig) -> tuple[list[DeepSearchTask], list[ResearchTask]]:
    """The evaluation's tasks (`evaluation.n_deep_search` / `n_deep_research`, `evaluation.seed`):
    every target is a held-out entity.

    Raises:
        ValueError: the held-out side of the world cannot supply that many distinct tasks (grow the
            world, raise `synthesis.heldout_fraction`, or lower the evaluation's counts).
    """
    held = _split(world, syn).heldout
    ds = synthesize_deep_search(world, ev.n_deep_search, min_hops=syn.min_hops, max_hops=syn.max_hops, seed=ev.seed,
                                targets=held)
    dr = synthesize_research(world, ev.n_deep_research, seed=ev.seed, about=held)
    return ds, dr


def check_disjoint(train: Iterable[Task], heldout: Sequence[Task]) -> None:
    """Raise SplitError if any training task shares a target entity or a question text with a held-out task."""
    held_targets = {task_target(t): t.task_id for t in heldout}
    held_texts = {task_text(t): t.task_id for t in heldout}
    for t in train:
        if task_target(t) in held_targets:
            raise SplitError(f"training task {t.task_id} targets entity {task_target(t)}, "
                             f"the target of held-out task {held_targets[task_target(t)]}")
        if task_text(t) in held_texts:
            raise SplitError(f"training task {t.task_id} asks what held-out task {held_texts[task_text(t)]} asks")
