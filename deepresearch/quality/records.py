"""The quality gate's records and frames, shared by the gate of the two main datasets (quality/gate.py)
and of the capability datasets (quality/capabilities.py): per-filter counts, a dataset's report, the
JSONL reader with its errors, and the trajectory frame the expectation suites check."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field

from deepresearch.agent.schema import Trajectory
from deepresearch.errors import DataQualityError
from deepresearch.quality.expectations import TRAJECTORY_COLUMNS, SuiteResult
from deepresearch.quality.filters import FilterResult, citation_report, final_answer
from deepresearch.synthesis.schema import DeepSearchTask, ResearchTask

if TYPE_CHECKING:
    import pandas as pd

REASON_TASK_REMOVED = "task_removed"  # the trajectory's task was dropped as a near-duplicate
REASON_UNKNOWN_TASK = "unknown_task"  # the trajectory names a task not in tasks.jsonl
_EXAMPLES_PER_REASON = 3

TASKS_FILE = "tasks.jsonl"
TRAJECTORIES_FILE = "trajectories.jsonl"

T = TypeVar("T")


class FilterStep(BaseModel):
    """Counts through one filter."""

    model_config = ConfigDict(frozen=True)

    name: str
    unit: str  # "tasks" | "trajectories"
    n_in: int
    n_out: int
    dropped: dict[str, int]  # reason -> count
    examples: dict[str, list[str]] = Field(default_factory=dict)  # reason -> a few "id: detail"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def pass_rate(self) -> float | None:
        """n_out / n_in; None when nothing came in."""
        return self.n_out / self.n_in if self.n_in else None


class DatasetReport(BaseModel):
    """What the gates did to one capability's dataset."""

    model_config = ConfigDict(frozen=True)

    name: str
    tasks_in: int
    tasks_out: int
    trajectories_in: int
    trajectories_out: int
    steps: list[FilterStep]
    pass_rates: dict[str, float | None]
    suites: list[SuiteResult] = Field(default_factory=list)

    @property
    def dropped(self) -> dict[str, int]:
        """Drop counts per reason over all steps."""
        out: dict[str, int] = {}
        for s in self.steps:
            for reason, n in s.dropped.items():
                out[reason] = out.get(reason, 0) + n
        return dict(sorted(out.items()))


def _validation_summary(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:3]:
        loc = ".".join(str(p) for p in e["loc"]) or "(line)"
        parts.append(f"{loc}: {e['msg']}")
    more = f" (+{err.error_count() - 3} more)" if err.error_count() > 3 else ""
    return "; ".join(parts) + more


def read_jsonl(path: Path, model: type[T]) -> list[T]:
    """Read one pydantic model per non-blank line.

    Args:
        path: a .jsonl file.
        model: the pydantic model of each line.
    Returns:
        The parsed objects in file order.
    Raises:
        DataQualityError: the file is missing, or a line is not a valid `model` (names file:line).
    """
    if not path.is_file():
        raise DataQualityError(
            f"missing raw file {path}: expected the synthesis layout "
            f"RAW/{{deep_search,deep_research}}/{{{TASKS_FILE},{TRAJECTORIES_FILE}}} (run synthesis first)",
            failed=[f"missing {path}"],
        )
    items: list[T] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                items.append(model.model_validate_json(line))  # type: ignore[attr-defined]
            except ValidationError as e:
                msg = f"{path}:{lineno}: malformed {model.__name__}: {_validation_summary(e)}"
                raise DataQualityError(msg, failed=[msg]) from e
    return items


def check_unique_task_ids(path: Path, tasks: Sequence[DeepSearchTask | ResearchTask]) -> None:
    """Raise `DataQualityError` naming `path` and both records when two tasks share an id."""
    seen: dict[str, int] = {}
    for i, t in enumerate(tasks, 1):
        if t.task_id in seen:
            msg = f"{path}: task id {t.task_id!r} appears twice (records {seen[t.task_id]} and {i}); ids must be unique"
            raise DataQualityError(msg, failed=[msg])
        seen[t.task_id] = i


def trajectory_frame(trajs: Sequence[Trajectory]) -> pd.DataFrame:
    """One row per trajectory with the columns the expectation suites check (TRAJECTORY_COLUMNS)."""
    import pandas as pd

    rows = []
    for t in trajs:
        rep = citation_report(t)
        rows.append(
            {
                "task_id": t.task_id,
                "trajectory_id": t.trajectory_id,
                "capability": t.capability,
                "outcome": t.outcome,
                "success": t.success is True,
                "tool_calls": t.tool_calls,
                "tool_errors": t.tool_errors,
                "turns": t.turns,
                "tokens": t.tokens,
                "n_citations": len(rep.cited),
                "n_invalid_citations": len(rep.invalid),
                "citation_valid_rate": float("nan") if rep.rate is None else rep.rate,
                "answer_len": len(final_answer(t).strip()),
            }
        )
    df = pd.DataFrame(rows, columns=list(TRAJECTORY_COLUMNS))
    return df.astype(TRAJECTORY_COLUMNS)


def filter_step(name: str, unit: str, n_in: int, result: FilterResult) -> FilterStep:
    """One filter's row of a dataset report: counts in, kept, dropped by reason, a few examples each."""
    examples: dict[str, list[str]] = {}
    for d in result.dropped:
        bucket = examples.setdefault(d.reason, [])
        if len(bucket) < _EXAMPLES_PER_REASON:
            bucket.append(f"{d.id}: {d.detail}" if d.detail else d.id)
    return FilterStep(
        name=name,
        unit=unit,
        n_in=n_in,
        n_out=len(result.kept),
        dropped=result.reason_counts(),
        examples=dict(sorted(examples.items())),
    )


def pass_rate(num: int, den: int) -> float | None:
    """num / den, or None when nothing came in."""
    return num / den if den else None
