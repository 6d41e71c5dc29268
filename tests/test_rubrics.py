"""Rubric ground truth: labels by construction, and the ResearchRubrics compliance formula."""

import pytest

from deepresearch.synthesis.rubrics import check_label, grade_report, rubric_score
from deepresearch.synthesis.schema import ResearchTask, RubricCheck, RubricItem

REPORT = """# Veltrana Labs: research report

## Overview
Veltrana Labs is a robotics company founded in 1987 \\cite{D0000001}.

## Key facts
- The number of employees of Veltrana Labs is 4200.
- The founding year of Veltrana Labs is 1987 \\cite{D0000001}.

## Source verification
- notes.blog.example reports a founding year of 1984, which conflicts with the authoritative figure of 1987 \\cite{D0000001}.
"""


def item(kind, weight=1.0, **kw):
    return RubricItem(criterion=kind, weight=weight, axis="x", check=RubricCheck(kind=kind, **kw))


def test_fact_cited_uncited_absent():
    assert check_label(RubricCheck(kind="fact", values=["1987"]), REPORT) == "satisfied"
    assert check_label(RubricCheck(kind="fact", values=["4200"]), REPORT) == "partially"  # stated, uncited
    assert check_label(RubricCheck(kind="fact", values=["Orvane"]), REPORT) == "not"
    # cited, but not to a document that supports it
    assert check_label(RubricCheck(kind="fact", values=["1987"], doc_ids=["D0000009"]), REPORT) == "partially"


def test_penalty_only_when_asserted():
    # 1984 appears only in a sentence that rejects it: no penalty
    assert check_label(RubricCheck(kind="penalty", values=["1984"]), REPORT) == "not"
    assert check_label(RubricCheck(kind="penalty", values=["1984"]), "It was founded in 1984 \\cite{D1}.") == "satisfied"


def test_conflict_resolution():
    assert check_label(RubricCheck(kind="conflict", values=["1984"], expected=["1987"]), REPORT) == "satisfied"
    rejected_only = "A blog gives 1984, which is incorrect."
    assert check_label(RubricCheck(kind="conflict", values=["1984"], expected=["1987"]), rejected_only) == "partially"


def test_citation_and_structure():
    assert check_label(RubricCheck(kind="citation", doc_ids=["D0000001"], min_count=1), REPORT) == "satisfied"
    assert check_label(RubricCheck(kind="citation", doc_ids=["D0000001", "D2"], min_count=2), REPORT) == "partially"
    assert check_label(RubricCheck(kind="structure", min_count=3), REPORT) == "satisfied"
    assert check_label(RubricCheck(kind="structure", min_count=3), "# Title\n\n## One\ntext") == "partially"


def test_whole_token_match():
    assert check_label(RubricCheck(kind="fact", values=["198"]), REPORT) == "not"


def test_compliance_formula_by_hand():
    # weights 3, 2, 1 positive and -2 penalty; labels satisfied, partially, not, triggered
    # score = (3*1 + 2*0.5 + 1*0 + (-2)*1) / (3+2+1) = 2/6
    items = [item("fact", 3), item("fact", 2), item("fact", 1), item("penalty", -2)]
    labels = ["satisfied", "partially", "not", "satisfied"]
    assert rubric_score(items, labels) == pytest.approx(2 / 6)
    # binary: partially counts 0 → (3 - 2) / 6
    assert rubric_score(items, labels, binary=True) == pytest.approx(1 / 6)
    with pytest.raises(ValueError):
        rubric_score(items, labels[:2])


def test_grade_report_requires_checks():
    task = ResearchTask(sample_id="s", prompt="p", domain="d", rubrics=[RubricItem(criterion="c", weight=1, axis="a")])
    with pytest.raises(ValueError, match="no check"):
        grade_report(task, REPORT)
