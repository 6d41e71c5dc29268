"""The `full` workflow as a local Flyte execution: outputs, MLflow lineage, cache hit, failing gate."""

import json
from pathlib import Path

import pytest

from tests.conftest import SMALL, requires_sandbox


def _text(summary) -> str:
    """The summary a workflow returns: the markdown file `summarize` wrote."""
    return Path(summary.path).read_text()

pytestmark = [pytest.mark.slow, requires_sandbox]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Isolate Flyte's local cache and the MLflow store for this module."""
    import flytekit.core.local_cache as lc

    root = tmp_path_factory.mktemp("flyte")
    old = lc.CACHE_LOCATION
    lc.CACHE_LOCATION = str(root / "cache")
    lc.LocalTaskCache._initialized = False
    db = root / "mlflow.db"
    yield {"overrides": SMALL + [f"tracking.uri=sqlite:///{db}", "tracking.experiment=wf"], "uri": f"sqlite:///{db}"}
    lc.CACHE_LOCATION = old
    lc.LocalTaskCache._initialized = False


def _runs(uri):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("wf")
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def test_full_runs_tracks_lineage_and_hits_the_cache_on_rerun(env):
    from deepresearch.io import content_digest, file_hashes
    from workflows.data import data as full

    out = full(config="configs/tiny.yaml", overrides=env["overrides"])
    data = Path(out.datasets.path)
    for name in ("deep_search", "deep_research"):
        assert (data / name / "tasks.jsonl").stat().st_size > 0
        assert (data / name / "trajectories.jsonl").stat().st_size > 0
    # the capability datasets too: the synthesis task's config carries the `capabilities` section
    assert (data / "planning" / "trajectories.jsonl").stat().st_size > 0
    manifest = json.loads((data / "manifest.json").read_text())
    # the digest names the data files only (io.content_digest), so a reworded report keeps it
    assert manifest["digest"] == content_digest(file_hashes(data, exclude=("manifest.json", "quality_report.json")))
    assert "quality_report.json" in manifest["sha256"]
    assert "| quality |" in _text(out.summary)

    client, runs = _runs(env["uri"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent_id = parents[0].info.run_id
    assert {r.data.tags["stage"] for r in children} == {"world", "synthesis", "quality"}
    assert all(r.data.tags["mlflow.parentRunId"] == parent_id for r in children)
    by_stage = {r.data.tags["stage"]: r for r in children}
    # Lineage: synthesis reads the world, quality reads the raw datasets synthesis wrote.
    syn_inputs = {i.dataset.name: i for i in by_stage["synthesis"].inputs.dataset_inputs}
    q_inputs = {i.dataset.name: i for i in by_stage["quality"].inputs.dataset_inputs}
    assert "world" in syn_inputs and syn_inputs["world"].dataset.digest
    assert {"raw_deep_search", "raw_deep_research"} <= set(syn_inputs) & set(q_inputs)
    assert q_inputs["raw_deep_search"].dataset.digest == syn_inputs["raw_deep_search"].dataset.digest
    assert {"deep_search", "deep_research"} <= set(q_inputs)  # gated outputs, context "output"
    assert by_stage["quality"].data.tags["dataset.digest"] == manifest["digest"]

    # Same config again: every stage task is a cache hit, so no new stage runs are created. A changed `rl.*`
    # (or `tracking.*`, `infra.*`) value is outside every data stage's cache key: the same hits.
    out2 = full(config="configs/tiny.yaml", overrides=env["overrides"] + ["rl.actor_lr=0.5", "infra.data.cpu='8'"])
    _, runs2 = _runs(env["uri"])
    assert len([r for r in runs2 if "mlflow.parentRunId" in r.data.tags]) == 3
    assert len([r for r in runs2 if "mlflow.parentRunId" not in r.data.tags]) == 2
    assert json.loads((Path(out2.datasets.path) / "manifest.json").read_text())["digest"] == manifest["digest"]
    for run_id in (r.info.run_id for r in children):
        assert run_id in _text(out2.summary)  # the summary points at the cached stages' runs
    # the new parent run links each cached stage's run (still the first parent's child) and marks it cached
    new_parent = next(r for r in runs2 if "mlflow.parentRunId" not in r.data.tags and r.info.run_id != parent_id)
    for r in children:
        stage = r.data.tags["stage"]
        assert new_parent.data.tags[f"stage.{stage}.run_id"] == r.info.run_id
        assert new_parent.data.tags[f"stage.{stage}.cached"] == "true"
    assert new_parent.data.tags["mlflow.note.content"] == _text(out2.summary) and "(cached)" in _text(out2.summary)
    assert client.get_run(parent_id).data.tags["cached_stages"] == ""  # the first execution ran every stage
    assert {"config.yaml", "summary.md", "summary.json"} <= {a.path for a in client.list_artifacts(parent_id)}


def test_failing_expectation_stops_the_workflow(env):
    from workflows.data import data as full

    overrides = env["overrides"] + ["quality.expectations.max_tool_calls=3", "tracking.experiment=wf-fail"]
    with pytest.raises(Exception) as e:
        full(config="configs/tiny.yaml", overrides=overrides)
    msg = str(e.value)
    assert "tool_calls" in msg and "expect_column_values_to_be_between" in msg

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=env["uri"])
    exp = client.get_experiment_by_name("wf-fail")
    runs = client.search_runs([exp.experiment_id])
    quality = [r for r in runs if r.data.tags.get("stage") == "quality"]
    assert len(quality) == 1 and quality[0].info.status == "FAILED"
    assert "tool_calls" in quality[0].data.tags["quality.failed_expectations"]
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags][0]
    assert parent.info.status == "FAILED"  # closed by the workflow's failure handler
    assert not any(r.data.tags.get("stage") == "summary" for r in runs)


def test_lineage_walks_from_a_registered_model_back_to_the_world(env):
    """A model version registered on the quality run (stand-in for a training run until the training
    half lands) traces back through the datasets' hashes to synthesis, the world and the config."""

    from deepresearch.config import load_config
    from deepresearch.tracking.lineage import trace

    cfg = load_config("configs/tiny.yaml", env["overrides"])
    client, runs = _runs(env["uri"])
    quality = next(r for r in runs if r.data.tags.get("stage") == "quality")
    client.create_registered_model("lineage-probe")
    mv = client.create_model_version("lineage-probe", source=quality.info.artifact_uri, run_id=quality.info.run_id)
    client.set_registered_model_alias("lineage-probe", "champion", mv.version)

    root = trace("models:/lineage-probe@champion", cfg.tracking)
    assert root.model == f"lineage-probe version {mv.version}" and root.stage == "quality"
    raw = next(link for link in root.inputs if link.name == "raw_deep_search")
    assert raw.produced_by is not None and raw.produced_by.stage == "synthesis"
    world = next(link for link in raw.produced_by.inputs if link.name == "world")
    assert world.produced_by is not None and world.produced_by.stage == "world"
    assert len(world.digest) == 64 and root.tags["config_hash"] == cfg.hash


def test_a_reset_store_makes_the_cache_stale_and_those_stages_run_again(env, tmp_path, caplog):
    """After `rm mlflow.db` (here: another store), cached stages would hand out run ids the new store lacks:
    the workflow evicts those entries before the first stage, and the stages run again, into the new store."""
    from workflows.data import data as full

    uri = f"sqlite:///{tmp_path}/new.db"
    overrides = env["overrides"] + [f"tracking.uri={uri}"]
    with caplog.at_level("WARNING", logger="tasks.cache"):
        out = full(config="configs/tiny.yaml", overrides=overrides)
    evicted = [r.getMessage() for r in caplog.records if "evicted" in r.getMessage()]
    assert any("tasks.data.build_world" in m and "is not in the store" in m for m in evicted), evicted
    client, runs = _runs(uri)
    stages = {r.data.tags["stage"]: r.info.run_id for r in runs if "stage" in r.data.tags}
    assert set(stages) == {"world", "synthesis", "quality"}  # every stage ran again, tracked in the new store
    for run_id in stages.values():
        assert run_id in _text(out.summary) and client.get_run(run_id).info.status == "FINISHED"
    assert Path(out.datasets.path, "manifest.json").is_file()
