"""MLflow tracking: parent/child runs, params, dataset inputs, failures."""

import pytest

from deepresearch.config import load_config
from deepresearch.tracking import finish_run, get_tracker, stage_run, start_parent_run


@pytest.fixture
def cfg(tmp_path):
    return load_config("configs/tiny.yaml", [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "tracking.experiment=t"])


def test_parent_child_lineage_and_dataset_inputs(cfg, tmp_path):
    from mlflow import MlflowClient

    parent = start_parent_run(cfg, "full", tags={"flyte.execution_id": "exec-1"})
    with stage_run(cfg, parent, "synthesis", flyte_execution_id="exec-1") as run:
        run.log_metrics({"synthesis/success_rate": 0.5})
        run.log_dataset(tmp_path / "raw", name="raw_deep_search", context="output", digest="ab" * 32,
                        rows=[{"task_id": "t1", "question": "q"}])
    finish_run(cfg, parent)

    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    child = client.get_run(run.run_id)
    assert child.data.tags["mlflow.parentRunId"] == parent
    assert child.data.tags["stage"] == "synthesis"
    assert child.data.tags["flyte.execution_id"] == "exec-1"
    assert child.data.tags["config_hash"] == cfg.hash and child.data.tags["git_sha"]
    assert child.data.params["config_hash"] == cfg.hash
    assert child.data.params["synthesis.n_deep_search"] == str(cfg.synthesis.n_deep_search)
    # what the stage reads (its cache key, config.STAGE_INPUTS) only; the parent holds the whole config
    assert {k.split(".")[0] for k in child.data.params} == {"search", "agent", "synthesis", "capabilities", "config_hash"}
    assert client.get_run(parent).data.params["rl.steps"] == str(cfg.rl.steps)
    # MLflow's context tags, as `mlflow.start_run` would set them (the UI's User and Source columns)
    for run_id in (parent, run.run_id):
        tags = client.get_run(run_id).data.tags
        assert tags["mlflow.user"] and tags["mlflow.source.name"] and tags["mlflow.source.type"] == "LOCAL"
        assert tags["mlflow.source.git.commit"] == tags["git_sha"]
    assert child.data.metrics["synthesis/success_rate"] == 0.5
    [inp] = child.inputs.dataset_inputs
    assert inp.dataset.name == "raw_deep_search" and str(tmp_path / "raw") in inp.dataset.source
    tags = {t.key: t.value for t in inp.tags}
    assert tags["mlflow.data.context"] == "output" and tags["sha256"] == "ab" * 32
    assert client.get_run(parent).info.status == "FINISHED"


def test_failed_stage_is_marked_failed_with_the_error(cfg):
    from mlflow import MlflowClient

    parent = start_parent_run(cfg, "full")
    with pytest.raises(RuntimeError):
        with stage_run(cfg, parent, "quality") as run:
            raise RuntimeError("expectation failed: tool_calls")
    child = MlflowClient(tracking_uri=cfg.tracking.uri).get_run(run.run_id)
    assert child.info.status == "FAILED" and "expectation failed" in child.data.tags["error"]


def test_disabled_tracking_is_a_noop(tmp_path):
    cfg = load_config("configs/tiny.yaml", ["tracking.enabled=false"])
    assert start_parent_run(cfg, "full") == ""
    with stage_run(cfg, "", "world") as run:
        run.log_metrics({"a": 1.0})
    assert run.run_id is None and get_tracker(cfg, "").run_id is None
