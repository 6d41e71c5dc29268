"""Wiki-link walks (capability `wiki_walk`): questions built by following the world's hyperlinks.

A walk starts on an entity's reference page, named by its URL, and follows `hops` links, each from
a page to the reference page of an entity its subject relates to (Document.links). The question
combines a year read on the first page with a year read on the last one, so its answer needs
evidence from at least two linked pages and the pages between them to get there:

    "Start at https://registry.gov.example/ada-brell-d0000016 and follow its link to the page of
     its subject's employer. How many years apart are the birth year of the first page's subject
     and the founding year of the last page's subject?"            → "27"

    tasks = synthesize_wiki_walk(world, 16, min_links=1, max_links=2, seed=0, targets=train)
"""

from __future__ import annotations

import random
from collections.abc import Collection

from deepresearch.synthesis.capability_schema import WikiWalkTask
from deepresearch.synthesis.phrasing import attribute_phrase, relation_phrase
from deepresearch.world.schema import World

YEAR_ATTRIBUTES = ("birth_year", "founded_year", "year", "launch_year")


def _year_attr(world: World, entity_id: str) -> str | None:
    e = world.entities[entity_id]
    return next((a for a in YEAR_ATTRIBUTES if isinstance(e.attributes.get(a), int)), None)


def synthesize_wiki_walk(
    world: World, n: int, *, min_links: int, max_links: int, seed: int, targets: Collection[str] | None = None
) -> list[WikiWalkTask]:
    """Up to `n` distinct link-walk questions whose walks end at `targets` entities."""
    rng = random.Random(f"wiki_walk:{seed}")
    starts = [e.id for e in world.entities.values() if world.primary_doc(e.id) is not None and _year_attr(world, e.id)]
    rng.shuffle(starts)
    tasks: list[WikiWalkTask] = []
    asked: set[str] = set()
    for start in starts * 2:  # a second pass draws other walk lengths and links
        if len(tasks) >= n:
            break
        hops = rng.randint(min_links, max_links)
        page = world.primary_doc(start)
        walk, entities, relations = [page.doc_id], [start], []  # type: ignore[union-attr]
        for _ in range(hops):
            here = world.documents[walk[-1]]
            options = []
            for t in world.out_edges(entities[-1]):
                ref = world.primary_doc(t.tail)
                if ref is not None and ref.doc_id in here.links and t.tail not in entities:
                    options.append((t.relation, t.tail, ref.doc_id))
            if not options:
                break
            rel, tail, doc = options[rng.randrange(len(options))]
            walk.append(doc)
            entities.append(tail)
            relations.append(rel)
        if len(walk) != hops + 1:
            continue
        end = entities[-1]
        a_attr, b_attr = _year_attr(world, start), _year_attr(world, end)
        if b_attr is None or (targets is not None and end not in targets):
            continue
        a_val, b_val = int(world.entities[start].attributes[a_attr]), int(world.entities[end].attributes[b_attr])  # type: ignore[index]
        if a_val == b_val:
            continue
        chain = "its subject's " + "'s ".join(relation_phrase(r) for r in relations)
        url = world.documents[walk[0]].url
        question = (f"Start at {url} and follow its links to the page of {chain}. How many years apart are the "
                    f"{attribute_phrase(a_attr)} of the first page's subject and the {attribute_phrase(b_attr)} "  # type: ignore[arg-type]
                    "of the last page's subject?")
        if question in asked:
            continue
        asked.add(question)
        diff = abs(a_val - b_val)
        tasks.append(WikiWalkTask(task_id=f"ww-{seed}-{len(tasks):05d}", question=question, answer=str(diff),
                                  aliases=[f"{diff} years"], hops=hops, target=end, walk=walk, entities=entities,
                                  evidence=[walk[0], walk[-1]]))
    return tasks
