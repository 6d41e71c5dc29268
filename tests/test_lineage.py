"""`deepresearch lineage`: the data half run as stages into a scratch MLflow store, then traced.

The data half is the session's `gated_data` (tests/conftest.py); this module adds its runs and
registrations to a copy of that store.

Errors are one line (no champion — with why —, no such version, no such run); `--json` is the whole
graph; every dataset logged carries its own digest, row count and schema; the listing shows each run
once and fits 100 columns.
"""

import json
import subprocess
import sys

import pytest

from tests.conftest import requires_sandbox


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_checkpoint, gated_data):
    """A copy of the session's data store (world → synthesis → quality as tracked stages, `gated_data`) with
    a stand-in training run that read the datasets and logged the checkpoint it wrote, registered as a
    policy version the gate refused."""
    from deepresearch.io import dir_digest
    from deepresearch.tracking import stage_run
    from deepresearch.tracking.registry import promote, register_model

    tmp = tmp_path_factory.mktemp("lineage")
    cfg = gated_data.own_config(tmp)
    uri, datasets = cfg.tracking.uri, gated_data.datasets
    ckpt = tiny_checkpoint(tmp / "ckpt", stage="sft")
    with stage_run(cfg, gated_data.parent, "sft") as trained:  # tagged as `training.stage.run_stage` tags its run
        trained.log_dataset(datasets, name="sft_data", context="input", digest=dir_digest(datasets))
        trained.set_tags({"output.path": str(ckpt), "model.digest": dir_digest(ckpt)})
        trained.log_model(ckpt, stage="sft", digest=dir_digest(ckpt))
    version = register_model(cfg.tracking, "policy", ckpt)
    promote(cfg.tracking, "policy", version, promoted=False, reasons=["well_formed_rate 0.22 is below the floor 0.5"],
            metrics={})
    return {"cfg": cfg, "uri": uri, "tmp": tmp, "data": gated_data, "version": version, "trained": trained.run_id,
            "runs": gated_data.runs}


def cli(store, *args):
    return subprocess.run([sys.executable, "-m", "deepresearch.cli", "lineage", *args, "--tracking-uri", store["uri"]],
                          capture_output=True, text=True, timeout=300)


pytestmark = requires_sandbox  # synthesis runs the expert's tools


def test_lineage_errors_are_one_line(store):
    from deepresearch.tracking.lineage import LineageError, trace

    tracking = store["cfg"].tracking
    with pytest.raises(LineageError) as e:
        trace("models:/policy@champion", tracking)
    assert str(e.value) == ("policy has no @champion; v1 was refused: well_formed_rate 0.22 is below the floor 0.5")
    with pytest.raises(LineageError, match=r"^policy has no version 7 \(versions: v1\)$"):
        trace("models:/policy/7", tracking)
    with pytest.raises(LineageError, match="^no registered model 'judge' in this tracking store$"):
        trace("models:/judge@champion", tracking)
    with pytest.raises(LineageError, match="^no run '0123abcd' in the tracking store"):
        trace("0123abcd", tracking)
    # from the command line: exit 2, one line on stderr, nothing on stdout
    proc = cli(store, "models:/policy@champion")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["error: " + str(e.value)]


def test_json_is_the_whole_graph_and_the_listing_shows_each_run_once(store):
    from deepresearch.io import dir_digest
    from deepresearch.tracking.lineage import render_lines, trace

    proc = cli(store, f"models:/policy/{store['version']}", "--json")
    assert proc.returncode == 0, proc.stderr
    graph = json.loads(proc.stdout)
    runs = {r["run_id"]: r for r in graph["runs"]}
    stages = {r["stage"]: r for r in graph["runs"]}
    assert graph["model"] == f"policy version {store['version']}" and len(runs) == len(graph["runs"]) == 4
    # the root is the run that trained the checkpoint (its `model.digest`), not the one that registered it
    assert graph["root"] == store["trained"] == graph["runs"][0]["run_id"] and "evaluation" not in stages
    producers = {x["name"]: x["produced_by"] for r in graph["runs"] for x in r["inputs"] if x["context"] == "input"}
    assert producers["sft_data"] == stages["quality"]["run_id"] == store["runs"]["quality"].run_id
    assert producers["raw_deep_search"] == producers["raw_deep_research"] == stages["synthesis"]["run_id"]
    assert producers["world"] == stages["world"]["run_id"]
    [pipeline] = graph["pipeline"].values()  # the parent run: config hash and seeds
    assert pipeline["config_hash"] == store["cfg"].hash and "world.seed=" in pipeline["params"]
    assert all(len(x["digest"]) == 64 for r in graph["runs"] for x in r["inputs"])
    world_input = next(x for x in stages["synthesis"]["inputs"] if x["name"] == "world")
    assert world_input["digest"] == stages["world"]["tags"]["dataset.digest"] == dir_digest(store["data"].world)

    lines = render_lines(trace(f"models:/policy/{store['version']}", store["cfg"].tracking))
    assert all(len(line) <= 100 for line in lines), [line for line in lines if len(line) > 100]
    assert lines[0].startswith(f"policy version {store['version']} ← produced by sft (run {store['trained']})")
    # synthesis is reached through two datasets, world through synthesis only: each run listed once
    assert sum(line.startswith("synthesis ") for line in lines) == 1
    assert sum(line.startswith("world ") for line in lines) == 1
    assert not any("shown above" in line for line in lines)
    assert any("← raw_deep_search" in line and "from synthesis" in line for line in lines)
    # output paths under the system temp dir (a local Flyte sandbox) are not shown; digests are short
    assert not any(str(store["tmp"]) in line or str(store["data"].root) in line for line in lines)
    assert not any(len(word) == 64 and all(c in "0123456789abcdef" for c in word)
                   for line in lines for word in line.split())


def test_datasets_carry_their_own_digest_rows_and_schema(store):
    from mlflow import MlflowClient

    from deepresearch.io import dir_digest

    client = MlflowClient(tracking_uri=store["uri"])
    raw, gated = store["runs"]["synthesis"], store["runs"]["quality"]
    for run, artifact in ((raw, store["data"].raw), (gated, store["data"].datasets)):
        logged = {i.dataset.name.removeprefix("raw_"): i for i in client.get_run(run.run_id).inputs.dataset_inputs
                  if {t.key: t.value for t in i.tags}["mlflow.data.context"] == "output"}
        assert set(logged) >= {"deep_search", "deep_research"}
        digests = {}
        for name in ("deep_search", "deep_research"):
            inp = logged[name]
            tags = {t.key: t.value for t in inp.tags}
            digests[name] = tags["sha256"]
            assert tags["sha256"] == dir_digest(artifact / name)  # the project's one digest, of that dataset
            assert tags["artifact.digest"] == run.manifest["digest"]
            rows = len((artifact / name / "trajectories.jsonl").read_text().splitlines())
            assert rows > 0 and json.loads(inp.dataset.profile)["num_rows"] == rows
            first = json.loads((artifact / name / "trajectories.jsonl").read_text().splitlines()[0])
            assert {c["name"] for c in json.loads(inp.dataset.schema)["mlflow_colspec"]} == set(first)
        assert digests["deep_search"] != digests["deep_research"]
