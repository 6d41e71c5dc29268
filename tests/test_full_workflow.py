"""The `full` workflow as one local Flyte execution on a tiny world, every stage for real (few steps each):
the summary times every stage, the evaluation covers every checkpoint, the RL policy lands in the Model
Registry, and lineage walks from that registered version back to the world by digest.

This checks the wiring, not learning (the README's learning table does that). A few minutes on 2 cores.
"""

import json
import os
import re
import time
import typing
from pathlib import Path

import pytest
from flytekit.types.directory import FlyteDirectory

from tests.conftest import SMALL, requires_sandbox


def _text(summary) -> str:
    """The summary a workflow returns: the markdown file `summarize` wrote."""
    return Path(summary.path).read_text()

pytestmark = [pytest.mark.slow, requires_sandbox, pytest.mark.timeout(1200)]

# Two optimizer steps per training stage on one process, one PPO step of two episodes on one rollout
# actor, two held-out tasks. Turns stay at 16: the scripted expert that synthesizes the data needs them.
FAST = [
    *(
        f"training.{s}.{k}"
        for s in ("mid1", "mid2", "sft")
        for k in ("max_steps=2", "nproc_per_node=1", "seq_len=256", "save_every=2")
    ),
    "judge.train.max_steps=2",
    "judge.train.nproc_per_node=1",
    "judge.train.save_every=2",
    "judge.max_len=128",
    "rl.steps=1",
    "rl.episodes_per_step=2",
    "rl.rollout_workers=1",
    "rl.max_new_tokens=16",
    "rl.minibatch_size=1",
    "rl.ppo_epochs=1",
    "evaluation.n_deep_search=1",
    "evaluation.n_deep_research=1",
    "evaluation.max_new_tokens=16",
    "evaluation.elo_bootstrap=20",
    "agent.budget.max_turns=16",
]
STAGES = ["world", "synthesis", "quality", "base", "mid1", "mid2", "sft", "judge_data", "judge", "rl", "evaluation"]
CHECKPOINTS = ["base", "mid-trained", "sft", "rl", "expert"]
EXPERIMENT = "full"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One execution of `full`, its config written to a file that both sizes the tasks at compile time
    ($DEEPRESEARCH_CONFIG: one training process per stage) and is the run's `--config`."""
    import flytekit.core.local_cache as lc
    import yaml
    from mlflow import MlflowClient

    from deepresearch.config import load_config

    root = tmp_path_factory.mktemp("full")
    uri = f"sqlite:///{root}/mlflow.db"
    cfg = load_config("configs/tiny.yaml", SMALL + FAST + [f"tracking.uri={uri}", f"tracking.experiment={EXPERIMENT}"])
    config = root / "full.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=True))
    assert load_config(config).hash == cfg.hash
    # artifacts (evaluation report, registered checkpoints) under root, not in ./mlruns
    MlflowClient(tracking_uri=uri).create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())

    env = {"DEEPRESEARCH_CONFIG": str(config), "DEEPRESEARCH_TRAIN_DIR": str(root / "train")}
    saved_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    saved_cache = lc.CACHE_LOCATION
    lc.CACHE_LOCATION = str(root / "cache")
    lc.LocalTaskCache._initialized = False
    try:
        # compiles `full` for this config, unless an earlier test of the session imported it (then the
        # training stages keep tiny.yaml's two processes: slower, same results)
        from workflows.full import full

        t0 = time.perf_counter()
        out = full(config=str(config), overrides=[])
        yield {"cfg": cfg, "config": config, "out": out, "uri": uri, "seconds": time.perf_counter() - t0,
               "full": full}
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        lc.CACHE_LOCATION = saved_cache
        lc.LocalTaskCache._initialized = False
        import ray

        if ray.is_initialized():
            ray.shutdown()  # the PPO task started a local Ray in this process


def _stage_runs(uri):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return client, runs


def _summary_rows(summary: str) -> dict[str, tuple[float, str]]:
    """stage → (seconds, MLflow run id) from the summary's markdown stage table."""
    rows = {}
    for line in summary.splitlines():
        m = re.fullmatch(r"\| (\w+) \| (\d+\.\d) \| .* \| (\S+) \|", line)
        if m:
            rows[m[1]] = (float(m[2]), m[3])
    return rows


def test_every_stage_runs_once_and_the_summary_times_each(run):
    out = run["out"]
    print(f"\nfull workflow: {run['seconds']:.0f} s\n{_text(out.summary)}")
    client, runs = _stage_runs(run["uri"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # closed by the summary
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["stage"] for r in children) == sorted(STAGES)  # each stage exactly once
    assert all(r.info.status == "FINISHED" for r in children)
    by_stage = {r.data.tags["stage"]: r.info.run_id for r in children}

    rows = _summary_rows(_text(out.summary))
    assert list(rows) == STAGES  # pipeline order
    for stage, (seconds, run_id) in rows.items():
        assert seconds >= 0, stage  # one decimal: a stage under 50 ms (judge data, on a fast day) shows 0.0
        assert run_id == by_stage[stage], stage
    for name in CHECKPOINTS:  # the evaluation table
        assert re.search(rf"^\| {re.escape(name)} \| \d+%", _text(out.summary), re.M), name


def test_evaluation_report_covers_every_checkpoint(run):
    report = Path(run["out"].report.path)
    for name in ("report.html", "report.md", "results.json", "episodes.jsonl"):
        assert (report / name).is_file(), name
    results = json.loads((report / "results.json").read_text())
    text_md = (report / "report.md").read_text()
    for name in CHECKPOINTS:
        assert name in text_md, name
    assert [c["name"] for c in results["checkpoints"]] == CHECKPOINTS
    episodes = [json.loads(x) for x in (report / "episodes.jsonl").read_text().splitlines()]
    cfg = run["cfg"].evaluation
    assert len(episodes) == len(CHECKPOINTS) * (cfg.n_deep_search + cfg.n_deep_research)
    # no training task of the run shares a target entity or a question with a held-out task
    held = [json.loads(x) for x in (report / "heldout_tasks.jsonl").read_text().splitlines()]
    datasets = Path(run["out"].datasets.path)
    train = [json.loads(x) for name in ("deep_search", "deep_research")
             for x in (datasets / name / "tasks.jsonl").read_text().splitlines()]

    def target(task):
        return task["path"][-1] if "path" in task else task["about"]

    def text(task):
        return task.get("question", task.get("prompt"))

    assert held and train
    assert not {target(t) for t in train} & {target(t) for t in held}
    assert not {text(t) for t in train} & {text(t) for t in held}
    # intervals and paired differences in the report and the printed summary
    for title in ("Held-out metrics, mean [95 % bootstrap interval", "Paired differences", "Next-action probe"):
        assert title in text_md and title in _text(run["out"].summary), title
    # the summary's rows in the pipeline's order, as the report's (not sorted by name)
    held_out = _text(run["out"].summary).split("**Held-out metrics")[1].split("**Paired")[0]
    assert [ln.split("|")[1].strip() for ln in held_out.splitlines() if ln.startswith("| ")][1:] == CHECKPOINTS


def test_rl_policy_is_registered_from_the_rl_run(run):
    from deepresearch.modeling.checkpoint import load_checkpoint, read_metadata
    from deepresearch.tracking.registry import download_version

    client, runs = _stage_runs(run["uri"])
    by_stage = {r.data.tags.get("stage"): r for r in runs}
    evaluation = by_stage["evaluation"]
    versions = client.search_model_versions("name='policy'")
    # the version is the LoggedModel of the run that trained it, not a copy made by the evaluation
    assert len(versions) == 1 and versions[0].run_id == by_stage["rl"].info.run_id
    assert versions[0].tags.get("gate")  # the promotion decision, promoted or not
    assert "promotion.policy" in client.get_run(by_stage["rl"].info.run_id).data.tags
    local = download_version(run["cfg"].tracking, "policy", versions[0].version, run["config"].parent / "dl")
    assert read_metadata(local)["metadata"]["stage"] == "rl"
    load_checkpoint(local)
    [judge] = client.search_model_versions("name='judge'")
    assert judge.run_id == by_stage["judge"].info.run_id
    # every training run has its LoggedModel
    for stage in ("mid1", "mid2", "sft", "judge", "rl"):
        assert len(by_stage[stage].outputs.model_outputs) == 1, stage
    metrics = evaluation.data.metrics
    for name in ("eval/rl/mean_reward", "eval/rl/mean_reward_ci_low", "eval/rl/mean_reward_ci_high",
                 "eval/diff/rl_vs_sft/mean_reward", "eval/diff/mid-trained_vs_base/exact_match_ci_low", "probe/sft/turn",
                 "eval/judge/macro_f1"):
        assert name in metrics, name


def test_lineage_walks_from_the_registered_policy_back_to_the_world(run):
    from deepresearch.io import dir_digest
    from deepresearch.tracking.lineage import trace

    client, _ = _stage_runs(run["uri"])
    version = client.search_model_versions("name='policy'")[0].version
    root = trace(f"models:/policy/{version}", run["cfg"].tracking)

    def via(node, link_name, stage):
        link = next(x for x in node.inputs if x.name == link_name and x.context == "input")
        assert link.produced_by is not None, f"{node.stage} → {link_name}: producer not found"
        assert link.produced_by.stage == stage, (node.stage, link_name, link.produced_by.stage)
        return link.produced_by, link

    # the listing starts from the run that trained the registered checkpoint, not the one that registered it
    assert root.model == f"policy version {version}" and root.stage == "rl"
    rl = root
    sft, _ = via(rl, "policy", "sft")
    mid2, _ = via(sft, "init_model", "mid2")
    mid1, _ = via(mid2, "init_model", "mid1")
    quality, data = via(mid1, "deep_research", "quality")  # each dataset of its mix, with its own digest
    synthesis, _ = via(quality, "raw_deep_search", "synthesis")
    world, link = via(synthesis, "world", "world")

    out = run["out"]
    manifest = json.loads((Path(out.datasets.path) / "manifest.json").read_text())
    assert data.artifact_digest == manifest["digest"]
    assert data.digest == dir_digest(Path(out.datasets.path) / "deep_research")
    assert link.digest == dir_digest(Path(out.world.path)) == world.tags["dataset.digest"]
    assert root.parent_run_id == rl.parent_run_id == world.parent_run_id  # one pipeline run
    assert world.tags["config_hash"] == run["cfg"].hash
    # the judge's branch reaches the same world through its data
    judge, _ = via(rl, "judge", "judge")
    judge_data, _ = via(judge, "judge_train", "judge_data")
    assert via(judge_data, "world", "world")[0] is world
    # the base is the shipped tiny-base checkpoint (`model.base`, source "path"): it read none of this
    # run's data, so its run lists none (a base built from config lists the world and the datasets)
    base, _ = via(mid1, "init_model", "base")
    assert not {"world", "deep_search", "deep_research"} & {x.name for x in base.inputs if x.context == "input"}


def test_rerun_hits_the_cache_and_keeps_each_stage_record(run):
    """Same config again: every stage is a cache hit (no new stage runs); the summary shows the cached
    records, i.e. the stage runs and seconds of the execution that produced them."""
    t0 = time.perf_counter()
    out2 = run["full"](config=str(run["config"]), overrides=[])
    print(f"\nre-run: {time.perf_counter() - t0:.0f} s")
    _, runs = _stage_runs(run["uri"])
    assert len([r for r in runs if "mlflow.parentRunId" in r.data.tags]) == len(STAGES)
    assert len([r for r in runs if "mlflow.parentRunId" not in r.data.tags]) == 2
    assert _summary_rows(_text(out2.summary)) == _summary_rows(_text(run["out"].summary))



def test_cache_keys_are_per_stage_rl_reaches_none_before_ppo_and_sft_only_what_follows(run):
    """The workflow's own tasks up to the judge, re-run after the full run (so sharing its cache entries):
    with a changed `rl.*` value every one is a cache hit; with a changed `training.sft.*` value SFT runs again,
    and the judge, which takes SFT's new checkpoint (as PPO and evaluation do), and nothing before.
    (Which config reaches which stage's key, for every stage: tests/test_stage_keys.py.)"""
    from flytekit import workflow

    from tasks.data import resolve_config, start_tracking
    from tasks.model import build_base, judge_data
    from tasks.train import train_task_for
    from workflows.data import data_nodes

    t, j = run["cfg"].training, run["cfg"].judge

    @workflow
    def until_judge(config: str, overrides: typing.List[str]) -> FlyteDirectory:
        cfg = resolve_config(config=config, overrides=overrides)
        ctx = start_tracking(pipeline=cfg.pipeline)
        world, _, gated = data_nodes(cfg, ctx)
        base = build_base(cfg=cfg.base, world=world.directory, datasets=gated.directory, run=ctx)
        mid1 = train_task_for(t.mid1)(cfg=cfg.mid1, init_model=base.directory, data=gated.directory, run=ctx,
                                      world=world.directory)
        mid2 = train_task_for(t.mid2)(cfg=cfg.mid2, init_model=mid1.directory, data=gated.directory, run=ctx)
        sft = train_task_for(t.sft)(cfg=cfg.sft, init_model=mid2.directory, data=gated.directory, run=ctx)
        pairs = judge_data(cfg=cfg.judge_data, world=world.directory, run=ctx)
        return train_task_for(j.train)(cfg=cfg.judge, init_model=sft.directory, data=pairs.directory, run=ctx).directory

    def new_stage_runs(overrides):
        _, before = _stage_runs(run["uri"])
        old = {r.info.run_id for r in before}
        until_judge(config=str(run["config"]), overrides=overrides)
        _, after = _stage_runs(run["uri"])
        return sorted(r.data.tags["stage"] for r in after if r.info.run_id not in old and "stage" in r.data.tags)

    assert new_stage_runs(["rl.actor_lr=0.5", "rl.steps=2"]) == []
    assert new_stage_runs(["training.sft.lr=0.002"]) == ["judge", "sft"]
