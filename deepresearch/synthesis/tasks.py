"""Task synthesis from the world's knowledge graph.

Deep search (information seeking): sample a relation path e0 → e1 → … of `hops` edges (sometimes
ending in an attribute of the last entity), describe e0 without its name, and ask for the end of
the chain. Deep research (report writing): an open-ended prompt about one entity with a
ResearchRubrics-style rubric whose items are checkable against the world (facts, relations,
conflict resolution, citations, structure, and negative-weight penalties for stale claims).

Both builders can be restricted to target entities (`targets`, `about`): that is how training and
held-out tasks are kept apart (`synthesis.split`). Questions are unambiguous: the start entity's
description is unique in the world and every hop follows a relation the entity has only one tail
for, so a question names exactly one path and one target, and two tasks with different targets
never share a question. A builder that cannot make `n` distinct tasks raises; it never repeats one.

Same world + seed → the same tasks, in the same order.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Collection

from deepresearch.synthesis.phrasing import attribute_phrase, relation_phrase, value_variants
from deepresearch.synthesis.schema import DeepSearchTask, ResearchTask, RubricCheck, RubricItem
from deepresearch.world.schema import Tier, Triple, World

# Attributes worth asking for at the end of a chain (numbers make verification matter).
_ANSWER_ATTRIBUTES = ("founded_year", "birth_year", "launch_year", "year", "population", "employees", "attendance")


def _walk(world: World, rng: random.Random, start: str, hops: int) -> list[Triple] | None:
    path: list[Triple] = []
    seen = {start}
    node = start
    for _ in range(hops):
        # a relation with several tails would make "the <relation> of X" ambiguous
        fanout = Counter(t.relation for t in world.out_edges(node))
        edges = [t for t in world.out_edges(node)
                 if t.tail not in seen and t.tail in world.entities and fanout[t.relation] == 1]
        if not edges:
            return None
        t = rng.choice(edges)
        path.append(t)
        seen.add(t.tail)
        node = t.tail
    return path


def synthesize_deep_search(
    world: World, n: int, *, min_hops: int, max_hops: int, seed: int, targets: Collection[str] | None = None
) -> list[DeepSearchTask]:
    """`n` distinct multi-hop questions with obfuscated start entities; answers are names or attribute values.

    A "hop" is one relation to follow or one attribute to read off at the end.

    Args:
        world: the research world.
        n: questions to build.
        min_hops, max_hops: the range each question's hop count is drawn from.
        seed: same world + seed (+ targets) → the same questions.
        targets: entity ids a question may end at (the last entity of its path: the answer, or the
            entity whose attribute is the answer); None = any entity.
    Raises:
        ValueError: the world cannot supply `n` distinct questions (grow the world or ask for fewer).
    """
    rng = random.Random(f"deep_search:{seed}")
    described = Counter(e.description for e in world.entities.values())
    starts = [e for e in world.entities.values()
              if world.out_edges(e.id) and e.description and described[e.description] == 1]
    if not starts:
        raise ValueError("the world has no uniquely described entity with outgoing relations to start a question from")
    tasks: list[DeepSearchTask] = []
    asked: set[str] = set()
    attempts = 0
    max_attempts = 100 * n + 20 * len(starts)
    while len(tasks) < n and attempts < max_attempts:
        attempts += 1
        hops = rng.randint(min_hops, max_hops)
        start = rng.choice(starts)
        ask_attribute = rng.random() < 0.5 and hops >= 2
        n_rel = hops - 1 if ask_attribute else hops
        path = _walk(world, rng, start.id, n_rel)
        if path is None:
            continue
        # Some descriptions name a related entity to stay unique; such a path would give the answer away.
        desc = start.description.lower()
        if any(world.entities[t.tail].name.lower() in desc for t in path):
            continue
        last = world.entities[path[-1].tail]
        if targets is not None and last.id not in targets:
            continue
        attr = None
        if ask_attribute:
            options = [a for a in _ANSWER_ATTRIBUTES if a in last.attributes]
            if not options:
                continue
            attr = rng.choice(options)
        # "the headquarters of the employer of <description>" reads inside-out
        chain = f"{start.description}"
        for t in path:
            chain = f"the {relation_phrase(t.relation)} of {chain}"
        if attr is not None:
            question = f"What is the {attribute_phrase(attr)} of {chain}?"
            answer, aliases = str(last.attributes[attr]), value_variants(last.attributes[attr])[1:]
        else:
            question = f"What is {chain}?"
            question = question[0].upper() + question[1:]
            answer, aliases = last.name, list(last.aliases)
        question = question[0].upper() + question[1:]
        if question in asked:
            continue
        asked.add(question)
        distractors = [t for t in world.out_edges(start.id) if t not in path]
        task_id = f"ds-{seed}-{len(tasks):05d}"
        tasks.append(
            DeepSearchTask(
                task_id=task_id,
                question=question,
                answer=answer,
                aliases=aliases,
                hops=hops,
                answer_attribute=attr,
                path=[start.id] + [t.tail for t in path],
                subgraph=path + distractors,
            )
        )
    if len(tasks) < n:
        among = "" if targets is None else f" ending at the {len(targets)} allowed target entities"
        raise ValueError(
            f"could only build {len(tasks)} of {n} distinct deep-search questions{among} in {attempts} attempts "
            f"(seed {seed}); grow the world (world.entities_per_type) or ask for fewer questions"
        )
    return tasks


def research_rubric(world: World, entity_id: str) -> list[RubricItem]:
    """Rubric items for a report on one entity, each with a ground-truth check."""
    e = world.entities[entity_id]
    docs = world.docs_about(entity_id)
    ref_ids = [d.doc_id for d in docs if d.tier == Tier.high]
    items: list[RubricItem] = []
    for attr, value in e.attributes.items():
        supporting = sorted(
            {d.doc_id for d in docs for c in d.claims if c.subject == e.id and c.predicate == attr and c.correct}
        )
        items.append(
            RubricItem(
                criterion=f"States that the {attribute_phrase(attr)} of {e.name} is {value}, with a citation "
                "to a source that supports it",
                weight=3.0 if isinstance(value, int) else 2.0,
                axis="factual_accuracy",
                check=RubricCheck(kind="fact", values=value_variants(value), doc_ids=supporting),
            )
        )
    for t in world.out_edges(entity_id):
        tail = world.entities.get(t.tail)
        if tail is None:
            continue
        items.append(
            RubricItem(
                criterion=f"Identifies {tail.name} as the {relation_phrase(t.relation)} of {e.name}",
                weight=2.0,
                axis="factual_accuracy",
                check=RubricCheck(kind="fact", values=[tail.name, *tail.aliases]),
            )
        )
    wrong: dict[str, set[str]] = {}
    for d in docs:
        for c in d.claims:
            if c.subject == e.id and not c.correct and c.predicate in e.attributes:
                wrong.setdefault(c.predicate, set()).add(c.value)
    for attr in sorted(wrong):
        correct = e.attributes[attr]
        for bad in sorted(wrong[attr]):
            items.append(
                RubricItem(
                    criterion=f"Notes that a lower-authority source gives {bad} as the {attribute_phrase(attr)} "
                    f"and resolves it in favour of the authoritative {correct}",
                    weight=2.0,
                    axis="verification",
                    check=RubricCheck(kind="conflict", values=[bad], expected=value_variants(correct)),
                )
            )
            items.append(
                RubricItem(
                    criterion=f"States the stale or incorrect {attribute_phrase(attr)} {bad} as fact",
                    weight=-3.0,
                    axis="factual_accuracy",
                    check=RubricCheck(kind="penalty", values=[bad]),
                )
            )
    items.append(
        RubricItem(
            criterion=f"Cites an authoritative (government, academic or institutional) source on {e.name}",
            weight=2.0,
            axis="citation",
            check=RubricCheck(kind="citation", doc_ids=ref_ids, min_count=1),
        )
    )
    items.append(
        RubricItem(
            criterion="Organizes the report into clearly headed sections",
            weight=1.0,
            axis="structure",
            check=RubricCheck(kind="structure", min_count=3),
        )
    )
    return items


_PROMPTS = (
    "Write a cited research report on {name}, a {type}. Cover its key facts and relations, verify figures "
    "across sources and prefer authoritative ones.",
    "Prepare a briefing on {name} ({type}): what is known about it, who and what it is connected to, and "
    "where the sources disagree. Cite every claim.",
    "Investigate {name} and write a short report with citations. Check each figure against the most "
    "authoritative source available.",
)


def synthesize_research(
    world: World, n: int, *, seed: int, about: Collection[str] | None = None
) -> list[ResearchTask]:
    """`n` research prompts about distinct entities, preferring those with conflicting sources.

    Args:
        world: the research world.
        n: tasks to build.
        seed: same world + seed (+ about) → the same tasks.
        about: entity ids a task may be about; None = any entity.
    Raises:
        ValueError: fewer than `n` entities can carry a task (grow the world or ask for fewer).
    """
    rng = random.Random(f"deep_research:{seed}")
    named = Counter(e.name for e in world.entities.values())  # the prompt names its entity: names must be unique
    candidates = [e for e in world.entities.values()
                  if world.docs_about(e.id) and world.out_edges(e.id) and named[e.name] == 1
                  and (about is None or e.id in about)]
    if len(candidates) < n:
        among = "" if about is None else f" of the {len(about)} allowed"
        raise ValueError(
            f"only {len(candidates)} entities{among} can carry a research task, {n} asked; "
            "grow the world (world.entities_per_type) or ask for fewer tasks"
        )

    def has_conflict(eid: str) -> bool:
        return any(not c.correct for d in world.docs_about(eid) for c in d.claims if c.subject == eid)

    rng.shuffle(candidates)
    # Half the tasks (at least) need cross-source verification: put conflicted entities first.
    conflicted = [e for e in candidates if has_conflict(e.id)]
    clean = [e for e in candidates if not has_conflict(e.id)]
    chosen = (conflicted[: (n + 1) // 2] + clean)[:n]
    if len(chosen) < n:
        chosen += [e for e in conflicted[(n + 1) // 2 :]][: n - len(chosen)]
    tasks = []
    for i, e in enumerate(chosen):
        template = _PROMPTS[rng.randrange(len(_PROMPTS))]
        tasks.append(
            ResearchTask(
                sample_id=f"dr-{seed}-{i:05d}",
                prompt=template.format(name=e.name, type=e.type.value),
                domain=e.type.value,
                about=e.id,
                rubrics=research_rubric(world, e.id),
            )
        )
    return tasks
