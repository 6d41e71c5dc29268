"""Stale entries of Flyte's local cache are named, with the command that clears them (tasks/cache.py).

A real cached task runs in a local Flyte execution, in a private cache directory; then its output
directory is deleted, or the MLflow store is swapped for an empty one, as `rm -rf` would do.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from flytekit import Cache, task, workflow
from flytekit.types.directory import FlyteDirectory

from deepresearch.config import load_config
from deepresearch.errors import StaleCacheError
from tasks.cache import CLEAR_COMMAND, check_local_cache, clear, stale_entries
from tasks.data import StageOut, stage_out


@task(cache=Cache(version="stale-test-v1"))
def cached_stage(out_dir: str, tracking_uri: str) -> StageOut:
    """A stage-shaped task: writes a directory, opens an MLflow run, returns both (as the stage tasks do)."""
    from mlflow import MlflowClient

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "data.txt").write_text("x")
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.create_run(client.create_experiment("stale") if client.get_experiment_by_name("stale") is None
                            else client.get_experiment_by_name("stale").experiment_id)
    return stage_out("probe", out_dir, run.info.run_id, 0.1)


@workflow
def probe_wf(out_dir: str, tracking_uri: str) -> FlyteDirectory:
    return cached_stage(out_dir=out_dir, tracking_uri=tracking_uri).directory


@pytest.fixture
def cache(tmp_path):
    import flytekit.core.local_cache as lc

    saved = lc.CACHE_LOCATION
    lc.CACHE_LOCATION = str(tmp_path / "cache")
    lc.LocalTaskCache._initialized = False
    yield
    lc.CACHE_LOCATION = saved
    lc.LocalTaskCache._initialized = False


def test_stale_entries_are_named_with_the_command_that_clears_them(cache, tmp_path):
    prefix = (cached_stage.name.rsplit(".", 1)[0] + ".",)
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(tracking_uri=uri).search_experiments()  # creates the store's tables
    shutil.copy(tmp_path / "mlflow.db", tmp_path / "fresh.db")  # what `rm mlflow.db` and a new run leave
    cfg = load_config("configs/tiny.yaml", [f"tracking.uri={uri}"])
    out = tmp_path / "stage-out"
    probe_wf(out_dir=str(out), tracking_uri=uri)
    probe_wf(out_dir=str(out), tracking_uri=uri)  # a cache hit
    assert stale_entries(cfg, prefix) == []
    check_local_cache(cfg, prefix)

    # the store is reset: the cached run id means nothing to the new one
    reset = load_config("configs/tiny.yaml", [f"tracking.uri=sqlite:///{tmp_path}/fresh.db"])
    [entry] = stale_entries(reset, prefix)
    assert entry.key.startswith(cached_stage.name) and "is not in the store" in str(entry)

    # the output directory is deleted: without the check, the next run fails inside flytekit
    shutil.rmtree(out)
    with pytest.raises(Exception) as obscure:
        probe_wf(out_dir=str(out), tracking_uri=uri)
    assert CLEAR_COMMAND not in str(obscure.value)
    with pytest.raises(StaleCacheError) as err:
        check_local_cache(cfg, prefix)
    msg = str(err.value)
    assert "\n" not in msg and entry.key in msg and f"{out} no longer exists" in msg and CLEAR_COMMAND in msg

    # clearing only the stale entries removes exactly this one; the next run recomputes
    assert clear(cfg, stale_only=True, prefixes=prefix) == [entry.key]
    assert stale_entries(cfg, prefix) == [] and clear(prefixes=prefix) == []
    assert Path(probe_wf(out_dir=str(out), tracking_uri=uri).path, "data.txt").read_text() == "x"
    # `make clean-cache` clears only this project's tasks (tasks., workflows.), not this test module's
    assert clear() == [] and clear(prefixes=prefix) != []
