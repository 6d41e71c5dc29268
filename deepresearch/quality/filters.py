"""Quality filters over synthesized tasks and trajectories: pure functions, deterministic order.

Each filter takes a list and returns a `FilterResult`: the items it keeps, in input order, and one
`Drop` per item it removes, with a short machine-readable reason (counted in the quality report)
and a human-readable detail. The gate (`deepresearch.quality.gate`) chains them:

    tasks = drop_near_duplicate_tasks(tasks, lambda t: t.question, threshold=0.85, num_perm=128)
    trajs = drop_repetition_loops(trajs, n=4, max_repeats=6, max_identical_tool_calls=3)
    trajs = require_valid_citations(trajs.kept, require_citations=True)
    trajs = keep_shortest_successful(trajs.kept)

Nothing here reads files or logs; each function is testable with a handful of hand-built objects.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from deepresearch.agent.schema import CITE_RE, Trajectory, extract_citations, parse_assistant

T = TypeVar("T")

# Reasons, one per way an item can be dropped; the quality report counts them by these keys.
REASON_NEAR_DUPLICATE = "near_duplicate"
REASON_NGRAM_LOOP = "ngram_loop"
REASON_TOOL_CALL_LOOP = "tool_call_loop"
REASON_INVALID_CITATION = "invalid_citation"
REASON_MISSING_CITATION = "missing_citation"
REASON_NOT_SHORTEST = "not_shortest"
REASON_UNSUCCESSFUL = "unsuccessful"
REASON_TASK_WITHOUT_SUCCESS = "task_without_success"

# Research reports are graded on cited evidence, so they must cite; deep-search answers are a short
# entity name where a citation adds nothing the grader checks.
CITATION_REQUIRED_CAPABILITIES = frozenset({"deep_research"})

_WORD_RE = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Drop:
    """One removed item and why."""

    id: str  # trajectory_id for trajectory filters, task_id for task filters
    reason: str  # one of the REASON_* keys
    detail: str = ""  # human-readable: what was seen
    duplicate_of: str | None = None  # near-duplicate filter: the kept task this one duplicates


@dataclass(frozen=True)
class FilterResult(Generic[T]):
    """Output of one filter: kept items (deterministic order) and one Drop per removed item."""

    kept: list[T]
    dropped: list[Drop] = field(default_factory=list)

    def reason_counts(self) -> dict[str, int]:
        """Number of drops per reason, keys sorted (stable in reports and digests)."""
        return dict(sorted(Counter(d.reason for d in self.dropped).items()))


# ---- shortest successful trajectory -------------------------------------------------------------


def keep_shortest_successful(trajs: Sequence[Trajectory]) -> FilterResult[Trajectory]:
    """Per task keep the successful trajectory with the fewest tool calls.

    The paper keeps the shortest successful path so the model learns to stop searching once the
    evidence suffices. Ties break on fewer tokens, then on trajectory_id, so the choice never depends
    on input order. Tasks without any successful attempt keep nothing.

    Args:
        trajs: trajectories of any number of tasks (several attempts per task).
    Returns:
        One trajectory per solved task, ordered by the task's first appearance in `trajs`; every
        other trajectory as a Drop (`not_shortest`, `unsuccessful`, or `task_without_success`).
    """
    by_task: dict[str, list[Trajectory]] = {}
    for t in trajs:
        by_task.setdefault(t.task_id, []).append(t)
    kept: list[Trajectory] = []
    dropped: list[Drop] = []
    for task_id, attempts in by_task.items():
        successes = [t for t in attempts if t.success is True]
        if not successes:
            for t in attempts:
                dropped.append(
                    Drop(
                        t.trajectory_id,
                        REASON_TASK_WITHOUT_SUCCESS,
                        f"no successful attempt for task {task_id}",
                    )
                )
            continue
        best = min(successes, key=lambda t: (t.tool_calls, t.tokens, t.trajectory_id))
        kept.append(best)
        for t in attempts:
            if t is best:
                continue
            if t.success is True:
                detail = (
                    f"{t.tool_calls} tool calls / {t.tokens} tokens vs kept {best.trajectory_id} "
                    f"({best.tool_calls} / {best.tokens})"
                )
                dropped.append(Drop(t.trajectory_id, REASON_NOT_SHORTEST, detail))
            else:
                dropped.append(
                    Drop(t.trajectory_id, REASON_UNSUCCESSFUL, f"success={t.success}, outcome={t.outcome}")
                )
    return FilterResult(kept, dropped)


# ---- repetition loops ---------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def assistant_prose(traj: Trajectory) -> list[str]:
    """The assistant's own words per turn: thoughts and answers, tool-call blocks removed.

    Tool-call JSON is excluded because every call repeats the same `{"name": ..., "arguments"` frame;
    counting it would flag any long but healthy trajectory. Repeated calls are caught separately.
    So are `\\cite{doc_id}` markers: a report cites its sources again and again, and a page id
    ("the-little-mirror-0") is several words.
    """
    out = []
    for m in traj.messages:
        if m.role != "assistant":
            continue
        turn = parse_assistant(m.content)
        out.append(CITE_RE.sub(" ", " ".join(p for p in (turn.thought, turn.answer or "") if p)))
    return out


def max_ngram_repeat(texts: Sequence[str], n: int) -> tuple[int, str]:
    """Highest count of any word n-gram across `texts` (n-grams never span two texts).

    Args:
        texts: e.g. the assistant turns of one trajectory.
        n: n-gram length in words (lower-cased `\\w+` tokens).
    Returns:
        (count, n-gram); (0, "") when no text has n words. Ties pick the lexicographically first
        n-gram so the detail string is deterministic.
    """
    counts: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        w = _words(text)
        counts.update(tuple(w[i : i + n]) for i in range(len(w) - n + 1))
    if not counts:
        return 0, ""
    gram, count = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return count, " ".join(gram)


def _call_key(name: str, arguments: dict) -> str:
    # sort_keys: {"a":1,"b":2} and {"b":2,"a":1} are the same call
    return json.dumps({"name": name, "arguments": arguments}, sort_keys=True, ensure_ascii=False)


def longest_identical_tool_call_run(traj: Trajectory) -> tuple[int, str]:
    """Longest run of consecutive identical tool calls (same name and arguments) in a trajectory.

    Calls are read from the assistant messages in order, across turns; malformed blocks are skipped
    (they are recoveries, counted by `tool_errors`, not loops).

    Returns:
        (run length, canonical JSON of the repeated call); (0, "") without tool calls.
    """
    best, best_key = 0, ""
    run, prev = 0, None
    for m in traj.messages:
        if m.role != "assistant":
            continue
        for call in parse_assistant(m.content).tool_calls:
            key = _call_key(call.name, call.arguments)
            run = run + 1 if key == prev else 1
            prev = key
            if run > best:
                best, best_key = run, key
    return best, best_key


def drop_repetition_loops(
    trajs: Sequence[Trajectory], n: int, max_repeats: int, max_identical_tool_calls: int
) -> FilterResult[Trajectory]:
    """Drop trajectories stuck in a loop: repeated prose or the same tool call over and over.

    Args:
        trajs: trajectories to check.
        n: word n-gram length for the prose check.
        max_repeats: an n-gram seen more often than this (over all assistant turns) marks a loop.
        max_identical_tool_calls: more consecutive identical calls than this marks a loop.
    Returns:
        Kept trajectories in input order; drops with reason `ngram_loop` or `tool_call_loop`.
    """
    kept: list[Trajectory] = []
    dropped: list[Drop] = []
    for t in trajs:
        count, gram = max_ngram_repeat(assistant_prose(t), n)
        if count > max_repeats:
            dropped.append(
                Drop(t.trajectory_id, REASON_NGRAM_LOOP, f"{n}-gram {gram!r} repeated {count} times")
            )
            continue
        run, call = longest_identical_tool_call_run(t)
        if run > max_identical_tool_calls:
            dropped.append(
                Drop(t.trajectory_id, REASON_TOOL_CALL_LOOP, f"{call} issued {run} times in a row")
            )
            continue
        kept.append(t)
    return FilterResult(kept, dropped)


# ---- near-duplicate tasks -----------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """Lower-case words joined by single spaces (punctuation and spacing differences vanish)."""
    return " ".join(_words(text))


def shingles(text: str, k: int = 3) -> set[str]:
    """Word k-shingles of the normalized text; a text shorter than k words is one shingle."""
    w = normalize_text(text).split()
    if len(w) < k:
        return {" ".join(w)}
    return {" ".join(w[i : i + k]) for i in range(len(w) - k + 1)}


def drop_near_duplicate_tasks(
    tasks: Sequence[T],
    text_fn: Callable[[T], str],
    threshold: float,
    num_perm: int,
    seed: int = 1,
) -> FilterResult[T]:
    """Remove tasks whose text nearly duplicates an earlier task's (MinHash LSH on word 3-shingles).

    Near-duplicate prompts overweight one fact in training and leak between train and evaluation
    splits. The first task of each group (input order) is kept; LSH candidates are confirmed with the
    MinHash Jaccard estimate so an LSH false positive never removes a task.

    Args:
        tasks: objects with a `task_id` attribute (DeepSearchTask, ResearchTask).
        text_fn: the text compared, e.g. `lambda t: t.question`.
        threshold: estimated Jaccard similarity at or above which two tasks are duplicates.
        num_perm: MinHash permutations (more = more precise, slower).
        seed: MinHash seed; fixed so the result is reproducible.
    Returns:
        Kept tasks in input order; one Drop per removed task with `duplicate_of` set to the kept
        task it duplicates (the earliest one when several match).
    """
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept: list[T] = []
    kept_hashes: list[MinHash] = []  # index in `kept` is the LSH key, so duplicate task ids cannot collide
    dropped: list[Drop] = []
    for task in tasks:
        mh = MinHash(num_perm=num_perm, seed=seed)
        for s in sorted(shingles(text_fn(task))):
            mh.update(s.encode("utf-8"))
        matches = []
        for key in lsh.query(mh):
            sim = mh.jaccard(kept_hashes[int(key)])
            if sim >= threshold:
                matches.append((int(key), sim))
        if matches:
            idx, sim = min(matches)  # earliest kept task, whatever order LSH returned them in
            first = kept[idx]
            dropped.append(
                Drop(
                    task.task_id,  # type: ignore[attr-defined]
                    REASON_NEAR_DUPLICATE,
                    f"estimated Jaccard {sim:.2f} with {first.task_id}",  # type: ignore[attr-defined]
                    duplicate_of=first.task_id,  # type: ignore[attr-defined]
                )
            )
            continue
        lsh.insert(str(len(kept)), mh)
        kept.append(task)
        kept_hashes.append(mh)
    return FilterResult(kept, dropped)


# ---- citations ----------------------------------------------------------------------------------


class CitationReport(BaseModel):
    """What one trajectory cites, checked against the documents it actually opened."""

    model_config = ConfigDict(frozen=True)

    cited: list[str]  # in order of first appearance
    valid: list[str]  # cited and opened in this trajectory
    invalid: list[str]  # cited but never opened: unsupported by anything the agent read
    rate: float | None  # len(valid) / len(cited); None when nothing is cited


def final_answer(traj: Trajectory) -> str:
    """The final answer text: `traj.answer`, else the <answer> of the last assistant turn, else ""."""
    if traj.answer is not None:
        return traj.answer
    for m in reversed(traj.messages):
        if m.role == "assistant":
            return parse_assistant(m.content).answer or ""
    return ""


def citation_report(traj: Trajectory) -> CitationReport:
    """Check a trajectory's citations against its opened documents.

    Cited ids are the `\\cite{...}` ids of the final answer together with `traj.citations` (the
    agent's own record), so neither source can hide a citation from the check.

    Args:
        traj: one trajectory.
    Returns:
        The CitationReport (cited, valid, invalid, rate).
    """
    cited = list(dict.fromkeys([*extract_citations(final_answer(traj)), *traj.citations]))
    opened = set(traj.opened_docs)
    valid = [d for d in cited if d in opened]
    invalid = [d for d in cited if d not in opened]
    rate = len(valid) / len(cited) if cited else None
    return CitationReport(cited=cited, valid=valid, invalid=invalid, rate=rate)


def require_valid_citations(trajs: Sequence[Trajectory], require_citations: bool) -> FilterResult[Trajectory]:
    """Drop trajectories citing a document they never opened; optionally require research citations.

    A citation to an unopened document is a fabricated source, the failure the paper's `\\cite{}`
    enforcement exists to remove.

    Args:
        trajs: trajectories to check.
        require_citations: if true, trajectories of a capability in CITATION_REQUIRED_CAPABILITIES
            (deep_research) must cite at least one document.
    Returns:
        Kept trajectories in input order; drops with reason `invalid_citation` or `missing_citation`.
    """
    kept: list[Trajectory] = []
    dropped: list[Drop] = []
    for t in trajs:
        rep = citation_report(t)
        if rep.invalid:
            dropped.append(
                Drop(t.trajectory_id, REASON_INVALID_CITATION, f"cites unopened docs {rep.invalid}")
            )
        elif require_citations and t.capability in CITATION_REQUIRED_CAPABILITIES and not rep.cited:
            dropped.append(
                Drop(t.trajectory_id, REASON_MISSING_CITATION, f"{t.capability} answer cites nothing")
            )
        else:
            kept.append(t)
    return FilterResult(kept, dropped)
