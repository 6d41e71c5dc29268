"""Task schemas (versioned) of the atomic-capability datasets beyond deep_search and deep_research.

One model per dataset; each names its `capability` (the dataset's directory and the trajectories'
capability) and its `target`, the training-side entity it is about (synthesis/split.py).

    planning               PlanningTask       a report's query and its reverse-engineered plan
    deep_search_subgraph   SubgraphTask       one entity pinned down by >= 2 intersected constraints
    wiki_walk              WikiWalkTask       a question along a hyperlink walk (>= 2 pages of evidence)
    verification           VerificationTask   a draft with a planted conflict to detect and resolve
    query_report           QueryReportPair    <query, report> text for mid-training stage 1 (no episode)
    url_qa                 UrlQATask          open a given page and answer from it
    long_summary           LongSummaryTask    summarize pages too long for the context (summary-aware storage)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from deepresearch.world.schema import Triple

CAPABILITY_SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Difficulty(_Model):
    """What the reference solver made of a question (synthesis/difficulty.py); kept questions are unsolved."""

    solver: str
    solved: bool
    solver_answer: str | None = None


class PlanStep(_Model):
    goal: str  # what the step finds, as the todo list states it
    entity: str  # the entity the step is about
    doc_id: str  # the evidence page the step must open


class PlanningTask(_Model):
    schema_version: int = CAPABILITY_SCHEMA_VERSION
    task_id: str
    capability: Literal["planning"] = "planning"
    prompt: str  # the query reverse-engineered from the report's title, abstract and sections
    target: str  # the entity the report is about
    title: str
    abstract: str
    sections: list[str]
    plan: list[PlanStep]
    report: str  # the world's institutional report the query and plan come from


class SubgraphConstraint(_Model):
    kind: Literal["relation", "relation2", "attribute"]
    text: str  # the clause as the question states it
    predicate: str  # relation (or "r1/r2" for relation2) or attribute name
    anchor: str | None = None  # the described entity of a relation constraint
    value: str | None = None  # the attribute value or bucket ("1950s")
    candidates: list[str]  # entities of the answer's type satisfying this constraint alone


class SubgraphTask(_Model):
    schema_version: int = CAPABILITY_SCHEMA_VERSION
    task_id: str
    capability: Literal["deep_search_subgraph"] = "deep_search_subgraph"
    question: str
    answer: str
    aliases: list[str] = Field(default_factory=list)
    hops: int  # constraints intersected
    target: str  # the answer entity
    constraints: list[SubgraphConstraint]
    nodes: list[str]  # the sampled subgraph's entity ids
    edges: list[Triple]  # the subgraph's triples
    difficulty: Difficulty | None = None


class WikiWalkTask(_Model):
    schema_version: int = CAPABILITY_SCHEMA_VERSION
    task_id: str
    capability: Literal["wiki_walk"] = "wiki_walk"
    question: str
    answer: str
    aliases: list[str] = Field(default_factory=list)
    hops: int  # links followed
    target: str  # the entity at the end of the walk
    walk: list[str]  # doc ids, each linked from the previous one
    entities: list[str]  # the entity each page of the walk is about
    evidence: list[str]  # doc ids whose facts the answer combines (>= 2)
    difficulty: Difficulty | None = None


class VerificationTask(_Model):
    schema_version: int = CAPABILITY_SCHEMA_VERSION
    task_id: str
    capability: Literal["verification"] = "verification"
    prompt: str
    target: str
    draft: list[str]  # the draft's sentences, each with its \cite
    attribute: str  # the conflicting attribute
    wrong_value: str
    wrong_doc: str  # the low-authority (older) page the draft's wrong claim cites
    correct_value: str
    authority_doc: str  # the higher-authority, newer page the conflict must be resolved by
    # the two pages' authority and year: the resolution must favour higher authority and a newer page
    wrong_authority: float
    wrong_year: int
    authority: float
    authority_year: int


class QueryReportPair(_Model):
    schema_version: int = CAPABILITY_SCHEMA_VERSION
    task_id: str
    capability: Literal["query_report"] = "query_report"
    query: str
    report: str
    sources: list[str]  # doc ids the report draws on (a page is its own source)
    target: str
    kind: Literal["document", "report"]


class UrlQATask(_Model):
    schema_version: int = CAPABILITY_SCHEMA_VERSION
    task_id: str
    capability: Literal["url_qa"] = "url_qa"
    question: str
    url: str
    doc_id: str
    answer: str
    aliases: list[str] = Field(default_factory=list)
    target: str


class LongSummaryTask(_Model):
    schema_version: int = CAPABILITY_SCHEMA_VERSION
    task_id: str
    capability: Literal["long_summary"] = "long_summary"
    prompt: str
    target: str
    doc_ids: list[str]  # pages to read, opened together (too long for one observation)
    key_facts: list[str]  # values the summary must state (the target's true attribute values)


CapabilityTask = (
    PlanningTask | SubgraphTask | WikiWalkTask | VerificationTask | QueryReportPair | UrlQATask | LongSummaryTask
)
TASK_MODELS: dict[str, type[BaseModel]] = {
    "planning": PlanningTask,
    "deep_search_subgraph": SubgraphTask,
    "wiki_walk": WikiWalkTask,
    "verification": VerificationTask,
    "query_report": QueryReportPair,
    "url_qa": UrlQATask,
    "long_summary": LongSummaryTask,
}
# datasets with no episodes: text pairs for mid-training stage 1
TEXT_ONLY = frozenset({"query_report"})


def task_prompt(task: CapabilityTask) -> str:
    """What the agent is asked (the query of a text pair): `agent.episode.task_prompt`."""
    from deepresearch.agent.episode import task_prompt as prompt_of

    return prompt_of(task)
