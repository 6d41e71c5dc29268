"""Task schemas (versioned): deep-search questions and ResearchRubrics-compatible research tasks.

A research task is `sample_id, prompt, domain, rubrics: [{criterion, weight, axis}]`, so files of
the real ResearchRubrics benchmark load as they are; our synthesized items also carry a `check`
that makes the ground-truth label of any report computable (see `synthesis.rubrics`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from deepresearch.world.schema import Triple

TASK_SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeepSearchTask(_Model):
    """A multi-hop question whose entity names are obfuscated by descriptions."""

    schema_version: int = TASK_SCHEMA_VERSION
    task_id: str
    capability: Literal["deep_search"] = "deep_search"
    question: str
    answer: str
    aliases: list[str] = Field(default_factory=list)
    hops: int
    answer_attribute: str | None = None  # set when the answer is an attribute of the last entity
    path: list[str]  # entity ids from the described start entity to the answer entity
    subgraph: list[Triple]  # the path's triples plus the start entity's other edges (distractors)


class RubricCheck(_Model):
    """Machine-checkable ground truth for one rubric item (our extension; optional in files).

    kind=fact:     satisfied if one of `values` appears in a sentence that cites one of `doc_ids`
                   (any \\cite counts when doc_ids is empty); partially if it appears uncited.
    kind=penalty:  triggered ("satisfied") if one of `values` appears in a sentence that does not
                   mark it as rejected (see phrasing.REFUTATION_MARKERS).
    kind=conflict: satisfied if a sentence names a wrong value (`values`) next to the correct one
                   (`expected`); partially if it names the wrong value only to reject it.
    kind=citation: satisfied if the report cites at least `min_count` documents of `doc_ids`.
    kind=structure: satisfied if the report has at least `min_count` sections (markdown headings).
    """

    kind: Literal["fact", "penalty", "conflict", "citation", "structure"]
    values: list[str] = Field(default_factory=list)
    expected: list[str] = Field(default_factory=list)
    doc_ids: list[str] = Field(default_factory=list)
    min_count: int = 1


class RubricItem(_Model):
    criterion: str
    weight: float  # negative = penalty item
    axis: str  # e.g. "factual_accuracy", "verification", "citation", "structure"
    check: RubricCheck | None = None


class ResearchTask(_Model):
    """An open-ended research prompt with a ResearchRubrics-style rubric."""

    schema_version: int = TASK_SCHEMA_VERSION
    sample_id: str
    capability: Literal["deep_research"] = "deep_research"
    prompt: str
    domain: str
    about: str | None = None  # entity id the prompt is about (synthetic tasks)
    rubrics: list[RubricItem]

    @property
    def task_id(self) -> str:
        return self.sample_id


Label = Literal["satisfied", "partially", "not"]
LABELS: tuple[Label, ...] = ("satisfied", "partially", "not")
