"""The `deepresearch` CLI: the documented commands work as written; bad input exits 2 with a message."""

import json
import subprocess
import sys

from tests.conftest import requires_sandbox


def cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "deepresearch.cli", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_search_prints_json_lines(small_world_dir):
    out = cli("search", "--world", str(small_world_dir), "company founded", "--k", "3").stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 3
    for r in rows:
        assert set(r) == {"doc_id", "url", "domain", "authority", "score", "paragraph"}


@requires_sandbox
def test_agent_run_prints_trajectory_and_report(small_world_dir):
    from deepresearch.world.schema import World

    w = World.load(small_world_dir)
    org = next(e for e in w.entities.values() if e.type.value == "organization")
    proc = cli("agent", "run", "--world", str(small_world_dir), "--policy", "scripted",
               "--task", f"Write a research report on {org.name}", "--json")
    traj = json.loads(proc.stdout)
    assert traj["outcome"] == "answered" and org.name in traj["answer"]
    assert traj["citations"] and set(traj["citations"]) <= set(traj["opened_docs"])


def test_world_build_config_show_and_errors(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = cli("world", "build", "--out", str(tmp_path / "w"), "--set", "world.entities_per_type=4",
               "--set", f"tracking.uri={uri}")
    out = json.loads(proc.stdout)
    assert out["counts"]["entities"] == 24
    # a stage command is the pipeline's stage function: tracked alike, as a run of its own
    run = MlflowClient(tracking_uri=uri).get_run(out["run_id"])
    assert run.data.tags["stage"] == "world" and run.info.status == "FINISHED"
    assert "config hash" in cli("config", "show", "--set", "world.seed=2").stdout

    bad = cli("search", "--world", str(tmp_path / "missing"), "x", check=False)
    assert bad.returncode == 2 and "world directory not found" in bad.stderr and "Traceback" not in bad.stderr
    bad = cli("config", "show", "--set", "world.sed=2", check=False)
    assert bad.returncode == 2 and "world.sed" in bad.stderr and "unknown key" in bad.stderr


def test_help_lists_commands_in_pipeline_order_with_enumerated_choices():
    from deepresearch.cli import ORDER

    top = cli("--help").stdout
    listed = [line.split()[0] for line in top.split("Commands:")[1].splitlines() if line.startswith("  ")]
    assert listed == list(ORDER)
    assert cli("--version").stdout.startswith("deepresearch ")
    helps = {cmd: cli(*cmd.split(), "--help").stdout for cmd in ("agent run", "train", "base", "lineage", "pipeline")}
    assert not any("<bool>" in h for h in [top, *helps.values()])
    assert "scripted|openai|hf" in helps["agent run"] and "--model" in helps["agent run"]
    assert "mid1|mid2|sft|judge" in helps["train"]
    assert "--data" in helps["base"] and "--datasets" not in helps["base"]  # one name for the datasets
    assert "--config" not in helps["lineage"] and "--set" not in helps["lineage"]


def test_bad_choices_and_a_missing_model_exit_2_with_a_message(tmp_path):
    bad = cli("train", "--stage", "pretrain", "--init-model", str(tmp_path), "--data", str(tmp_path),
              "--out", str(tmp_path / "o"), check=False)
    assert bad.returncode == 2 and "pretrain" in bad.stderr and "mid1" in bad.stderr
    bad = cli("agent", "run", "--world", str(tmp_path), "--task", "x", "--policy", "hf", check=False)
    assert bad.returncode == 2 and "--model" in bad.stderr and "Traceback" not in bad.stderr
