"""MLflow tracking behind a small interface (MLflow and no-op).

One parent run per workflow execution, one child run per stage (joined by the `mlflow.parentRunId`
tag, so stages in other processes or pods attach to the same parent). The experiment is marked a
model-training one (`mlflow.experimentKind`: the UI's "custom model development" views, not GenAI's).
The parent's params are the whole flattened config plus its hash, and it carries the config itself
(`config.yaml`, loadable with `--config`) and, at the end, the pipeline summary
(`deepresearch.summary.log_summary`); a stage's params are only what it reads (`stage_params`: its
cache key). Every run carries MLflow's context tags (`mlflow.user`, `mlflow.source.name/type`,
`mlflow.source.git.commit`) and the Flyte execution id; training stages sample system metrics
(`stage_run(..., system_metrics=True)`: `system/*`, every 10 s unless $MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL
says otherwise). Datasets are logged as run inputs and outputs, each with its own digest, row count and
schema (`tracking.datasets`); a stage's output directory is tagged `output.path`, and `output.temporary`
when it will be gone after the run (`output_tags`); metrics are named `stage/metric`. Nothing happens
at import time.

Checkpoints are MLflow 3 LoggedModels (`tracking.models`): a training stage logs the one it wrote
(`run.log_model`, in its own run), a stage handed a checkpoint links it as a model input
(`run.log_model_input`, found by its content digest), and metrics about one model are logged
against its model id (`run.log_metrics(..., model_id=)`).

    parent = start_parent_run(cfg.tracking, "full", tags={...})
    with stage_run(cfg, parent, "synthesis", flyte_execution_id=...) as run:
        run.log_metrics({"synthesis/success_rate": 0.97})
        log_parts(run, raw_dir, ["deep_search", "deep_research"], context="output", prefix="raw_")
        run.set_tags({**output_tags(raw_dir), "dataset.digest": manifest["digest"]})
    with stage_run(cfg, parent, "sft") as run:
        run.log_model_input(init_dir, name="init_model", digest=dir_digest(init_dir))
        model_id = log_trained_model(run, hf_dir, stage="sft", digest=dir_digest(hf_dir), params=...)

Faults fail fast and leave things tidy:
- Every client checks the store first: an HTTP store that does not answer fails in seconds with
  one line naming the URI (MLflow's own retries would take minutes). Unless set in the
  environment, MLflow's HTTP retries are bounded (`MLFLOW_HTTP_REQUEST_MAX_RETRIES` etc.).
- `BufferedTracker` queues metrics and tags and sends them from a background thread, retrying
  while the store is away: a training loop never waits on, or dies of, a logging failure; what
  could not be sent by the end is saved to a file next to the run's outputs.
- `stage_run(..., resume_file=)` continues the run recorded there (a stage resumed after a kill
  goes on with the killed attempt's run, not a second history), and a run whose body raises is
  closed FAILED; if the store is down by then, the body's error still surfaces.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Protocol
from urllib.parse import urlparse

from deepresearch.config import REPO_ROOT, PipelineConfig, TrackingConfig
from deepresearch.errors import TrackingError

log = logging.getLogger(__name__)
CHECK_TIMEOUT_S = 3.0  # for the store to accept a connection and answer /health
# MLflow's defaults (7 retries, backoff factor 2, 120 s per request) turn a dead server into minutes
# of waiting; these apply unless the environment sets them.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}

DEFAULT_DB = REPO_ROOT / "mlflow.db"
DEFAULT_ARTIFACTS = REPO_ROOT / "mlartifacts"
# The experiment tag by which MLflow 3's UI tells a model-training experiment from a GenAI one
# (its values: "custom_model_development", "genai_development"); set when the experiment lacks it.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
CONFIG_ARTIFACT = "config.yaml"  # the parent run's copy of the whole config


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
    def log_metrics(self, metrics: dict[str, float], step: int | None = None, model_id: str | None = None) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_dataset(self, path: Path, *, name: str, context: str, digest: str, rows: list[dict] | None = None,
                    num_rows: int | None = None, artifact_digest: str | None = None,
                    tags: dict[str, str] | None = None) -> None: ...
    def log_dict(self, data: dict, artifact_file: str) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_model(self, path: Path, *, stage: str, digest: str, params: dict[str, Any] | None = None) -> str | None: ...
    def log_model_input(self, path: Path, *, name: str, digest: str) -> str | None: ...


class NoopTracker:
    """Used when tracking is disabled (and on non-zero ranks)."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None, model_id: str | None = None) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_dataset(self, path: Path, *, name: str, context: str, digest: str, rows: list[dict] | None = None,
                    num_rows: int | None = None, artifact_digest: str | None = None,
                    tags: dict[str, str] | None = None) -> None: ...
    def log_dict(self, data: dict, artifact_file: str) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...

    def log_model(self, path: Path, *, stage: str, digest: str, params: dict[str, Any] | None = None) -> str | None:
        return None

    def log_model_input(self, path: Path, *, name: str, digest: str) -> str | None:
        return None


class MlflowTracker:
    """Logs to one MLflow run through the client API (no global state leaks between stages)."""

    def __init__(self, client: Any, run_id: str):
        self.client = client
        self.run_id = run_id
        self._experiment_id: str | None = None

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = self.client.get_run(self.run_id).info.experiment_id
        return self._experiment_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, model_id: str | None = None) -> None:
        """Metrics of the run; with `model_id`, also the LoggedModel's (shown on the model's page)."""
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step or 0, model_id=model_id) for k, v in sorted(metrics.items())]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        if tags:
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in sorted(tags.items())])

    def log_dataset(self, path: Path, *, name: str, context: str, digest: str, rows: list[dict] | None = None,
                    num_rows: int | None = None, artifact_digest: str | None = None,
                    tags: dict[str, str] | None = None) -> None:
        """Record a dataset as a run input or output: name, source path, its own sha256 digest, and what the
        MLflow dataset drawer shows — row count (`num_rows`, else the number of `rows`) and the schema
        inferred from `rows`, the first rows as a preview (`tracking.datasets` builds these).

        Args:
            artifact_digest: the digest of the artifact directory this dataset is part of (its producing
                run tags that one as `dataset.digest`); lineage follows it when given.
            tags: more input tags (e.g. kind=checkpoint).
        """
        import warnings

        import mlflow
        import pandas as pd
        from mlflow.entities import Dataset, DatasetInput, InputTag

        df = pd.DataFrame(rows if rows is not None else [])
        with warnings.catch_warnings():  # a local path matches two equivalent source types; either is right
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_pandas(df, source=str(path), name=name, digest=digest[:36])
            entity = ds._to_mlflow_entity()
        n = num_rows if num_rows is not None else len(df)
        profile = json.dumps({"num_rows": n, "num_elements": n * len(df.columns)})
        entity = Dataset(name=entity.name, digest=entity.digest, source_type=entity.source_type,
                         source=entity.source, schema=entity.schema if len(df.columns) else None, profile=profile)
        input_tags = [InputTag(key="mlflow.data.context", value=context), InputTag(key="sha256", value=digest)]
        if artifact_digest:
            input_tags.append(InputTag(key="artifact.digest", value=artifact_digest))
        input_tags += [InputTag(key=k, value=v) for k, v in sorted((tags or {}).items())]
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset=entity, tags=input_tags)])

    def log_dict(self, data: dict, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, data, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_model(self, path: Path, *, stage: str, digest: str, params: dict[str, Any] | None = None) -> str | None:
        """Log the checkpoint this run trained as a LoggedModel (`tracking.models.log_checkpoint`)."""
        from deepresearch.tracking.models import log_checkpoint

        return log_checkpoint(self.client, self.run_id, Path(path), stage=stage, digest=digest, params=params)

    def log_model_input(self, path: Path, *, name: str, digest: str) -> str | None:
        """Link a checkpoint this run reads as a model input (tagged `input.model.<name>`); one no run
        logged as a model (a registry base model, a store that was down) is recorded as what it is, a
        directory of files under its digest (`tracking.datasets.log_checkpoint_files`)."""
        from mlflow.entities import LoggedModelInput

        from deepresearch.tracking.datasets import log_checkpoint_files
        from deepresearch.tracking.models import INPUT_TAG, find_logged_model

        lm = find_logged_model(self.client, [self.experiment_id], digest)
        if lm is None:
            log_checkpoint_files(self, Path(path), name=name, digest=digest)
            return None
        self.client.log_inputs(self.run_id, models=[LoggedModelInput(lm.model_id)])
        self.set_tags({INPUT_TAG + name: lm.model_id})
        return lm.model_id


def log_trained_model(
    run: Tracker, path: Path, *, stage: str, digest: str, params: dict[str, Any] | None = None
) -> str | None:
    """`run.log_model`, where a store failure is a warning: the checkpoint is on disk, the stage's work
    stands (it can still be evaluated; registration then says that no LoggedModel has its digest)."""
    try:
        return run.log_model(path, stage=stage, digest=digest, params=params)
    except Exception as e:  # noqa: BLE001 - tracking failures never fail a training stage
        log.warning("tracking: could not log %s's checkpoint %s as an MLflow model (%s: %s)",
                    stage, path, type(e).__name__, str(e)[:300])
        return None


def stage_params(cfg: PipelineConfig, stage: str) -> dict[str, Any]:
    """The flattened config a stage reads (`config.STAGE_INPUTS`: its cache key) plus `config_hash`; the
    whole config for a name that is not a stage (the parent run holds it in any case)."""
    from deepresearch.config import STAGE_INPUTS

    flat = cfg.flat()
    paths = STAGE_INPUTS.get(stage)
    if paths is None:
        return {**flat, "config_hash": cfg.hash}
    own = {k: v for k, v in flat.items() if any(k == p or k.startswith(p + ".") for p in paths)}
    return {**own, "config_hash": cfg.hash}


def quiet_mlflow() -> None:
    """MLflow's INFO lines at WARNING: among them "Creating initial MLflow database tables..." and "Updating
    database tables" on a fresh SQLite store. `mlflow.store.db.utils` gets its own level, which MLflow's
    import-time logging setup (of the `mlflow` logger only) does not reset; call before opening a store."""
    for name in ("mlflow", "mlflow.store.db.utils", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


def output_tags(path: str | Path) -> dict[str, str]:
    """The tags of a stage's output directory: `output.path`, and `output.temporary` ("true" when the path
    lies in this process's temp directory: a local Flyte task's sandbox, the training stages' default run
    directories, gone after the run; `deepresearch lineage` does not show those). Decided where the path
    is written, with the writer's own temp directory: a reader's $TMPDIR may be another."""
    temporary = Path(path).resolve().is_relative_to(Path(tempfile.gettempdir()).resolve())
    return {"output.path": str(path), "output.temporary": str(temporary).lower()}


def check_store(uri: str) -> None:
    """Fail in seconds, with one line, when an HTTP tracking store does not answer.

    Raises:
        TrackingError: nothing listens at the URI's host and port, or it does not answer /health.
    """
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return  # a local store (sqlite, a directory) is opened, not reached
    host, port = parsed.hostname or "localhost", parsed.port or (443 if parsed.scheme == "https" else 80)
    fix = (
        "start the MLflow server, or point MLFLOW_TRACKING_URI / tracking.uri at a reachable store "
        "(or set tracking.enabled=false)"
    )
    try:
        with socket.create_connection((host, port), timeout=CHECK_TIMEOUT_S):
            pass
    except OSError as e:
        raise TrackingError(f"MLflow tracking store {uri} is unreachable ({e.strerror or e}); {fix}") from None
    import requests

    try:
        res = requests.get(uri.rstrip("/") + "/health", timeout=CHECK_TIMEOUT_S)
    except requests.RequestException as e:
        raise TrackingError(f"MLflow tracking store {uri} does not answer ({type(e).__name__}); {fix}") from None
    if res.status_code >= 500:
        raise TrackingError(f"MLflow tracking store {uri} answers /health with HTTP {res.status_code}; {fix}")


def preflight(cfg: PipelineConfig) -> None:
    """Check the tracking store before a stage does any work (no-op when tracking is off)."""
    if cfg.tracking.enabled:
        check_store(tracking_uri(cfg.tracking))


def _client(cfg: TrackingConfig) -> tuple[Any, str]:
    """An MLflow client and the experiment id (created on first use), after checking the store answers."""
    uri = tracking_uri(cfg)
    check_store(uri)  # before importing mlflow (seconds on a loaded machine): a dead store fails at once
    from mlflow import MlflowClient

    quiet_mlflow()
    if urlparse(uri).scheme in ("http", "https"):
        for key, value in _HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(cfg.experiment)
    if exp is not None:
        for key, value in EXPERIMENT_KIND.items():
            if key not in exp.tags:  # an experiment made elsewhere (by hand, an older version): mark it once
                client.set_experiment_tag(exp.experiment_id, key, value)
        return client, exp.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:///"):
        # artifacts (logged models included) beside the database, as for the default store, rather than
        # in MLflow's default ./mlruns of whatever directory the process runs in
        artifacts = Path(uri[len("sqlite:///"):]).resolve().parent / DEFAULT_ARTIFACTS.name
        artifacts.mkdir(parents=True, exist_ok=True)
        artifact_location = artifacts.as_uri()
    try:
        return client, client.create_experiment(cfg.experiment, artifact_location=artifact_location,
                                                tags=EXPERIMENT_KIND)
    except Exception:  # noqa: BLE001 - another process created it first
        return client, client.get_experiment_by_name(cfg.experiment).experiment_id


def context_tags() -> dict[str, str]:
    """MLflow's own run-context tags (what `mlflow.start_run` sets and the UI shows as User and Source):
    `mlflow.user`, `mlflow.source.name`, `mlflow.source.type` and, from this checkout when the entry
    point's does not say, `mlflow.source.git.commit`."""
    from mlflow.tracking.context.registry import resolve_tags

    tags = {k: str(v) for k, v in resolve_tags().items()}
    sha = git_sha()
    if sha != "unknown":
        tags.setdefault("mlflow.source.git.commit", sha)
    return tags


def start_parent_run(cfg: PipelineConfig, run_name: str, tags: dict[str, str] | None = None) -> str:
    """Create the parent run of one workflow execution; returns its run id ("" when disabled).

    It holds the whole config twice over: flattened as params (to compare runs in the UI) and as the
    artifact `config.yaml`, from which `--config` reproduces it (same `config_hash`)."""
    if not cfg.tracking.enabled:
        return ""
    client, exp_id = _client(cfg.tracking)
    run = client.create_run(
        exp_id,
        run_name=run_name,
        tags={**context_tags(), "config_hash": cfg.hash, "git_sha": git_sha(), "pipeline": cfg.name, **(tags or {})},
    )
    tracker = MlflowTracker(client, run.info.run_id)
    tracker.log_params({**cfg.flat(), "config_hash": cfg.hash})
    tracker.log_dict(cfg.model_dump(mode="json"), CONFIG_ARTIFACT)
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


def _recorded_run(client: Any, resume_file: Path | None, stage: str, config_hash: str) -> str | None:
    """The run id a previous attempt of this stage (same config) recorded in `resume_file`, if the store still has it."""
    if resume_file is None or not resume_file.is_file():
        return None
    try:
        run_id = json.loads(resume_file.read_text())["run_id"]
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - unreadable file, or a run the store no longer has: start afresh
        log.warning("tracking: %s names no run of the current store; starting a new run for %s", resume_file, stage)
        return None
    tags = run.data.tags
    return run_id if tags.get("stage") == stage and tags.get("config_hash") == config_hash else None


def _start_system_metrics(cfg: TrackingConfig, run_id: str, *, resumed: bool) -> Any:
    """MLflow's system-metrics sampler (CPU, memory, disk, network; GPU where `nvidia-ml-py` is installed)
    on a run, as `mlflow.start_run(log_system_metrics=True)` starts it (the interval: MLflow's 10 s, or
    $MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL, e.g. set by `mlflow.set_system_metrics_sampling_interval`).
    A resumed run continues its steps. None when it cannot start: a sampler never fails a stage."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, resume_logging=resumed, tracking_uri=tracking_uri(cfg))
        monitor.start()
        return monitor
    except Exception as e:  # noqa: BLE001 - e.g. psutil missing in an image
        log.warning("tracking: no system metrics for run %s (%s: %s)", run_id, type(e).__name__, str(e)[:300])
        return None


def _stop_system_metrics(monitor: Any) -> None:
    """Stop the sampler and send what it holds (its own errors are logged by MLflow, never raised)."""
    if monitor is not None:
        with contextlib.suppress(Exception):
            monitor.finish()


def _terminate(client: Any, run_id: str, status: str) -> None:
    """Close a run; a store that is down by now is logged, never raised over the stage's own outcome."""
    try:
        client.set_terminated(run_id, status=status)
    except Exception as e:  # noqa: BLE001
        log.warning("tracking: could not mark run %s %s (%s: %s)", run_id, status, type(e).__name__, str(e)[:300])


@contextlib.contextmanager
def stage_run(
    cfg: PipelineConfig,
    parent_run_id: str,
    stage: str,
    *,
    flyte_execution_id: str = "local",
    extra_tags: dict[str, str] | None = None,
    resume_file: Path | None = None,
    system_metrics: bool = False,
) -> Iterator[Tracker]:
    """A child run for one stage; FAILED (with the error as a tag) if the body raises.

    Args:
        flyte_execution_id: the workflow execution's id (`RunContext.execution_id`), tagged
            `flyte.execution_id`; "local" from the CLI.
        system_metrics: sample the machine's CPU, memory, disk, network (and GPU) into the run as
            `system/*` metrics while the body runs (`_start_system_metrics`): the training stages.
        resume_file: where a resumable stage records its run id ({"run_id": ...}, in its run
            directory). When it names a run of this stage in the store, that run is reopened and
            continued (a resumed training stage logs on from its checkpoint's step into the same
            history) instead of leaving the killed attempt's run RUNNING beside a new one.
    """
    if not cfg.tracking.enabled:
        yield NoopTracker()
        return
    client, exp_id = _client(cfg.tracking)
    run_id = _recorded_run(client, resume_file, stage, cfg.hash)
    resumed = run_id is not None
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
        tracker = MlflowTracker(client, run_id)
        attempts = int(client.get_run(run_id).data.tags.get("resumed", "0")) + 1
        tracker.set_tags({"resumed": str(attempts), f"resumed.{attempts}.flyte.execution_id": flyte_execution_id})
    else:
        tags = {
            **context_tags(),
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
        run_id = run.info.run_id
        tracker = MlflowTracker(client, run_id)
        tracker.log_params(stage_params(cfg, stage))  # what it reads; the parent run holds the whole config
        if resume_file is not None:
            from deepresearch.io import atomic_write_text

            atomic_write_text(resume_file, json.dumps({"run_id": run_id}) + "\n")
    monitor = _start_system_metrics(cfg.tracking, run_id, resumed=resumed) if system_metrics else None
    try:
        yield tracker
    except BaseException as e:
        _stop_system_metrics(monitor)
        with contextlib.suppress(Exception):  # the store may be the reason; the body's error must surface
            tracker.set_tags({"error": f"{type(e).__name__}: {e}"[:5000]})
        _terminate(client, run_id, "FAILED")
        raise
    _stop_system_metrics(monitor)
    _terminate(client, run_id, "FINISHED")


class BufferedTracker:
    """A Tracker whose metrics and tags go through a queue that a background thread sends.

    While the store is away, sends are retried with backoff (1 s doubling to 30 s) and nothing
    blocks the caller; at most `max_items` entries are kept (the oldest dropped first, counted).
    `close` waits up to `timeout_s` for the queue to drain, then writes what is left to `spill`
    (JSON lines) and warns. Datasets, dicts and artifacts go straight to the wrapped tracker.

        with BufferedTracker(run, spill=out / "unlogged_metrics.jsonl") as t:
            train(..., tracker=t)
    """

    def __init__(self, inner: Tracker, *, spill: Path | None = None, max_items: int = 100_000):
        self.inner = inner
        self.run_id = getattr(inner, "run_id", None)
        self.spill = spill
        self.max_items = max_items
        self.dropped = 0
        self.failures = 0
        self._queue: list[tuple[str, Any, int | None, str | None]] = []  # ("metrics" | "tags", dict, step, model id)
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="tracking-buffer", daemon=True)
        self._thread.start()

    def __enter__(self) -> BufferedTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _put(self, kind: str, data: dict, step: int | None, model_id: str | None = None) -> None:
        with self._cond:
            self._queue.append((kind, dict(data), step, model_id))
            if len(self._queue) > self.max_items:
                del self._queue[0]
                self.dropped += 1
            self._cond.notify()

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, model_id: str | None = None) -> None:
        self._put("metrics", metrics, step, model_id)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._put("tags", tags, None)

    def log_params(self, params: dict[str, Any]) -> None:
        self.inner.log_params(params)

    def log_dataset(self, path: Path, **kwargs: Any) -> None:
        self.inner.log_dataset(path, **kwargs)

    def log_dict(self, data: dict, artifact_file: str) -> None:
        self.inner.log_dict(data, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.inner.log_text(text, artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.inner.log_artifact(path, artifact_path)

    def log_model(self, path: Path, **kwargs: Any) -> str | None:
        return self.inner.log_model(path, **kwargs)

    def log_model_input(self, path: Path, **kwargs: Any) -> str | None:
        return self.inner.log_model_input(path, **kwargs)

    def _run(self) -> None:
        delay = 1.0
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                kind, data, step, model_id = self._queue[0]
            try:
                if kind == "metrics":
                    self.inner.log_metrics(data, step=step, **({"model_id": model_id} if model_id else {}))
                else:
                    self.inner.set_tags(data)
            except Exception as e:  # noqa: BLE001 - the store is away: keep it, try again later
                self.failures += 1
                if self.failures == 1:
                    log.warning("tracking: logging failed (%s: %s); buffering and retrying in the background",
                                type(e).__name__, str(e)[:200])
                with self._cond:
                    self._cond.wait(timeout=delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = 1.0
            with self._cond:
                if self._queue and self._queue[0][1] is data:
                    self._queue.pop(0)
                self._cond.notify_all()

    def close(self, timeout_s: float = 30.0) -> None:
        """Send what is queued (waiting at most `timeout_s`); spill the rest to a file."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            while self._queue and time.monotonic() < deadline:
                self._cond.wait(timeout=min(0.5, max(deadline - time.monotonic(), 0.01)))
            left = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        if self.dropped:
            log.warning("tracking: %d buffered entries were dropped (more than %d queued)", self.dropped, self.max_items)
        if not left:
            return
        where = "not saved (no spill file)"
        if self.spill is not None:
            try:
                with open(self.spill, "a") as f:
                    for kind, data, step, model_id in left:
                        entry = {"run_id": self.run_id, "kind": kind, "step": step, "data": data}
                        f.write(json.dumps({**entry, "model_id": model_id} if model_id else entry) + "\n")
                where = f"saved to {self.spill}"
            except OSError as e:
                where = f"not saved ({e})"
        log.warning("tracking: the store did not take %d buffered metric/tag entries of run %s by the end; %s",
                    len(left), self.run_id, where)
