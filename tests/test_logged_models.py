"""Checkpoints are MLflow 3 LoggedModels of the runs that trained them: registered versions load through
MLflow and generate, a version's lineage is its own training chain, tracking off or away logs nothing.

Real MLflow on a SQLite store under tmp_path; real (minute) Qwen2 checkpoints.
"""

import logging

import pytest

from deepresearch.config import load_config
from deepresearch.io import dir_digest
from deepresearch.synthesis.schema import LABELS
from deepresearch.tracking import MlflowTracker, log_trained_model, stage_params, stage_run, start_parent_run
from deepresearch.tracking.models import ModelNotLoggedError, use_tracking_uri
from deepresearch.tracking.registry import download_version, register_model


@pytest.fixture
def cfg(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # the experiment's artifacts under tmp_path (MLflow's default for a SQLite store is ./mlruns)
    MlflowClient(tracking_uri=uri).create_experiment("models", artifact_location=(tmp_path / "artifacts").as_uri())
    return load_config("configs/tiny.yaml", [f"tracking.uri={uri}", "tracking.experiment=models"])


def _train(cfg, parent, stage, checkpoint, inputs=()):
    """What a training stage records: its input checkpoints as model inputs, its own checkpoint as its model."""
    with stage_run(cfg, parent, stage) as run:
        for name, path in inputs:
            run.log_model_input(path, name=name, digest=dir_digest(path))
        model_id = log_trained_model(run, checkpoint, stage=stage, digest=dir_digest(checkpoint),
                                     params=stage_params(cfg, stage))
    return run.run_id, model_id


def test_a_registered_policy_loads_through_mlflow_and_generates(cfg, tmp_path, tiny_checkpoint):
    import mlflow
    from mlflow import MlflowClient
    from transformers import AutoTokenizer

    ckpt = tiny_checkpoint(tmp_path / "sft", stage="sft")
    parent = start_parent_run(cfg, "full")
    run_id, model_id = _train(cfg, parent, "sft", ckpt)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)

    # the training run has its LoggedModel, with the stage's own section as params and the checkpoint's digest
    lm = client.get_logged_model(model_id)
    assert lm.source_run_id == run_id and lm.name == "sft" and lm.tags["model.digest"] == dir_digest(ckpt)
    assert [o.model_id for o in client.get_run(run_id).outputs.model_outputs] == [model_id]
    assert lm.params["training.sft.lr"] == str(cfg.training.sft.lr) and lm.params["config_hash"] == cfg.hash
    assert not any(k.startswith(("rl.", "world.", "training.mid1.")) for k in lm.params)

    version = register_model(cfg.tracking, "policy", ckpt)
    mv = client.get_model_version("policy", version)
    assert mv.run_id == run_id  # the training run, not the evaluation's

    with use_tracking_uri(cfg.tracking.uri):
        pipe = mlflow.transformers.load_model(f"models:/policy/{version}")
        out = pipe("the capital of", max_new_tokens=4, do_sample=False)[0]["generated_text"]
        pyfunc = mlflow.pyfunc.load_model(f"models:/policy/{version}")
        predicted = pyfunc.predict(["the capital of"])
    assert out.startswith("the capital of") and len(out) > len("the capital of")
    assert isinstance(predicted[0], str) and predicted[0]
    # the chat template travels with the model
    assert pipe.tokenizer.chat_template == AutoTokenizer.from_pretrained(str(ckpt)).chat_template
    assert "<|im_start|>" in pipe.tokenizer.chat_template

    # the downloaded version is the checkpoint directory its stage wrote, file for file
    local = download_version(cfg.tracking, "policy", version, tmp_path / "dl")
    assert dir_digest(local) == dir_digest(ckpt)


def test_each_version_s_lineage_is_its_own_training_chain(cfg, tmp_path, tiny_checkpoint):
    """base → sft → judge and sft + judge → rl; the judge's lineage has no RL policy in it."""
    import mlflow

    from deepresearch.tracking.lineage import trace

    base = tiny_checkpoint(tmp_path / "base", stage="base")
    sft = tiny_checkpoint(tmp_path / "sft", stage="sft")
    judge = tiny_checkpoint(tmp_path / "judge", stage="judge", judge=True)
    rl = tiny_checkpoint(tmp_path / "rl", stage="rl")
    parent = start_parent_run(cfg, "full")
    sft_run, _ = _train(cfg, parent, "sft", sft, inputs=[("init_model", base)])
    judge_run, judge_id = _train(cfg, parent, "judge", judge, inputs=[("init_model", sft)])
    rl_run, _ = _train(cfg, parent, "rl", rl, inputs=[("policy", sft), ("judge", judge)])
    policy_v, judge_v = register_model(cfg.tracking, "policy", rl), register_model(cfg.tracking, "judge", judge)

    def stages(node, seen=None):
        seen = set() if seen is None else seen
        seen.add(node.stage)
        for link in node.inputs:
            if link.produced_by is not None and link.produced_by.stage not in seen:
                stages(link.produced_by, seen)
        return seen

    root = trace(f"models:/judge/{judge_v}", cfg.tracking)
    assert root.run_id == judge_run and root.model == f"judge version {judge_v}"
    assert stages(root) == {"judge", "sft"}  # not "rl"
    init = next(link for link in root.inputs if link.name == "init_model")
    assert init.kind == "model" and init.produced_by.run_id == sft_run and init.source.startswith("models:/m-")

    root = trace(f"models:/policy/{policy_v}", cfg.tracking)
    assert root.run_id == rl_run
    links = {link.name: link for link in root.inputs}
    assert links["policy"].kind == links["judge"].kind == "model"
    assert links["policy"].produced_by.run_id == sft_run and links["judge"].produced_by.run_id == judge_run
    assert links["judge"].source == f"models:/{judge_id}"  # the RL run read the judge run's LoggedModel
    # the base model was logged by no run: recorded as what it is, a checkpoint's files under its digest
    base_link = next(link for link in links["policy"].produced_by.inputs if link.name == "init_model")
    assert base_link.kind == "checkpoint" and base_link.digest == dir_digest(base)

    # the judge is a text-classification model: it loads through MLflow as a pipeline that labels text
    with use_tracking_uri(cfg.tracking.uri):
        pipe = mlflow.transformers.load_model(f"models:/judge/{judge_v}")
    assert pipe.task == "text-classification" and pipe.model.config.num_labels == 3
    assert pipe("the capital of alpha is beta.")[0]["label"] in LABELS


def test_evaluation_metrics_are_logged_against_each_model(cfg, tmp_path, tiny_checkpoint):
    from mlflow import MlflowClient

    ckpt = tiny_checkpoint(tmp_path / "sft", stage="sft")
    _, model_id = _train(cfg, "", "sft", ckpt)
    with stage_run(cfg, "", "evaluation") as run:
        assert run.log_model_input(ckpt, name="checkpoint_sft", digest=dir_digest(ckpt)) == model_id
        run.log_metrics({"eval/sft/exact_match": 0.25}, model_id=model_id)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    assert {m.key: m.value for m in client.get_logged_model(model_id).metrics} == {"eval/sft/exact_match": 0.25}
    evaluation = client.get_run(run.run_id)
    assert evaluation.data.metrics["eval/sft/exact_match"] == 0.25
    assert [i.model_id for i in evaluation.inputs.model_inputs] == [model_id]
    assert evaluation.data.tags["input.model.checkpoint_sft"] == model_id


def test_unlogged_checkpoints_are_refused_by_name_and_tracking_faults_only_warn(cfg, tmp_path, tiny_checkpoint, caplog):
    ckpt = tiny_checkpoint(tmp_path / "sft", stage="sft")
    with pytest.raises(FileNotFoundError, match="config.json"):
        register_model(cfg.tracking, "policy", tmp_path / "nothing")
    with pytest.raises(ModelNotLoggedError, match=f"no MLflow model of experiment 'models' has its digest {dir_digest(ckpt)[:16]}"):
        register_model(cfg.tracking, "policy", ckpt)

    off = load_config("configs/tiny.yaml", ["tracking.enabled=false"])
    with stage_run(off, "", "sft") as run:
        assert log_trained_model(run, ckpt, stage="sft", digest="d") is None
        assert run.log_model_input(ckpt, name="init_model", digest="d") is None

    # a store that refuses at the end of training: a warning, the stage goes on
    from mlflow import MlflowClient

    gone = MlflowTracker(MlflowClient(tracking_uri=cfg.tracking.uri), "0" * 32)  # a run this store lacks
    with caplog.at_level(logging.WARNING, logger="deepresearch.tracking"):
        assert log_trained_model(gone, ckpt, stage="sft", digest=dir_digest(ckpt)) is None
    assert "could not log sft's checkpoint" in caplog.text
