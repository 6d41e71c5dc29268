"""The PPO stage end to end on a tiny world: SFT policy + trained judge → Ray rollouts with the real
tools → judge rewards → DeepSpeed PPO update → weight push → HF checkpoint, tracked in MLflow.

Two steps of everything (SFT chain, judge, PPO): this checks the wiring, not learning. The chain and
the judge are the session's, shared with tests/test_training_half.py.
"""

import math
from pathlib import Path

import pytest

from tests.conftest import requires_sandbox

pytestmark = [pytest.mark.slow, requires_sandbox]

# The SFT policy and the judge are the session's `trained_chain` and `trained_judge` (tests/conftest.py);
# this module adds two PPO steps of two episodes each.
RL = [
    "rl.steps=2",
    "rl.episodes_per_step=2",
    "rl.rollout_workers=2",
    "rl.max_new_tokens=16",
    "rl.minibatch_size=1",
    "rl.ppo_epochs=1",
    "rl.kl_coef=0.05",  # exercise the KL-to-reference path (the reference is the SFT policy)
    "agent.budget.max_turns=3",  # RL episodes only: the expert that synthesized the SFT data needs more
]


@pytest.fixture(scope="module")
def ppo(tmp_path_factory, trained_chain, trained_judge):
    import ray

    from deepresearch.rl.train import run_ppo
    from deepresearch.tracking import start_parent_run

    root = tmp_path_factory.mktemp("ppo")
    cfg = trained_chain.own_config(root / "store", *RL)  # the RL run goes into a copy of the chain's store
    parent = start_parent_run(cfg, "test-ppo")
    runs = {"sft": trained_chain.runs["sft"], "judge": trained_judge.run}
    try:
        res = run_ppo(
            cfg,
            policy_dir=runs["sft"].path,
            judge_dir=runs["judge"].path,
            world_dir=trained_chain.world,
            out=root / "rl",
            parent_run_id=parent,
            progress=False,
        )
        yield {"cfg": cfg, "res": res, "runs": runs, "parent": parent}
    finally:
        ray.shutdown()


def test_ppo_trains_the_sft_policy_into_a_loadable_checkpoint(ppo):
    from deepresearch.agent.policies.hf import HFPolicy
    from deepresearch.generation.engine import read_checkpoint_tensors
    from deepresearch.rl.value import ValueModel

    res = ppo["res"]
    assert res.steps == 2 and res.episodes == 4
    assert len(res.reward_curve) == 2 and all(math.isfinite(r) for r in res.reward_curve)
    assert res.weights_version == 1  # one push, between the two steps
    assert res.rollout_samples_per_s > 0 and res.learner_samples_per_s > 0
    card = (Path(res.path) / "README.md").read_text()  # the RL policy has its model card too
    assert "# deepresearch `rl` checkpoint" in card and f"- MLflow run: `{res.run_id}`" in card
    assert "- input `judge`: `" in card and "- input `policy`: `" in card
    policy = HFPolicy.from_pretrained(res.path, max_new_tokens=4)
    assert policy.engine.max_context_len > 0
    ValueModel.from_pretrained(res.critic_path)
    before, after = read_checkpoint_tensors(ppo["runs"]["sft"].path), read_checkpoint_tensors(res.path)
    assert before.keys() == after.keys()
    assert any(not before[k].equal(after[k]) for k in before), (
        "PPO left every weight of the SFT policy unchanged"
    )


def test_rl_run_tracks_metrics_and_links_its_inputs(ppo):
    from mlflow import MlflowClient

    cfg, res, runs = ppo["cfg"], ppo["res"], ppo["runs"]
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    run = client.get_run(res.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "rl"
    assert run.data.tags["mlflow.parentRunId"] == ppo["parent"]
    for name in (
        "reward_mean",
        "reward_std",
        "success_rate",
        "policy_loss",
        "value_loss",
        "clip_frac",
        "kl",
        "kl_ref",
        "entropy",
        "advantage_std",
        "reruns",
        "rollout_samples_per_s",
        "rollout_tokens_per_s",
        "learner_samples_per_s",
    ):
        assert f"rl/{name}" in run.data.metrics, name
    assert [m.step for m in client.get_metric_history(res.run_id, "rl/reward_mean")] == [1, 2]
    inputs = {i.dataset.name: {t.key: t.value for t in i.tags} for i in run.inputs.dataset_inputs}
    assert set(inputs) >= {"world"}
    # the SFT policy and the judge are model inputs: the LoggedModels their training runs logged
    assert {i.model_id for i in run.inputs.model_inputs} == {runs["sft"].model_id, runs["judge"].model_id}
    for name in ("sft", "judge"):
        key = "policy" if name == "sft" else "judge"
        assert run.data.tags[f"input.model.{key}"] == runs[name].model_id
        assert client.get_logged_model(runs[name].model_id).source_run_id == runs[name].run_id
    # and the RL policy is this run's own LoggedModel
    lm = client.get_logged_model(res.model_id)
    assert lm.source_run_id == res.run_id and lm.tags["model.digest"] == run.data.tags["model.digest"]
    assert "rl.steps" in lm.params and not any(k.startswith(("world.", "judge.", "training.mid")) for k in lm.params)
    assert run.data.tags["output.path"] == res.path
