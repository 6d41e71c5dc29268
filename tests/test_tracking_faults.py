"""Tracking faults fail fast and leave things tidy: a dead store, an outage mid-training, a resumed stage,
stale entries of Flyte's local cache.

The outage is real: an MLflow tracking server (MLflow's own Flask app, on a SQLite store) runs in a
thread of this process, and is shut down and started again on the same port while a DeepSpeed
training loop logs to it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from flytekit import Cache, task, workflow
from flytekit.types.directory import FlyteDirectory

from deepresearch.config import RunContext, load_config
from deepresearch.errors import StaleCacheError, TrackingError
from deepresearch.tracking import BufferedTracker, stage_run, start_parent_run
from tasks.cache import CLEAR_COMMAND, check_local_cache, clear, evict_stale, stale_entries
from tasks.data import StageOut, stage_out

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """MLflow's tracking server in a thread; `stop` and `start` it to make an outage."""

    def __init__(self, root: Path):
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self._env = {"_MLFLOW_SERVER_FILE_STORE": f"sqlite:///{root}/server.db",
                     "_MLFLOW_SERVER_ARTIFACT_ROOT": str(root / "artifacts"), "_MLFLOW_SERVER_SERVE_ARTIFACTS": "false"}
        self._saved = {k: os.environ.get(k) for k in self._env}
        os.environ.update(self._env)  # read by the server's handlers when they open the store
        self._srv = None

    def start(self) -> None:
        from mlflow.server import app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._srv = make_server("127.0.0.1", self.port, app, threaded=True)
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._srv is not None:
            self._srv.shutdown()
            self._srv.server_close()
            self._srv = None

    def close(self) -> None:
        self.stop()
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import shutil

    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow-server")
    srv = Server(root)
    srv.start()
    MlflowClient(tracking_uri=srv.uri).search_experiments()  # the server creates its store's tables
    shutil.copy(root / "server.db", root / "empty.db")  # a store as `rm mlflow.db` and a new run leave it
    srv.empty_uri = f"sqlite:///{root}/empty.db"
    yield srv
    srv.close()


def _cfg(uri: str, experiment: str = "faults"):
    return load_config("configs/tiny.yaml", [f"tracking.uri={uri}", f"tracking.experiment={experiment}"])


def test_a_dead_store_fails_in_seconds_with_one_line():
    cfg = _cfg(f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(TrackingError) as err:
        with stage_run(cfg, "", "sft"):
            pass
    assert time.monotonic() - t0 < 5
    msg = str(err.value)
    assert "\n" not in msg and cfg.tracking.uri in msg and "unreachable" in msg and "MLFLOW_TRACKING_URI" in msg
    with pytest.raises(TrackingError, match="unreachable"):
        start_parent_run(cfg, "full")


def test_the_cli_reports_a_dead_store_as_one_line(tmp_path):
    uri = f"http://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "deepresearch.cli", "train", "--stage", "sft", "--init-model", str(tmp_path / "m"),
         "--data", str(tmp_path / "d"), "--out", str(tmp_path / "out"), "--set", f"tracking.uri={uri}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2 and time.monotonic() - t0 < 60
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: MLflow tracking store") and uri in lines[0], res.stderr


def test_an_outage_during_training_is_buffered_and_retried(server, tmp_path, monkeypatch):
    """The training loop logs each step's metrics (deepresearch.training.loop); here twenty steps, with
    the store down from step 5 to step 15: no call waits on the store, and no step is lost."""
    from mlflow import MlflowClient

    # without MLflow's own retries, every send during the outage fails: the buffer's retries are tested
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    cfg = _cfg(server.uri)
    slowest = 0.0
    with stage_run(cfg, "", "sft") as run, BufferedTracker(run, spill=tmp_path / "unlogged.jsonl") as tracked:
        for step in range(1, 21):
            if step == 5:
                server.stop()
            if step == 15:
                server.start()
            t0 = time.monotonic()
            tracked.log_metrics({"sft/loss": 5.0 / step, "sft/lr": 1e-3}, step=step)
            slowest = max(slowest, time.monotonic() - t0)
            time.sleep(0.05)  # a training step
        during = tracked.failures
    assert slowest < 0.2  # a send that fails never holds the loop up (MLflow alone retried for minutes)
    assert during > 0  # the outage was real: sends failed and were retried
    client = MlflowClient(tracking_uri=server.uri)
    assert sorted(m.step for m in client.get_metric_history(run.run_id, "sft/loss")) == list(range(1, 21))
    assert client.get_run(run.run_id).info.status == "FINISHED"
    assert not (tmp_path / "unlogged.jsonl").exists()


def test_what_the_store_never_takes_is_saved_and_the_stage_error_surfaces(server, tmp_path, caplog):
    from mlflow import MlflowClient

    cfg = _cfg(server.uri)
    with pytest.raises(ValueError, match="the stage's own error"):
        with stage_run(cfg, "", "judge") as run:
            tracked = BufferedTracker(run, spill=tmp_path / "unlogged.jsonl")
            server.stop()
            try:
                tracked.log_metrics({"judge/loss": 1.5}, step=7)
                tracked.close(timeout_s=0.5)
                raise ValueError("the stage's own error")  # not masked by the store being down
            finally:
                server.start()
    saved = [json.loads(line) for line in (tmp_path / "unlogged.jsonl").read_text().splitlines()]
    assert saved == [{"run_id": run.run_id, "kind": "metrics", "step": 7, "data": {"judge/loss": 1.5}}]
    assert client_status(server.uri, run.run_id) in ("RUNNING", "FAILED")  # FAILED when the store was back in time
    # with the store up, a failing stage is closed FAILED
    with pytest.raises(RuntimeError):
        with stage_run(cfg, "", "judge") as run2:
            raise RuntimeError("boom")
    assert MlflowClient(tracking_uri=server.uri).get_run(run2.run_id).info.status == "FAILED"


def client_status(uri: str, run_id: str) -> str:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri).get_run(run_id).info.status


def test_a_resumed_stage_continues_the_killed_attempts_run(server, tmp_path):
    from mlflow import MlflowClient

    cfg = _cfg(server.uri, "resume")
    run_file = tmp_path / "run" / "mlflow_run.json"
    # attempt 1 is killed mid-stage: its context never exits, so its run stays RUNNING (as after SIGKILL)
    killed = stage_run(cfg, "", "sft", resume_file=run_file)
    first = killed.__enter__()
    for step in (1, 2, 3):
        first.log_metrics({"sft/loss": 3.0 - step / 10}, step=step)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    assert client.get_run(first.run_id).info.status == "RUNNING"
    # attempt 2 resumes from the step-3 checkpoint: same run, one history, closed FINISHED
    with stage_run(cfg, "", "sft", resume_file=run_file) as second:
        for step in (4, 5, 6):
            second.log_metrics({"sft/loss": 3.0 - step / 10}, step=step)
    assert second.run_id == first.run_id
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["resumed"] == "1"
    assert [m.step for m in client.get_metric_history(first.run_id, "sft/loss")] == [1, 2, 3, 4, 5, 6]
    runs = client.search_runs([run.info.experiment_id])
    assert [r.info.run_id for r in runs] == [first.run_id]  # no orphan RUNNING run beside it
    # a run file naming a run this store does not have (the store was reset) starts a new run
    run_file.write_text(json.dumps({"run_id": "0" * 32}))
    with stage_run(cfg, "", "sft", resume_file=run_file) as third:
        pass
    assert third.run_id != first.run_id and json.loads(run_file.read_text())["run_id"] == third.run_id


# ---- stale entries of Flyte's local cache (tasks/cache.py) ----------------------------------------


@task(cache=Cache(version="stale-test-v1"))
def cached_stage(out_dir: str, tracking_uri: str) -> StageOut:
    """A stage-shaped task: writes a directory, opens an MLflow run, returns both (as the stage tasks do)."""
    from mlflow import MlflowClient

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "data.txt").write_text("x")
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name("stale")
    run = client.create_run(exp.experiment_id if exp else client.create_experiment("stale"))
    return stage_out("probe", out_dir, run.info.run_id, 0.1, run=RunContext())


@workflow
def probe_wf(out_dir: str, tracking_uri: str) -> FlyteDirectory:
    return cached_stage(out_dir=out_dir, tracking_uri=tracking_uri).directory


@pytest.fixture
def flyte_cache(tmp_path):
    import flytekit.core.local_cache as lc

    saved = lc.CACHE_LOCATION
    lc.CACHE_LOCATION = str(tmp_path / "cache")
    lc.LocalTaskCache._initialized = False
    yield
    lc.CACHE_LOCATION = saved
    lc.LocalTaskCache._initialized = False


def test_stale_cache_entries_are_named_with_the_command_that_clears_them(server, flyte_cache, tmp_path):
    """A real cached task in a local Flyte execution; then its output directory is deleted, or the store
    is swapped for an empty one, as `rm -rf` would do."""
    prefix = (cached_stage.name.rsplit(".", 1)[0] + ".",)
    cfg = _cfg(server.uri)
    out = tmp_path / "stage-out"
    probe_wf(out_dir=str(out), tracking_uri=server.uri)
    probe_wf(out_dir=str(out), tracking_uri=server.uri)  # a cache hit
    assert stale_entries(cfg, prefix) == []
    check_local_cache(cfg, prefix)

    # the store is reset: the cached run id means nothing to the new one
    [entry] = stale_entries(_cfg(server.empty_uri), prefix)
    assert entry.key.startswith(cached_stage.name) and "is not in the store" in str(entry)

    # the output directory is deleted: without the check, the next run fails deep inside flytekit
    shutil.rmtree(out)
    with pytest.raises(Exception) as obscure:
        probe_wf(out_dir=str(out), tracking_uri=server.uri)
    assert CLEAR_COMMAND not in str(obscure.value)
    with pytest.raises(StaleCacheError) as err:
        check_local_cache(cfg, prefix)
    msg = str(err.value)
    assert "\n" not in msg and entry.key in msg and f"{out} no longer exists" in msg and CLEAR_COMMAND in msg

    # clearing only the stale entries removes exactly this one; the next run recomputes
    assert clear(cfg, stale_only=True, prefixes=prefix) == [entry.key]
    assert stale_entries(cfg, prefix) == [] and clear(prefixes=prefix) == []
    assert Path(probe_wf(out_dir=str(out), tracking_uri=server.uri).path, "data.txt").read_text() == "x"
    # `make clean-cache` clears only this project's tasks (tasks., workflows.), not this test module's
    assert clear() == [] and clear(prefixes=prefix) != []

    # what the workflow's `start_tracking` does instead of stopping: evict the stale entry, so its stage reruns
    probe_wf(out_dir=str(out), tracking_uri=server.uri)
    shutil.rmtree(out)
    [evicted] = evict_stale(cfg, prefix)
    assert f"{out} no longer exists" in str(evicted) and stale_entries(cfg, prefix) == []
    assert Path(probe_wf(out_dir=str(out), tracking_uri=server.uri).path, "data.txt").read_text() == "x"
