"""What the judge reads of a report for one rubric item: its evidence lines, with the words they share marked.

    criterion, report = judge_view(item.criterion, report, evidence_lines=2, mark_matches=True)

A rubric item is about one small part of a report (a value, a verification note, the headings), and a
small judge learns to grade it far faster from that part than from the whole report (tiny config, held-out
macro-F1 ~0.5 → ~0.9; README, "Rubric judge"). Two independent options, applied identically in
training and labelling, computed from the criterion and the report text alone (never from a rubric
item's check or label):

- `evidence_lines = k > 0`: the report is cut to its heading lines (the outline: what a structure item
  is about) and the k body lines that best match the criterion, in report order. A line's match is
  (the highest weight of a content word it shares with the criterion, then their summed weight), a
  word's weight 1 / (number of body lines that contain it): the rare words of an item (a value, a
  name) pick its line, words of every line (the entity's name) barely count. Ties go to the earlier
  line; a line that shares no content word is never picked. k = 0 keeps the whole report.
- `mark_matches`: exact-match features, as in reading-comprehension models (DrQA, Chen et al. 2017,
  arXiv:1704.00051, "exact match" token features): in the kept body lines each content word that
  also occurs in the criterion is written `*word*`; in the criterion, each content word that occurs
  nowhere in the report is written `~word~`. A small model then need not learn to align the two texts
  token by token before it can learn what the item asks.

Content words: runs of letters and digits (a thousands separator kept inside a number, then dropped,
so "4,200" matches "4200"), lowercased, less a short list of function words.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[A-Za-z0-9]+(?:,[0-9]{3})*")
STOPWORDS = frozenset(
    """a an the of in on at to for from by with as is are was were be been being it its this that these those
    and or but not no nor so than then there their they them he she his her we our you your i me my
    which who whom whose what when where why how all any both each few more most other some such only own same
    very can will just do does did has have had having into over under again further once about above below between
    through during before after up down out off also per via""".split()
)


def _norm(word: str) -> str:
    return word.replace(",", "").lower()


def content_words(text: str) -> set[str]:
    """The normalised content words of `text` (see the module docstring)."""
    return {_norm(w) for w in _WORD.findall(text)} - STOPWORDS


def _is_heading(line: str) -> bool:
    return line.lstrip().startswith("#")


def _mark(text: str, words: set[str], *, inside: bool, sign: str) -> str:
    """Wrap each content word of `text` that is (inside=True) or is not (False) in `words` with `sign`."""

    def sub(m: re.Match) -> str:
        w = _norm(m.group(0))
        if w in STOPWORDS or (w in words) != inside:
            return m.group(0)
        return f"{sign}{m.group(0)}{sign}"

    return _WORD.sub(sub, text)


def evidence_line_indices(criterion: str, lines: list[str], k: int) -> list[int]:
    """Indices of the (at most) `k` body lines of `lines` that best match `criterion`, in line order.

    Args:
        criterion: the rubric item's text.
        lines: the report's non-empty lines; heading lines ("#...") are never picked.
        k: how many lines to pick (≥ 1).
    """
    crit = content_words(criterion)
    body = [(i, content_words(ln)) for i, ln in enumerate(lines) if not _is_heading(ln)]
    df: dict[str, int] = {}
    for _, words in body:
        for w in words:
            df[w] = df.get(w, 0) + 1
    scored = []
    for i, words in body:
        shared = crit & words
        if shared:
            weights = [1.0 / df[w] for w in shared]
            scored.append((-max(weights), -sum(weights), i))
    return sorted(i for _, _, i in sorted(scored)[:k])


def judge_view(criterion: str, report: str, *, evidence_lines: int, mark_matches: bool) -> tuple[str, str]:
    """The criterion and the report as the judge reads them (see the module docstring).

    Args:
        criterion: the rubric item's text.
        report: the whole report.
        evidence_lines: body lines to keep besides the headings; 0 keeps the report whole.
        mark_matches: mark shared words in the report's kept lines and missing words in the criterion.
    Returns:
        (criterion, report) to encode; with (0, False), exactly the inputs.
    """
    if evidence_lines < 0:
        raise ValueError(f"evidence_lines must be >= 0, got {evidence_lines}")
    if evidence_lines == 0 and not mark_matches:
        return criterion, report
    lines = [ln for ln in report.splitlines() if ln.strip()]
    if evidence_lines:
        chosen = set(evidence_line_indices(criterion, lines, evidence_lines))
        lines = [ln for i, ln in enumerate(lines) if _is_heading(ln) or i in chosen]
    if mark_matches:
        crit = content_words(criterion)
        lines = [ln if _is_heading(ln) else _mark(ln, crit, inside=True, sign="*") for ln in lines]
        criterion = _mark(criterion, content_words(report), inside=False, sign="~")
    return criterion, "\n".join(lines) + "\n"
