"""MLflow Model Registry: versions registered from runs; `champion` moves only through the gate."""

import json

import pytest

from deepresearch.config import load_config
from deepresearch.tracking import stage_run, start_parent_run
from deepresearch.tracking.registry import promote_if_better, register_model


@pytest.fixture
def cfg(tmp_path):
    return load_config("configs/tiny.yaml", [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "tracking.experiment=reg"])


def _checkpoint(tmp_path, name):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (d / "model.safetensors").write_bytes(b"\0" * 16)
    return d


def _version(cfg, tmp_path, label):
    parent = start_parent_run(cfg, "full")
    with stage_run(cfg, parent, "sft") as run:
        pass
    return run.run_id, register_model(cfg.tracking, "policy", run.run_id, _checkpoint(tmp_path, label))


def test_champion_moves_only_when_the_gate_passes(cfg, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    _, v1 = _version(cfg, tmp_path, "a")
    d1 = promote_if_better(cfg.tracking, "policy", v1, metrics={"compliance": 0.5}, thresholds={"compliance": 0.4})
    assert d1.promoted and str(client.get_model_version_by_alias("policy", "champion").version) == v1

    run2, v2 = _version(cfg, tmp_path, "b")
    d2 = promote_if_better(cfg.tracking, "policy", v2, metrics={"compliance": 0.3}, thresholds={"compliance": 0.4})
    assert not d2.promoted and "below the gate" in d2.reasons[0]
    assert str(client.get_model_version_by_alias("policy", "champion").version) == v1  # unchanged
    assert client.get_run(run2).data.tags["promotion.policy"] == "rejected"

    _, v3 = _version(cfg, tmp_path, "c")
    d3 = promote_if_better(cfg.tracking, "policy", v3, metrics={"compliance": 0.7}, thresholds={"compliance": 0.4},
                           champion_metrics={"compliance": 0.5}, higher_is_better=["compliance"])
    assert d3.promoted and d3.previous_champion == v1
    assert str(client.get_model_version_by_alias("policy", "champion").version) == v3
    assert str(client.get_model_version_by_alias("policy", "challenger").version) == v1
    assert "beats champion" in d3.reasons[-1]


def test_register_refuses_a_directory_that_is_not_a_checkpoint(cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        register_model(cfg.tracking, "policy", "run", tmp_path)
