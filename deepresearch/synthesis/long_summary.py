"""Long-document summarization through summary-aware storage (capability `long_summary`, a
mid-training stage 2 family).

The task asks for a summary of more pages than one observation holds: opened together, they come
back longer than `agent.max_observation_chars`, so the loop stores the whole output in the
workspace (`outputs/NNN_batch_web_surfer.txt`, agent/tools/file.py) and shows a head excerpt; the
expert pages through the stored file with the `file` tool, then writes a cited summary.

    tasks = synthesize_long_summary(world, 8, seed=0, targets=train)
    ok, detail = long_summary_success(task, trajectory.answer)
"""

from __future__ import annotations

import random
from collections.abc import Collection

from deepresearch.synthesis.capability_schema import LongSummaryTask
from deepresearch.synthesis.phrasing import value_variants
from deepresearch.world.schema import World

MAX_PAGES = 8  # batch_web_surfer opens at most 8 pages per call


def synthesize_long_summary(
    world: World, n: int, *, seed: int, min_chars: int, targets: Collection[str] | None = None
) -> list[LongSummaryTask]:
    """Up to `n` tasks about distinct `targets` entities: their pages plus their neighbours' reference pages,
    together longer than `min_chars` as the web tool renders them (`agent.max_observation_chars`)."""
    from deepresearch.agent.tools.web import render_page

    rng = random.Random(f"long_summary:{seed}")
    ents = [e for e in world.entities.values() if (targets is None or e.id in targets) and len(world.docs_about(e.id)) >= 2]
    rng.shuffle(ents)
    tasks = []
    for e in ents:
        if len(tasks) >= n:
            break
        docs = [d.doc_id for d in world.docs_about(e.id)]
        for other in [t.tail for t in world.out_edges(e.id)] + [t.head for t in world.in_edges(e.id)]:
            ref = world.primary_doc(other)
            if ref is not None and ref.doc_id not in docs:
                docs.append(ref.doc_id)
        docs = docs[:MAX_PAGES]
        if len("\n\n".join(render_page(world.documents[d]) for d in docs)) <= min_chars:
            continue
        prompt = (f"Read all of these pages at once and summarize what they say about {e.name}, citing the page behind "
                  f"each fact and noting where the pages disagree: {', '.join(docs)}.")
        tasks.append(LongSummaryTask(task_id=f"ls-{seed}-{len(tasks):05d}", prompt=prompt, target=e.id, doc_ids=docs,
                                     key_facts=[str(v) for v in e.attributes.values()]))
    return tasks


def long_summary_success(task: LongSummaryTask, answer: str | None) -> tuple[bool, str]:
    """Every key fact (the entity's true attribute values) is stated in the summary."""
    if not answer:
        return False, "no answer"
    missing = [v for v in task.key_facts if not any(x in answer for x in value_variants(v))]
    return (False, f"missing facts {missing}") if missing else (True, "")
