"""The evaluation report: markdown + a self-contained HTML page (for a Flyte Deck) + PNG plots.

    results = EvalResults(
        checkpoints=[CheckpointEval(name="rl", intervals=m.intervals, ...), ...],   # pipeline order
        decisions=["policy v3 promoted to champion: ..."],
        elo=elo_with_ci(scores),
        curves={"sft/loss": [(step, value), ...], "rl/reward": [...]},
    )
    md_path = write_report(results, Path("out/eval"), files={"episodes.jsonl": text})

The report opens with the promotion decisions (with the registered versions), then what separates the
checkpoints: every held-out metric with its bootstrap interval (well-formed rate, EM, compliance by ground
truth and by the judge, reward, tool calls, tokens, seconds), plotted with those intervals; then the
paired differences, the next-action probe, the judge's agreement, Elo and the learning curves. Every
table and plot lists the checkpoints in the one (pipeline) order they were given in.

`write_report` builds a complete new version of `out_dir` and swaps it in at once
(`deepresearch.io.atomic_dir`), so results.json, the plots and the pages always come from the same
results; other files of `out_dir` (the evaluation's episodes) are carried over:
    scores.png   the metrics that separate the checkpoints, one panel each, with error bars
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
import shutil
from pathlib import Path
from typing import Any, Mapping

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
    """What was measured for one checkpoint (or baseline); None where it was not evaluated. The report shows
    `intervals` (means with their intervals, the cost per episode among them); results.json keeps it all."""

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
    # the promotion decisions, with the registered versions ("policy v2 not promoted: ..."): the report's lead
    decisions: list[str] = Field(default_factory=list)
    confidence: float = 0.95  # of the intervals (evaluation.confidence)
    notes: list[str] = Field(default_factory=list)


# ---- plots ---------------------------------------------------------------------------------------
def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)


# The metrics that separate the checkpoints, one panel each in scores.png (METRICS keys).
SCORE_PLOT = ("well_formed_rate", "exact_match", "compliance", "judge_compliance", "mean_reward", "mean_tool_calls",
              "mean_tokens")


def plot_scores(results: EvalResults, path: Path) -> bool:
    """One panel per metric of `SCORE_PLOT` that was measured: a bar per checkpoint (in the given order) with
    its bootstrap interval as an error bar. False (nothing written) when no checkpoint has intervals.

    A percentile interval need not contain its mean; the error bar then reaches only as far as the mean.
    """
    from matplotlib.figure import Figure

    names = [c.name for c in results.checkpoints]
    keys = [k for k in SCORE_PLOT if any(k in c.intervals for c in results.checkpoints)]
    if not keys:
        return False
    ncols = min(4, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(max(3.2, 0.55 * len(names) + 1.2) * ncols, 2.9 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    colors = [f"C{i % 10}" for i in range(len(names))]  # one colour per checkpoint, the same in every panel
    xs = list(range(len(names)))
    for ax, key in zip(axes.flat, keys):
        m = METRICS[key]
        scale = 100.0 if m.percent else 1.0
        est = [c.intervals.get(key) for c in results.checkpoints]
        values = [e.value * scale if e else math.nan for e in est]
        below = [max(0.0, (e.value - e.ci_low) * scale) if e else 0.0 for e in est]
        above = [max(0.0, (e.ci_high - e.value) * scale) if e else 0.0 for e in est]
        ax.bar(xs, values, color=colors, yerr=[below, above], capsize=3, error_kw={"linewidth": 1})
        ax.set_xticks(xs, names, rotation=30 if len(names) > 3 else 0, ha="right" if len(names) > 3 else "center",
                      fontsize=8)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(m.label + (" (%)" if m.percent else ""), fontsize=10)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    pct = f"{100 * results.confidence:.0f} %"
    fig.suptitle(f"Held-out metrics per checkpoint, mean and {pct} bootstrap interval", fontsize=11)
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


PRINT_WIDTH = 100  # columns the printed tables fit when the output is not a terminal (a log file, a pipe)


def _rich_table(title: str, header: list[str], rows: list[list[str]], *, label_width: int | None = None) -> Any:
    from rich import box
    from rich.table import Table as RichTable

    t = RichTable(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i == 0 else "right", max_width=label_width if i == 0 else None)
    for r in rows:
        t.add_row(*r)
    return t


def _transposed(title: str, header: list[str], rows: list[list[str]]) -> Any:
    """The table with rows and columns swapped (a metric per row, a checkpoint per column), each cell's
    interval on a line under its value, the metric names wrapped at 12 columns."""
    columns = [[r[0] for r in rows], *([r[j].replace(" [", "\n[") for r in rows] for j in range(1, len(header)))]
    return _rich_table(title, ["", *columns[0]], [[header[j], *columns[j]] for j in range(1, len(header))],
                       label_width=12)


def _width(console: Any, table: Any) -> int:
    """The columns `table` takes unwrapped."""
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(10_000), table).maximum


def print_tables(tables: list[Table], console: Any = None) -> None:
    """Print tables with rich, each fitting the console (`PRINT_WIDTH` columns when not on a terminal): a
    table too wide as it is (a checkpoint per row, a metric per column) is printed transposed."""
    from rich.console import Console

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=PRINT_WIDTH)
    for title, header, rows in tables:
        table = _rich_table(title, header, rows)
        if _width(console, table) > console.width:
            flipped = _transposed(title, header, rows)
            if _width(console, flipped) < _width(console, table):
                table = flipped
        console.print(table)


def _tables(results: EvalResults) -> list[Table]:
    """(title, header, rows) of every table the report shows, each once: the metrics with their intervals
    (the cost per episode among them: tool calls, tokens, seconds), the paired differences, the probe, the
    judge's agreement, Elo."""
    named = [c.model_copy(update={"name": c.name + (" (champion)" if c.name == results.champion else "")})
             for c in results.checkpoints]
    tables: list[Table] = metric_tables(named, results.differences, results.probe, confidence=results.confidence)
    if results.judge_agreement is not None:
        j = results.judge_agreement
        rows = [[str(j.reports), str(j.items), f"{j.accuracy:.3f}", f"{j.macro_f1:.3f}",
                 " / ".join(",".join(str(x) for x in row) for row in j.confusion)]]
        tables.append(("Judge against ground truth on the evaluation's reports", [
            "reports", "rubric items", "accuracy", "macro-F1", "confusion (rows truth: satisfied / partially / not)"
        ], rows))
    if results.elo:
        rows = [[r.name, f"{r.rating:.1f}", f"[{r.ci_low:.1f}, {r.ci_high:.1f}]"] for r in elo_in_order(results)]
        tables.append((ELO_TITLE, ["checkpoint", "rating", "bootstrap interval"], rows))
    return tables


HELD_OUT_TITLE = "Held-out metrics"  # the start of the intervals table's title (metric_tables)
ELO_TITLE = "Elo"
# plot file, its caption, the title (prefix) of the table it goes under (None: a section of its own, last)
PLOTS = (
    ("scores.png", "Held-out metrics with their bootstrap intervals", HELD_OUT_TITLE),
    ("elo.png", "Elo ratings with their bootstrap intervals", ELO_TITLE),
    ("curves.png", "Learning curves", None),
)
REPORT_FILES = frozenset({"results.json", "report.html", "report.md", *(name for name, _, _ in PLOTS)})


def _sections(results: EvalResults, drawn: list[str]) -> list[tuple[Table | None, list[tuple[str, str]]]]:
    """The report's body in order: (table or None, [(caption, plot file) under it]), each plot once."""
    left = [p for p in PLOTS if p[0] in drawn]
    out: list[tuple[Table | None, list[tuple[str, str]]]] = []
    for table in _tables(results):
        here = [p for p in left if p[2] is not None and table[0].startswith(p[2])]
        left = [p for p in left if p not in here]
        out.append((table, [(caption, name) for name, caption, _ in here]))
    out += [(None, [(caption, name)]) for name, caption, _ in left]
    return out


def _lead(results: EvalResults) -> list[str]:
    """What the report opens with: the champion and the promotion decisions (with the model versions)."""
    lines = [f"Champion: **{results.champion}**"] if results.champion else []
    return lines + [f"- {d}" for d in results.decisions]


def render_markdown(results: EvalResults, drawn: list[str]) -> str:
    """The markdown report; `drawn`: the plot files written beside it (linked relatively)."""
    out = [f"# {results.title}", ""]
    lead = _lead(results)
    if lead:
        out += ["## Decision", "", *lead, ""]
    for table, plots in _sections(results, drawn):
        if table is not None:
            title, header, rows = table
            out += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            out += ["| " + " | ".join(r) + " |" for r in rows]
            out.append("")
        else:
            out += [f"## {plots[0][0]}", ""]
        out += [x for caption, name in plots for x in (f"![{caption}]({name})", "")]
    if results.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in results.notes] + [""]
    return "\n".join(out)


def render_html(results: EvalResults, pngs: dict[str, bytes]) -> str:
    """A self-contained HTML page; `pngs`: plot file → its PNG bytes, embedded as base64."""
    esc = html.escape

    def inline(text: str) -> str:  # the one markdown the lead uses: **bold**
        parts = esc(text).split("**")
        return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))

    parts = [
        "<!DOCTYPE html>",
        f"<html><head><meta charset='utf-8'><title>{esc(results.title)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:.5em 0 1.5em}"
        "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}th:first-child,td:first-child"
        "{text-align:left}img{max-width:100%}</style></head><body>",
        f"<h1>{esc(results.title)}</h1>",
    ]
    lead = _lead(results)
    if lead:
        champion = [inline(x) for x in lead if not x.startswith("- ")]
        decisions = [inline(x[2:]) for x in lead if x.startswith("- ")]
        parts.append("<h2>Decision</h2>" + "".join(f"<p>{x}</p>" for x in champion)
                     + ("<ul>" + "".join(f"<li>{x}</li>" for x in decisions) + "</ul>" if decisions else ""))
    for table, plots in _sections(results, list(pngs)):
        if table is not None:
            title, header, rows = table
            parts.append(f"<h2>{esc(title)}</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows]
            parts.append("</table>")
        else:
            parts.append(f"<h2>{esc(plots[0][0])}</h2>")
        for caption, name in plots:
            data = base64.b64encode(pngs[name]).decode("ascii")
            parts.append(f"<img alt='{esc(caption)}' src='data:image/png;base64,{data}'>")
    if results.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in results.notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ---- entry point ---------------------------------------------------------------------------------
def _carry(src: Path, dst: Path) -> None:
    """Put `src` into the new version at `dst`: a hard link (no copy; every writer here replaces a file
    rather than writing into it), else a copy."""
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_carry)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_report(results: EvalResults, out_dir: Path, *, files: Mapping[str, str] | None = None) -> Path:
    """Write the report (see the module docstring) as a new version of `out_dir`, swapped in at once.

    Args:
        results: what to report.
        out_dir: the report directory (created if missing). Its files other than the report's are kept
            (carried into the new version), unless `files` replaces them.
        files: more text files of the same version, name → content (the evaluation's episodes).
    Returns:
        The path of report.md.
    """
    from deepresearch.io import atomic_dir

    out_dir, files = Path(out_dir), dict(files or {})
    with atomic_dir(out_dir) as tmp:
        if out_dir.is_dir():
            for old in out_dir.iterdir():
                if old.name not in REPORT_FILES and old.name not in files:
                    _carry(old, tmp / old.name)
        for name, text in files.items():
            (tmp / name).write_text(text)
        draw = {"scores.png": lambda p: plot_scores(results, p), "elo.png": lambda p: plot_elo(elo_in_order(results), p),
                "curves.png": lambda p: plot_curves(results.curves, p)}
        drawn = [name for name, _, _ in PLOTS if draw[name](tmp / name)]
        (tmp / "results.json").write_text(results.model_dump_json(indent=2) + "\n")
        (tmp / "report.html").write_text(render_html(results, {name: (tmp / name).read_bytes() for name in drawn}))
        (tmp / "report.md").write_text(render_markdown(results, drawn))
    return out_dir / "report.md"
