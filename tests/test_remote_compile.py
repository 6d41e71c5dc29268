"""Remote compile without a cluster: `pyflyte package` serializes every task, workflow and launch plan
to Flyte's protobufs; the resources, images and schedule must be what the config says."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from deepresearch.config import REPO_ROOT, load_config

FAMILY_OF_TASK = {
    "tasks.data.build_world": "data",
    "tasks.data.synthesize": "data",
    "tasks.data.quality_gates": "data",
}


def package(config: str, out: Path) -> dict[str, bytes]:
    env = dict(os.environ, DEEPRESEARCH_CONFIG=config, PYTHONPATH=str(REPO_ROOT))
    tgz = out / "flyte-package.tgz"
    cmd = [sys.executable, "-m", "flytekit.clis.sdk_in_container.pyflyte", "--pkgs", "workflows", "package",
           "--image", "localhost:30000/deepresearch-data:default", "--output", str(tgz), "--force"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with tarfile.open(tgz) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


@pytest.fixture(scope="module", params=["configs/small.yaml", "configs/paper.yaml"])
def packaged(request, tmp_path_factory):
    return request.param, package(request.param, tmp_path_factory.mktemp("pkg"))


def _parse(files):
    from flyteidl.admin import launch_plan_pb2, task_pb2, workflow_pb2

    tasks, workflows, plans = {}, {}, {}
    for name, data in files.items():
        if name.endswith("_1.pb"):
            t = task_pb2.TaskSpec()
            t.ParseFromString(data)
            tasks[t.template.id.name] = t.template
        elif name.endswith("_2.pb"):
            w = workflow_pb2.WorkflowSpec()
            w.ParseFromString(data)
            workflows[w.template.id.name] = w.template
        elif name.endswith("_3.pb"):
            lp = launch_plan_pb2.LaunchPlan()
            lp.ParseFromString(data)
            plans[lp.id.name] = lp
    return tasks, workflows, plans


def test_every_task_names_its_content_hashed_image(packaged):
    from containers.images import DATA_IMAGE

    _, files = packaged
    tasks, _, _ = _parse(files)
    assert set(FAMILY_OF_TASK) <= set(tasks)
    for name, t in tasks.items():
        image = t.container.image
        assert image.startswith("localhost:30000/deepresearch-"), (name, image)
        assert not image.endswith(":latest") and not image.endswith(":default"), (name, image)
    # the tag is ImageSpec's content hash
    assert tasks["tasks.data.build_world"].container.image == DATA_IMAGE.image_name()


def test_node_resources_and_accelerators_come_from_the_config(packaged):
    config, files = packaged
    infra = load_config(config).infra
    _, workflows, _ = _parse(files)
    wf = workflows["workflows.full.full"]
    nodes = {n.task_node.reference_id.name: n for n in wf.nodes if n.task_node.reference_id.name}
    for task_name, family in FAMILY_OF_TASK.items():
        res = getattr(infra, family)
        ov = nodes[task_name].task_node.overrides
        requests = {r.name: r.value for r in ov.resources.requests}
        assert requests[1] == res.cpu and requests[3] == res.mem  # 1 = CPU, 3 = MEMORY
        if res.accelerator:
            assert ov.extended_resources.gpu_accelerator.device
    assert wf.metadata.on_failure is not None and wf.failure_node.id  # the failure handler is compiled in


def test_training_stages_are_pytorch_jobs_and_ppo_a_ray_job_shaped_by_the_config(packaged):
    from google.protobuf.json_format import MessageToDict

    config, files = packaged
    cfg = load_config(config)
    tasks, workflows, _ = _parse(files)
    wf = workflows["workflows.full.full"]
    names = [n.task_node.reference_id.name for n in wf.nodes if n.task_node.reference_id.name]
    train_nodes = [n for n in wf.nodes if "train_stage" in n.task_node.reference_id.name]
    # mid1, mid2, SFT, judge — in the recipe's order
    shapes = [cfg.training.mid1, cfg.training.mid2, cfg.training.sft, cfg.judge.train]
    assert len(train_nodes) == 4
    for node, stage in zip(train_nodes, shapes):
        t = tasks[node.task_node.reference_id.name]
        default = (stage.nnodes, stage.nproc_per_node) == (1, 2)  # the module-level `train_stage`
        expected = "tasks.train.train_stage" if default else f"train_stage_{stage.nnodes}x{stage.nproc_per_node}"
        assert t.id.name.endswith(expected), (t.id.name, expected)
        if stage.nnodes > 1:
            assert t.type == "pytorch"  # multi-node: a PyTorchJob (training-operator) on the cluster
            custom = MessageToDict(t.custom)
            assert custom["elasticConfig"]["nprocPerNode"] == stage.nproc_per_node
            assert custom["elasticConfig"]["maxReplicas"] == stage.nnodes
        else:
            assert t.type == "python-task"  # one node: torch elastic runs inside the task's own pod
        assert t.container.image.startswith("localhost:30000/deepresearch-train:")
        requests = {r.name: r.value for r in node.task_node.overrides.resources.requests}
        assert requests[3] == cfg.infra.train.mem
        if cfg.infra.train.accelerator:
            assert node.task_node.overrides.extended_resources.gpu_accelerator.device
    ppo = tasks["tasks.model.ppo"]
    assert ppo.type == "ray" and "tasks.model.ppo" in names  # a RayJob (KubeRay) on the cluster
    workers = MessageToDict(ppo.custom)["rayCluster"]["workerGroupSpec"][0]
    assert workers["replicas"] == cfg.rl.rollout_workers
    assert ppo.container.image.startswith("localhost:30000/deepresearch-rollout:")
    assert tasks["tasks.model.evaluate"].container.image.startswith("localhost:30000/deepresearch-eval:")


def test_weekly_launch_plan_is_scheduled_with_a_kickoff_input(packaged):
    config, files = packaged
    _, _, plans = _parse(files)
    lp = plans["full_weekly"]
    sched = lp.spec.entity_metadata.schedule
    assert sched.cron_schedule.schedule == load_config(config).infra.schedule
    assert sched.kickoff_time_input_arg == "kickoff_time"
    assert lp.spec.default_inputs.parameters["config"].default.scalar.primitive.string_value == config


def test_kickoff_time_selects_fresh_data():
    from datetime import datetime

    from deepresearch.config import fresh_data_overrides

    cfg = load_config("configs/tiny.yaml")
    a = fresh_data_overrides(cfg, datetime(2026, 11, 16, 6))
    b = fresh_data_overrides(cfg, datetime(2026, 11, 23, 6))
    assert a == ["synthesis.seed=202647", "world.seed=202647"] and a != b
    assert load_config("configs/tiny.yaml", a).hash != cfg.hash


def test_accelerators_map_to_flytekit_and_bad_names_are_rejected():
    from flytekit.extras import accelerators

    from deepresearch.config import TaskResources
    from tasks.infra import resource_overrides

    ok = resource_overrides(TaskResources(cpu="8", mem="64Gi", gpu=8, accelerator="H100"))
    assert ok["accelerator"] is accelerators.H100 and ok["limits"].gpu == "8"
    with pytest.raises(ValueError, match="not one of"):
        resource_overrides(TaskResources(gpu=1, accelerator="B9000"), "train")
