"""Expectation suites (great-expectations 1.x) of the capability datasets: `<name>.tasks` and
`<name>.trajectories` for each dataset of synthesis/capabilities.py (text pairs: tasks only).

Each trajectory suite is the deep-search trajectory suite (quality/expectations.py) plus the
capability's own expectations; the frames are built by quality/capabilities.py. Registered into
`quality.expectations.SUITES`, so `validate_dataset("planning.tasks", df, cfg)` works like the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deepresearch.config import ExpectationConfig

SuiteBuilder = Callable[[ExpectationConfig, bool], list[Any]]


def _E():
    import great_expectations as gx

    return gx.expectations


def _task_base(E, cfg: ExpectationConfig) -> list[Any]:
    return [
        # Too few rows means synthesis or the filters removed almost everything: stop before training.
        E.ExpectTableRowCountToBeBetween(min_value=cfg.min_rows),
        # Trajectories reference tasks by id; a repeated id makes that join ambiguous.
        E.ExpectColumnValuesToBeUnique(column="task_id"),
        # An empty prompt cannot be asked.
        E.ExpectColumnValueLengthsToBeBetween(column="prompt", min_value=1),
        # The held-out split is checked on targets (synthesis/split.py); a task without one cannot be placed.
        E.ExpectColumnValuesToNotBeNull(column="target"),
    ]


def _question_extras(E) -> list[Any]:
    return [
        # A gold answer that is empty cannot be graded.
        E.ExpectColumnValueLengthsToBeBetween(column="answer", min_value=1),
        # The difficulty filter keeps only what the reference solver could not answer.
        E.ExpectColumnValuesToBeInSet(column="solver_solved", value_set=[False]),
    ]


def _tasks(name: str) -> SuiteBuilder:
    def build(cfg: ExpectationConfig, require_citations: bool) -> list[Any]:
        E = _E()
        out = _task_base(E, cfg)
        if name == "planning":
            # A plan is a decomposition: one step would be a lookup, and each section needs its step.
            out += [E.ExpectColumnValuesToBeBetween(column="n_plan_steps", min_value=2),
                    E.ExpectColumnPairValuesToBeEqual(column_A="n_plan_steps", column_B="n_sections")]
        elif name == "deep_search_subgraph":
            out += _question_extras(E) + [
                # The capability is intersecting constraints: at least two, each necessary on its own.
                E.ExpectColumnValuesToBeBetween(column="n_constraints", min_value=2),
                E.ExpectColumnValuesToBeBetween(column="min_candidates", min_value=2),
                # Questions come from a sampled subgraph, not from a single chain.
                E.ExpectColumnValuesToBeBetween(column="n_nodes", min_value=3),
            ]
        elif name == "wiki_walk":
            out += _question_extras(E) + [
                # The answer combines evidence from two linked pages at least.
                E.ExpectColumnValuesToBeBetween(column="n_evidence_pages", min_value=2),
                E.ExpectColumnValuesToBeBetween(column="hops", min_value=1),
            ]
        elif name == "verification":
            out += [
                # The planted conflict must be resolvable: the reference page has higher authority and is newer.
                E.ExpectColumnValuesToBeBetween(column="authority_margin", min_value=0.0, strict_min=True),
                E.ExpectColumnValuesToBeBetween(column="year_margin", min_value=1),
                # A draft of one claim has nothing to cross-check.
                E.ExpectColumnValuesToBeBetween(column="n_draft_claims", min_value=2),
            ]
        elif name == "query_report":
            # A report of a few words teaches nothing about report writing; each pair names its sources.
            out += [E.ExpectColumnValuesToBeBetween(column="report_len", min_value=50),
                    E.ExpectColumnValuesToBeBetween(column="n_sources", min_value=1)]
        elif name == "url_qa":
            out += [E.ExpectColumnValueLengthsToBeBetween(column="answer", min_value=1)]
        elif name == "long_summary":
            # Several pages, so the observation overflows into summary-aware storage.
            out += [E.ExpectColumnValuesToBeBetween(column="n_pages", min_value=2)]
        return out

    return build


def _trajectories(name: str, base: Callable[[str], SuiteBuilder]) -> SuiteBuilder:
    def build(cfg: ExpectationConfig, require_citations: bool) -> list[Any]:
        E = _E()
        out = base(name)(cfg, require_citations)
        if require_citations and name in ("planning", "verification", "long_summary"):
            # These answers are reports judged on cited evidence (short-answer families cite in the thought).
            out.append(E.ExpectColumnValuesToBeBetween(column="n_citations", min_value=1))
        if name == "planning":
            # The trajectory-consistency filter keeps only trajectories that followed the preset plan.
            out.append(E.ExpectColumnValuesToBeInSet(column="plan_consistent", value_set=[True]))
        if name == "verification":
            # Every verification trajectory detects its planted conflict and resolves it correctly.
            out.append(E.ExpectColumnValuesToBeInSet(column="conflict_resolved", value_set=[True]))
        if name == "long_summary":
            # The family exists to teach reading a stored long output back with the file tool.
            out.append(E.ExpectColumnValuesToBeInSet(column="read_stored_output", value_set=[True]))
        return out

    return build


CAPABILITIES = ("planning", "deep_search_subgraph", "wiki_walk", "verification", "query_report", "url_qa",
                "long_summary")


def capability_suites(trajectory_suite: Callable[[str], SuiteBuilder]) -> dict[str, SuiteBuilder]:
    """Every capability dataset's suites, keyed "<name>.tasks" / "<name>.trajectories"; a trajectory
    suite is `trajectory_suite(name)` (the deep-search one, `quality.expectations`) plus its own checks."""
    suites: dict[str, SuiteBuilder] = {}
    for name in CAPABILITIES:
        suites[f"{name}.tasks"] = _tasks(name)
        if name != "query_report":
            suites[f"{name}.trajectories"] = _trajectories(name, trajectory_suite)
    return suites
