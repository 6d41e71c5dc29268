"""Reflection and verification (capability `verification`): drafts with a planted conflict.

The paper's closed loop has a teacher extract the claims of a draft, plan a check per claim,
confirm each against sources, reschedule when a discrepancy appears, and then write the report.
Here the world's deliberate conflicts drive it: a draft about a training entity states several
facts, one of them the wrong or stale value of a low-authority, older page (and cites that page).
The expert (synthesis/capability_expert.py) plans one check per claim with `todo`, opens the cited
pages, detects the discrepancy, adds a resolution step, and resolves it in favour of the higher-
authority, newer reference page; tool errors are injected at 5-10 % of calls and recovered from.

    tasks = synthesize_verification(world, 12, seed=0, targets=train)
    ok, detail = verification_success(task, trajectory.answer)
"""

from __future__ import annotations

import random
from collections.abc import Collection

from deepresearch.synthesis.capability_schema import VerificationTask
from deepresearch.synthesis.phrasing import REFUTATION_MARKERS, attribute_sentence, value_variants
from deepresearch.synthesis.rubrics import sentences
from deepresearch.world.schema import Tier, World


def synthesize_verification(
    world: World, n: int, *, seed: int, targets: Collection[str] | None = None
) -> list[VerificationTask]:
    """Up to `n` drafts about distinct `targets` entities, each with one planted conflict.

    Only conflicts the world resolves unambiguously are planted: the wrong claim's page has lower
    authority and an older year than the entity's reference page.
    """
    rng = random.Random(f"verification:{seed}")
    cands = []
    for e in world.entities.values():
        if targets is not None and e.id not in targets:
            continue
        ref = world.primary_doc(e.id)
        if ref is None or ref.tier != Tier.high:
            continue
        for d in world.docs_about(e.id):
            bad = [c for c in d.claims if c.subject == e.id and not c.correct and c.predicate in e.attributes]
            if bad and d.authority < ref.authority and (d.year or 0) < (ref.year or 0):
                cands.append((e, ref, d, bad[0]))
                break
    rng.shuffle(cands)
    tasks = []
    for e, ref, wrong_doc, claim in cands[:n]:
        lines = []
        for attr, value in e.attributes.items():
            if attr == claim.predicate:
                lines.append(f"{attribute_sentence(attr, e.name, claim.value)} \\cite{{{wrong_doc.doc_id}}}.")
            else:
                lines.append(f"{attribute_sentence(attr, e.name, value)} \\cite{{{ref.doc_id}}}.")
        prompt = ("Verify this draft before it is published. Check every claim against the sources, correct what "
                  "is wrong in favour of the most authoritative and most recent source, and return the verified "
                  "text with citations.\n\nDraft:\n" + "\n".join(lines))
        tasks.append(VerificationTask(
            task_id=f"vf-{seed}-{len(tasks):05d}", prompt=prompt, target=e.id, draft=lines, attribute=claim.predicate,
            wrong_value=claim.value, wrong_doc=wrong_doc.doc_id, correct_value=str(e.attributes[claim.predicate]),
            authority_doc=ref.doc_id, wrong_authority=wrong_doc.authority, wrong_year=wrong_doc.year or 0,
            authority=ref.authority, authority_year=ref.year or 0))
    return tasks


def verification_success(task: VerificationTask, answer: str | None) -> tuple[bool, str]:
    """The planted conflict was detected and resolved: the correct value is stated with a citation of the
    authoritative page, and the wrong value appears only in sentences that reject it."""
    if not answer:
        return False, "no answer"
    correct = value_variants(task.correct_value)
    cite = f"\\cite{{{task.authority_doc}}}"
    sents = sentences(answer)
    if not any(cite in s and any(v in s for v in correct) for s in sents):
        return False, f"the correct {task.attribute} is not stated with {cite}"
    for s in sents:
        if task.wrong_value in s.replace(",", "") and not any(m in s.lower() for m in REFUTATION_MARKERS):
            return False, f"the wrong value {task.wrong_value} is asserted: {s[:120]!r}"
    if not any(task.wrong_value in s.replace(",", "") for s in sents):
        return False, "the discrepancy is not reported"
    return True, ""
