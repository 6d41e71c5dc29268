"""What the judge reads of a report: evidence lines picked by the rubric item, exact-match marks."""

import pytest

from deepresearch.judge.evidence import content_words, evidence_line_indices, judge_view

CRITERION = "States that the attendance of Groflo Jazz Festival 2016 is 160, with a citation"
REPORT = (
    "# Groflo Jazz Festival 2016: research report\n"
    "\n"
    "## Key facts\n"
    "- Groflo Jazz Festival 2016 drew an attendance of 160 \\cite{D1}.\n"
    "- It dates from 2016 \\cite{D1}.\n"
    "\n"
    "## Source verification\n"
    "- a forum reports a attendance of 120, which conflicts with the authoritative figure of 160 \\cite{D1}.\n"
)


def test_content_words_normalise_numbers_and_drop_function_words():
    assert content_words("It has 4,200 employees, and 4200 is the figure") == {"4200", "employees", "figure"}


def test_evidence_lines_by_rare_shared_words():
    lines = [ln for ln in REPORT.splitlines() if ln.strip()]
    # body lines 2, 3, 5; weight 1/df over body lines: groflo, jazz, festival 1 (only line 2 has them);
    # 2016, attendance, 160 1/2. Line 2 shares all six: (max 1, sum 4.5); line 5 shares attendance and
    # 160: (0.5, 1.0); line 3 shares 2016: (0.5, 0.5).
    assert evidence_line_indices(CRITERION, lines, 1) == [2]
    assert evidence_line_indices(CRITERION, lines, 2) == [2, 5]
    assert evidence_line_indices(CRITERION, lines, 5) == [2, 3, 5]
    assert evidence_line_indices("Organizes the report into clearly headed sections", lines, 2) == []  # nothing shared


def test_judge_view_keeps_headings_and_marks_matches():
    assert judge_view(CRITERION, REPORT, evidence_lines=0, mark_matches=False) == (CRITERION, REPORT)
    crit, rep = judge_view(CRITERION, REPORT, evidence_lines=1, mark_matches=False)
    assert crit == CRITERION
    assert rep == (
        "# Groflo Jazz Festival 2016: research report\n## Key facts\n"
        "- Groflo Jazz Festival 2016 drew an attendance of 160 \\cite{D1}.\n## Source verification\n"
    )
    crit, rep = judge_view(CRITERION, REPORT, evidence_lines=1, mark_matches=True)
    # the criterion's words the report lacks ("states", "citation") are marked ~…~; the evidence line's
    # words the criterion has are marked *…*; headings stay as they are
    assert crit == "~States~ that the attendance of Groflo Jazz Festival 2016 is 160, with a ~citation~"
    assert "- *Groflo* *Jazz* *Festival* *2016* drew an *attendance* of *160* \\cite{D1}." in rep.splitlines()
    assert rep.splitlines()[0] == "# Groflo Jazz Festival 2016: research report"
    # a value the report replaced is missing: the judge sees it marked in the criterion
    crit, _ = judge_view(CRITERION, REPORT.replace("160", "163"), evidence_lines=2, mark_matches=True)
    assert "~160~" in crit
    with pytest.raises(ValueError, match="evidence_lines"):
        judge_view(CRITERION, REPORT, evidence_lines=-1, mark_matches=False)


def test_evidence_view_keeps_what_the_labels_depend_on(small_cfg, small_world_dir):
    """Data expectation: the ground-truth checker gives (almost) the same label on the evidence view as on
    the whole report, so the view does not hide what the label depends on. Misses are citation items
    (a count of cited sources over the whole report) and, at one line, a fact stated on two lines."""
    from deepresearch.judge.data import make_variants
    from deepresearch.synthesis.rubrics import check_label
    from deepresearch.synthesis.tasks import synthesize_research
    from deepresearch.world.schema import World

    world = World.load(small_world_dir)
    same = total = 0
    for task in synthesize_research(world, 6, seed=1):
        for v in make_variants(world, task, n=4, seed=0):
            for it in task.rubrics:
                _, view = judge_view(it.criterion, v.report, evidence_lines=2, mark_matches=False)
                same += check_label(it.check, view) == check_label(it.check, v.report)
                total += 1
    # tiny config, 40 tasks × 4 reports: 1,156 of 1,172 (98.6 %) at 2 lines, 99.5 % at 3
    assert same / total >= 0.95, (same, total)
