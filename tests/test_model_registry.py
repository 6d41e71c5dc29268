"""MLflow Model Registry: versions registered from the LoggedModels of training runs; `champion` moves only
through the gate."""

import json
from pathlib import Path

import pytest

from deepresearch.config import load_config
from deepresearch.io import dir_digest
from deepresearch.tracking import log_trained_model, stage_run
from deepresearch.tracking.registry import current_version, download_version, promote, register_model


@pytest.fixture
def cfg(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(tracking_uri=uri).create_experiment("reg", artifact_location=(tmp_path / "artifacts").as_uri())
    return load_config("configs/tiny.yaml", [f"tracking.uri={uri}", "tracking.experiment=reg"])


def _trained(cfg, checkpoint, stage):
    """The checkpoint as its training run leaves it: logged as that run's MLflow model."""
    with stage_run(cfg, "", stage) as run:
        log_trained_model(run, checkpoint, stage=stage, digest=dir_digest(checkpoint))
    return run.run_id


def _version(cfg, tmp_path, label, tiny_checkpoint):
    ckpt = tiny_checkpoint(tmp_path / label, stage=label)
    run_id = _trained(cfg, ckpt, "sft")
    return run_id, register_model(cfg.tracking, "policy", ckpt)


def test_champion_moves_only_when_promoted_and_the_old_one_becomes_challenger(cfg, tmp_path, tiny_checkpoint):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=cfg.tracking.uri, registry_uri=cfg.tracking.uri)
    assert current_version(cfg.tracking, "policy") is None
    _, v1 = _version(cfg, tmp_path, "a", tiny_checkpoint)
    d1 = promote(cfg.tracking, "policy", v1, promoted=True, reasons=["first"], metrics={"mean_reward": 0.5})
    assert d1.promoted and d1.previous_champion is None and current_version(cfg.tracking, "policy") == v1

    run2, v2 = _version(cfg, tmp_path, "b", tiny_checkpoint)
    d2 = promote(cfg.tracking, "policy", v2, promoted=False, reasons=["worse"], metrics={"mean_reward": 0.3})
    assert not d2.promoted and current_version(cfg.tracking, "policy") == v1  # unchanged
    assert client.get_run(run2).data.tags["promotion.policy"] == "rejected"
    assert json.loads(client.get_model_version("policy", v2).tags["gate"]) == {"promoted": False, "reasons": ["worse"]}

    _, v3 = _version(cfg, tmp_path, "c", tiny_checkpoint)
    d3 = promote(cfg.tracking, "policy", v3, promoted=True, reasons=["better"], metrics={"mean_reward": 0.7})
    assert d3.promoted and d3.previous_champion == v1
    assert current_version(cfg.tracking, "policy") == v3
    assert current_version(cfg.tracking, "policy", "challenger") == v1
    local = download_version(cfg.tracking, "policy", v1, tmp_path / "dl")
    assert dir_digest(local) == dir_digest(tmp_path / "a") and tmp_path / "dl" in local.parents


# ---- the evaluation stage's promotion, end to end on the registry (evaluation itself faked) --------
def _policy(cfg, tmp_path, label, solved, tiny_checkpoint, words=("alpha", "beta"), stage="rl"):
    """A real tiny checkpoint that says how many of the 40 fake tasks it solves, logged by its training run."""
    d = tiny_checkpoint(tmp_path / label, stage=label, words=words)
    (d / "skill.json").write_text(json.dumps({"solved": solved}))
    return d, _trained(cfg, d, stage)

def _fake_evaluate(judge_f1):
    """evaluate() stand-in: each checkpoint solves the first `solved` of 40 deep-search tasks (from its own
    directory, so a downloaded champion plays as it did when registered); research tasks score 0.5."""
    from deepresearch.evaluation.metrics import EpisodeRecord, JudgeAgreement, summarize
    from deepresearch.evaluation.report import CheckpointEval, EvalResults, write_report
    from deepresearch.evaluation.run import Evaluation

    seen = []

    def fake(cfg, world_dir, specs, out_dir, *, judge_dir=None, pairs=None, curves=None, tracker=None, progress=True):
        seen.append(dict(specs))
        records = []
        for name, spec in specs.items():
            k = json.loads((Path(spec) / "skill.json").read_text())["solved"]
            for i in range(40):
                records.append(EpisodeRecord(
                    checkpoint=name, task_id=f"ds-{i}", capability="deep_search", outcome="answered", well_formed=True,
                    tool_calls=1, tool_errors=0, tokens=10, output_tokens=5, wall_s=0.1, answer="x",
                    exact_match=float(i < k), f1=float(i < k), reward=float(i < k)))
            records.append(EpisodeRecord(
                checkpoint=name, task_id="dr-0", capability="deep_research", outcome="answered", well_formed=True,
                tool_calls=1, tool_errors=0, tokens=10, output_tokens=5, wall_s=0.1, answer="x", compliance=0.5,
                compliance_binary=0.5, reward=0.5))
        metrics, diffs = summarize(records, list(specs), pairs=pairs, n_resamples=300, seed=0)
        results = EvalResults(checkpoints=[CheckpointEval(name=m.name, intervals=m.intervals) for m in metrics],
                              differences=diffs)
        agreement = JudgeAgreement(items=10, reports=1, accuracy=judge_f1, macro_f1=judge_f1,
                                   confusion=[[1, 0, 0], [0, 1, 0], [0, 0, 1]]) if judge_dir else None
        return Evaluation(checkpoints=metrics, differences=diffs, probe={}, judge_agreement=agreement,
                          records=records, results=results, report=write_report(results, Path(out_dir)))

    return fake, seen


def test_evaluation_stage_promotes_only_a_policy_that_beats_the_champion_and_sft(cfg, tmp_path, monkeypatch,
                                                                                 tiny_checkpoint):
    from mlflow import MlflowClient

    import deepresearch.evaluation.run as run_module
    from deepresearch.evaluation.promotion import evaluation_stage

    trained = {}

    def stage(label, rl, sft, *, judge_f1=0.9, words=("alpha", "beta")):
        fake, seen = _fake_evaluate(judge_f1)
        monkeypatch.setattr(run_module, "evaluate", fake)
        (sft_dir, _), (rl_dir, trained[label]) = (_policy(cfg, tmp_path, f"{label}-sft", sft, tiny_checkpoint, words, "sft"),
                                                  _policy(cfg, tmp_path, f"{label}-rl", rl, tiny_checkpoint, words))
        judge = tiny_checkpoint(tmp_path / f"{label}-judge", stage=f"{label}-judge", words=words)
        trained[f"{label}-judge"] = _trained(cfg, judge, "judge")
        out = evaluation_stage(cfg, tmp_path, {"sft": sft_dir, "rl": rl_dir}, tmp_path / f"{label}-eval",
                               judge_dir=judge, progress=False)
        return out, seen[0]

    # 1. no champion yet: floors and "at least as good as SFT" decide
    first, specs = stage("v1", rl=20, sft=15)
    assert list(specs) == ["sft", "rl"]  # no champion to evaluate
    assert first.policy.promoted and "no policy champion yet" in first.policy.reasons[-1]
    v1 = first.policy_version.version
    assert current_version(cfg.tracking, "policy") == v1
    assert first.judge.promoted and current_version(cfg.tracking, "judge") == first.judge_version.version
    # each version comes from the run that trained it, not from the evaluation's run
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    assert client.get_model_version("policy", v1).run_id == trained["v1"] != first.run_id
    assert client.get_model_version("judge", first.judge_version.version).run_id == trained["v1-judge"]

    # 2. worse than the champion (10 vs 20 solved, on the same tasks): refused, the champion stays
    worse, specs = stage("v2", rl=10, sft=5, judge_f1=0.5)
    assert list(specs) == ["sft", "rl", "champion"]  # the champion played the same tasks
    assert not worse.policy.promoted and "does not beat the champion v1" in worse.policy.reasons[-1]
    assert worse.policy.metrics["mean_reward_vs_champion"] < 0
    assert current_version(cfg.tracking, "policy") == v1
    assert not worse.judge.promoted and "is below 0.85" in worse.judge.reasons[0]
    assert "policy v2 not promoted" in worse.evaluation.report.read_text()

    # 3. better than the champion with a paired interval above zero: promoted, the old champion is challenger
    better, _ = stage("v3", rl=35, sft=30)
    assert better.policy.promoted and "excludes a loss" in better.policy.reasons[-1]
    assert better.policy.metrics["mean_reward_vs_champion_ci_low"] >= 0
    v3 = better.policy_version.version
    assert current_version(cfg.tracking, "policy") == v3 and current_version(cfg.tracking, "policy", "challenger") == v1
    assert "rl (champion)" in better.evaluation.report.read_text()

    # 4. better than the champion but below SFT: refused
    below, _ = stage("v4", rl=38, sft=39)
    assert not below.policy.promoted and "below sft's" in " ".join(below.policy.reasons)
    assert current_version(cfg.tracking, "policy") == v3

    # 5. a champion of another vocabulary cannot be compared: not evaluated, the floors and SFT decide
    other, specs = stage("v5", rl=5, sft=5, words=("gamma", "delta"))
    assert "champion" not in specs and other.policy.promoted
    assert "another tokenizer vocabulary" in other.policy.reasons[-1]
    assert current_version(cfg.tracking, "policy", "challenger") == v3


def test_a_candidate_no_run_logged_is_not_registered_and_the_report_says_so(cfg, tmp_path, monkeypatch,
                                                                             tiny_checkpoint):
    import deepresearch.evaluation.run as run_module
    from deepresearch.evaluation.promotion import evaluation_stage

    fake, _ = _fake_evaluate(0.9)
    monkeypatch.setattr(run_module, "evaluate", fake)
    checkpoints = {}
    for name, solved in (("sft", 5), ("rl", 10)):  # trained with tracking off: no LoggedModel
        checkpoints[name] = tiny_checkpoint(tmp_path / name, stage=name)
        (checkpoints[name] / "skill.json").write_text(json.dumps({"solved": solved}))
    out = evaluation_stage(cfg, tmp_path, checkpoints, tmp_path / "eval", progress=False)
    assert out.policy.promoted and out.policy_version is None and current_version(cfg.tracking, "policy") is None
    assert "policy not registered: cannot register" in out.evaluation.report.read_text()
