"""Report writing for mid-training (capability `query_report`): <query, report> pairs.

The paper mid-trains on queries reverse-engineered from high-quality reports, paired with the
report. Here the reports are the world's pages and the institutional reports of the planning
pipeline; each query is read back from its report's title, subject and the facts it states:

    pairs = synthesize_query_report(world, 40, seed=0, targets=train, reports=planning_tasks)
    text = pair_text(pairs[0])    # "Query: ...\n\nReport:\n..." (what mid-training stage 1 reads)
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

from deepresearch.synthesis.capability_schema import PlanningTask, QueryReportPair
from deepresearch.synthesis.phrasing import attribute_phrase, relation_phrase
from deepresearch.world.schema import World

_QUERIES = (
    "What does {source} report about {name}, in particular {facts}?",
    "Summarize what is known about {name}: {facts}. Use {source} as the source.",
    "Write a short profile of {name} covering {facts}, as {source} presents it.",
)


def _document_text(doc) -> str:
    return "\n\n".join([doc.title, *doc.paragraphs])


def synthesize_query_report(
    world: World, n: int, *, seed: int, targets: Collection[str] | None = None,
    reports: Sequence[PlanningTask] = (),
) -> list[QueryReportPair]:
    """Up to `n` pairs: first one per planning report (at most half of `n`), then world pages about `targets`."""
    rng = random.Random(f"query_report:{seed}")
    pairs: list[QueryReportPair] = []
    for t in list(reports)[: n // 2]:
        pairs.append(QueryReportPair(task_id=f"qr-{seed}-{len(pairs):05d}", query=t.prompt, report=t.report,
                                     sources=[s.doc_id for s in t.plan], target=t.target, kind="report"))
    docs = [d for d in world.documents.values() if d.about and (targets is None or d.about in targets) and d.claims]
    rng.shuffle(docs)
    for d in docs[: n - len(pairs)]:
        e = world.entities[d.about]  # type: ignore[index]
        preds = list(dict.fromkeys(c.predicate for c in d.claims if c.subject == e.id))[:3]
        facts = ", ".join(attribute_phrase(p) if p in e.attributes else relation_phrase(p) for p in preds)
        query = _QUERIES[rng.randrange(len(_QUERIES))].format(source=d.domain, name=e.name, facts=facts)
        pairs.append(QueryReportPair(task_id=f"qr-{seed}-{len(pairs):05d}", query=query, report=_document_text(d),
                                     sources=[d.doc_id], target=e.id, kind="document"))
    return pairs


def pair_text(pair: QueryReportPair) -> str:
    """The pair as mid-training stage 1 reads it."""
    return f"Query: {pair.query}\n\nReport:\n{pair.report}"
