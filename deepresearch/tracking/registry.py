"""MLflow Model Registry: register policy and judge versions, and move the `champion` alias only
when the evaluation decided so (the previous champion becomes `challenger`).

    version = register_model(cfg.tracking, "policy", Path("out/rl/policy"))
    current = current_version(cfg.tracking, "policy")                 # the champion's version, or None
    local = download_version(cfg.tracking, "policy", current, Path("tmp/champion"))
    decision = promote(cfg.tracking, "policy", version, promoted=True, reasons=[...], metrics={...})

A version is made from the LoggedModel the checkpoint's training run logged (`tracking.models`), found
by the directory's content digest: its source run is that training run, and it loads with
`mlflow.transformers.load_model("models:/policy/<version>")` or `mlflow.pyfunc.load_model`.

What decides is `deepresearch.evaluation.promotion` (the champion evaluated on the same held-out
tasks). Every decision (promoted or not, with its reasons and figures) is logged to the run that
produced the version and tagged on the version.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from pydantic import BaseModel

from deepresearch.config import TrackingConfig

CHAMPION = "champion"
CHALLENGER = "challenger"


class PromotionDecision(BaseModel):
    model: str
    version: str
    promoted: bool
    reasons: list[str]  # why (each threshold or comparison that decided)
    metrics: dict[str, float]
    previous_champion: str | None = None


def _client(cfg: TrackingConfig):
    from mlflow import MlflowClient

    from deepresearch.tracking import quiet_mlflow, tracking_uri

    quiet_mlflow()
    return MlflowClient(tracking_uri=tracking_uri(cfg), registry_uri=tracking_uri(cfg))


def register_model(cfg: TrackingConfig, name: str, model_dir: Path, *, description: str = "") -> str:
    """Register the LoggedModel of the checkpoint directory `model_dir` as a new version of `name`.

    Returns:
        The new version number (as a string).
    Raises:
        FileNotFoundError: `model_dir` is not a Hugging Face checkpoint directory.
        ModelNotLoggedError: no LoggedModel of the experiment has the directory's digest (the stage that
            trained it ran without tracking, or could not reach the store at its end).
    """
    import mlflow

    from deepresearch.io import dir_digest
    from deepresearch.tracking import tracking_uri
    from deepresearch.tracking.models import ModelNotLoggedError, find_logged_model, use_tracking_uri

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a Hugging Face checkpoint directory (no config.json)")
    client = _client(cfg)
    exp = client.get_experiment_by_name(cfg.experiment)
    digest = dir_digest(model_dir)
    lm = find_logged_model(client, [exp.experiment_id], digest) if exp is not None else None
    if lm is None:
        raise ModelNotLoggedError(
            f"cannot register {model_dir} as {name!r}: no MLflow model of experiment {cfg.experiment!r} has its "
            f"digest {digest[:16]} (the run that trained it did not log it; rerun that stage with tracking on)"
        )
    with use_tracking_uri(tracking_uri(cfg)), contextlib.redirect_stderr(io.StringIO()):  # "Created version ..."
        mv = mlflow.register_model(lm.model_uri, name)
    if description:
        client.update_model_version(name, mv.version, description=description)
    # the checkpoint's digest also names the run that trained it (its `model.digest` tag): lineage starts there
    client.set_model_version_tag(name, mv.version, "model.digest", digest)
    return str(mv.version)


def _current(client, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception:  # noqa: BLE001 - the alias is not set yet
        return None


def current_version(cfg: TrackingConfig, name: str, alias: str = CHAMPION) -> str | None:
    """The version `alias` points at, or None when `name` has no such alias (or is not registered)."""
    return _current(_client(cfg), name, alias)


def download_version(cfg: TrackingConfig, name: str, version: str, dst: Path) -> Path:
    """Download a registered version under `dst`; returns its Hugging Face checkpoint directory."""
    from deepresearch.tracking import tracking_uri
    from deepresearch.tracking.models import download_logged_checkpoint

    return download_logged_checkpoint(f"models:/{name}/{version}", Path(dst), tracking_uri=tracking_uri(cfg))


def promote(
    cfg: TrackingConfig, name: str, version: str, *, promoted: bool, reasons: list[str], metrics: dict[str, float]
) -> PromotionDecision:
    """Apply a decision: if `promoted`, `champion` moves to `version` and the previous champion becomes
    `challenger`; either way the decision is logged to the version's run and tagged on the version."""
    client = _client(cfg)
    previous = _current(client, name, CHAMPION)
    if promoted:
        if previous is not None and previous != version:
            client.set_registered_model_alias(name, CHALLENGER, previous)
        client.set_registered_model_alias(name, CHAMPION, version)
    decision = PromotionDecision(
        model=name, version=version, promoted=promoted, reasons=reasons, metrics=metrics, previous_champion=previous
    )
    mv = client.get_model_version(name, version)
    if mv.run_id:
        client.log_dict(mv.run_id, decision.model_dump(mode="json"), f"promotion/{name}-v{version}.json")
        client.set_tag(mv.run_id, f"promotion.{name}", "promoted" if promoted else "rejected")
    client.set_model_version_tag(name, version, "gate", json.dumps({"promoted": promoted, "reasons": reasons}))
    return decision
