"""MLflow Model Registry: register policy and judge versions, and move the `champion` alias only
when the evaluation gate passes (the previous champion becomes `challenger`).

    version = register_model(cfg.tracking, "policy", run_id, Path("out/policy/hf"))
    decision = promote_if_better(cfg.tracking, "policy", version, metrics={"compliance": 0.71},
                                 thresholds={"compliance": 0.6}, higher_is_better=["compliance"])

Every decision (promoted or not, with its figures) is logged to the run that produced the version.
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
    mv = client.create_model_version(name, source=source, run_id=run_id, description=description or None)
    return str(mv.version)


def _current(client, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception:  # noqa: BLE001 - the alias is not set yet
        return None


def promote_if_better(
    cfg: TrackingConfig,
    name: str,
    version: str,
    *,
    metrics: dict[str, float],
    thresholds: dict[str, float],
    champion_metrics: dict[str, float] | None = None,
    higher_is_better: list[str] | None = None,
) -> PromotionDecision:
    """Move `champion` to `version` if every threshold is met and it beats the current champion
    on every metric in `higher_is_better` (when the champion's figures are given)."""
    client = _client(cfg)
    reasons: list[str] = []
    ok = True
    for key, minimum in sorted(thresholds.items()):
        value = metrics.get(key)
        if value is None or value < minimum:
            ok = False
            reasons.append(f"{key}={value} below the gate's {minimum}")
        else:
            reasons.append(f"{key}={value:.4f} meets the gate's {minimum}")
    previous = _current(client, name, CHAMPION)
    if ok and previous is not None and champion_metrics is not None:
        for key in higher_is_better or []:
            mine, theirs = metrics.get(key), champion_metrics.get(key)
            if mine is None or theirs is None or mine <= theirs:
                ok = False
                reasons.append(f"{key}={mine} does not beat champion v{previous}'s {theirs}")
            else:
                reasons.append(f"{key}={mine:.4f} beats champion v{previous}'s {theirs:.4f}")
    if ok:
        if previous is not None and previous != version:
            client.set_registered_model_alias(name, CHALLENGER, previous)
        client.set_registered_model_alias(name, CHAMPION, version)
    decision = PromotionDecision(
        model=name, version=version, promoted=ok, reasons=reasons, metrics=metrics, previous_champion=previous
    )
    mv = client.get_model_version(name, version)
    if mv.run_id:
        client.log_dict(mv.run_id, decision.model_dump(mode="json"), f"promotion/{name}-v{version}.json")
        client.set_tag(mv.run_id, f"promotion.{name}", "promoted" if ok else "rejected")
    client.set_model_version_tag(name, version, "gate", json.dumps({"promoted": ok, "reasons": reasons}))
    return decision
