"""Reading texts of a world: its pages as the web tool renders them, some followed by a reading question.

    texts = list(world_texts(world, random.Random(seed)))

Each page of the world (those about an entity) once, as one of (`KINDS`):

    page    the opened page alone
    fact    the page, then "Q: What is the founder of X?" and the value from the page
    pick    a search-result block for a description, then the doc id of the result it describes
    chain   two linked pages, a two-hop question, and the answer from the second page

The tiny base model is pretrained on these over fresh worlds (`modeling.pretrain`), and mid-training
stage 1 reads the pipeline's own world this way (`training.data`): the model learns to copy what it
reads off the page, which is what the agent's tools hand it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

KINDS = ("page", "fact", "pick", "chain")


def _value(world, claim) -> tuple[str, str]:
    """(phrase, value as the page writes it) of a claim: relations name the related entity."""
    from deepresearch.synthesis.phrasing import attribute_phrase, relation_phrase
    from deepresearch.world.generator import format_value

    if claim.value in world.entities:
        return relation_phrase(claim.predicate), world.entities[claim.value].name
    value = int(claim.value) if claim.value.isdigit() else claim.value
    return attribute_phrase(claim.predicate), format_value(claim.predicate, value)


def world_texts(world, rng: random.Random, *, ask_about: set[str] | None = None) -> Iterator[str]:
    """The pretraining texts of one world, in a seeded order (see the module docstring).

    `ask_about`: when given, a reading question's entities (the page's subject, a related entity it asks
    about or answers with) are all among these ids; other pages come alone (the pipeline's mid1 asks only
    about training-side entities, never a held-out one)."""
    from deepresearch.agent.tools.web import render_page
    from deepresearch.search.backend import SearchHit

    docs = [d for d in world.documents.values() if d.about is not None]
    pages = {d.doc_id: render_page(d) for d in docs}
    by_about: dict[str, list] = {}
    for d in docs:
        by_about.setdefault(d.about, []).append(d)
    for d in docs:
        subject = world.entities[d.about]
        facts = [c for c in d.claims if c.correct and c.subject == d.about]
        kind = rng.choice(KINDS)
        if ask_about is not None:  # a question's entities (subject, related entity) all on the allowed side
            facts = [c for c in facts if c.value not in world.entities or c.value in ask_about]
            if d.about not in ask_about:
                facts = []
        if kind == "page" or not facts:
            yield pages[d.doc_id]
        elif kind == "fact":
            phrase, value = _value(world, rng.choice(facts))
            yield f"{pages[d.doc_id]}\nQ: What is the {phrase} of {subject.name}?\nA: {value}"
        elif kind == "pick":
            if not subject.description:
                yield pages[d.doc_id]
                continue
            others = rng.sample(docs, 3)
            hits = [d, *[o for o in others if o.about != d.about][:2]]
            rng.shuffle(hits)
            block = "\n".join(
                [f"search: {subject.description}"]
                + [
                    line
                    for h in hits
                    for line in _hit_lines(SearchHit(
                        doc_id=h.doc_id, url=h.url, domain=h.domain, authority=h.authority, score=0.0,
                        paragraph=h.paragraphs[0], paragraph_index=0, title=h.title,
                    ))
                ]
            )
            yield f"{block}\nQ: Which result is about {subject.description}?\nA: {d.doc_id}"
        else:  # chain: a relation to another entity, then a fact of that entity from its own page
            related = [c for c in facts if c.value in world.entities and by_about.get(c.value)]
            if not related:
                yield pages[d.doc_id]
                continue
            hop = rng.choice(related)
            second = rng.choice(by_about[hop.value])
            tail_facts = [c for c in second.claims if c.correct and c.subject == hop.value
                          and (ask_about is None or c.value not in world.entities or c.value in ask_about)]
            if not tail_facts:
                yield pages[d.doc_id]
                continue
            p1, _ = _value(world, hop)
            p2, value = _value(world, rng.choice(tail_facts))
            yield (f"{pages[d.doc_id]}\n\n{pages[second.doc_id]}\n"
                   f"Q: What is the {p2} of the {p1} of {subject.name}?\nA: {value}")


def _hit_lines(hit) -> list[str]:
    from deepresearch.agent.tools.web import render_search

    return render_search("", [hit]).split("\n")[1:]
