"""Checkpoints as MLflow 3 LoggedModels, logged by the run that trained them.

Each training stage (mid1, mid2, sft, judge, rl) logs the Hugging Face directory it wrote with the
transformers flavour (`mlflow.transformers.log_model` from the local checkpoint: the files are
copied once, nothing is loaded or saved again), so `mlflow.transformers.load_model("models:/policy/1")`
and `mlflow.pyfunc.load_model(...)` work, the run list shows the model, and a registered version's
source run is the training run. A LoggedModel carries the config its stage read as params
(`tracking.stage_params`), the checkpoint's model card, and the tag `model.digest`
(`deepresearch.io.dir_digest` of the directory): a stage that is handed a checkpoint directory finds
its LoggedModel by that digest and links it as a model input.

    model_id = log_checkpoint(client, run_id, Path("out/sft/hf"), stage="sft", digest=d, params={...})
    lm = find_logged_model(client, [experiment_id], digest)          # None when no run logged it
    path = download_logged_checkpoint("models:/policy/3", Path("tmp"), tracking_uri=uri)
"""

from __future__ import annotations

import contextlib
import logging
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from deepresearch.errors import TrackingError

DIGEST_TAG = "model.digest"
INPUT_TAG = "input.model."  # + the input's role ("init_model", "policy", ...) = its model id
POLICY_TASK = "text-generation"
JUDGE_TASK = "text-classification"  # a Qwen2ForSequenceClassification over (report, rubric item)
CHECKPOINT_SUBDIR = "model"  # where the transformers flavour keeps the checkpoint's own files
_REQUIREMENTS = ("transformers", "torch", "tokenizers", "safetensors")


class ModelNotLoggedError(TrackingError):
    """No LoggedModel in the store has the checkpoint's digest (its training run did not log it)."""


def task_for(stage: str) -> str:
    """The transformers pipeline task of a stage's checkpoint."""
    return JUDGE_TASK if stage == "judge" else POLICY_TASK


@contextlib.contextmanager
def use_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at `uri` for the duration (restored after).

    `mlflow.transformers.log_model`, `mlflow.register_model` and the SQL registry store's lookup of a
    `models:/<model_id>` source resolve the global tracking URI, not a client's."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(uri):
        yield


@contextlib.contextmanager
def _quiet_model_logging() -> Iterator[None]:
    # license lookups for a local checkpoint and pip's own version are known, harmless warnings
    names = ("mlflow.transformers", "mlflow.utils.environment", "mlflow.utils.uv_utils", "mlflow.models.model")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _pip_requirements() -> list[str]:
    # given explicitly: MLflow's default for a torch model pins torchvision, which this project lacks
    reqs = []
    for pkg in _REQUIREMENTS:
        try:
            reqs.append(f"{pkg}=={metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            reqs.append(pkg)
    return reqs


def model_card(path: Path, stage: str, digest: str):
    """The checkpoint's `README.md` as a Hugging Face ModelCard, or a short one from its metadata."""
    from huggingface_hub import ModelCard

    readme = Path(path) / "README.md"
    if readme.is_file():
        return ModelCard(readme.read_text())
    from deepresearch.modeling.checkpoint import read_metadata

    meta = read_metadata(path).get("metadata", {})
    facts = "".join(f"- {k}: {meta[k]}\n" for k in ("stage", "config_hash", "steps") if k in meta)
    return ModelCard(
        f"---\nlibrary_name: transformers\npipeline_tag: {task_for(stage)}\ntags: [deepresearch, {stage}]\n---\n"
        f"# deepresearch {stage} checkpoint\n\nContent digest `{digest}`.\n\n{facts}"
    )


def log_checkpoint(
    client: Any, run_id: str, path: Path, *, stage: str, digest: str, params: dict[str, Any] | None = None
) -> str:
    """Log the checkpoint directory `path` as a LoggedModel of run `run_id`; returns its model id.

    Args:
        client: an MlflowClient of the store the run is in.
        stage: the training stage; names the model and picks the task (`task_for`).
        digest: `dir_digest(path)`, tagged `model.digest` for `find_logged_model`.
        params: the config the stage read (`tracking.stage_params`), recorded on the model.
    Raises:
        FileNotFoundError: `path` is not a Hugging Face checkpoint directory.
        MlflowException: the store refused (the model is then marked FAILED).
    """
    import mlflow

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a Hugging Face checkpoint directory (no config.json)")
    experiment_id = client.get_run(run_id).info.experiment_id
    task = task_for(stage)
    lm = client.create_logged_model(
        experiment_id, name=stage, source_run_id=run_id, model_type=task,
        params={k: str(v)[:6000] for k, v in (params or {}).items()},
        tags={DIGEST_TAG: digest, "stage": stage},
    )
    with use_tracking_uri(client.tracking_uri), _quiet_model_logging():
        mlflow.transformers.log_model(
            str(path), name=stage, task=task, model_id=lm.model_id, run_id=run_id,
            model_card=model_card(path, stage, digest), pip_requirements=_pip_requirements(),
        )
    return lm.model_id


def find_logged_model(client: Any, experiment_ids: list[str], digest: str):
    """The newest READY LoggedModel tagged with `digest` in these experiments, or None."""
    from mlflow.entities import LoggedModelStatus

    models = client.search_logged_models(
        experiment_ids, filter_string=f"tags.`{DIGEST_TAG}` = '{digest}'",
        order_by=[{"field_name": "creation_timestamp", "ascending": False}],
    )
    return next((m for m in models if m.status == LoggedModelStatus.READY), None)


def download_logged_checkpoint(model_uri: str, dst: Path, *, tracking_uri: str) -> Path:
    """Download a logged or registered model (`models:/NAME/VERSION`, `models:/<model_id>`) under `dst`;
    returns the Hugging Face checkpoint directory inside it (the files its training stage wrote)."""
    import mlflow

    Path(dst).mkdir(parents=True, exist_ok=True)
    with use_tracking_uri(tracking_uri):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    checkpoint = local / CHECKPOINT_SUBDIR
    if not (checkpoint / "config.json").is_file():
        raise FileNotFoundError(f"{model_uri} holds no checkpoint directory {CHECKPOINT_SUBDIR}/ (downloaded to {local})")
    return checkpoint
