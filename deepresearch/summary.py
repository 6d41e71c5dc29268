"""The one-screen summary printed at the end of a pipeline run (and returned as markdown)."""

from __future__ import annotations

import json

from deepresearch.config import PipelineConfig
from deepresearch.tracking import tracking_uri


def render_summary(
    cfg: PipelineConfig,
    *,
    parent_run_id: str,
    world_dir: str,
    datasets_dir: str,
    stage_summaries: list[str],
    stage_run_ids: list[str],
    execution_id: str,
    evaluation: str = "",
) -> str:
    """Print a rich summary of what was produced and where; return the same as markdown."""
    from rich.console import Console
    from rich.table import Table

    stages = [json.loads(s) for s in stage_summaries]
    table = Table(title=f"deepresearch pipeline '{cfg.name}' (config {cfg.hash}, execution {execution_id})")
    for col in ("stage", "seconds", "produced", "MLflow run"):
        table.add_column(col)
    md = [
        f"# Pipeline `{cfg.name}` — config `{cfg.hash}`, execution `{execution_id}`",
        "",
        "| stage | seconds | produced | MLflow run |",
        "|---|---|---|---|",
    ]
    for s, run_id in zip(stages, stage_run_ids):
        if "counts" in s:
            produced = "; ".join(
                f"{k}: {v.get('tasks', '?')} tasks / {v.get('trajectories', '?')} traj" if isinstance(v, dict)
                else f"{v} {k}"
                for k, v in s["counts"].items()
            )
        elif "datasets" in s:
            produced = "; ".join(
                f"{name}: {d.get('tasks', d.get('kept', '?'))} tasks / {d.get('trajectories', d.get('kept', '?'))} traj"
                + (f" ({d['success_rate']:.0%} ok)" if "success_rate" in d else "")
                for name, d in s["datasets"].items()
            )
        else:
            produced = ""
        table.add_row(s["stage"], f"{s['seconds']:.1f}", produced, run_id or "-")
        md.append(f"| {s['stage']} | {s['seconds']:.1f} | {produced} | {run_id or '-'} |")
    if evaluation:
        ev = Table(title="evaluation on held-out tasks")
        cols = ("checkpoint", "well-formed", "EM", "F1", "compliance", "judge compl.", "tool calls", "tokens", "s/episode")
        for col in cols:
            ev.add_column(col)
        md += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for name, m in json.loads(evaluation).items():
            jc = m.get("judge_compliance")
            row = [name, f"{m['well_formed_rate']:.0%}", f"{m['exact_match']:.2f}", f"{m['f1']:.2f}",
                   f"{m['compliance']:.3f}", "-" if jc is None else f"{jc:.3f}", f"{m['mean_tool_calls']:.1f}",
                   f"{m['mean_tokens']:.0f}", f"{m['mean_wall_s']:.1f}"]
            ev.add_row(*row)
            md.append("| " + " | ".join(row) + " |")
    uri = tracking_uri(cfg.tracking)
    where = [
        f"world:    {world_dir}",
        f"datasets: {datasets_dir}",
        f"MLflow:   {uri}  (parent run {parent_run_id or 'disabled'}, experiment '{cfg.tracking.experiment}')",
        f"browse:   mlflow ui --backend-store-uri {uri}",
    ]
    console = Console()
    console.print(table)
    if evaluation:
        console.print(ev)
    for line in where:
        console.print(line)
    md += ["", *[f"- {line}" for line in where]]
    return "\n".join(md) + "\n"
