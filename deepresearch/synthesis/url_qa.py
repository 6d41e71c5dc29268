"""URL-based question answering (capability `url_qa`, a mid-training stage 2 family): open the
given page and answer from it.

    tasks = synthesize_url_qa(world, 16, seed=0, targets=train)

Questions ask for a fact the page states correctly (a page's wrong claims are not asked about:
the answer read from the page must also be the world's truth).
"""

from __future__ import annotations

import random
from collections.abc import Collection

from deepresearch.synthesis.capability_schema import UrlQATask
from deepresearch.synthesis.phrasing import attribute_phrase, relation_phrase, value_variants
from deepresearch.world.schema import World


def synthesize_url_qa(world: World, n: int, *, seed: int, targets: Collection[str] | None = None) -> list[UrlQATask]:
    """Up to `n` questions, each about a different page of a `targets` entity."""
    rng = random.Random(f"url_qa:{seed}")
    docs = [d for d in world.documents.values() if d.about and (targets is None or d.about in targets)]
    rng.shuffle(docs)
    tasks = []
    for d in docs:
        if len(tasks) >= n:
            break
        e = world.entities[d.about]  # type: ignore[index]
        claims = [c for c in d.claims if c.subject == e.id and c.correct]
        if not claims:
            continue
        c = claims[rng.randrange(len(claims))]
        tail = world.entities.get(c.value) if c.predicate not in e.attributes else None
        phrase = attribute_phrase(c.predicate) if c.predicate in e.attributes else relation_phrase(c.predicate)
        if tail is not None:
            answer, aliases = tail.name, list(tail.aliases)
        else:
            answer, aliases = c.value, value_variants(e.attributes.get(c.predicate, c.value))[1:]
        question = f"Open {d.url} and answer from that page: what is the {phrase} of {e.name}?"
        tasks.append(UrlQATask(task_id=f"uq-{seed}-{len(tasks):05d}", question=question, url=d.url, doc_id=d.doc_id,
                               answer=answer, aliases=aliases, target=e.id))
    return tasks
