"""Expectation suites (great-expectations 1.x, called directly) over the gated datasets.

One suite per table: the kept trajectories of each capability (one row per trajectory, see
`TRAJECTORY_COLUMNS`) and the kept tasks of each capability. Every expectation carries a comment
saying why it exists. Run one:

    result = validate_dataset("deep_search.trajectories", df, cfg.quality.expectations)
    raise_if_failed([result])  # DataQualityError listing each failed expectation

great_expectations is imported inside `validate_dataset` (it takes seconds to import); each call
builds a cheap ephemeral context with progress bars and analytics off.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from deepresearch.config import ExpectationConfig
from deepresearch.errors import DataQualityError

if TYPE_CHECKING:
    import pandas as pd

# One row per kept trajectory (built by the gate): column -> pandas dtype, in the DataFrame's column order
# (explicit dtypes, so an empty frame has the same schema as a full one).
TRAJECTORY_COLUMNS: dict[str, str] = {
    "task_id": "object",
    "trajectory_id": "object",
    "capability": "object",
    "outcome": "object",
    "success": "bool",
    "tool_calls": "int64",
    "tool_errors": "int64",
    "turns": "int64",
    "tokens": "int64",
    "n_citations": "int64",
    "n_invalid_citations": "int64",
    "citation_valid_rate": "float64",  # NaN when nothing is cited (the expectation skips it)
    "answer_len": "int64",
}
DEEP_SEARCH_TASK_COLUMNS = ("task_id", "question", "answer", "hops")
DEEP_RESEARCH_TASK_COLUMNS = ("task_id", "prompt", "domain", "n_rubrics")

_KWARGS_NOT_SHOWN = {"batch_id", "column", "meta", "notes", "result_format", "catch_exceptions"}


class ExpectationOutcome(BaseModel):
    """The result of one expectation, flattened to JSON-safe values for reports."""

    model_config = ConfigDict(frozen=True)

    type: str  # e.g. "expect_column_values_to_be_between"
    column: str | None  # None for table-level expectations
    expected: str  # the expectation's arguments, e.g. "min_value=0, max_value=40"
    success: bool
    observed: str  # observed value, unexpected count + examples, or the error raised

    def line(self, suite: str) -> str:
        """One-line description used in error messages."""
        where = f"column {self.column!r}" if self.column else "table"
        return f"{suite}: {self.type} on {where} ({self.expected}) failed: observed {self.observed}"


class SuiteResult(BaseModel):
    """All expectation outcomes of one suite, in the order the suite declares them."""

    model_config = ConfigDict(frozen=True)

    name: str
    success: bool
    n_rows: int
    expectations: list[ExpectationOutcome]

    @property
    def failed(self) -> list[ExpectationOutcome]:
        """The outcomes that did not pass."""
        return [e for e in self.expectations if not e.success]


# ---- suites -------------------------------------------------------------------------------------


def _trajectory_suite(capability: str) -> Callable[[ExpectationConfig, bool], list[Any]]:
    def build(cfg: ExpectationConfig, require_citations: bool) -> list[Any]:
        import great_expectations as gx

        E = gx.expectations
        out = [
            # Training and the report read these columns by name; a missing one is a gate bug.
            E.ExpectTableColumnsToMatchSet(column_set=list(TRAJECTORY_COLUMNS), exact_match=False),
            # Too few rows means synthesis or the filters removed almost everything: stop before training.
            E.ExpectTableRowCountToBeBetween(min_value=cfg.min_rows),
            # Shortest-successful keeps one trajectory per task; two would overweight that task in SFT.
            E.ExpectColumnValuesToBeUnique(column="task_id"),
            # Lineage from a training example back to its synthesis run goes through this id.
            E.ExpectColumnValuesToNotBeNull(column="trajectory_id"),
            # The same trajectory twice would be a duplicated SFT example.
            E.ExpectColumnValuesToBeUnique(column="trajectory_id"),
            # Only verified-correct attempts teach the policy; `mostly` allows a configured tolerance.
            E.ExpectColumnValuesToBeInSet(column="success", value_set=[True], mostly=cfg.min_success_rate),
            # A trajectory that ran out of budget or crashed ends without a real answer.
            E.ExpectColumnValuesToBeInSet(column="outcome", value_set=["answered"]),
            # Each file holds one capability; a stray row would be trained with the wrong data mix.
            E.ExpectColumnValuesToBeInSet(column="capability", value_set=[capability]),
            # Beyond the agent's tool budget the trajectory cannot be reproduced at rollout time.
            E.ExpectColumnValuesToBeBetween(column="tool_calls", min_value=0, max_value=cfg.max_tool_calls),
            # Citations must point at opened documents (NaN = nothing cited, skipped by GX).
            E.ExpectColumnValuesToBeBetween(
                column="citation_valid_rate", min_value=cfg.min_citation_valid_rate, max_value=1.0
            ),
            # An empty final answer teaches the model to stop without answering.
            E.ExpectColumnValuesToBeBetween(column="answer_len", min_value=1),
        ]
        if require_citations and capability == "deep_research":
            # Research reports are judged on cited evidence; an uncited report is not a usable target.
            out.append(E.ExpectColumnValuesToBeBetween(column="n_citations", min_value=1))
        return out

    return build


def _deep_search_task_suite(cfg: ExpectationConfig, require_citations: bool) -> list[Any]:
    import great_expectations as gx

    E = gx.expectations
    return [
        # The gate and training join trajectories to tasks on these columns.
        E.ExpectTableColumnsToMatchSet(column_set=list(DEEP_SEARCH_TASK_COLUMNS), exact_match=False),
        # Trajectories reference tasks by id; a repeated id makes that join ambiguous.
        E.ExpectColumnValuesToBeUnique(column="task_id"),
        # A question or gold answer that is empty cannot be asked or graded.
        E.ExpectColumnValueLengthsToBeBetween(column="question", min_value=1),
        E.ExpectColumnValueLengthsToBeBetween(column="answer", min_value=1),
        # Deep search means multi-hop; a 0-hop "question" is a lookup.
        E.ExpectColumnValuesToBeBetween(column="hops", min_value=1),
    ]


def _deep_research_task_suite(cfg: ExpectationConfig, require_citations: bool) -> list[Any]:
    import great_expectations as gx

    E = gx.expectations
    return [
        # The gate and the evaluator join on these columns.
        E.ExpectTableColumnsToMatchSet(column_set=list(DEEP_RESEARCH_TASK_COLUMNS), exact_match=False),
        # Trajectories and judge data reference tasks by sample id.
        E.ExpectColumnValuesToBeUnique(column="task_id"),
        # An empty prompt cannot be researched.
        E.ExpectColumnValueLengthsToBeBetween(column="prompt", min_value=1),
        # Without rubric items a report cannot be scored by the judge or the compliance metric.
        E.ExpectColumnValuesToBeBetween(column="n_rubrics", min_value=1),
    ]


SUITES: dict[str, Callable[[ExpectationConfig, bool], list[Any]]] = {
    "deep_search.trajectories": _trajectory_suite("deep_search"),
    "deep_research.trajectories": _trajectory_suite("deep_research"),
    "deep_search.tasks": _deep_search_task_suite,
    "deep_research.tasks": _deep_research_task_suite,
}

# The capability datasets' suites (planning, deep_search_subgraph, wiki_walk, verification, ...).
from deepresearch.quality.capability_suites import capability_suites  # noqa: E402

SUITES.update(capability_suites(_trajectory_suite))


# ---- running a suite ----------------------------------------------------------------------------


def _short(value: Any, limit: int = 200) -> str:
    text = str(value.item() if hasattr(value, "item") else value)  # numpy scalars print as np.int64(3)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _observed(result: Any) -> str:
    """A readable observed value from a GX ExpectationValidationResult."""
    info = result.exception_info or {}
    # GX nests exception info by metric id when a metric fails to compute (e.g. a missing column).
    errors = [info] if "exception_message" in info else [v for v in info.values() if isinstance(v, dict)]
    messages = sorted({e["exception_message"] for e in errors if e.get("raised_exception")})
    if messages:
        return "error: " + _short("; ".join(messages))
    res = result.result or {}
    if "observed_value" in res:
        extra = res.get("details", {}).get("mismatched")
        return _short(res["observed_value"]) + (f" (mismatched: {_short(extra)})" if extra else "")
    if "unexpected_count" in res:
        examples = [_short(v, 40) for v in res.get("partial_unexpected_list", [])[:5]]
        counts = f"{res['unexpected_count']} of {res.get('element_count')} rows unexpected"
        return f"{counts}, e.g. {examples}" if examples else counts
    return _short(res)


def validate_dataset(
    name: str, df: pd.DataFrame, cfg: ExpectationConfig, *, require_citations: bool = True
) -> SuiteResult:
    """Run the named expectation suite over a DataFrame.

    Args:
        name: one of SUITES ("deep_search.trajectories", "deep_research.trajectories",
            "deep_search.tasks", "deep_research.tasks").
        df: the table (columns as in TRAJECTORY_COLUMNS or the task column lists).
        cfg: thresholds (min_rows, max_tool_calls, min_citation_valid_rate, min_success_rate).
        require_citations: add the "research trajectories cite ≥1 doc" expectation.
    Returns:
        SuiteResult with each expectation's outcome in suite order.
    Raises:
        ValueError: `name` is not a known suite (the message lists the valid names).
    """
    if name not in SUITES:
        raise ValueError(f"unknown expectation suite {name!r}; valid suites: {sorted(SUITES)}")
    # Set before the import: GX reads it when a context starts, and no data should leave the machine.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # Progress bars come from the context the validator finds; a dozen tqdm bars per suite is noise.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = (
        context.data_sources.add_pandas(name)
        .add_dataframe_asset(f"{name}.frame")
        .add_batch_definition_whole_dataframe(f"{name}.whole")
    )
    batch = batch_def.get_batch(batch_parameters={"dataframe": df})

    suite = gx.ExpectationSuite(name=name)
    expectations = SUITES[name](cfg, require_citations)
    for i, exp in enumerate(expectations):
        # GX reorders results (failed metrics first); the index in meta restores suite order.
        exp.meta = {**(exp.meta or {}), "order": i}
        suite.add_expectation(exp)
    validation = batch.validate(suite)

    outcomes: list[tuple[int, ExpectationOutcome]] = []
    for r in validation.results:
        conf = r.expectation_config
        kwargs = {k: v for k, v in conf.kwargs.items() if k not in _KWARGS_NOT_SHOWN and v is not None}
        outcomes.append(
            (
                int(conf.meta["order"]),
                ExpectationOutcome(
                    type=conf.type,
                    column=conf.kwargs.get("column"),
                    expected=", ".join(f"{k}={_short(v, 80)}" for k, v in sorted(kwargs.items())),
                    success=bool(r.success),
                    observed=_observed(r),
                ),
            )
        )
    ordered = [o for _, o in sorted(outcomes, key=lambda p: p[0])]
    return SuiteResult(
        name=name, success=all(o.success for o in ordered), n_rows=len(df), expectations=ordered
    )


def raise_if_failed(results: Sequence[SuiteResult], hint: str = "") -> None:
    """Raise DataQualityError listing every failed expectation of every suite; return if all pass.

    Args:
        results: suite results, e.g. one per dataset.
        hint: appended to the message (e.g. what the caller did or did not write).
    Raises:
        DataQualityError: message has one line per failed expectation (suite, type, column,
            arguments, observed value); `.failed` holds the same lines.
    """
    failed = [o.line(r.name) for r in results for o in r.failed]
    if not failed:
        return
    suites = sorted({r.name for r in results if not r.success})
    message = (
        f"{len(failed)} expectation(s) failed in suite(s) {', '.join(suites)}:\n"
        + "\n".join(f"  - {line}" for line in failed)
        + "\nFix synthesis or relax quality.expectations in the config."
        + (f" {hint}" if hint else "")
    )
    raise DataQualityError(message, failed=failed)
