"""The pipeline's stages as library functions: one per stage, each one tracked MLflow child run.

A Flyte task (`tasks/`) downloads its inputs, calls one of these and wraps the result; the CLI command
of the same stage calls the same function. So a stage behaves alike in a local `pyflyte run`, on a
cluster, or alone from the command line (`deepresearch <stage> ...`).

    world = world_stage(cfg, out / "world", parent_run_id)
    raw = synthesis_stage(cfg, world.path, out / "raw", parent_run_id)
    datasets = quality_stage(cfg, raw.path, out / "datasets", parent_run_id)
    base = base_stage(cfg, world.path, datasets.path, out / "base", parent_run_id)
    sft = train_stage(cfg, "sft", init_model=..., data=datasets.path, out=out / "sft", parent_run_id=...)

| stage | entry point | returns |
|---|---|---|
| world | `world_stage` | `StageResult` |
| synthesis | `synthesis_stage` | `StageResult` |
| quality | `quality_stage` | `StageResult` |
| base | `base_stage` | `StageResult` |
| mid1, mid2, sft, judge | `train_stage` (`training.stage.run_stage`) | `StageRun` |
| judge_data | `judge_data_stage` | `StageResult` |
| rl | `ppo_stage` (`rl.train.run_ppo`) | `PPORun` |
| evaluation | `evaluation_stage` (`evaluation.promotion.evaluation_stage`) | `StageOutcome` |

Every function takes the `PipelineConfig` (in a Flyte task: the stage's view, `StageConfig.view`, which
holds only what the stage's cache key holds), its input directories, its output directory, and the
pipeline's MLflow parent run and execution id ("" and "local" alone from the CLI).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from deepresearch.config import PipelineConfig
from deepresearch.errors import DataQualityError
from deepresearch.io import dir_digest
from deepresearch.tracking import output_tags, stage_run
from deepresearch.tracking.datasets import log_files, log_parts, log_world

if TYPE_CHECKING:
    from deepresearch.evaluation.promotion import StageOutcome
    from deepresearch.rl.train import PPORun
    from deepresearch.training.stage import StageRun


class StageResult(BaseModel):
    """What a stage produced: its output directory, MLflow run id, manifest and wall time."""

    stage: str
    path: str
    run_id: str
    seconds: float
    manifest: dict


def publish(cfg: PipelineConfig, path: Path, kind: str, digest: str, run) -> str | None:
    """Upload an artifact directory to object storage when `storage.enabled` (checksummed, manifest
    last); tags the run with its URI. Returns the URI, or None when storage is off."""
    if not cfg.storage.enabled:
        return None
    from deepresearch.storage import storage_uri, upload_dir

    uri = storage_uri(cfg.storage, kind, digest[:16])
    upload_dir(Path(path), uri, cfg.storage)
    run.set_tags({"storage.uri": uri})
    return uri


def world_stage(cfg: PipelineConfig, out: Path, parent_run_id: str = "", execution_id: str = "local") -> StageResult:
    """Generate (or load) the world and build its search index."""
    from deepresearch.world.build import build_world

    t0 = time.perf_counter()
    with stage_run(cfg, parent_run_id, "world", flyte_execution_id=execution_id) as run:
        manifest = build_world(cfg, Path(out))
        run.log_metrics({f"world/{k}": v for k, v in manifest["counts"].items()})
        run.log_dict(manifest, "world_manifest.json")
        run.set_tags({**output_tags(out), "dataset.digest": dir_digest(Path(out))})
        log_world(run, Path(out), context="output")
        publish(cfg, Path(out), "worlds", dir_digest(Path(out)), run)
        return StageResult(stage="world", path=str(out), run_id=run.run_id or "", seconds=time.perf_counter() - t0, manifest=manifest)


def synthesis_stage(
    cfg: PipelineConfig, world_dir: Path, out: Path, parent_run_id: str = "", execution_id: str = "local"
) -> StageResult:
    """Synthesize deep-search and deep-research tasks and expert trajectories."""
    from deepresearch.synthesis.run import synthesize

    t0 = time.perf_counter()
    with stage_run(cfg, parent_run_id, "synthesis", flyte_execution_id=execution_id) as run:
        log_world(run, Path(world_dir))
        manifest = synthesize(cfg, Path(world_dir), Path(out))
        for name, stats in manifest["datasets"].items():
            run.log_metrics({f"synthesis/{name}/{k}": v for k, v in stats.items()})
        log_parts(run, Path(out), manifest["datasets"], context="output", prefix="raw_")
        run.log_dict(manifest, "synthesis_manifest.json")
        run.set_tags({**output_tags(out), "dataset.digest": manifest["digest"]})
        publish(cfg, Path(out), "raw", manifest["digest"], run)
        return StageResult(stage="synthesis", path=str(out), run_id=run.run_id or "", seconds=time.perf_counter() - t0, manifest=manifest)


def quality_stage(
    cfg: PipelineConfig, raw_dir: Path, out: Path, parent_run_id: str = "", execution_id: str = "local"
) -> StageResult:
    """Apply the quality gates and expectation suites; a failing suite raises DataQualityError."""
    from deepresearch.quality.gate import run_quality_gates

    t0 = time.perf_counter()
    raw_manifest = json.loads((Path(raw_dir) / "manifest.json").read_text())
    with stage_run(cfg, parent_run_id, "quality", flyte_execution_id=execution_id) as run:
        log_parts(run, Path(raw_dir), raw_manifest["datasets"], context="input", prefix="raw_")
        try:
            report = run_quality_gates(cfg.quality, Path(raw_dir), Path(out))
        except DataQualityError as e:
            rep = getattr(e, "report", None)
            if rep is not None:
                run.log_dict(rep.model_dump(mode="json"), "quality_report.json")
            run.log_dict({"failed_expectations": e.failed}, "failed_expectations.json")
            run.log_metrics({"quality/expectations_failed": len(e.failed)})
            run.set_tags({"quality.failed_expectations": "; ".join(e.failed)[:5000]})
            raise
        report_dict = report.model_dump(mode="json")
        run.log_dict(report_dict, "quality_report.json")
        metrics = {}
        for name, d in report.datasets.items():
            for key in ("tasks_in", "tasks_out", "trajectories_in", "trajectories_out"):
                metrics[f"quality/{name}/{key}"] = getattr(d, key)
            metrics.update(_flat_metrics(f"quality/{name}/pass_rate", d.pass_rates))
            metrics.update({f"quality/{name}/dropped/{k}": v for k, v in d.dropped.items()})
        run.log_metrics(metrics)
        manifest = json.loads((Path(out) / "manifest.json").read_text())
        log_parts(run, Path(out), raw_manifest["datasets"], context="output")
        run.set_tags({**output_tags(out), "dataset.digest": manifest.get("digest", "")})
        publish(cfg, Path(out), "datasets", manifest["digest"], run)
        return StageResult(stage="quality", path=str(out), run_id=run.run_id or "", seconds=time.perf_counter() - t0, manifest=manifest)


def base_stage(
    cfg: PipelineConfig, world_dir: Path, datasets_dir: Path, out: Path, parent_run_id: str = "",
    execution_id: str = "local",
) -> StageResult:
    """The base checkpoint: tiny (tokenizer trained on the corpus + random init) or a registry model.

    The manifest holds `parameters` and `vocab_size`."""
    from deepresearch.modeling.base import build_base
    from deepresearch.modeling.base_models import resolve_base
    from deepresearch.training.data import DATASET_NAMES

    t0 = time.perf_counter()
    world_dir, datasets_dir, out = Path(world_dir), Path(datasets_dir), Path(out)
    with stage_run(cfg, parent_run_id, "base", flyte_execution_id=execution_id) as run:
        if resolve_base(cfg.model).source == "built":
            # the tiny tokenizer is trained on the world's documents and both datasets' trajectories
            # (`training.data.tokenizer_corpus`): they are the base model's lineage
            log_world(run, world_dir)
            log_parts(run, datasets_dir, DATASET_NAMES, context="input")
        info = build_base(cfg, world_dir, datasets_dir, out)
        run.log_metrics({"base/vocab_size": info["vocab_size"], "base/parameters": info["parameters"]})
        run.set_tags({**output_tags(out), "model.digest": dir_digest(out)})
        return StageResult(stage="base", path=str(out), run_id=run.run_id or "",
                           seconds=time.perf_counter() - t0, manifest=info)


def judge_data_stage(
    cfg: PipelineConfig, world_dir: Path, out: Path, parent_run_id: str = "", execution_id: str = "local"
) -> StageResult:
    """(report, rubric item, label) pairs of controlled quality, labels known by construction; held-out split."""
    from deepresearch.judge.data import JUDGE_FILES, build_judge_dataset

    t0 = time.perf_counter()
    world_dir, out = Path(world_dir), Path(out)
    with stage_run(cfg, parent_run_id, "judge_data", flyte_execution_id=execution_id) as run:
        log_world(run, world_dir)
        manifest = json.loads(json.dumps(build_judge_dataset(cfg, world_dir, out), default=str))
        run.log_dict(manifest, "judge_data_manifest.json")
        log_files(run, out, JUDGE_FILES, context="output")
        # the digest the judge's training run logs these files' directory under (their artifact digest),
        # so that `deepresearch lineage` finds this run as their producer
        run.set_tags({**output_tags(out), "dataset.digest": dir_digest(out)})
        return StageResult(stage="judge_data", path=str(out), run_id=run.run_id or "",
                           seconds=time.perf_counter() - t0, manifest=manifest)


def train_stage(
    cfg: PipelineConfig, stage: str, *, init_model: Path, data: Path, out: Path, world: Path | None = None,
    parent_run_id: str = "", execution_id: str = "local", progress: bool = True,
) -> "StageRun":
    """Train "mid1", "mid2", "sft" or "judge" from `init_model` on `data` (every rank calls it alike);
    see `deepresearch.training.stage.run_stage`, whose arguments these are."""
    from deepresearch.training.stage import run_stage

    return run_stage(cfg, stage, init_model=Path(init_model), data=Path(data), out=Path(out),
                     world=Path(world) if world is not None else None, parent_run_id=parent_run_id,
                     execution_id=execution_id, progress=progress)


def ppo_stage(
    cfg: PipelineConfig, *, policy_dir: Path, judge_dir: Path, world_dir: Path, out: Path,
    parent_run_id: str = "", execution_id: str = "local",
) -> "PPORun":
    """PPO with a learned critic from the SFT policy against the judge; see `deepresearch.rl.train.run_ppo`."""
    from deepresearch.rl.train import run_ppo

    return run_ppo(cfg, policy_dir=Path(policy_dir), judge_dir=Path(judge_dir), world_dir=Path(world_dir),
                   out=Path(out), parent_run_id=parent_run_id, execution_id=execution_id)


def evaluation_stage(
    cfg: PipelineConfig, world_dir: Path, checkpoints: dict[str, Any], out: Path, *, judge_dir: Path | None = None,
    candidate: str | None = "rl", baseline: str = "sft", parent_run_id: str = "", execution_id: str = "local",
) -> "StageOutcome":
    """Every checkpoint on the held-out tasks, the champion on the same tasks, registration and promotion;
    see `deepresearch.evaluation.promotion.evaluation_stage`."""
    from deepresearch.evaluation.promotion import evaluation_stage as run

    return run(cfg, Path(world_dir), checkpoints, Path(out), judge_dir=judge_dir, candidate=candidate,
               baseline=baseline, parent_run_id=parent_run_id, execution_id=execution_id)


def _flat_metrics(prefix: str, node: object, out: dict | None = None) -> dict[str, float]:
    """Numeric leaves of a nested dict as `prefix/a/b` metrics (lists are skipped)."""
    out = {} if out is None else out
    if isinstance(node, dict):
        for k, v in node.items():
            _flat_metrics(f"{prefix}/{k}", v, out)
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        out[prefix] = float(node)
    return out
