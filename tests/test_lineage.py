"""`deepresearch lineage`: the data half run as stages into a scratch MLflow store, then traced.

The data half is the session's `gated_data` (tests/conftest.py); this module adds its runs and
registrations to a copy of that store.

Errors are one line (no champion — with why —, no such version, no such run); `--json` is the whole
graph; every dataset logged carries its own digest, row count and schema (a training run's too: each
dataset of its mix, and a checkpoint no run logged as a model as its files); the listing shows each run
once, fits 100 columns, and shows no path its writer marked temporary.
"""

import json
import subprocess
import sys

import pytest

from tests.conftest import requires_sandbox


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_checkpoint, gated_data):
    """A copy of the session's data store (world → synthesis → quality as tracked stages, `gated_data`) with
    a stand-in base run that wrote a checkpoint (no LoggedModel, as a registry base model) and a stand-in
    SFT run that read it and three datasets, logging its inputs and the checkpoint it wrote as
    `training.stage.run_stage` does, registered as a policy version the gate refused."""
    from deepresearch.io import dir_digest
    from deepresearch.tracking import output_tags, stage_run
    from deepresearch.tracking.registry import promote, register_model
    from deepresearch.training.stage import log_inputs

    tmp = tmp_path_factory.mktemp("lineage")
    cfg = gated_data.own_config(tmp)
    uri, datasets = cfg.tracking.uri, gated_data.datasets
    base = tiny_checkpoint(tmp / "base", stage="base")
    with stage_run(cfg, gated_data.parent, "base") as base_run:
        base_run.set_tags({**output_tags(base), "model.digest": dir_digest(base)})
    ckpt = tiny_checkpoint(tmp / "ckpt", stage="sft")
    with stage_run(cfg, gated_data.parent, "sft") as trained:  # tagged as `training.stage.run_stage` tags its run
        log_inputs(trained, "sft", data=datasets, init_model=base, sources=MIXED)
        trained.set_tags({**output_tags(ckpt), "model.digest": dir_digest(ckpt)})
        trained.log_model(ckpt, stage="sft", digest=dir_digest(ckpt))
    version = register_model(cfg.tracking, "policy", ckpt)
    promote(cfg.tracking, "policy", version, promoted=False, reasons=["well_formed_rate 0.22 is below the floor 0.5"],
            metrics={})
    return {"cfg": cfg, "uri": uri, "tmp": tmp, "data": gated_data, "version": version, "trained": trained.run_id,
            "base": base, "runs": gated_data.runs}


MIXED = ["deep_search", "deep_research", "planning"]  # the stand-in SFT run's mix


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
    assert graph["model"] == f"policy version {store['version']}" and len(runs) == len(graph["runs"]) == 5
    # the root is the run that trained the checkpoint (its `model.digest`), not the one that registered it
    assert graph["root"] == store["trained"] == graph["runs"][0]["run_id"] and "evaluation" not in stages
    producers = {x["name"]: x["produced_by"] for r in graph["runs"] for x in r["inputs"] if x["context"] == "input"}
    assert all(producers[name] == stages["quality"]["run_id"] == store["runs"]["quality"].run_id for name in MIXED)
    assert producers["init_model"] == stages["base"]["run_id"]  # by the checkpoint's digest
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
    # output paths their writers marked temporary (pytest's dirs are in the temp dir) are not shown;
    # digests are short
    assert all(r["tags"]["output.temporary"] == "true" for r in graph["runs"]), [r["tags"] for r in graph["runs"]]
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
    # the training run: each dataset of its mix under its own digest, with its rows and schema, linked to
    # the directory it was cut from; the checkpoint no run logged as a model, as its files
    trained = client.get_run(store["trained"])
    inputs = {i.dataset.name: i for i in trained.inputs.dataset_inputs}
    assert set(inputs) == {*MIXED, "init_model"}
    for name in MIXED:
        inp, tags = inputs[name], {t.key: t.value for t in inputs[name].tags}
        assert tags["sha256"] == dir_digest(store["data"].datasets / name)
        assert tags["artifact.digest"] == gated.manifest["digest"]
        assert json.loads(inp.dataset.profile)["num_rows"] > 0 and json.loads(inp.dataset.schema)["mlflow_colspec"]
    assert len({inputs[name].dataset.digest for name in MIXED}) == len(MIXED)
    init, tags = inputs["init_model"], {t.key: t.value for t in inputs["init_model"].tags}
    files = sorted(p.relative_to(store["base"]).as_posix() for p in store["base"].rglob("*") if p.is_file())
    assert tags["kind"] == "checkpoint" and tags["sha256"] == dir_digest(store["base"])
    assert json.loads(init.dataset.profile)["num_rows"] == len(files)
    assert {c["name"] for c in json.loads(init.dataset.schema)["mlflow_colspec"]} == {"file", "bytes"}


class _Recorder:
    """A tracker that keeps what `log_dataset` was given."""

    def __init__(self):
        self.logged = {}

    def log_dataset(self, path, **kwargs):
        self.logged[kwargs["name"]] = {"path": path, **kwargs}


def test_the_world_and_the_judge_pairs_are_datasets_with_rows(store, tmp_path):
    from deepresearch.io import content_digest, dir_digest, file_sha256
    from deepresearch.judge.data import JUDGE_FILES
    from deepresearch.tracking.datasets import log_files, log_world

    run = _Recorder()
    world = store["data"].world
    log_world(run, world)
    logged = run.logged["world"]
    documents = (world / "documents.jsonl").read_text().splitlines()
    assert logged["digest"] == dir_digest(world) and logged["num_rows"] == len(documents)
    assert set(logged["rows"][0]) == set(json.loads(documents[0])) and len(logged["rows"]) == 20

    pairs = tmp_path / "judge_data"  # the judge data stage's layout: train.jsonl, heldout.jsonl, manifest.json
    pairs.mkdir()
    (pairs / "train.jsonl").write_text('{"report": "r", "criterion": "c", "label": "satisfied"}\n' * 3)
    (pairs / "heldout.jsonl").write_text('{"report": "s", "criterion": "d", "label": "not"}\n')
    (pairs / "manifest.json").write_text(json.dumps({"sha256": {n: file_sha256(pairs / n) for n in JUDGE_FILES.values()}}))
    log_files(run, pairs, JUDGE_FILES, context="input")
    train, held = run.logged["judge_train"], run.logged["judge_heldout"]
    assert (train["num_rows"], held["num_rows"]) == (3, 1) and set(train["rows"][0]) == {"report", "criterion", "label"}
    assert train["digest"] == content_digest({"train.jsonl": file_sha256(pairs / "train.jsonl")}) != held["digest"]
    assert train["artifact_digest"] == held["artifact_digest"] == dir_digest(pairs)


def test_temporary_paths_are_decided_by_their_writer(tmp_path, monkeypatch):
    """`output.temporary` comes from the writer's temp dir; lineage follows the tag, not its own $TMPDIR."""
    import tempfile

    from deepresearch.tracking import output_tags
    from deepresearch.tracking.lineage import stable_path

    writer_tmp, stable = tmp_path / "writer-tmp", tmp_path / "results"
    monkeypatch.setattr(tempfile, "tempdir", str(writer_tmp))
    sandbox = writer_tmp / "flyte1234" / "user_space5678" / "world"
    assert output_tags(sandbox) == {"output.path": str(sandbox), "output.temporary": "true"}
    assert output_tags(stable)["output.temporary"] == "false"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "reader-tmp"))  # a reader with another $TMPDIR
    assert stable_path(str(sandbox), "true") is None
    assert stable_path(str(stable), "false") == str(stable)
    assert stable_path("s3://bucket/worlds/ab12", "true") == "s3://bucket/worlds/ab12"
    # a run recorded before the tag existed: a local Flyte sandbox is still recognised
    assert stable_path(str(sandbox)) is None and stable_path(str(stable)) == str(stable)
