"""Difficulty filter: a reference solver attempts each question; what it answers is dropped.

The paper keeps only questions a strong model's simple ReAct cannot solve. The solver is
configurable (`capabilities.difficulty_filter.solver`), one registry entry per kind:

    shallow      one search with the question, the answer read off the top hit (default; no model)
    openai       the ReAct loop driven by `agent.openai`'s OpenAI-compatible endpoint
    checkpoint   the ReAct loop driven by a pipeline checkpoint (`agent.hf.model_dir`)

    solver = make_solver("shallow", cfg, world, search)
    kept, stats = difficulty_filter(tasks, solver, n=16)   # stats: solved/kept per hop count

A question is anything with `question`, `answer`, `aliases` and `hops` (deep-search chains,
subgraph questions, link walks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from deepresearch.synthesis.phrasing import ATTRIBUTE_PHRASE, RELATION_PHRASE

if TYPE_CHECKING:
    from deepresearch.config import PipelineConfig
    from deepresearch.search.backend import SearchBackend
    from deepresearch.world.schema import World

Solver = Callable[[str], "str | None"]  # question → the solver's answer (None: it gave none)
Q = TypeVar("Q")


class SolverName(str, Enum):
    shallow = "shallow"
    openai = "openai"
    checkpoint = "checkpoint"


SolverFactory = Callable[["PipelineConfig", "World", "SearchBackend"], Solver]
SOLVERS: dict[SolverName, SolverFactory] = {}


def register_solver(name: SolverName) -> Callable[[SolverFactory], SolverFactory]:
    """Decorator registering a reference-solver factory; refuses duplicates."""

    def deco(fn: SolverFactory) -> SolverFactory:
        if name in SOLVERS:
            raise ValueError(f"reference solver {name.value!r} is already registered")
        SOLVERS[name] = fn
        return fn

    return deco


def make_solver(name: str, cfg: PipelineConfig, world: World, search: SearchBackend) -> Solver:
    """Build a reference solver by name; the error lists the valid names."""
    try:
        key = SolverName(name)
    except ValueError:
        raise ValueError(f"unknown reference solver {name!r}; valid: {', '.join(s.value for s in SolverName)}") from None
    return SOLVERS[key](cfg, world, search)


def _phrases() -> list[tuple[str, str]]:
    """(phrase, predicate), longest phrase first, so "founding year" wins over "year"."""
    pairs = [(p, k) for k, p in {**RELATION_PHRASE, **ATTRIBUTE_PHRASE}.items()]
    return sorted(pairs, key=lambda x: (-len(x[0]), x[1]))


def read_answer(question: str, doc: Any, world: World) -> str | None:
    """What a reader of one page answers: the claim about the page's subject whose predicate the
    question names first ("What is the employer of ..." → the page's works_for claim)."""
    low = question.lower()
    best: tuple[int, str] | None = None
    for phrase, pred in _phrases():
        pos = low.find(phrase)
        if pos >= 0 and (best is None or pos < best[0]):
            if any(c.predicate == pred and c.subject == doc.about for c in doc.claims):
                best = (pos, pred)
    if best is None:
        return None
    claim = next(c for c in doc.claims if c.predicate == best[1] and c.subject == doc.about)
    tail = world.entities.get(claim.value)
    return tail.name if tail is not None else claim.value


@register_solver(SolverName.shallow)
def _shallow(cfg: PipelineConfig, world: World, search: SearchBackend) -> Solver:
    def solve(question: str) -> str | None:
        hits = search.search(question, 1)
        if not hits:
            return None
        doc = world.documents.get(hits[0].doc_id)
        return None if doc is None else read_answer(question, doc, world)

    return solve


def _agent_solver(cfg: PipelineConfig, world: World, search: SearchBackend, policy_name: str) -> Solver:
    from types import SimpleNamespace

    from deepresearch.agent.episode import play_episode
    from deepresearch.agent.policies.base import make_policy

    policy = make_policy(policy_name, cfg.agent, world)

    def solve(question: str) -> str | None:
        task = SimpleNamespace(task_id="difficulty", capability="difficulty", question=question)
        return play_episode(policy, task, cfg.agent, search, seed=f"difficulty:{question}").answer

    return solve


@register_solver(SolverName.openai)
def _openai(cfg: PipelineConfig, world: World, search: SearchBackend) -> Solver:
    return _agent_solver(cfg, world, search, "openai")


@register_solver(SolverName.checkpoint)
def _checkpoint(cfg: PipelineConfig, world: World, search: SearchBackend) -> Solver:
    if not cfg.agent.hf.model_dir:
        raise ValueError("difficulty_filter.solver=checkpoint needs agent.hf.model_dir (a pipeline checkpoint)")
    return _agent_solver(cfg, world, search, "hf")


def is_correct(question: Any, answer: str | None) -> bool:
    """Exact match after SQuAD normalization against the answer and its aliases."""
    from deepresearch.synthesis.answers import normalize_answer

    if not answer:
        return False
    got = normalize_answer(answer)
    return any(got == normalize_answer(a) for a in [question.answer, *question.aliases])


def difficulty_filter(questions: Sequence[Q], solver: Solver, solver_name: str, *, n: int) -> tuple[list[Q], dict]:
    """Keep the first `n` questions the solver does not answer; the others are dropped.

    Returns:
        (kept questions, each with `difficulty` set when the model has that field;
         stats {"solver", "attempted", "kept", "dropped", "pass_rate", "by_hops": {hops: {"kept", "dropped"}}}).
    """
    from deepresearch.synthesis.capability_schema import Difficulty

    kept: list[Q] = []
    by_hops: dict[int, dict[str, int]] = {}
    attempted = 0
    for q in questions:
        if len(kept) >= n:
            break
        attempted += 1
        got = solver(q.question)  # type: ignore[attr-defined]
        solved = is_correct(q, got)
        bucket = by_hops.setdefault(int(q.hops), {"kept": 0, "dropped": 0})  # type: ignore[attr-defined]
        bucket["dropped" if solved else "kept"] += 1
        if solved:
            continue
        if "difficulty" in type(q).model_fields:  # type: ignore[attr-defined]
            q = q.model_copy(update={"difficulty": Difficulty(solver=solver_name, solved=False, solver_answer=got)})  # type: ignore[attr-defined]
        kept.append(q)
    dropped = attempted - len(kept)
    stats = {"solver": solver_name, "attempted": attempted, "kept": len(kept), "dropped": dropped,
             "pass_rate": round(len(kept) / attempted, 6) if attempted else None,
             "by_hops": {str(h): by_hops[h] for h in sorted(by_hops)}}
    return kept, stats
