"""`deepresearch <stage> ...`: run and debug any stage alone.

    deepresearch config show --config configs/tiny.yaml --set synthesis.n_deep_search=8
    deepresearch world build --config configs/tiny.yaml --out out/world
    deepresearch search --world out/world "founding year of Veltrana Labs" --k 5
    deepresearch agent run --world out/world --policy scripted --task "Write a report on Veltrana Labs"
    deepresearch synthesize --config configs/tiny.yaml --world out/world --out out/raw
    deepresearch quality --config configs/tiny.yaml --raw out/raw --out out/datasets
    deepresearch lineage models:/policy@champion         # or an MLflow run id
    deepresearch pipeline --config configs/tiny.yaml     # the data workflow locally (--full: everything)

Every command takes `--config` (default configs/tiny.yaml) and repeated `--set section.field=value`.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from deepresearch.errors import DeepResearchError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Step-DeepResearch pipeline stages.")
world_app = typer.Typer(no_args_is_help=True, help="Build and inspect research worlds.")
agent_app = typer.Typer(no_args_is_help=True, help="Run the ReAct agent.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect configurations.")
app.add_typer(world_app, name="world")
app.add_typer(agent_app, name="agent")
app.add_typer(config_app, name="config")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Pipeline YAML config.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Dotted override, e.g. world.seed=3 (repeatable).")]
DEFAULT_CONFIG = Path("configs/tiny.yaml")


def _cfg(config: Path, overrides: list[str] | None):
    from deepresearch.config import load_config

    return load_config(config, overrides or [])


@config_app.command("show")
def config_show(config: ConfigOpt = DEFAULT_CONFIG, overrides: SetOpt = None) -> None:
    """Print the resolved config as JSON, and its hash."""
    cfg = _cfg(config, overrides)
    typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2, sort_keys=True))
    typer.echo(f"config hash: {cfg.hash}")


@world_app.command("build")
def world_build(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output world directory.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
) -> None:
    """Generate (or load) the world, save it to OUT and build its search index."""
    from deepresearch.world.build import build_world

    cfg = _cfg(config, overrides)
    manifest = build_world(cfg, out)
    typer.echo(json.dumps({"out": str(out), **manifest}, indent=2, sort_keys=True))


@app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="Search query.")],
    world: Annotated[Path, typer.Option("--world", "-w", help="World directory (with index/).")],
    k: Annotated[int, typer.Option("--k", help="Number of results.")] = 5,
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
) -> None:
    """Search the world's paragraph index; prints one JSON line per hit."""
    from deepresearch.search.backend import open_backend

    cfg = _cfg(config, overrides)
    backend = open_backend(cfg.search, world)
    for hit in backend.search(query, k):
        row = {f: getattr(hit, f) for f in ("doc_id", "url", "domain", "authority", "score", "paragraph")}
        typer.echo(json.dumps(row, ensure_ascii=False))


@agent_app.command("run")
def agent_run(
    task: Annotated[str, typer.Option("--task", "-t", help="The research task, in words.")],
    world: Annotated[Path, typer.Option("--world", "-w", help="World directory (with index/).")],
    policy: Annotated[str, typer.Option("--policy", "-p", help="scripted | openai")] = "scripted",
    workspace: Annotated[Optional[Path], typer.Option(help="Keep the episode workspace here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the trajectory as JSON.")] = False,
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
) -> None:
    """Run one agent episode on TASK; prints the trajectory and the final report."""
    from deepresearch.agent.loop import run_episode
    from deepresearch.agent.policies.base import make_policy
    from deepresearch.agent.tools.base import EpisodeContext
    from deepresearch.search.backend import open_backend
    from deepresearch.world.schema import World

    cfg = _cfg(config, overrides)
    w = World.load(world)
    backend = open_backend(cfg.search, world)
    pol = make_policy(policy, cfg.agent, w)
    pol.reset(task, seed="cli")
    with tempfile.TemporaryDirectory(prefix="episode-") as tmp:
        ws = workspace or Path(tmp)
        ws.mkdir(parents=True, exist_ok=True)
        ctx = EpisodeContext(workspace=ws, agent=cfg.agent, search=backend)
        try:
            traj = run_episode(pol, task, task_id="cli", capability="deep_research", ctx=ctx, budget=cfg.agent.budget)
        finally:
            ctx.close()
    if as_json:
        typer.echo(traj.model_dump_json(indent=2))
        return
    _print_trajectory(traj)


def _print_trajectory(traj) -> None:
    from rich.console import Console
    from rich.markdown import Markdown
    from rich.panel import Panel

    console = Console()
    colors = {"system": "dim", "user": "cyan", "assistant": "green", "tool": "yellow"}
    for i, m in enumerate(traj.messages):
        if m.role == "system":
            continue
        body = m.content if len(m.content) < 1200 else m.content[:1200] + f"\n… ({len(m.content)} chars)"
        title = m.role + (f" · {m.name}" if m.name else "") + (" · ERROR" if m.is_error else "")
        console.print(Panel(body, title=f"[{i}] {title}", border_style="red" if m.is_error else colors[m.role]))
    console.print(
        f"outcome={traj.outcome} turns={traj.turns} tool_calls={traj.tool_calls} tool_errors={traj.tool_errors} "
        f"tokens={traj.tokens} opened={len(traj.opened_docs)} citations={traj.citations}"
    )
    if traj.answer:
        console.print(Panel(Markdown(traj.answer), title="report", border_style="bold green"))


@app.command("synthesize")
def synthesize_cmd(
    world: Annotated[Path, typer.Option("--world", "-w", help="World directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory for raw datasets.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
) -> None:
    """Synthesize tasks and scripted-expert trajectories from a world."""
    from deepresearch.synthesis.run import synthesize

    manifest = synthesize(_cfg(config, overrides), world, out)
    typer.echo(json.dumps({"out": str(out), "datasets": manifest["datasets"], "digest": manifest["digest"]}, indent=2))


@app.command("quality")
def quality_cmd(
    raw: Annotated[Path, typer.Option("--raw", help="Raw datasets from `synthesize`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory for gated datasets.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
) -> None:
    """Apply the quality gates and expectation suites to raw datasets."""
    from deepresearch.quality.gate import run_quality_gates

    report = run_quality_gates(_cfg(config, overrides).quality, raw, out)
    typer.echo(report.model_dump_json(indent=2))


@app.command("base")
def base_cmd(
    world: Annotated[Path, typer.Option("--world", "-w", help="World directory.")],
    datasets: Annotated[Path, typer.Option("--datasets", "-d", help="Quality-gated datasets.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output HF checkpoint directory.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
) -> None:
    """Build the base model: tiny (tokenizer trained on the corpus + random init) or a registry checkpoint."""
    from deepresearch.modeling.base import build_base

    typer.echo(json.dumps(build_base(_cfg(config, overrides), world, datasets, out), indent=2))


@app.command("train")
def train_cmd(
    stage: Annotated[str, typer.Option("--stage", help="mid1 | mid2 | sft | judge")],
    init_model: Annotated[Path, typer.Option("--init-model", help="HF checkpoint to start from.")],
    data: Annotated[Path, typer.Option("--data", help="Datasets directory (judge: judge dataset directory).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (checkpoints/, hf/); reruns resume.")],
    world: Annotated[Optional[Path], typer.Option("--world", "-w", help="World directory (mid1).")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
) -> None:
    """Run one training stage on DeepSpeed (one process; use torchrun for more)."""
    from deepresearch.training.stage import run_stage

    res = run_stage(_cfg(config, overrides), stage, init_model=init_model, data=data, out=out, world=world)
    typer.echo(res.model_dump_json(indent=2))


@app.command("judge-data")
def judge_data_cmd(
    world: Annotated[Path, typer.Option("--world", "-w", help="World directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output judge dataset directory.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
) -> None:
    """Build the judge's (report, rubric item, label) dataset with a held-out split."""
    from deepresearch.judge.data import build_judge_dataset

    typer.echo(json.dumps(build_judge_dataset(_cfg(config, overrides), world, out), indent=2, default=str))


@app.command("ppo")
def ppo_cmd(
    policy: Annotated[Path, typer.Option("--policy", help="SFT policy checkpoint (HF directory).")],
    judge: Annotated[Path, typer.Option("--judge", help="Trained judge directory.")],
    world: Annotated[Path, typer.Option("--world", "-w", help="World directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (policy/, critic/).")],
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
) -> None:
    """PPO with a learned critic: Ray rollout actors with the real tools, judge rewards, DeepSpeed learner."""
    from deepresearch.rl.train import run_ppo

    res = run_ppo(_cfg(config, overrides), policy_dir=policy, judge_dir=judge, world_dir=world, out=out)
    typer.echo(res.model_dump_json(indent=2))


@app.command("evaluate")
def evaluate_cmd(
    world: Annotated[Path, typer.Option("--world", "-w", help="World directory.")],
    checkpoint: Annotated[list[str], typer.Option("--checkpoint", help="NAME=HF_DIR, or NAME=expert (repeatable, pipeline order).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report directory.")],
    judge: Annotated[Optional[Path], typer.Option("--judge", help="Trained judge directory.")] = None,
    candidate: Annotated[str, typer.Option(help="Checkpoint that may become the policy champion (none: no promotion).")] = "rl",
    baseline: Annotated[str, typer.Option(help="Checkpoint the candidate must at least match on the gate metric.")] = "sft",
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
) -> None:
    """Evaluate checkpoints on held-out tasks (intervals, paired differences, probe, Elo, cost; a report), compare
    the candidate with the registry's champion, register and promote — as the pipeline's evaluation task does."""
    from deepresearch.evaluation.promotion import evaluation_stage

    specs = {}
    for item in checkpoint:
        if "=" not in item:
            raise typer.BadParameter(f"{item!r} is not NAME=HF_DIR")
        name, spec = item.split("=", 1)
        specs[name] = spec
    res = evaluation_stage(_cfg(config, overrides), world, specs, out, judge_dir=judge,
                           candidate=None if candidate == "none" else candidate, baseline=baseline)
    for m in res.evaluation.checkpoints:
        typer.echo(m.model_dump_json(exclude={"intervals"}))
    for name, verdict in (("policy", res.policy), ("judge", res.judge)):
        if verdict is not None:
            typer.echo(f"{name}: {'promoted' if verdict.promoted else 'not promoted'} ({'; '.join(verdict.reasons)})")
    typer.echo(f"report: {res.evaluation.report}")


@app.command("lineage")
def lineage_cmd(
    target: Annotated[str, typer.Argument(help="models:/NAME@ALIAS, models:/NAME/VERSION, or an MLflow run id.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
) -> None:
    """Print the lineage chain: model → run → datasets (sha256) → producing runs → world, config, images."""
    from deepresearch.tracking.lineage import render, trace

    cfg = _cfg(config, overrides)
    render(trace(target, cfg.tracking), cfg.tracking)


@app.command("pipeline")
def pipeline_cmd(
    full: Annotated[bool, typer.Option("--full", help="The whole recipe (training half included), not just the data half.")] = False,
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
) -> None:
    """Execute a Flyte workflow locally (same as `pyflyte run`): workflows/data.py:data, or workflows/full.py:full."""
    from deepresearch.config import REPO_ROOT

    _cfg(config, overrides)  # validate before starting Flyte
    sys.path.insert(0, str(REPO_ROOT))
    if full:
        from workflows.full import full as wf
    else:
        from workflows.data import data as wf

    out = wf(config=str(config), overrides=list(overrides or []))
    typer.echo(f"world: {out.world.path}\ndatasets: {out.datasets.path}")


def main() -> None:
    """Entry point: library errors become a one-line message and exit code 2, not a traceback."""
    try:
        app()
    except DeepResearchError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
