"""The expert's cited research report, built from the world: shared by the scripted expert (which
writes it during an episode) and the judge data (which corrupts it on purpose).

    plan = plan_report(world, entity_id)          # which pages back which facts
    text = render_report(plan)                    # title, Overview, Key facts, Relations,
                                                  # Source verification, References
"""

from __future__ import annotations

from dataclasses import dataclass

from deepresearch.synthesis.phrasing import attribute_phrase, attribute_sentence, relation_sentence
from deepresearch.world.schema import Document, Entity, Tier, World

MAX_SECONDARY = 3  # secondary pages the expert opens besides the reference page


@dataclass(frozen=True)
class ReportPlan:
    entity: Entity
    ref: Document  # the reference (highest-authority) page
    others: tuple[Document, ...]  # secondary pages opened
    relations: tuple[tuple[str, Entity], ...]  # (relation, tail entity)
    tail_docs: tuple[Document, ...]  # reference pages of the first related entities
    conflicts: tuple[tuple[str, str, Document], ...]  # (attribute, wrong value, page claiming it)


def plan_report(world: World, entity_id: str, ref: Document | None = None) -> ReportPlan:
    """Pages and facts of a report on `entity_id`; `ref` defaults to the highest-authority page."""
    if entity_id not in world.entities:
        raise ValueError(f"entity {entity_id!r} is not in the world")
    e = world.entities[entity_id]
    docs = world.docs_about(e.id)
    if not docs:
        raise ValueError(f"entity {entity_id!r} ({e.name}) has no documents to cite")
    ref = ref or docs[0]
    others = tuple(d for d in docs if d.doc_id != ref.doc_id)[:MAX_SECONDARY]
    relations = tuple((t.relation, world.entities[t.tail]) for t in world.out_edges(e.id) if t.tail in world.entities)
    tail_docs = tuple(d for d in (world.primary_doc(t.id) for _, t in relations[:2]) if d is not None)
    conflicts = tuple(
        (c.predicate, c.value, d)
        for d in others
        for c in d.claims
        if c.subject == e.id and not c.correct and c.predicate in e.attributes
    )
    return ReportPlan(e, ref, others, relations, tail_docs, conflicts)


def draft_lines(plan: ReportPlan) -> list[str]:
    """Title, Overview, Key facts and Relations: one fact per line, each cited."""
    e, ref = plan.entity, plan.ref
    tail_ref = {d.about: d.doc_id for d in plan.tail_docs}
    lines = [f"# {e.name}: research report", "", "## Overview", f"{e.name} is {e.description} \\cite{{{ref.doc_id}}}."]
    lines += ["", "## Key facts"]
    # Vary the subject so the report reads naturally (and is not mistaken for a repetition loop).
    short = e.name.split()[-1] if e.type.value == "person" else "It"
    subjects = [e.name if i % 3 == 0 else short for i in range(len(e.attributes) + len(plan.relations))]
    for i, (k, v) in enumerate(e.attributes.items()):
        lines.append(f"- {attribute_sentence(k, subjects[i], v)} \\cite{{{ref.doc_id}}}.")
    lines += ["", "## Relations"]
    for j, (rel, t) in enumerate(plan.relations):
        extra = f"\\cite{{{tail_ref[t.id]}}}" if t.id in tail_ref else ""
        lines.append(f"- {relation_sentence(rel, subjects[len(e.attributes) + j], t.name)} \\cite{{{ref.doc_id}}}{extra}.")
    return lines


def revision_lines(plan: ReportPlan) -> list[str]:
    """Source verification (conflicts resolved in favour of the reference page) and References."""
    e, ref = plan.entity, plan.ref
    lines = ["", "## Source verification"]
    for attr, wrong, d in plan.conflicts:
        lines.append(
            f"- {d.domain} ({d.tier.value} authority) reports a {attribute_phrase(attr)} of {wrong}, which "
            f"conflicts with the authoritative figure of {e.attributes[attr]} \\cite{{{ref.doc_id}}}; "
            "the authoritative value is used."
        )
    if not plan.conflicts:
        lines.append(f"- The secondary sources agree with the reference page \\cite{{{ref.doc_id}}}.")
    lines += ["", "## References"] + [
        f"- \\cite{{{d.doc_id}}} {d.title} ({d.domain})"
        for d in (ref, *plan.others, *plan.tail_docs)
        if d.tier in (Tier.high, Tier.medium) or d is ref
    ]
    return lines


def render_report(plan: ReportPlan) -> str:
    return "\n".join(draft_lines(plan) + revision_lines(plan)) + "\n"
