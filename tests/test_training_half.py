"""The training half, chained on a tiny world: base → mid1 → mid2 → SFT → judge → evaluation.

Few steps each: this checks the wiring (checkpoints load into the next stage, the judge reports
held-out F1, evaluation writes its report), not learning — the README's learning table does that.
The chain and the judge are the session's (`trained_chain`, `trained_judge` in tests/conftest.py),
shared with the PPO stage's tests; the evaluation registers and promotes in a copy of their store.
"""

import json
from pathlib import Path

import pytest

from tests.conftest import requires_sandbox

pytestmark = [pytest.mark.slow, requires_sandbox]

# this module's own stage (evaluation): two deep-search tasks and one research task, short turns; the
# chain itself is the session's `trained_chain` (tests/conftest.py), its judge `trained_judge`
EVAL = ["evaluation.n_deep_search=2", "evaluation.n_deep_research=1", "rl.max_new_tokens=16",
        "evaluation.max_new_tokens=16", "agent.budget.max_turns=16", "evaluation.elo_bootstrap=20"]


def test_each_stage_starts_from_the_previous_checkpoint(trained_chain):
    from deepresearch.modeling.checkpoint import load_checkpoint, read_metadata

    runs = trained_chain.runs
    for stage, res in runs.items():
        assert res.steps == 2 and res.tokens > 0 and res.run_id
        assert read_metadata(res.path)["metadata"]["stage"] == stage
        card = (Path(res.path) / "README.md").read_text()  # every stage's checkpoint has its model card
        assert f"# deepresearch `{stage}` checkpoint" in card and f"- MLflow run: `{res.run_id}`" in card
        assert f"- input `{stage}_data`: `" in card and "tools=tools" in card
    model, tok = load_checkpoint(runs["sft"].path)
    assert len(tok) == trained_chain.base["vocab_size"]


def test_stage_runs_link_to_their_datasets_in_mlflow(trained_chain):
    from mlflow import MlflowClient

    cfg = trained_chain.cfg
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    runs = trained_chain.runs
    run = client.get_run(runs["sft"].run_id)
    # each dataset of its mix, with its own digest and rows (tracking.datasets), and the world
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert {"deep_search", "deep_research", "world"} <= set(inputs)
    assert inputs["deep_search"].dataset.digest != inputs["deep_research"].dataset.digest
    assert all(json.loads(i.dataset.profile)["num_rows"] > 0 for i in inputs.values())
    # the base checkpoint, which no run logged as a model here, is mid1's input as its files
    mid1 = client.get_run(runs["mid1"].run_id)
    [init] = [i for i in mid1.inputs.dataset_inputs if i.dataset.name == "init_model"]
    assert {t.key: t.value for t in init.tags}["kind"] == "checkpoint"
    assert json.loads(init.dataset.profile)["num_rows"] == len([p for p in (trained_chain.root / "base").rglob("*") if p.is_file()])
    assert run.data.metrics["sft/final_loss"] > 0
    # every training run logged its checkpoint as its MLflow model; the next stage reads it as a model input
    for stage, res in runs.items():
        lm = client.get_logged_model(res.model_id)
        assert lm.source_run_id == res.run_id and lm.name == stage and lm.model_type == "text-generation"
        assert [o.model_id for o in client.get_run(res.run_id).outputs.model_outputs] == [res.model_id]
    assert [i.model_id for i in run.inputs.model_inputs] == [runs["mid2"].model_id]
    assert run.data.tags["input.model.init_model"] == runs["mid2"].model_id


def test_judge_trains_from_the_policy_backbone_and_reports_heldout_f1(trained_chain, trained_judge):
    from deepresearch.judge.data import read_examples
    from deepresearch.judge.model import Judge, macro_f1

    cfg, manifest, res = trained_chain.cfg, trained_judge.manifest, trained_judge.run
    held = read_examples(trained_judge.data / "heldout.jsonl")
    assert manifest["examples"]["heldout"] == len(held) > 0 and manifest["examples"]["train"] > 0
    # the reported F1 is the saved judge's on the held-out pairs (not the training pairs, not the backbone)
    pred = Judge.load(res.path).label_pairs([(ex.report, ex.criterion) for ex in held])
    assert res.metrics["judge/heldout_macro_f1"] == pytest.approx(macro_f1([ex.label for ex in held], pred))
    assert res.metrics["judge/heldout_pairs"] == len(held)
    # the judge is its run's text-classification model, its held-out F1 logged against it
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    lm = client.get_logged_model(res.model_id)
    assert lm.source_run_id == res.run_id and lm.model_type == "text-classification"
    # its backbone, the model it read, is the SFT policy's
    backbone = [i.model_id for i in client.get_run(res.run_id).inputs.model_inputs]
    assert backbone == [trained_chain.runs["sft"].model_id]
    assert {m.key for m in lm.metrics} >= {"judge/heldout_macro_f1", "judge/final_loss"}


def test_evaluation_stage_compares_checkpoints_with_intervals_probe_and_promotion(trained_chain, tmp_path):
    from mlflow import MlflowClient

    from deepresearch.evaluation.promotion import evaluation_stage

    # it registers and promotes: in a copy of the chain's store
    cfg, root, runs = trained_chain.own_config(tmp_path / "store", *EVAL), tmp_path, trained_chain.runs
    out = evaluation_stage(cfg, trained_chain.world, {"mid2": runs["mid2"].path, "sft": runs["sft"].path, "expert": "expert"},
                           root / "eval", candidate="sft", baseline="mid2", progress=False)
    ev = out.evaluation
    by = ev.by_name()
    assert by["expert"].well_formed_rate == 1.0 and by["expert"].exact_match == 1.0
    assert by["expert"].compliance > by["sft"].compliance  # 2 training steps teach nothing yet
    em = by["sft"].intervals["exact_match"]
    assert em.ci_low <= em.value <= em.ci_high and em.n == cfg.evaluation.n_deep_search
    assert {(d.a, d.b) for d in ev.differences} == {("sft", "mid2"), ("expert", "sft")}
    # the probe read the expert's held-out trajectories, teacher-forced, for both capabilities
    probe = ev.probe["sft"]
    assert probe["deep_search"]["turn"].n > 0 and probe["deep_research"]["turn"].n > 0 and "expert" not in ev.probe
    text = ev.report.read_text()
    for title in ("Held-out metrics", "Paired differences", "Next-action probe", "policy v1"):
        assert title in text, title
    episodes = [json.loads(x) for x in (root / "eval" / "episodes.jsonl").read_text().splitlines()]
    n_tasks = cfg.evaluation.n_deep_search + cfg.evaluation.n_deep_research
    assert len(episodes) == 3 * n_tasks
    # the held-out tasks share no target entity and no question with the SFT data
    held = [json.loads(x) for x in (root / "eval" / "heldout_tasks.jsonl").read_text().splitlines()]
    train = [json.loads(x) for name in ("deep_search", "deep_research")
             for x in (trained_chain.datasets / name / "tasks.jsonl").read_text().splitlines()]
    assert len(held) == n_tasks and train
    assert not {_target(r) for r in train} & {_target(r) for r in held}
    assert not {r.get("question", r.get("prompt")) for r in train} & {r.get("question", r.get("prompt")) for r in held}
    # MLflow: intervals, paired differences, the probe; the candidate registered with its decision
    metrics = MlflowClient(tracking_uri=cfg.tracking.uri).get_run(out.run_id).data.metrics
    assert {"eval/sft/exact_match_ci_low", "eval/diff/sft_vs_mid2/well_formed_rate_ci_high", "probe/sft/turn"} <= set(metrics)
    assert out.policy_version is not None and out.policy_version.promoted == out.policy.promoted
    # the version is the SFT run's model, and the evaluation's metrics of each checkpoint are on its model
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    assert client.get_model_version("policy", out.policy_version.version).run_id == runs["sft"].run_id
    sft_metrics = {m.key for m in client.get_logged_model(runs["sft"].model_id).metrics}
    assert "eval/sft/exact_match" in sft_metrics and "eval/mid2/exact_match" not in sft_metrics


def _target(task: dict) -> str:
    return task["path"][-1] if "path" in task else task["about"]


def test_lineage_follows_checkpoints_back_through_the_stages(trained_chain):
    from deepresearch.tracking.lineage import trace

    root = trace(trained_chain.runs["sft"].run_id, trained_chain.cfg.tracking)
    init = next(link for link in root.inputs if link.name == "init_model")
    assert init.produced_by is not None and init.produced_by.stage == "mid2"
    mid1 = next(link for link in init.produced_by.inputs if link.name == "init_model").produced_by
    assert mid1 is not None and mid1.stage == "mid1"
