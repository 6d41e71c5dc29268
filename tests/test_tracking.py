"""MLflow tracking: parent/child runs, params, dataset inputs, failures, system metrics, the summary."""

from pathlib import Path

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


def test_the_experiment_is_a_model_training_one_and_the_parent_run_holds_the_config(cfg, tmp_path):
    """`mlflow.experimentKind` on a new experiment and on one made elsewhere; the parent run's `config.yaml`
    is the config itself: loaded as `--config`, it has the same hash."""
    from mlflow import MlflowClient

    from deepresearch.tracking import CONFIG_ARTIFACT

    parent = start_parent_run(cfg, "full")
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    assert client.get_experiment_by_name("t").tags["mlflow.experimentKind"] == "custom_model_development"
    config = client.download_artifacts(parent, CONFIG_ARTIFACT, str(tmp_path))
    assert load_config(config).hash == cfg.hash

    client.create_experiment("by-hand", artifact_location=(tmp_path / "a").as_uri())
    start_parent_run(load_config("configs/tiny.yaml", [f"tracking.uri={cfg.tracking.uri}", "tracking.experiment=by-hand"]),
                     "full")
    assert client.get_experiment_by_name("by-hand").tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_training_stage_samples_system_metrics_and_others_do_not(cfg, monkeypatch):
    import time

    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.05")  # MLflow's default: 10 s
    parent = start_parent_run(cfg, "full")
    with stage_run(cfg, parent, "sft", system_metrics=True) as trained:
        time.sleep(1.0)
    with stage_run(cfg, parent, "quality") as gated:
        time.sleep(0.2)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    metrics = client.get_run(trained.run_id).data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_percentage"} <= set(metrics)
    assert not [k for k in client.get_run(gated.run_id).data.metrics if k.startswith("system/")]
    assert client.get_run(trained.run_id).info.status == "FINISHED"


def test_the_parent_run_carries_the_summary_and_links_each_stage_run_cached_ones_marked(cfg, tmp_path):
    """A second execution whose world stage was a cache hit: the world's record and run are the first
    execution's. The new parent run names every stage's run, marks the world cached, and holds the summary
    (its description, summary.md, summary.json)."""
    import json

    from mlflow import MlflowClient

    from deepresearch.summary import log_summary, render_summary, stage_record

    first = start_parent_run(cfg, "full", tags={"flyte.execution_id": "ex-1"})
    with stage_run(cfg, first, "world", flyte_execution_id="ex-1") as world:
        pass
    second = start_parent_run(cfg, "full", tags={"flyte.execution_id": "ex-2"})
    with stage_run(cfg, second, "synthesis", flyte_execution_id="ex-2") as synthesis:
        pass
    records = [stage_record("world", 3.0, execution_id="ex-1", parent_run_id=first, produced="a world"),
               stage_record("synthesis", 4.0, execution_id="ex-2", parent_run_id=second, produced="tasks")]
    ids = [world.run_id, synthesis.run_id]
    text = render_summary(cfg, parent_run_id=second, world_dir="/w", datasets_dir="/d", execution_id="ex-2",
                          stage_summaries=records, stage_run_ids=ids)
    log_summary(cfg, parent_run_id=second, text=text, stage_summaries=records, stage_run_ids=ids,
                execution_id="ex-2")
    finish_run(cfg, second)

    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    tags = client.get_run(second).data.tags
    assert tags["stage.world.run_id"] == world.run_id and tags["stage.world.cached"] == "true"
    assert tags["stage.synthesis.run_id"] == synthesis.run_id and tags["stage.synthesis.cached"] == "false"
    assert tags["cached_stages"] == "world"
    assert tags["mlflow.note.content"] == text and "(cached) a world" in text
    assert (Path(client.download_artifacts(second, "summary.md", str(tmp_path))).read_text()) == text
    summary = json.loads(Path(client.download_artifacts(second, "summary.json", str(tmp_path))).read_text())
    assert summary["execution_id"] == "ex-2" and summary["config_hash"] == cfg.hash
    assert [(s["stage"], s["run_id"], s["cached"]) for s in summary["stages"]] == [
        ("world", world.run_id, True), ("synthesis", synthesis.run_id, False)]
    # the cached stage's run stays the first execution's child
    assert client.get_run(world.run_id).data.tags["mlflow.parentRunId"] == first


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
