"""Quality gates: raw synthesized datasets in, filtered and validated datasets out.

    report = run_quality_gates(cfg.quality, Path("data/raw"), Path("data/gated"))

Per capability (deep_search, deep_research) the gate runs, in this order:
  1. near-duplicate task removal (MinHash on the question / the research prompt),
  2. trajectories of removed or unknown tasks dropped,
  3. repetition loops (n-gram prose loops, identical tool-call runs),
  4. citation enforcement (no citation of an unopened doc; research reports must cite),
  5. shortest successful trajectory per task,
then runs the expectation suites over the kept tasks and trajectories. Only if every suite passes
does it write OUT, all at once (a temp directory renamed into place):

    OUT/deep_search/{tasks,trajectories}.jsonl
    OUT/deep_research/{tasks,trajectories}.jsonl
    OUT/<capability>/{tasks,trajectories}.jsonl   for each capability dataset in RAW (quality/capabilities.py)
    OUT/quality_report.json   the QualityReport (counts per filter, drop reasons, suites, digest)
    OUT/manifest.json         sha256 per file, dataset digest, counts, sha256 of the RAW inputs

tasks.jsonl keeps every task that passed the task-level gate (near-duplicates), solved or not:
RL and evaluation can still use a task no synthesized attempt solved. Every trajectory written
refers to a task in the same directory. The digest covers the four data files only, so it names
the data: a rewording of the report does not change it.

If a suite fails, nothing is written and DataQualityError is raised with the QualityReport
attached as `error.report`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field

from deepresearch.agent.schema import Trajectory
from deepresearch.config import QualityConfig
from deepresearch.errors import DataQualityError
from deepresearch.io import atomic_dir, content_digest, file_sha256, sha256_bytes
from deepresearch.quality.expectations import (
    DEEP_RESEARCH_TASK_COLUMNS,
    DEEP_SEARCH_TASK_COLUMNS,
    TRAJECTORY_COLUMNS,
    SuiteResult,
    raise_if_failed,
    validate_dataset,
)
from deepresearch.quality.filters import (
    Drop,
    FilterResult,
    citation_report,
    drop_near_duplicate_tasks,
    drop_repetition_loops,
    final_answer,
    keep_shortest_successful,
    require_valid_citations,
)
from deepresearch.synthesis.schema import DeepSearchTask, ResearchTask

if TYPE_CHECKING:
    import pandas as pd

QUALITY_SCHEMA_VERSION = 1
DATASETS: dict[str, type[DeepSearchTask | ResearchTask]] = {
    "deep_search": DeepSearchTask,
    "deep_research": ResearchTask,
}
# The text compared for near-duplicates: what the agent is asked.
TASK_TEXT: dict[str, Callable[[DeepSearchTask | ResearchTask], str]] = {
    "deep_search": lambda t: t.question,  # type: ignore[union-attr]
    "deep_research": lambda t: t.prompt,  # type: ignore[union-attr]
}
TASKS_FILE = "tasks.jsonl"
TRAJECTORIES_FILE = "trajectories.jsonl"
DATA_FILES = tuple(f"{d}/{f}" for d in DATASETS for f in (TASKS_FILE, TRAJECTORIES_FILE))
REPORT_FILE = "quality_report.json"
MANIFEST_FILE = "manifest.json"
REASON_TASK_REMOVED = "task_removed"  # the trajectory's task was dropped as a near-duplicate
REASON_UNKNOWN_TASK = "unknown_task"  # the trajectory names a task not in tasks.jsonl
_EXAMPLES_PER_REASON = 3

T = TypeVar("T")


# ---- report -------------------------------------------------------------------------------------


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


class QualityReport(BaseModel):
    """Result of `run_quality_gates`; also written to OUT/quality_report.json when it passes."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = QUALITY_SCHEMA_VERSION
    passed: bool
    config: dict  # the QualityConfig used
    datasets: dict[str, DatasetReport]
    raw_sha256: dict[str, str]  # relative RAW path -> sha256 (lineage of the inputs)
    sha256: dict[str, str] = Field(default_factory=dict)  # relative OUT data file -> sha256 (empty if failed)
    digest: str | None = None  # sha256 over the OUT data files; None when nothing was written

    @property
    def suites(self) -> list[SuiteResult]:
        """Every suite result, dataset by dataset."""
        return [s for d in self.datasets.values() for s in d.suites]

    def summary(self) -> str:
        """A one-screen text summary: counts per step and suite status per dataset."""
        lines = [
            f"quality gates: {'PASSED' if self.passed else 'FAILED'}"
            + (f"  digest {self.digest}" if self.digest else "")
        ]
        for d in self.datasets.values():
            lines.append(
                f"  {d.name}: tasks {d.tasks_in} -> {d.tasks_out}, trajectories {d.trajectories_in} -> {d.trajectories_out}"
            )
            for s in d.steps:
                drops = ", ".join(f"{k}={v}" for k, v in s.dropped.items()) or "none dropped"
                lines.append(f"    {s.name:<22} {s.n_in:>6} -> {s.n_out:<6} ({drops})")
            for r in d.suites:
                status = "ok" if r.success else f"{len(r.failed)} failed"
                lines.append(f"    suite {r.name}: {len(r.expectations)} expectations, {status}")
        return "\n".join(lines)


# ---- loading ------------------------------------------------------------------------------------


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


def _check_unique_task_ids(path: Path, tasks: Sequence[DeepSearchTask | ResearchTask]) -> None:
    seen: dict[str, int] = {}
    for i, t in enumerate(tasks, 1):
        if t.task_id in seen:
            msg = f"{path}: task id {t.task_id!r} appears twice (records {seen[t.task_id]} and {i}); ids must be unique"
            raise DataQualityError(msg, failed=[msg])
        seen[t.task_id] = i


def load_raw(raw_dir: Path) -> dict[str, tuple[list, list[Trajectory]]]:
    """Load RAW: per dataset name, (tasks, trajectories) in file order.

    Raises:
        DataQualityError: RAW or one of its files is missing, a line is malformed (file:line), or a
            task id repeats.
    """
    if not raw_dir.is_dir():
        raise DataQualityError(
            f"raw dataset directory not found: {raw_dir} (run synthesis to produce it)",
            failed=[f"missing {raw_dir}"],
        )
    out = {}
    for name, task_model in DATASETS.items():
        tasks_path = raw_dir / name / TASKS_FILE
        tasks = read_jsonl(tasks_path, task_model)
        _check_unique_task_ids(tasks_path, tasks)
        out[name] = (tasks, read_jsonl(raw_dir / name / TRAJECTORIES_FILE, Trajectory))
    return out


# ---- frames -------------------------------------------------------------------------------------


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
    # Explicit dtypes so an empty frame has the same schema as a full one.
    ints = [
        "tool_calls",
        "tool_errors",
        "turns",
        "tokens",
        "n_citations",
        "n_invalid_citations",
        "answer_len",
    ]
    return df.astype({**{c: "int64" for c in ints}, "success": "bool", "citation_valid_rate": "float64"})


def task_frame(name: str, tasks: Sequence[DeepSearchTask | ResearchTask]) -> pd.DataFrame:
    """One row per task with the columns of that dataset's task suite."""
    import pandas as pd

    if name == "deep_search":
        rows = [
            {"task_id": t.task_id, "question": t.question, "answer": t.answer, "hops": t.hops} for t in tasks
        ]
        return pd.DataFrame(rows, columns=list(DEEP_SEARCH_TASK_COLUMNS)).astype({"hops": "int64"})
    rows = [
        {"task_id": t.task_id, "prompt": t.prompt, "domain": t.domain, "n_rubrics": len(t.rubrics)}
        for t in tasks
    ]
    return pd.DataFrame(rows, columns=list(DEEP_RESEARCH_TASK_COLUMNS)).astype({"n_rubrics": "int64"})


# ---- the gate -----------------------------------------------------------------------------------


def _step(name: str, unit: str, n_in: int, result: FilterResult) -> FilterStep:
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


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def _gate_dataset(
    name: str, tasks: list, trajs: list[Trajectory], cfg: QualityConfig
) -> tuple[list, list[Trajectory], DatasetReport]:
    steps: list[FilterStep] = []

    dedup = drop_near_duplicate_tasks(tasks, TASK_TEXT[name], cfg.minhash_threshold, cfg.minhash_num_perm)
    steps.append(_step("near_duplicate_tasks", "tasks", len(tasks), dedup))

    kept_ids = {t.task_id for t in dedup.kept}
    removed_ids = {d.id for d in dedup.dropped}
    member_kept: list[Trajectory] = []
    member_dropped: list[Drop] = []
    for t in trajs:
        if t.task_id in kept_ids:
            member_kept.append(t)
        elif t.task_id in removed_ids:
            member_dropped.append(
                Drop(t.trajectory_id, REASON_TASK_REMOVED, f"task {t.task_id} is a near-duplicate")
            )
        else:
            member_dropped.append(
                Drop(t.trajectory_id, REASON_UNKNOWN_TASK, f"task {t.task_id} not in {TASKS_FILE}")
            )
    membership = FilterResult(member_kept, member_dropped)
    steps.append(_step("task_membership", "trajectories", len(trajs), membership))

    rep = drop_repetition_loops(
        membership.kept, cfg.ngram_n, cfg.max_ngram_repeats, cfg.max_identical_tool_calls
    )
    steps.append(_step("repetition", "trajectories", len(membership.kept), rep))

    cites = require_valid_citations(rep.kept, cfg.require_citations)
    steps.append(_step("citations", "trajectories", len(rep.kept), cites))

    shortest = keep_shortest_successful(cites.kept)
    steps.append(_step("shortest_successful", "trajectories", len(cites.kept), shortest))

    report = DatasetReport(
        name=name,
        tasks_in=len(tasks),
        tasks_out=len(dedup.kept),
        trajectories_in=len(trajs),
        trajectories_out=len(shortest.kept),
        steps=steps,
        pass_rates={
            "tasks": _rate(len(dedup.kept), len(tasks)),
            "trajectories": _rate(len(shortest.kept), len(trajs)),
            # how often synthesis itself succeeded, before any filter
            "raw_success": _rate(sum(t.success is True for t in trajs), len(trajs)),
            # kept tasks that end up with a training trajectory
            "tasks_solved": _rate(len(shortest.kept), len(dedup.kept)),
        },
    )
    return dedup.kept, shortest.kept, report


def _dumps(model: BaseModel) -> str:
    return json.dumps(model.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)


def _jsonl_bytes(items: Sequence[BaseModel]) -> bytes:
    return "".join(_dumps(x) + "\n" for x in items).encode("utf-8")


def run_quality_gates(cfg: QualityConfig, raw_dir: Path, out_dir: Path) -> QualityReport:
    """Filter and validate the synthesized datasets in `raw_dir`; write them to `out_dir` if they pass.

    Args:
        cfg: the quality section of the pipeline config.
        raw_dir: synthesis output (see module docstring for the layout).
        out_dir: where the gated datasets go; replaced as a whole if it exists.
    Returns:
        The QualityReport (also written to out_dir/quality_report.json), with per-file sha256 and
        the dataset digest.
    Raises:
        DataQualityError: missing or malformed RAW input (names the file and line), or a failed
            expectation suite; in the latter case nothing is written and `error.report` holds the
            QualityReport listing what failed.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    raw = load_raw(raw_dir)
    raw_sha = {
        str(p.relative_to(raw_dir)): file_sha256(p)
        for p in sorted(raw_dir / f for f in (*DATA_FILES, MANIFEST_FILE))
        if p.is_file()
    }

    kept: dict[str, tuple[list, list[Trajectory]]] = {}
    reports: dict[str, DatasetReport] = {}
    for name, (tasks, trajs) in raw.items():
        kept_tasks, kept_trajs, rep = _gate_dataset(name, tasks, trajs, cfg)
        suites = [
            validate_dataset(
                f"{name}.trajectories",
                trajectory_frame(kept_trajs),
                cfg.expectations,
                require_citations=cfg.require_citations,
            ),
            validate_dataset(f"{name}.tasks", task_frame(name, kept_tasks), cfg.expectations),
        ]
        kept[name] = (kept_tasks, kept_trajs)
        reports[name] = rep.model_copy(update={"suites": suites})

    # the capability datasets (planning, subgraph questions, link walks, ...): quality/capabilities.py
    from deepresearch.quality.capabilities import gate_capabilities

    gated, cap_files = gate_capabilities(cfg, raw_dir)
    for name, (kept_tasks, kept_trajs, rep) in gated.items():
        kept[name], reports[name] = (kept_tasks, kept_trajs), rep
    raw_sha.update({rel: file_sha256(raw_dir / rel) for rel in cap_files})
    raw_sha = dict(sorted(raw_sha.items()))

    passed = all(s.success for r in reports.values() for s in r.suites)
    report = QualityReport(
        passed=passed, config=cfg.model_dump(mode="json"), datasets=reports, raw_sha256=raw_sha
    )
    if not passed:
        try:
            raise_if_failed(report.suites, hint=f"Nothing was written to {out_dir}; see error.report.")
        except DataQualityError as e:
            e.report = report  # type: ignore[attr-defined]
            raise

    files: dict[str, bytes] = {}
    for name, (kept_tasks, kept_trajs) in kept.items():
        files[f"{name}/{TASKS_FILE}"] = _jsonl_bytes(kept_tasks)
        files[f"{name}/{TRAJECTORIES_FILE}"] = _jsonl_bytes(kept_trajs)
    data_sha = {rel: sha256_bytes(data) for rel, data in files.items()}
    digest = content_digest(data_sha)
    report = report.model_copy(update={"sha256": data_sha, "digest": digest})

    files[REPORT_FILE] = (
        json.dumps(report.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    ).encode()
    manifest = {
        "schema_version": QUALITY_SCHEMA_VERSION,
        "digest": digest,  # over the data files only (see module docstring)
        "sha256": {rel: sha256_bytes(data) for rel, data in sorted(files.items())},
        "counts": {
            name: {"tasks": len(kept_tasks), "trajectories": len(kept_trajs)}
            for name, (kept_tasks, kept_trajs) in kept.items()
        },
        "source_sha256": raw_sha,
    }
    files[MANIFEST_FILE] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    if out_dir.exists() and not out_dir.is_dir():
        raise DataQualityError(f"output path {out_dir} exists and is not a directory; remove it or pick another")
    with atomic_dir(out_dir) as tmp:
        for rel, data in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
    return report
