"""`deepresearch <command> ...`: run and debug any stage alone (commands in pipeline order).

    deepresearch pipeline --config configs/tiny.yaml     # the data workflow locally (--full: everything)
    deepresearch world build --out out/world
    deepresearch synthesize --world out/world --out out/raw
    deepresearch quality --raw out/raw --out out/datasets
    deepresearch base --world out/world --data out/datasets --out out/base
    deepresearch train --stage mid1 --init-model out/base --data out/datasets --world out/world --out out/mid1
    deepresearch judge-data --world out/world --out out/judge_data
    deepresearch train --stage judge --init-model out/sft/hf --data out/judge_data --out out/judge
    deepresearch ppo --policy out/sft/hf --judge out/judge/hf --world out/world --out out/rl
    deepresearch evaluate --world out/world --checkpoint sft=out/sft/hf --checkpoint rl=out/rl/policy --out out/eval
    deepresearch search --world out/world "founding year of Veltrana Labs" --k 5
    deepresearch agent run --world out/world --policy scripted --task "Write a report on Veltrana Labs"
    deepresearch agent run --world out/world --policy hf --model out/sft/hf --task "..."
    deepresearch lineage models:/policy@champion         # or an MLflow run id
    deepresearch config show --set synthesis.n_deep_search=8

Every stage command calls the same `deepresearch.stages` function as the pipeline's Flyte task, so it is
tracked alike (a top-level MLflow run of its own). Every command that reads the pipeline config takes
`--config` (default configs/tiny.yaml) and repeated `--set section.field=value`.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from deepresearch.errors import DeepResearchError

# `--help` lists the commands in this order: the pipeline's, then the tools to inspect what it made
ORDER = ("pipeline", "world", "synthesize", "quality", "base", "train", "judge-data", "ppo", "evaluate",
         "lineage", "search", "agent", "config")


class _PipelineOrder(TyperGroup):
    def list_commands(self, ctx) -> list[str]:
        return sorted(self.commands, key=lambda name: ORDER.index(name) if name in ORDER else len(ORDER))


# rich_markup_mode=None: click's plain help, without typer's type column (which shows `<bool>` on flags)
app = typer.Typer(cls=_PipelineOrder, add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Step-DeepResearch pipeline stages, in pipeline order.")
world_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Build research worlds.")
agent_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Run the ReAct agent.")
config_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Inspect configurations.")
app.add_typer(world_app, name="world")
app.add_typer(agent_app, name="agent")
app.add_typer(config_app, name="config")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Pipeline YAML config.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Dotted override, e.g. world.seed=3 (repeatable).")]
WorldOpt = Annotated[Path, typer.Option("--world", "-w", help="World directory (from `world build`).")]
DataOpt = Annotated[Path, typer.Option("--data", "-d", help="Quality-gated datasets (from `quality`).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory.")]
DEFAULT_CONFIG = Path("configs/tiny.yaml")


class Stage(str, Enum):
    """The training stages `train` runs."""

    mid1 = "mid1"
    mid2 = "mid2"
    sft = "sft"
    judge = "judge"


class Policy(str, Enum):
    """The agent's policies (deepresearch.agent.policies)."""

    scripted = "scripted"
    openai = "openai"
    hf = "hf"


def _cfg(config: Path, overrides: list[str] | None):
    from deepresearch.config import load_config

    return load_config(config, overrides or [])


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"deepresearch {version('deepresearch')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Step-DeepResearch pipeline stages, in pipeline order."""


def _echo_result(res) -> None:
    typer.echo(res.model_dump_json(indent=2))


@app.command("pipeline")
def pipeline_cmd(
    full: Annotated[bool, typer.Option("--full", help="The whole recipe (training half included), not just the data half.")] = False,
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
) -> None:
    """Execute a Flyte workflow locally (same as `pyflyte run`): workflows/data.py:data, or workflows/full.py:full."""
    import subprocess

    from deepresearch.config import REPO_ROOT

    _cfg(config, overrides)  # validate before starting Flyte
    # pyflyte, not an import: this module never imports workflows/ or flytekit
    target = "workflows/full.py" if full else "workflows/data.py"
    config_path = config.resolve() if config.exists() else config  # pyflyte runs in the repo
    cmd = [sys.executable, "-m", "flytekit.clis.sdk_in_container.pyflyte", "run", str(REPO_ROOT / target),
           "full" if full else "data", "--config", str(config_path), "--overrides", json.dumps(list(overrides or []))]
    sys.exit(subprocess.call(cmd, cwd=REPO_ROOT))


@world_app.command("build")
def world_build(out: OutOpt, config: ConfigOpt = DEFAULT_CONFIG, overrides: SetOpt = None) -> None:
    """Generate (or load) the world, save it to OUT and build its search index."""
    from deepresearch.stages import world_stage

    res = world_stage(_cfg(config, overrides), out)
    typer.echo(json.dumps({"out": str(out), "run_id": res.run_id, **res.manifest}, indent=2, sort_keys=True))


@app.command("synthesize")
def synthesize_cmd(world: WorldOpt, out: OutOpt, config: ConfigOpt = DEFAULT_CONFIG, overrides: SetOpt = None) -> None:
    """Synthesize tasks and scripted-expert trajectories from a world."""
    from deepresearch.stages import synthesis_stage

    res = synthesis_stage(_cfg(config, overrides), world, out)
    typer.echo(json.dumps({"out": str(out), "run_id": res.run_id, "datasets": res.manifest["datasets"],
                           "digest": res.manifest["digest"]}, indent=2))


@app.command("quality")
def quality_cmd(
    raw: Annotated[Path, typer.Option("--raw", help="Raw datasets (from `synthesize`).")],
    out: OutOpt,
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
) -> None:
    """Apply the quality gates and expectation suites to raw datasets."""
    from deepresearch.stages import quality_stage

    res = quality_stage(_cfg(config, overrides), raw, out)
    typer.echo((Path(out) / "quality_report.json").read_text() if (Path(out) / "quality_report.json").is_file()
               else json.dumps(res.manifest, indent=2))


@app.command("base")
def base_cmd(world: WorldOpt, data: DataOpt, out: OutOpt, config: ConfigOpt = DEFAULT_CONFIG, overrides: SetOpt = None) -> None:
    """Build the base model: tiny (tokenizer trained on the corpus + random init) or a registry checkpoint."""
    from deepresearch.stages import base_stage

    _echo_result(base_stage(_cfg(config, overrides), world, data, out))


@app.command("train")
def train_cmd(
    stage: Annotated[Stage, typer.Option("--stage", help="The training stage.")],
    init_model: Annotated[Path, typer.Option("--init-model", help="HF checkpoint to start from.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Quality-gated datasets (judge: from `judge-data`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (checkpoints/, hf/); reruns resume.")],
    world: Annotated[Optional[Path], typer.Option("--world", "-w", help="World directory (mid1).")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
) -> None:
    """Run one training stage on DeepSpeed (one process; use torchrun for more)."""
    from deepresearch.stages import train_stage

    _echo_result(train_stage(_cfg(config, overrides), stage.value, init_model=init_model, data=data, out=out, world=world))


@app.command("judge-data")
def judge_data_cmd(world: WorldOpt, out: OutOpt, config: ConfigOpt = DEFAULT_CONFIG, overrides: SetOpt = None) -> None:
    """Build the judge's (report, rubric item, label) dataset with a held-out split."""
    from deepresearch.stages import judge_data_stage

    _echo_result(judge_data_stage(_cfg(config, overrides), world, out))


@app.command("ppo")
def ppo_cmd(
    policy: Annotated[Path, typer.Option("--policy", help="SFT policy checkpoint (HF directory).")],
    judge: Annotated[Path, typer.Option("--judge", help="Trained judge directory.")],
    world: WorldOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (policy/, critic/).")],
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
) -> None:
    """PPO with a learned critic: Ray rollout actors with the real tools, judge rewards, DeepSpeed learner."""
    from deepresearch.stages import ppo_stage

    _echo_result(ppo_stage(_cfg(config, overrides), policy_dir=policy, judge_dir=judge, world_dir=world, out=out))


@app.command("evaluate")
def evaluate_cmd(
    world: WorldOpt,
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
    from deepresearch.evaluation.report import metric_tables, print_tables
    from deepresearch.stages import evaluation_stage

    specs = {}
    for item in checkpoint:
        if "=" not in item:
            raise typer.BadParameter(f"{item!r} is not NAME=HF_DIR", param_hint="--checkpoint")
        name, spec = item.split("=", 1)
        specs[name] = spec
    res = evaluation_stage(_cfg(config, overrides), world, specs, out, judge_dir=judge,
                           candidate=None if candidate == "none" else candidate, baseline=baseline)
    r = res.evaluation.results  # the promotion decisions were printed by the stage
    print_tables(metric_tables(r.checkpoints, r.differences, r.probe, confidence=r.confidence))
    typer.echo(f"report: {res.evaluation.report}")


@app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="Search query.")],
    world: WorldOpt,
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
    world: WorldOpt,
    policy: Annotated[Policy, typer.Option("--policy", "-p", help="Who acts: the scripted expert, an OpenAI-compatible endpoint (agent.openai), or an HF checkpoint (--model).")] = Policy.scripted,
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="HF checkpoint directory, for --policy hf.")] = None,
    workspace: Annotated[Optional[Path], typer.Option(help="Keep the episode workspace here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the trajectory as JSON.")] = False,
    config: ConfigOpt = DEFAULT_CONFIG,
    overrides: SetOpt = None,
) -> None:
    """Run one agent episode on TASK; prints the trajectory and the final report."""
    from deepresearch.agent.episode import play_episode
    from deepresearch.agent.policies.base import make_policy
    from deepresearch.search.backend import open_backend
    from deepresearch.world.schema import World

    if model is not None and policy is not Policy.hf:
        raise typer.BadParameter(f"--model is for --policy hf, not {policy.value}", param_hint="--model")
    cfg = _cfg(config, list(overrides or []) + ([f"agent.hf.model_dir={model}"] if model is not None else []))
    if policy is Policy.hf and not cfg.agent.hf.model_dir:
        raise typer.BadParameter("--policy hf needs --model DIR (an HF checkpoint directory)", param_hint="--model")
    w = World.load(world)
    backend = open_backend(cfg.search, world)
    pol = make_policy(policy.value, cfg.agent, w)
    traj = play_episode(pol, task, cfg.agent, backend, seed="cli", workspace=workspace)
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


@app.command("lineage")
def lineage_cmd(
    target: Annotated[str, typer.Argument(help="models:/NAME@ALIAS, models:/NAME/VERSION, or an MLflow run id.")],
    tracking_uri: Annotated[Optional[str], typer.Option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else the repo's mlflow.db).")] = None,
    experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment of the pipeline's runs.")] = "deepresearch",
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole graph as JSON (full ids, digests, paths).")] = False,
) -> None:
    """Print the lineage: model → the run that produced it → its inputs (digests) → their producing runs
    → … → world, config, images; each run once."""
    from deepresearch.config import TrackingConfig
    from deepresearch.tracking.lineage import pipeline_runs, render, to_json, trace

    tracking = TrackingConfig(uri=tracking_uri, experiment=experiment)
    root = trace(target, tracking)
    if as_json:
        typer.echo(json.dumps(to_json(root, pipeline_runs(root, tracking)), indent=2))
    else:
        render(root, tracking)


@config_app.command("show")
def config_show(config: ConfigOpt = DEFAULT_CONFIG, overrides: SetOpt = None) -> None:
    """Print the resolved config as JSON, and its hash."""
    cfg = _cfg(config, overrides)
    typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2, sort_keys=True))
    typer.echo(f"config hash: {cfg.hash}")


def main() -> None:
    """Entry point: library errors become a one-line message and exit code 2, not a traceback."""
    try:
        app()
    except DeepResearchError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
