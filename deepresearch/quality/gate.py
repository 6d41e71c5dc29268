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
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from deepresearch.agent.schema import Trajectory
from deepresearch.config import QualityConfig
from deepresearch.errors import DataQualityError
from deepresearch.io import atomic_dir, content_digest, file_sha256, sha256_bytes
from deepresearch.quality.expectations import (
    DEEP_RESEARCH_TASK_COLUMNS,
    DEEP_SEARCH_TASK_COLUMNS,
    SuiteResult,
    raise_if_failed,
    validate_dataset,
)
from deepresearch.quality.filters import (
    Drop,
    FilterResult,
    drop_near_duplicate_tasks,
    drop_repetition_loops,
    keep_shortest_successful,
    require_valid_citations,
)
from deepresearch.quality.records import (
    REASON_TASK_REMOVED,
    REASON_UNKNOWN_TASK,
    TASKS_FILE,
    TRAJECTORIES_FILE,
    DatasetReport,
    FilterStep,
    check_unique_task_ids,
    filter_step,
    pass_rate,
    read_jsonl,
    trajectory_frame,
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
DATA_FILES = tuple(f"{d}/{f}" for d in DATASETS for f in (TASKS_FILE, TRAJECTORIES_FILE))
REPORT_FILE = "quality_report.json"
MANIFEST_FILE = "manifest.json"


# ---- report -------------------------------------------------------------------------------------


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
        check_unique_task_ids(tasks_path, tasks)
        out[name] = (tasks, read_jsonl(raw_dir / name / TRAJECTORIES_FILE, Trajectory))
    return out


# ---- frames -------------------------------------------------------------------------------------


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


def _gate_dataset(
    name: str, tasks: list, trajs: list[Trajectory], cfg: QualityConfig
) -> tuple[list, list[Trajectory], DatasetReport]:
    steps: list[FilterStep] = []

    dedup = drop_near_duplicate_tasks(tasks, TASK_TEXT[name], cfg.minhash_threshold, cfg.minhash_num_perm)
    steps.append(filter_step("near_duplicate_tasks", "tasks", len(tasks), dedup))

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
    steps.append(filter_step("task_membership", "trajectories", len(trajs), membership))

    rep = drop_repetition_loops(
        membership.kept, cfg.ngram_n, cfg.max_ngram_repeats, cfg.max_identical_tool_calls
    )
    steps.append(filter_step("repetition", "trajectories", len(membership.kept), rep))

    cites = require_valid_citations(rep.kept, cfg.require_citations)
    steps.append(filter_step("citations", "trajectories", len(rep.kept), cites))

    shortest = keep_shortest_successful(cites.kept)
    steps.append(filter_step("shortest_successful", "trajectories", len(cites.kept), shortest))

    report = DatasetReport(
        name=name,
        tasks_in=len(tasks),
        tasks_out=len(dedup.kept),
        trajectories_in=len(trajs),
        trajectories_out=len(shortest.kept),
        steps=steps,
        pass_rates={
            "tasks": pass_rate(len(dedup.kept), len(tasks)),
            "trajectories": pass_rate(len(shortest.kept), len(trajs)),
            # how often synthesis itself succeeded, before any filter
            "raw_success": pass_rate(sum(t.success is True for t in trajs), len(trajs)),
            # kept tasks that end up with a training trajectory
            "tasks_solved": pass_rate(len(shortest.kept), len(dedup.kept)),
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
