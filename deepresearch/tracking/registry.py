"""MLflow Model Registry: register policy and judge versions, and move the `champion` alias only
when the evaluation decided so (the previous champion becomes `challenger`).

    version = register_model(cfg.tracking, "policy", run_id, Path("out/policy/hf"))
    current = current_version(cfg.tracking, "policy")                 # the champion's version, or None
    local = download_version(cfg.tracking, "policy", current, Path("tmp/champion"))
    decision = promote(cfg.tracking, "policy", version, promoted=True, reasons=[...], metrics={...})

What decides is `deepresearch.evaluation.promotion` (the champion evaluated on the same held-out
tasks). Every decision (promoted or not, with its reasons and figures) is logged to the run that
produced the version and tagged on the version.
"""

from __future__ import annotations

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

    from deepresearch.tracking import tracking_uri

    return MlflowClient(tracking_uri=tracking_uri(cfg), registry_uri=tracking_uri(cfg))


def register_model(cfg: TrackingConfig, name: str, run_id: str, model_dir: Path, *, description: str = "") -> str:
    """Log an HF checkpoint directory as artifacts of `run_id` and register it as a new version of `name`.

    Returns:
        The new version number (as a string).
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a Hugging Face checkpoint directory (no config.json)")
    client = _client(cfg)
    client.log_artifacts(run_id, str(model_dir), artifact_path=name)
    try:
        client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - first version of this model
        client.create_registered_model(name, description=description or None)
    source = f"{client.get_run(run_id).info.artifact_uri}/{name}"
    from deepresearch.io import dir_digest

    # the checkpoint's digest names the run that trained it (its `model.digest` tag): lineage starts there
    mv = client.create_model_version(name, source=source, run_id=run_id, description=description or None,
                                     tags={"model.digest": dir_digest(model_dir)})
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
    """Download a registered version's checkpoint directory (what `register_model` logged) under `dst`."""
    client = _client(cfg)
    mv = client.get_model_version(name, version)
    if not mv.run_id:
        raise FileNotFoundError(f"{name} v{version} has no run: its checkpoint cannot be located ({mv.source})")
    Path(dst).mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(mv.run_id, name, str(dst)))


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
