"""Ground-truth rubric labels: whether a report satisfies each rubric item, known by construction.

    labels = grade_report(task, report)          # ["satisfied", "not", "partially", ...]
    score = rubric_score(task, labels)           # ResearchRubrics: Σ w·s / Σ positive w

Only items with a `check` (our synthesized ones) can be graded here; items from the real
ResearchRubrics files need the trained judge.
"""

from __future__ import annotations

import re

from deepresearch.agent.schema import extract_citations
from deepresearch.synthesis.phrasing import REFUTATION_MARKERS
from deepresearch.synthesis.schema import Label, ResearchTask, RubricCheck, RubricItem

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z#\-])|\n+")
LABEL_SCORE: dict[str, float] = {"satisfied": 1.0, "partially": 0.5, "not": 0.0}


def sentences(report: str) -> list[str]:
    """Split a report into sentences / list items (citations stay with their sentence)."""
    return [s.strip() for s in _SENTENCE_SPLIT.split(report) if s.strip()]


def _contains(sentence: str, value: str) -> bool:
    # Whole-token match so "1932" does not match "19321" and "Orvane" does not match "Orvanet".
    return re.search(rf"(?<![\w]){re.escape(value)}(?![\w])", sentence, flags=re.IGNORECASE) is not None


def _is_refuting(sentence: str) -> bool:
    low = sentence.lower()
    return any(m in low for m in REFUTATION_MARKERS)


def check_label(check: RubricCheck, report: str) -> Label:
    """Label one check against a report. For penalties, "satisfied" means the penalty is triggered."""
    sents = sentences(report)
    if check.kind == "fact":
        partial = False
        for s in sents:
            if any(_contains(s, v) for v in check.values):
                cited = extract_citations(s)
                if cited and (not check.doc_ids or set(cited) & set(check.doc_ids)):
                    return "satisfied"
                partial = True
        return "partially" if partial else "not"
    if check.kind == "penalty":
        for s in sents:
            if any(_contains(s, v) for v in check.values) and not _is_refuting(s):
                return "satisfied"
        return "not"
    if check.kind == "conflict":
        partial = False
        for s in sents:
            if any(_contains(s, v) for v in check.values):
                if any(_contains(s, v) for v in check.expected):
                    return "satisfied"
                if _is_refuting(s):
                    partial = True
        return "partially" if partial else "not"
    if check.kind == "citation":
        cited = set(extract_citations(report))
        n = len(cited & set(check.doc_ids)) if check.doc_ids else len(cited)
        return "satisfied" if n >= check.min_count else "partially" if n > 0 else "not"
    if check.kind == "structure":
        n = sum(1 for line in report.splitlines() if line.lstrip().startswith("#"))
        # the title heading does not count as a section
        sections = sum(1 for line in report.splitlines() if line.lstrip().startswith("## "))
        n = sections or max(0, n - 1)
        return "satisfied" if n >= check.min_count else "partially" if n > 0 else "not"
    raise ValueError(f"unknown rubric check kind {check.kind!r}")


def grade_report(task: ResearchTask, report: str) -> list[Label]:
    """Ground-truth label of every rubric item; raises if an item has no check."""
    out: list[Label] = []
    for i, item in enumerate(task.rubrics):
        if item.check is None:
            raise ValueError(f"{task.sample_id}: rubric item {i} ({item.criterion!r}) has no check to grade by")
        out.append(check_label(item.check, report))
    return out


def rubric_score(items: list[RubricItem], labels: list[Label], *, binary: bool = False) -> float:
    """ResearchRubrics compliance: Σ wᵢ·sᵢ / Σ_{wᵢ>0} wᵢ with s = 1 / 0.5 / 0 (binary: partially → 0).

    A penalty item (w < 0) labelled satisfied contributes its negative weight.
    """
    if len(items) != len(labels):
        raise ValueError(f"{len(items)} rubric items but {len(labels)} labels")
    pos = sum(it.weight for it in items if it.weight > 0)
    if pos <= 0:
        raise ValueError("rubric has no positive-weight item")
    total = 0.0
    for it, lab in zip(items, labels):
        s = LABEL_SCORE[lab]
        if binary and lab == "partially":
            s = 0.0
        total += it.weight * s
    return total / pos
