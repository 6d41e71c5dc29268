"""Per-stage cache keys and the one stage layer, without running a stage.

What a stage task's cache key holds is its `StageConfig` (plus upstream artifacts): these tests say which
config changes reach which stage's key, that a stage's view refuses to read anything outside its key,
and that tasks, workflows and the CLI are layered as ARCHITECTURE.md says. The workflow-level cache
behaviour (a changed `training.sft.*` re-runs SFT and what follows, nothing before) is in
tests/test_full_workflow.py; a changed `rl.*` leaving the data half cached is in tests/test_workflow.py.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from deepresearch.config import (
    REPO_ROOT,
    STAGE_INPUTS,
    RunContext,
    StageConfig,
    load_config,
)
from deepresearch.errors import ConfigError

ORDER = list(STAGE_INPUTS)  # world … evaluation, the pipeline's order


def _key_literals(cfg) -> dict[str, bytes]:
    """stage → the literal Flyte hashes for its `cfg` input (what the local cache key is made of)."""
    from flytekit import FlyteContextManager
    from flytekit.core.type_engine import TypeEngine

    ctx = FlyteContextManager.current_context()
    lt = TypeEngine.to_literal_type(StageConfig)
    return {s: TypeEngine.to_literal(ctx, StageConfig.of(cfg, s), StageConfig, lt).to_flyte_idl().SerializeToString(deterministic=True)
            for s in STAGE_INPUTS}


def _changed(overrides: list[str]) -> list[str]:
    base = load_config("configs/tiny.yaml")
    before, after = _key_literals(base), _key_literals(load_config("configs/tiny.yaml", overrides))
    return [s for s in ORDER if before[s] != after[s]]


@pytest.mark.parametrize(
    ("overrides", "stages"),
    [
        # the config each stage reads; a stage after a changed one re-runs anyway (its input directory changes)
        (["rl.actor_lr=0.5"], ["rl"]),
        (["rl.steps=3", "rl.kl_coef=0.1"], ["rl"]),
        (["training.sft.lr=0.5"], ["sft", "rl"]),  # PPO's learner takes SFT's DeepSpeed settings
        (["training.mid2.max_steps=7"], ["mid2"]),
        (["judge.train.lr=0.5"], ["judge"]),
        (["judge.reports_per_task=2"], ["judge_data"]),
        (["world.seed=5"], ["world"]),
        (["synthesis.seed=5"], ["synthesis", "judge_data", "rl", "evaluation"]),
        (["evaluation.bootstrap=500"], ["evaluation"]),
        (["capabilities.planning.n=3"], ["synthesis", "mid1", "mid2", "sft"]),
        # what never changes an output never enters a key
        (["tracking.uri=sqlite:////tmp/elsewhere.db", "tracking.experiment=x", "tracking.enabled=false"], []),
        (["infra.train.cpu='64'", "infra.schedule=0 0 * * *"], []),
        (["storage.enabled=true", "storage.bucket=some-bucket"], []),
        (["name=renamed"], []),
    ],
)
def test_a_config_change_reaches_the_keys_of_the_stages_that_read_it(overrides, stages):
    assert _changed(overrides) == stages


def test_a_stage_view_reads_only_its_inputs_and_keeps_the_pipeline_hash():
    cfg = load_config("configs/tiny.yaml", ["tracking.experiment=probe"])
    run = RunContext.of(cfg, parent_run_id="parent", execution_id="exec-1")
    mid1 = StageConfig.of(cfg, "mid1").view(run)
    assert mid1.training.mid1 == cfg.training.mid1 and mid1.tracking.experiment == "probe"
    assert mid1.hash == cfg.hash  # stage runs and checkpoints are tagged with the pipeline's config hash
    with pytest.raises(ConfigError, match=r"stage 'mid1' read training.sft.lr.*STAGE_INPUTS\['mid1'\]"):
        mid1.training.sft.lr  # noqa: B018
    with pytest.raises(ConfigError, match="read rl.actor_lr"):
        mid1.rl.actor_lr  # noqa: B018
    assert {k.split(".")[0] for k in mid1.flat()} == {"name", "training", "synthesis", "capabilities", "tracking",
                                                      "storage"}
    assert {k for k in mid1.flat() if k.startswith("synthesis.")} == {"synthesis.heldout_fraction",
                                                                      "synthesis.split_seed"}
    assert {k for k in mid1.flat() if k.startswith("training.")} == {
        f"training.mid1.{f}" for f in type(cfg.training.mid1).model_fields
    }
    import copy
    import pickle

    assert pickle.loads(pickle.dumps(mid1)).training.mid1 == cfg.training.mid1  # Ray and spawned workers
    copy.deepcopy(mid1)


def test_every_pipeline_section_can_reach_a_stage():
    """A section StageConfig lacks would reach every stage's view as its defaults, silently (the capability
    datasets were once synthesized with n = 0 that way): every section but the run's is a StageConfig field."""
    from deepresearch.config import PipelineConfig

    sections = set(PipelineConfig.model_fields) - {"name", "tracking", "infra", "storage"}
    assert sections <= set(StageConfig.model_fields), sections - set(StageConfig.model_fields)
    cfg = load_config("configs/tiny.yaml")
    assert StageConfig.of(cfg, "synthesis").view().capabilities == cfg.capabilities
    assert cfg.capabilities.planning.n == 12  # not the default


def test_stage_configs_round_trip_through_flyte():
    from flytekit import FlyteContextManager
    from flytekit.core.type_engine import TypeEngine

    cfg = load_config("configs/paper.yaml")
    ctx = FlyteContextManager.current_context()
    lt = TypeEngine.to_literal_type(StageConfig)
    for stage in STAGE_INPUTS:
        sc = StageConfig.of(cfg, stage)
        assert TypeEngine.to_python_value(ctx, TypeEngine.to_literal(ctx, sc, StageConfig, lt), StageConfig) == sc


# ---- layering ---------------------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_tasks_never_import_workflows_and_the_library_never_imports_flyte():
    for path in sorted((REPO_ROOT / "tasks").glob("*.py")):
        assert not {m for m in _imports(path) if m.split(".")[0] == "workflows"}, path
    for path in sorted((REPO_ROOT / "deepresearch").rglob("*.py")):
        bad = {m for m in _imports(path) if m.split(".")[0] in ("flytekit", "flytekitplugins", "tasks", "workflows")}
        assert not bad, (path, bad)


def test_the_cli_loads_without_flyte_tasks_or_workflows():
    code = ("import sys, deepresearch.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flytekit', 'tasks', 'workflows')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert out.stdout.strip() == "[]"


def test_a_training_worker_tags_its_run_with_the_workflow_execution_id(monkeypatch, tmp_path):
    """The execution id comes from `start_tracking` (the `RunContext`), not from the worker process, so
    `mark_failed`, which computes `execution_id()` in the workflow's process, finds the worker's run."""
    from types import SimpleNamespace

    from flytekit.types.directory import FlyteDirectory

    import deepresearch.stages
    import deepresearch.training.distributed as dist
    import tasks.train as T
    from tasks.common import execution_id

    seen = {}

    def fake_stage(cfg, stage, **kw):
        seen.update(kw, stage=stage, hash=cfg.hash)
        return SimpleNamespace(path=str(tmp_path), run_id="r", steps=1, first_loss=1.0, final_loss=0.5,
                               tokens=10, seconds=0.1, metrics={})

    monkeypatch.setattr(deepresearch.stages, "train_stage", fake_stage)
    monkeypatch.setattr(dist, "init_distributed", lambda: SimpleNamespace(local_rank=0, rank=0))
    monkeypatch.setenv(T.TRAIN_DIR_ENV, str(tmp_path / "runs"))
    cfg = load_config("configs/tiny.yaml")
    run = RunContext.of(cfg, parent_run_id="p", execution_id=execution_id())
    assert run.execution_id == execution_id() and run.execution_id.startswith("local-")  # one id per process
    out = T._train(StageConfig.of(cfg, "sft"), FlyteDirectory(str(tmp_path)), FlyteDirectory(str(tmp_path)), run, None)
    assert seen["stage"] == "sft" and seen["execution_id"] == run.execution_id and seen["parent_run_id"] == "p"
    assert seen["hash"] == cfg.hash and out.run_id == "r"
