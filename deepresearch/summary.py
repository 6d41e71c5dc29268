"""The one-screen summary printed at the end of a pipeline run (and returned as markdown).

Every stage task returns one record (`stage_record`): its name, its wall seconds, the execution and
parent run it ran under, and what it produced. The summary is a table of those records, one row per
stage in pipeline order, plus the evaluation table when a record carries per-checkpoint metrics. A
cached task hands on the record of the execution that produced it, so a record of another execution
(or parent run) is a cached stage (`cached`): its row says so, and the parent run, which ends up
holding the summary (`log_summary`), links the earlier run that stage's output comes from.

    record = stage_record("sft", 73.2, execution_id=ex, parent_run_id=parent,
                          produced="60 steps, loss 4.09 → 2.35")
    text = render_summary(cfg, parent_run_id=..., stage_summaries=[record, ...], stage_run_ids=[...], ...)
    log_summary(cfg, parent_run_id=..., text=text, stage_summaries=[record, ...], ...)
"""

from __future__ import annotations

import json
from typing import Any

from deepresearch.config import PipelineConfig
from deepresearch.tracking import tracking_uri

NOTE_CHARS = 8000  # MLflow's longest tag value: the run description holds the summary up to this


def stage_record(stage: str, seconds: float, *, execution_id: str, parent_run_id: str, **facts: Any) -> str:
    """One stage's row of the summary as JSON.

    Args:
        stage: the stage's name (its MLflow child run's `stage` tag).
        seconds: wall time of the stage: its library call, and for the torch-elastic training stages
            the whole life of the worker process (start-up included); never Flyte's scheduling. A
            cached task keeps the record of the execution that produced it.
        execution_id, parent_run_id: the workflow execution and MLflow parent run the stage ran under
            (its `RunContext`'s); in a later execution that reuses its cached output, they tell that the
            stage was cached (`cached`). Both, as two local executions in one process share an execution
            id (`tasks.common.execution_id`) and untracked ones share the parent run "".
        facts: what the table shows: `produced` (a short line), or the data stages' `counts` /
            `datasets` from their manifests; `checkpoints` (`CheckpointMetrics` as JSON, in order),
            `differences` (`Difference`s), `probe` (name → kind → [spans, correct]) and `confidence`
            (of the intervals) for the evaluation tables. Anything else is kept in the record for readers of the JSON.
    """
    ran = {"execution_id": execution_id, "parent_run_id": parent_run_id}
    return json.dumps({"stage": stage, "seconds": round(seconds, 2), **ran, **facts}, sort_keys=True)


def cached(record: dict, execution_id: str, parent_run_id: str) -> bool:
    """Whether a stage's record (`stage_record`, parsed) came from the cache in the execution `execution_id`
    with the parent run `parent_run_id`: another execution or parent run produced it (a record without
    them predates them, so it came from the cache too)."""
    return (record.get("execution_id"), record.get("parent_run_id")) != (execution_id, parent_run_id)


def _produced(s: dict) -> str:
    if "produced" in s:
        return s["produced"]
    if "counts" in s:
        return "; ".join(
            f"{k}: {v.get('tasks', '?')} tasks / {v.get('trajectories', '?')} traj" if isinstance(v, dict)
            else f"{v} {k}"
            for k, v in s["counts"].items()
        )
    if "datasets" in s:
        return "; ".join(
            f"{name}: {d.get('tasks', d.get('kept', '?'))} tasks / {d.get('trajectories', d.get('kept', '?'))} traj"
            + (f" ({d['success_rate']:.0%} ok)" if "success_rate" in d else "")
            for name, d in s["datasets"].items()
        )
    return ""


def _evaluation_tables(record: dict) -> list:
    """The evaluation stage's tables (intervals, paired differences, probe) from its record."""
    from deepresearch.evaluation.metrics import CheckpointMetrics, Difference
    from deepresearch.evaluation.probe import ProbeScore
    from deepresearch.evaluation.report import metric_tables

    # in the evaluation's (pipeline) order, which the list keeps (a record's dict keys come back sorted)
    checkpoints = [CheckpointMetrics.model_validate(m) for m in record["checkpoints"]]
    diffs = [Difference.model_validate(d) for d in record.get("differences", [])]
    rank = {c.name: i for i, c in enumerate(checkpoints)}
    probe = {name: {k: ProbeScore(k, n, ok) for k, (n, ok) in kinds.items()}
             for name, kinds in sorted(record.get("probe", {}).items(), key=lambda kv: rank.get(kv[0], len(rank)))}
    return metric_tables(checkpoints, diffs, probe, confidence=record.get("confidence", 0.95))


def render_summary(
    cfg: PipelineConfig,
    *,
    parent_run_id: str,
    world_dir: str,
    datasets_dir: str,
    stage_summaries: list[str],
    stage_run_ids: list[str],
    execution_id: str,
) -> str:
    """Print a rich summary of what was produced and where; return the same as markdown.

    Args:
        parent_run_id, execution_id: this execution's (`RunContext`); a stage whose record names others
            came from the cache, and its row says "(cached)".
        stage_summaries: one `stage_record` per stage, in pipeline order.
        stage_run_ids: each stage's MLflow child run ("" when tracking is off), in the same order.
    """
    from rich.console import Console
    from rich.table import Table

    stages = [json.loads(s) for s in stage_summaries]
    evaluation = next((s["checkpoints"] for s in stages if "checkpoints" in s), None)
    table = Table(title=f"deepresearch pipeline '{cfg.name}' (config {cfg.hash}, execution {execution_id})")
    for col in ("stage", "seconds", "produced", "MLflow run"):
        table.add_column(col)
    md = [
        f"# Pipeline `{cfg.name}` — config `{cfg.hash}`, execution `{execution_id}`",
        "",
        "| stage | seconds | produced | MLflow run |",
        "|---|---|---|---|",
    ]
    for s, run_id in zip(stages, stage_run_ids, strict=True):
        produced = _produced(s)
        if cached(s, execution_id, parent_run_id):  # its seconds and run are the producing execution's
            produced = f"(cached) {produced}"
        table.add_row(s["stage"], f"{s['seconds']:.1f}", produced, run_id or "-")
        md.append(f"| {s['stage']} | {s['seconds']:.1f} | {produced} | {run_id or '-'} |")
    eval_tables = []
    if evaluation:
        eval_tables = _evaluation_tables(next(s for s in stages if "checkpoints" in s))
        for title, header, rows in eval_tables:
            md += ["", f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            md += ["| " + " | ".join(r) + " |" for r in rows]
    uri = tracking_uri(cfg.tracking)
    report = next((s["report"] for s in stages if "report" in s), None)
    where = [
        f"world:    {world_dir}",
        f"datasets: {datasets_dir}",
        *([f"report:   {report}  (report.html beside it: the evaluation task's Flyte Deck)"] if report else []),
        f"MLflow:   {uri}  (parent run {parent_run_id or 'disabled'}, experiment '{cfg.tracking.experiment}')",
        f"browse:   mlflow ui --backend-store-uri {uri}",
    ]
    from deepresearch.evaluation.report import PRINT_WIDTH, print_tables

    console = Console()
    if not console.is_terminal:  # a log file or a pipe: rich would assume 80 columns
        console = Console(width=PRINT_WIDTH)
    console.print(table)
    if eval_tables:  # printed here only: the evaluation stage does not print them
        print_tables(eval_tables, console)
    for line in where:  # whole, however long: paths and a command to copy
        console.print(line, soft_wrap=True, highlight=False)
    md += ["", *[f"- {line}" for line in where]]
    return "\n".join(md) + "\n"


def log_summary(
    cfg: PipelineConfig,
    *,
    parent_run_id: str,
    text: str,
    stage_summaries: list[str],
    stage_run_ids: list[str],
    execution_id: str,
) -> None:
    """Put the summary on the pipeline's parent run (nothing when tracking is off).

    The run gets `text` (the markdown `render_summary` returned) as the artifact `summary.md` and as its
    description (`mlflow.note.content`, shown on the run's page), the records as `summary.json`, and a tag
    per stage linking the run its output comes from: `stage.<stage>.run_id`, and `stage.<stage>.cached`
    "true" when a cache hit handed on an earlier execution's output (its run is then a child of that
    execution's parent run, not of this one); `cached_stages` lists those.

    Args:
        stage_summaries, stage_run_ids, execution_id: as for `render_summary`.
    """
    from deepresearch.tracking import get_tracker

    run = get_tracker(cfg, parent_run_id)
    if run.run_id is None:
        return
    stages = [
        {**record, "run_id": run_id, "cached": cached(record, execution_id, parent_run_id)}
        for record, run_id in zip(map(json.loads, stage_summaries), stage_run_ids, strict=True)
    ]
    note = text if len(text) <= NOTE_CHARS else text[: NOTE_CHARS - 40] + "\n\n… (the rest: summary.md)\n"
    tags = {"mlflow.note.content": note, "cached_stages": ",".join(s["stage"] for s in stages if s["cached"])}
    for s in stages:
        tags[f"stage.{s['stage']}.run_id"] = s["run_id"]
        tags[f"stage.{s['stage']}.cached"] = str(s["cached"]).lower()
    run.set_tags(tags)
    run.log_text(text, "summary.md")
    run.log_dict({"execution_id": execution_id, "config_hash": cfg.hash, "stages": stages}, "summary.json")
