"""Exact match of a short answer, SQuAD-style: the ground truth of deep-search tasks (synthesis,
rewards, evaluation) and of the difficulty filter's reference solver."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deepresearch.synthesis.schema import DeepSearchTask


def normalize_answer(text: str) -> str:
    """Lower-case, strip punctuation and articles, collapse spaces (SQuAD-style)."""
    import re
    import string

    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def deep_search_correct(task: DeepSearchTask, answer: str | None) -> bool:
    if not answer:
        return False
    got = normalize_answer(answer)
    return any(got == normalize_answer(a) for a in [task.answer, *task.aliases])
