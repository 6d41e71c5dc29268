"""Pipeline stages as plain functions: one library call each, tracked as an MLflow child run.

Flyte tasks (`tasks/`) and the CLI both call these, so a stage behaves the same in a local
`pyflyte run`, on a cluster, or alone from the command line.

    world = world_stage(cfg, out / "world", parent_run_id)
    raw = synthesis_stage(cfg, world.path, out / "raw", parent_run_id)
    datasets = quality_stage(cfg, raw.path, out / "datasets", parent_run_id)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import BaseModel

from deepresearch.config import PipelineConfig
from deepresearch.errors import DataQualityError
from deepresearch.tracking import stage_run


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


def world_digest(world_dir: Path) -> str:
    """Identity of a world: its content digest (`deepresearch.io.dir_digest`, over its manifest's files)."""
    from deepresearch.io import dir_digest

    return dir_digest(world_dir)


def _preview(path: Path, n: int = 20) -> list[dict]:
    """First rows of a jsonl file, flattened for the MLflow dataset preview."""
    rows = []
    if path.is_file():
        with open(path) as f:
            for line, _ in zip(f, range(n)):
                obj = json.loads(line)
                rows.append({k: (v if isinstance(v, (str, int, float, bool)) else json.dumps(v)[:500]) for k, v in obj.items()})
    return rows


def world_stage(cfg: PipelineConfig, out: Path, parent_run_id: str = "", execution_id: str = "local") -> StageResult:
    """Generate (or load) the world and build its search index."""
    from deepresearch.world.build import build_world

    t0 = time.perf_counter()
    with stage_run(cfg, parent_run_id, "world", flyte_execution_id=execution_id) as run:
        manifest = build_world(cfg, Path(out))
        run.log_metrics({f"world/{k}": v for k, v in manifest["counts"].items()})
        run.log_dict(manifest, "world_manifest.json")
        run.set_tags({"output.path": str(out), "dataset.digest": world_digest(Path(out))})
        publish(cfg, Path(out), "worlds", world_digest(Path(out)), run)
        return StageResult(stage="world", path=str(out), run_id=run.run_id or "", seconds=time.perf_counter() - t0, manifest=manifest)


def synthesis_stage(
    cfg: PipelineConfig, world_dir: Path, out: Path, parent_run_id: str = "", execution_id: str = "local"
) -> StageResult:
    """Synthesize deep-search and deep-research tasks and expert trajectories."""
    from deepresearch.synthesis.run import synthesize

    t0 = time.perf_counter()
    with stage_run(cfg, parent_run_id, "synthesis", flyte_execution_id=execution_id) as run:
        run.log_dataset(Path(world_dir), name="world", context="input", digest=world_digest(Path(world_dir)))
        manifest = synthesize(cfg, Path(world_dir), Path(out))
        for name, stats in manifest["datasets"].items():
            run.log_metrics({f"synthesis/{name}/{k}": v for k, v in stats.items()})
            run.log_dataset(
                Path(out) / name, name=f"raw_{name}", context="output",
                digest=manifest["digest"], rows=_preview(Path(out) / name / "tasks.jsonl"),
            )
        run.log_dict(manifest, "synthesis_manifest.json")
        run.set_tags({"output.path": str(out), "dataset.digest": manifest["digest"]})
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
        for name in raw_manifest["datasets"]:
            run.log_dataset(
                Path(raw_dir) / name, name=f"raw_{name}", context="input",
                digest=raw_manifest["digest"], rows=_preview(Path(raw_dir) / name / "trajectories.jsonl"),
            )
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
        for name in raw_manifest["datasets"]:
            run.log_dataset(
                Path(out) / name, name=name, context="output",
                digest=manifest.get("digest", ""), rows=_preview(Path(out) / name / "trajectories.jsonl"),
            )
        run.set_tags({"output.path": str(out), "dataset.digest": manifest.get("digest", "")})
        publish(cfg, Path(out), "datasets", manifest["digest"], run)
        return StageResult(stage="quality", path=str(out), run_id=run.run_id or "", seconds=time.perf_counter() - t0, manifest=manifest)


def _flat_metrics(prefix: str, node: object, out: dict | None = None) -> dict[str, float]:
    """Numeric leaves of a nested dict as `prefix/a/b` metrics (lists are skipped)."""
    out = {} if out is None else out
    if isinstance(node, dict):
        for k, v in node.items():
            _flat_metrics(f"{prefix}/{k}", v, out)
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        out[prefix] = float(node)
    return out
