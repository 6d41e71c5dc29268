"""MLflow tracking behind a small interface (MLflow and no-op).

One parent run per workflow execution, one child run per stage (joined by the `mlflow.parentRunId`
tag, so stages in other processes or pods attach to the same parent). Params are the flattened
config plus its hash; datasets are logged as run inputs (`mlflow.log_input`) with their sha256;
metrics are named `stage/metric`. Nothing happens at import time.

    parent = start_parent_run(cfg.tracking, "full", tags={...})
    with stage_run(cfg, parent, "synthesis", flyte_execution_id=...) as run:
        run.log_metrics({"synthesis/success_rate": 0.97})
        run.log_dataset(path, name="deep_search", context="raw", digest=sha)
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator, Protocol

from deepresearch.config import REPO_ROOT, PipelineConfig, TrackingConfig

DEFAULT_DB = REPO_ROOT / "mlflow.db"
DEFAULT_ARTIFACTS = REPO_ROOT / "mlartifacts"


def tracking_uri(cfg: TrackingConfig) -> str:
    """Config `tracking.uri`, else $MLFLOW_TRACKING_URI, else SQLite in the repo (gitignored)."""
    return cfg.uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"


@functools.lru_cache(maxsize=1)
def git_sha() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker(Protocol):
    run_id: str | None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_dataset(self, path: Path, *, name: str, context: str, digest: str, rows: list[dict] | None = None) -> None: ...
    def log_dict(self, data: dict, artifact_file: str) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...


class NoopTracker:
    """Used when tracking is disabled (and on non-zero ranks)."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_dataset(self, path: Path, *, name: str, context: str, digest: str, rows: list[dict] | None = None) -> None: ...
    def log_dict(self, data: dict, artifact_file: str) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...


class MlflowTracker:
    """Logs to one MLflow run through the client API (no global state leaks between stages)."""

    def __init__(self, client: Any, run_id: str):
        self.client = client
        self.run_id = run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step or 0) for k, v in sorted(metrics.items())]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        if tags:
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in sorted(tags.items())])

    def log_dataset(self, path: Path, *, name: str, context: str, digest: str, rows: list[dict] | None = None) -> None:
        """Record a dataset as a run input: name, source path, sha256 digest, optional preview rows."""
        import warnings

        import mlflow
        import pandas as pd
        from mlflow.entities import DatasetInput, InputTag

        df = pd.DataFrame(rows if rows is not None else [])
        with warnings.catch_warnings():  # a local path matches two equivalent source types; either is right
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_pandas(df, source=str(path), name=name, digest=digest[:36])
            entity = ds._to_mlflow_entity()
        tags = [InputTag(key="mlflow.data.context", value=context), InputTag(key="sha256", value=digest)]
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset=entity, tags=tags)])

    def log_dict(self, data: dict, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, data, artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)


def _quiet() -> None:
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _client(cfg: TrackingConfig) -> tuple[Any, str]:
    """An MLflow client and the experiment id (created on first use)."""
    from mlflow import MlflowClient

    _quiet()
    uri = tracking_uri(cfg)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(cfg.experiment)
    if exp is not None:
        return client, exp.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:///") and uri == f"sqlite:///{DEFAULT_DB}":
        DEFAULT_ARTIFACTS.mkdir(exist_ok=True)
        artifact_location = DEFAULT_ARTIFACTS.as_uri()
    try:
        return client, client.create_experiment(cfg.experiment, artifact_location=artifact_location)
    except Exception:  # noqa: BLE001 - another process created it first
        return client, client.get_experiment_by_name(cfg.experiment).experiment_id


def start_parent_run(cfg: PipelineConfig, run_name: str, tags: dict[str, str] | None = None) -> str:
    """Create the parent run of one workflow execution; returns its run id ("" when disabled)."""
    if not cfg.tracking.enabled:
        return ""
    client, exp_id = _client(cfg.tracking)
    run = client.create_run(
        exp_id,
        run_name=run_name,
        tags={"config_hash": cfg.hash, "git_sha": git_sha(), "pipeline": cfg.name, **(tags or {})},
    )
    tracker = MlflowTracker(client, run.info.run_id)
    tracker.log_params({**cfg.flat(), "config_hash": cfg.hash})
    return run.info.run_id


def finish_run(cfg: PipelineConfig, run_id: str, status: str = "FINISHED") -> None:
    if cfg.tracking.enabled and run_id:
        client, _ = _client(cfg.tracking)
        client.set_terminated(run_id, status=status)


def fail_open_runs(cfg: PipelineConfig, execution_id: str, message: str) -> list[str]:
    """Mark every still-running run of one workflow execution FAILED (the workflow's failure handler)."""
    if not cfg.tracking.enabled:
        return []
    client, exp_id = _client(cfg.tracking)
    runs = client.search_runs(
        [exp_id], filter_string=f"tags.`flyte.execution_id` = '{execution_id}' and attributes.status = 'RUNNING'"
    )
    for r in runs:
        client.set_tag(r.info.run_id, "error", message[:5000])
        client.set_terminated(r.info.run_id, status="FAILED")
    return [r.info.run_id for r in runs]


def get_tracker(cfg: PipelineConfig, run_id: str) -> Tracker:
    if not cfg.tracking.enabled or not run_id:
        return NoopTracker()
    client, _ = _client(cfg.tracking)
    return MlflowTracker(client, run_id)


@contextlib.contextmanager
def stage_run(
    cfg: PipelineConfig,
    parent_run_id: str,
    stage: str,
    *,
    flyte_execution_id: str = "local",
    extra_tags: dict[str, str] | None = None,
) -> Iterator[Tracker]:
    """A child run for one stage; FAILED (with the error as a tag) if the body raises."""
    if not cfg.tracking.enabled:
        yield NoopTracker()
        return
    client, exp_id = _client(cfg.tracking)
    tags = {
        "stage": stage,
        "config_hash": cfg.hash,
        "git_sha": git_sha(),
        "flyte.execution_id": flyte_execution_id,
        # the container image a cluster task runs in (Flyte sets it); "local" outside a pod
        "flyte.image": os.environ.get("FLYTE_INTERNAL_IMAGE", "local"),
        **(extra_tags or {}),
    }
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(exp_id, run_name=stage, tags=tags)
    tracker = MlflowTracker(client, run.info.run_id)
    tracker.log_params({**cfg.flat(), "config_hash": cfg.hash})
    try:
        yield tracker
    except BaseException as e:
        tracker.set_tags({"error": f"{type(e).__name__}: {e}"[:5000]})
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id, status="FINISHED")
