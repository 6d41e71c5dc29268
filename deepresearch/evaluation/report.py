"""The evaluation report: markdown + a self-contained HTML page (for a Flyte Deck) + PNG plots.

    results = EvalResults(
        checkpoints=[CheckpointEval.from_summaries("rl", compliance=c, accuracy=a, cost=k), ...],
        elo=elo_with_ci(scores),
        curves={"sft/loss": [(step, value), ...], "rl/reward": [...]},
    )
    md_path = write_report(results, Path("out/eval/report"))

Writes into `out_dir` (each file via a temp file + rename, the markdown last, so a present
report.md means a complete report):
    scores.png   per-checkpoint compliance (and binary), deep-search EM and F1 bars
    elo.png      Elo ratings with their bootstrap intervals (when `elo` is given)
    curves.png   one panel per metric series (when `curves` is given)
    results.json the EvalResults as JSON
    report.html  tables + the plots embedded as base64 (Flyte Deck: `Deck("evaluation", html)`)
    report.md    tables + the plots as relative image links
Plots are drawn with matplotlib's Agg canvas (`matplotlib.figure.Figure`; pyplot's global state
is never touched).
"""

from __future__ import annotations

import base64
import html
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deepresearch.evaluation.accuracy import AccuracySummary
from deepresearch.evaluation.compliance import ComplianceSummary
from deepresearch.evaluation.cost import CostSummary
from deepresearch.evaluation.elo import EloResult
from deepresearch.evaluation.metrics import (
    METRICS,
    Difference,
    JudgeAgreement,
    MetricEstimate,
    format_estimate,
)
from deepresearch.evaluation.probe import ProbeScore, probe_rows


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CheckpointEval(_Frozen):
    """What was measured for one checkpoint (or baseline); None where it was not evaluated."""

    name: str
    compliance: float | None = None  # mean ResearchRubrics compliance
    compliance_binary: float | None = None
    exact_match: float | None = None  # deep search
    f1: float | None = None
    cost: CostSummary | None = None
    # METRICS key → mean over tasks with its bootstrap interval (evaluation.metrics.summarize)
    intervals: dict[str, MetricEstimate] = Field(default_factory=dict)

    @classmethod
    def from_summaries(
        cls,
        name: str,
        *,
        compliance: ComplianceSummary | None = None,
        accuracy: AccuracySummary | None = None,
        cost: CostSummary | None = None,
    ) -> "CheckpointEval":
        """Collect the means of the evaluation summaries."""
        return cls(
            name=name,
            compliance=compliance.mean if compliance else None,
            compliance_binary=compliance.mean_binary if compliance else None,
            exact_match=accuracy.exact_match if accuracy else None,
            f1=accuracy.f1 if accuracy else None,
            cost=cost,
        )


class EvalResults(_Frozen):
    """Everything the report shows."""

    title: str = "Evaluation"
    checkpoints: list[CheckpointEval]
    elo: list[EloResult] = Field(default_factory=list)
    # metric name ("stage/metric") → (step, value) points, e.g. training losses, RL reward
    curves: dict[str, list[tuple[float, float]]] = Field(default_factory=dict)
    champion: str | None = None  # the checkpoint promoted, if any
    # paired differences between checkpoints (a − b), with paired bootstrap intervals
    differences: list[Difference] = Field(default_factory=list)
    # row label (checkpoint, or "checkpoint · capability") → span kind → teacher-forced next-action probe
    probe: dict[str, dict[str, ProbeScore]] = Field(default_factory=dict)
    judge_agreement: JudgeAgreement | None = None
    notes: list[str] = Field(default_factory=list)


# ---- plots ---------------------------------------------------------------------------------------
def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)


def plot_scores(results: EvalResults, path: Path) -> bool:
    """Grouped bars per checkpoint; returns False (and writes nothing) if no score was measured."""
    from matplotlib.figure import Figure

    metrics = [
        ("compliance", "compliance"),
        ("compliance_binary", "compliance (binary)"),
        ("exact_match", "deep-search EM"),
        ("f1", "deep-search F1"),
    ]
    metrics = [(k, lab) for k, lab in metrics if any(getattr(c, k) is not None for c in results.checkpoints)]
    if not metrics or not results.checkpoints:
        return False
    fig = Figure(figsize=(max(5.0, 1.6 * len(results.checkpoints) + 2), 3.6))
    ax = fig.subplots()
    width = 0.8 / len(metrics)
    xs = range(len(results.checkpoints))
    for j, (key, label) in enumerate(metrics):
        vals = [getattr(c, key) if getattr(c, key) is not None else math.nan for c in results.checkpoints]
        ax.bar([x + (j - (len(metrics) - 1) / 2) * width for x in xs], vals, width, label=label)
    ax.set_xticks(list(xs), [c.name for c in results.checkpoints])
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("score")
    ax.set_title("Scores per checkpoint")
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def elo_in_order(results: "EvalResults") -> list[EloResult]:
    """The Elo ratings in the checkpoints' (pipeline) order, as every other table of the report."""
    order = {c.name: i for i, c in enumerate(results.checkpoints)}
    return sorted(results.elo, key=lambda r: order.get(r.name, len(order)))


def plot_elo(elo: list[EloResult], path: Path) -> bool:
    """Each checkpoint's Elo rating (a dot) and its bootstrap interval (a line); False if `elo` is empty.

    A percentile interval need not contain the point estimate (with few tasks it often does not), so
    the interval is drawn as it is rather than as error bars around the rating.
    """
    from matplotlib.figure import Figure

    if not elo:
        return False
    fig = Figure(figsize=(6.0, 0.5 * len(elo) + 1.5))
    ax = fig.subplots()
    ys = list(range(len(elo)))[::-1]  # the first on top
    ax.hlines(ys, [r.ci_low for r in elo], [r.ci_high for r in elo], linewidth=2, alpha=0.6)
    ax.plot([r.rating for r in elo], ys, "o")
    ax.set_yticks(ys, [r.name for r in elo])
    ax.set_xlabel("Elo rating (bootstrap interval)")
    ax.set_title("Pairwise Elo on held-out tasks")
    _save(fig, path)
    return True


def plot_curves(curves: dict[str, list[tuple[float, float]]], path: Path) -> bool:
    """One panel per metric series; False if there is none."""
    from matplotlib.figure import Figure

    series = {k: v for k, v in curves.items() if v}
    if not series:
        return False
    ncols = min(3, len(series))
    nrows = math.ceil(len(series) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (name, points) in zip(axes.flat, sorted(series.items())):
        steps, values = zip(*points)
        ax.plot(steps, values, marker="." if len(points) < 50 else None)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(series) :]:
        ax.set_visible(False)
    _save(fig, path)
    return True


# ---- tables --------------------------------------------------------------------------------------
def _fmt(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


Table = tuple[str, list[str], list[list[str]]]  # (title, header, rows)


def metric_tables(
    checkpoints: list[Any], differences: list[Difference], probe: dict[str, dict[str, ProbeScore]], *,
    confidence: float = 0.95,
) -> list[Table]:
    """The tables of intervals, paired differences and the probe, for the report and the printed summaries.

    Args:
        checkpoints: objects with `name` and `intervals` (CheckpointEval or CheckpointMetrics), in order.
        differences: paired differences (a − b).
        probe: row label → kind → score.
    """
    tables: list[Table] = []
    pct = f"{100 * confidence:.0f} %"
    keys = [k for k in METRICS if any(k in c.intervals for c in checkpoints)]
    if keys:
        rows = []
        for c in checkpoints:
            cells = [format_estimate(k, e.value, e.ci_low, e.ci_high) if (e := c.intervals.get(k)) else "—"
                     for k in keys]
            rows.append([c.name, *cells])
        tables.append((f"Held-out metrics, mean [{pct} bootstrap interval over tasks]",
                       ["checkpoint", *(METRICS[k].label for k in keys)], rows))
    if differences:
        pairs = list(dict.fromkeys((d.a, d.b) for d in differences))
        keys = [k for k in METRICS if any(d.metric == k for d in differences)]
        by = {(d.a, d.b, d.metric): d for d in differences}
        rows = []
        for a, b in pairs:
            cells = [format_estimate(k, d.value, d.ci_low, d.ci_high, signed=True) if (d := by.get((a, b, k))) else "—"
                     for k in keys]
            rows.append([f"{a} − {b}", *cells])
        tables.append((f"Paired differences, mean [{pct} paired bootstrap interval]",
                       ["pair", *(METRICS[k].label for k in keys)], rows))
    if probe:
        header, rows = probe_rows(probe)
        tables.append(("Next-action probe (teacher-forced on held-out expert trajectories; exact spans)", header, rows))
    return tables


def print_tables(tables: list[Table], console: Any = None) -> None:
    """Print tables with rich (200 columns when not on a terminal, so wide tables are not squeezed)."""
    from rich.console import Console
    from rich.table import Table as RichTable

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=200)
    for title, header, rows in tables:
        t = RichTable(title=title)
        for h in header:
            t.add_column(h)
        for r in rows:
            t.add_row(*r)
        console.print(t)


def _tables(results: EvalResults) -> list[Table]:
    """(title, header, rows) of every table the report shows."""
    # the report leads with the estimates and their intervals; the champion is marked there
    named = [c.model_copy(update={"name": c.name + (" (champion)" if c.name == results.champion else "")})
             for c in results.checkpoints]
    tables: list[Table] = metric_tables(named, results.differences, results.probe)
    rows = [[n.name, _fmt(c.compliance), _fmt(c.compliance_binary), _fmt(c.exact_match), _fmt(c.f1)]
            for n, c in zip(named, results.checkpoints)]
    tables.append(("Scores", ["checkpoint", "compliance", "compliance (binary)", "EM", "F1"], rows))
    if results.judge_agreement is not None:
        j = results.judge_agreement
        rows = [[str(j.reports), str(j.items), f"{j.accuracy:.3f}", f"{j.macro_f1:.3f}",
                 " / ".join(",".join(str(x) for x in row) for row in j.confusion)]]
        tables.append(("Judge against ground truth on the evaluation's reports", [
            "reports", "rubric items", "accuracy", "macro-F1", "confusion (rows truth: satisfied / partially / not)"
        ], rows))
    if results.elo:
        rows = [[r.name, f"{r.rating:.1f}", f"[{r.ci_low:.1f}, {r.ci_high:.1f}]"] for r in elo_in_order(results)]
        tables.append(("Elo", ["checkpoint", "rating", "bootstrap interval"], rows))
    costed = [c for c in results.checkpoints if c.cost is not None]
    if costed:
        rows = [
            [c.name, str(c.cost.n), _fmt(c.cost.tokens_mean, 0), _fmt(c.cost.tokens_median, 0),
             _fmt(c.cost.tool_calls_mean, 1), _fmt(c.cost.tool_calls_median, 1), _fmt(c.cost.wall_s_mean, 2),
             _fmt(c.cost.wall_s_median, 2)]
            for c in costed
            if c.cost is not None
        ]
        header = ["checkpoint", "reports", "tokens mean", "tokens median", "tool calls mean", "tool calls median",
                  "wall s mean", "wall s median"]
        tables.append(("Cost per report", header, rows))
    return tables


def render_markdown(results: EvalResults, images: list[tuple[str, str]]) -> str:
    """The markdown report; `images` are (caption, relative file name)."""
    out = [f"# {results.title}", ""]
    if results.champion:
        out += [f"Champion: **{results.champion}**", ""]
    # a plot goes under the table of the same title (one section each), the others at the end
    plots = dict(images)
    for title, header, rows in _tables(results):
        out += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        out.append("")
        if title in plots:
            out += [f"![{title}]({plots.pop(title)})", ""]
    for caption, name in plots.items():
        out += [f"## {caption}", "", f"![{caption}]({name})", ""]
    if results.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in results.notes] + [""]
    return "\n".join(out)


def render_html(results: EvalResults, images: list[tuple[str, bytes]]) -> str:
    """A self-contained HTML page; `images` are (caption, PNG bytes), embedded as base64."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        f"<html><head><meta charset='utf-8'><title>{esc(results.title)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:.5em 0 1.5em}"
        "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}th:first-child,td:first-child"
        "{text-align:left}img{max-width:100%}</style></head><body>",
        f"<h1>{esc(results.title)}</h1>",
    ]
    if results.champion:
        parts.append(f"<p>Champion: <b>{esc(results.champion)}</b></p>")
    def img(caption: str, png: bytes) -> str:
        return f"<img alt='{esc(caption)}' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"

    plots = dict(images)  # as in the markdown: a plot under the table of its title
    for title, header, rows in _tables(results):
        parts.append(f"<h2>{esc(title)}</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts.append("</table>")
        if title in plots:
            parts.append(img(title, plots.pop(title)))
    for caption, png in plots.items():
        parts.append(f"<h2>{esc(caption)}</h2>" + img(caption, png))
    if results.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in results.notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ---- entry point ---------------------------------------------------------------------------------
def write_report(results: EvalResults, out_dir: Path) -> Path:
    """Write the report files (see the module docstring) into `out_dir`.

    Args:
        results: what to report.
        out_dir: created if missing; report files already there are replaced.
    Returns:
        The path of report.md.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staged: list[str] = []
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".report.") as tmp_name:
        tmp = Path(tmp_name)
        plots = [
            ("Scores", "scores.png", lambda p: plot_scores(results, p)),
            ("Elo", "elo.png", lambda p: plot_elo(elo_in_order(results), p)),
            ("Learning curves", "curves.png", lambda p: plot_curves(results.curves, p)),
        ]
        images = [(caption, name) for caption, name, draw in plots if draw(tmp / name)]
        staged += [name for _, name in images]
        (tmp / "results.json").write_text(results.model_dump_json(indent=2) + "\n")
        pngs = [(caption, (tmp / name).read_bytes()) for caption, name in images]
        (tmp / "report.html").write_text(render_html(results, pngs))
        (tmp / "report.md").write_text(render_markdown(results, images))
        staged += ["results.json", "report.html", "report.md"]  # the markdown last
        for name in staged:
            os.replace(tmp / name, out_dir / name)
    return out_dir / "report.md"
