"""Walk the lineage recorded in MLflow: model version → training run → its datasets (with hashes)
→ the runs that produced them → … → the world, the config and the Flyte executions and images.

    deepresearch lineage models:/policy@champion
    deepresearch lineage <run_id>

Links followed: a registered model version's `run_id` (the run that trained and logged the model); a
run's model inputs (MLflow 3 LoggedModels, named by the run's `input.model.<role>` tags) to the run that
logged each one (`source_run_id`); a run's dataset inputs (context "input", digest in the `sha256` input
tag) to the run whose `dataset.digest` (or, for a checkpoint no run logged as a model, `model.digest`) tag
equals that digest; a run's parent (`mlflow.parentRunId`), which holds the config params and hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deepresearch.config import TrackingConfig


@dataclass
class DatasetLink:
    name: str
    digest: str  # full sha256
    source: str
    context: str
    produced_by: "LineageNode | None" = None
    kind: str = "dataset"  # or "model": a LoggedModel input (source is its models:/<model_id> URI)


@dataclass
class LineageNode:
    run_id: str
    stage: str
    status: str
    tags: dict[str, str]  # git sha, config hash, Flyte execution id, image
    inputs: list[DatasetLink] = field(default_factory=list)
    parent_run_id: str | None = None
    model: str | None = None  # "name version N" when reached from a registered model


def _resolve_target(client: Any, target: str) -> tuple[str, str | None]:
    """A run id, or models:/name@alias, or models:/name/version → (run_id, model label)."""
    if not target.startswith("models:/"):
        return target, None
    spec = target[len("models:/") :]
    if "@" in spec:
        name, alias = spec.split("@", 1)
        mv = client.get_model_version_by_alias(name, alias)
    elif "/" in spec:
        name, version = spec.rsplit("/", 1)
        mv = client.get_model_version(name, version)
    else:
        raise ValueError(f"model URI {target!r} must be models:/NAME@ALIAS or models:/NAME/VERSION")
    if not mv.run_id:
        raise ValueError(f"{target} (version {mv.version}) records no run id")
    return mv.run_id, f"{mv.name} version {mv.version}"


def trace(target: str, cfg: TrackingConfig, *, max_depth: int = 12) -> LineageNode:
    """Build the lineage tree of a run or registered model (see module docstring)."""
    from mlflow import MlflowClient

    from deepresearch.tracking import tracking_uri
    from deepresearch.tracking.models import DIGEST_TAG, INPUT_TAG

    client = MlflowClient(tracking_uri=tracking_uri(cfg))
    run_id, model = _resolve_target(client, target)
    nodes: dict[str, LineageNode] = {}  # a run reached twice (two datasets it wrote) is one node

    def producer(digest: str, experiment_id: str, consumer) -> str | None:
        # A dataset's producer tags `dataset.digest`; a model's training run tags `model.digest`. The
        # latest such run that started before the consumer and is not the consumer itself: a stage can
        # write data identical to its input (a quality gate that dropped nothing), and a content digest
        # names the data, so the consumer carries the same tag as its input's producer.
        for tag in ("dataset.digest", "model.digest"):
            runs = client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{tag}` = '{digest}' and attributes.status = 'FINISHED' "
                f"and attributes.start_time <= {consumer.info.start_time}",
                order_by=["attributes.start_time DESC"],
                max_results=5,
            )
            for r in runs:
                if r.info.run_id != consumer.info.run_id:
                    return r.info.run_id
        return None

    def node(rid: str, depth: int) -> LineageNode:
        if rid in nodes:
            return nodes[rid]
        run = client.get_run(rid)
        tags = run.data.tags
        keep = {k: tags[k] for k in ("git_sha", "config_hash", "flyte.execution_id", "flyte.image", "output.path",
                                      "dataset.digest", "model.digest") if k in tags}
        n = LineageNode(
            run_id=rid,
            stage=tags.get("stage", run.info.run_name or "?"),
            status=run.info.status,
            tags=keep,
            parent_run_id=tags.get("mlflow.parentRunId"),
        )
        nodes[rid] = n
        roles = {v: k[len(INPUT_TAG):] for k, v in tags.items() if k.startswith(INPUT_TAG)}
        for mi in (run.inputs.model_inputs or []) if run.inputs else []:
            lm = client.get_logged_model(mi.model_id)
            link = DatasetLink(name=roles.get(mi.model_id, lm.name), digest=lm.tags.get(DIGEST_TAG, ""),
                               source=lm.model_uri, context="input", kind="model")
            if depth < max_depth and lm.source_run_id and lm.source_run_id != rid:
                link.produced_by = node(lm.source_run_id, depth + 1)
            n.inputs.append(link)
        for inp in run.inputs.dataset_inputs if run.inputs else []:
            itags = {t.key: t.value for t in inp.tags}
            link = DatasetLink(
                name=inp.dataset.name,
                digest=itags.get("sha256", inp.dataset.digest),
                source=inp.dataset.source,
                context=itags.get("mlflow.data.context", ""),
            )
            if link.context == "input" and depth < max_depth:
                pid = producer(link.digest, run.info.experiment_id, run)
                if pid and pid != rid:
                    link.produced_by = node(pid, depth + 1)
            n.inputs.append(link)
        return n

    root = node(run_id, 0)
    root.model = model
    return root


def render(root: LineageNode, cfg: TrackingConfig) -> None:
    """Print the tree with rich."""
    from mlflow import MlflowClient
    from rich.console import Console
    from rich.tree import Tree

    from deepresearch.tracking import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri(cfg))

    def label(n: LineageNode) -> str:
        t = n.tags
        return (
            f"[bold]{n.stage}[/] run {n.run_id} ({n.status}) · git {t.get('git_sha', '?')[:10]} · "
            f"config {t.get('config_hash', '?')} · flyte {t.get('flyte.execution_id', '?')} · "
            f"image {t.get('flyte.image', '?')}"
        )

    shown: set[str] = set()

    def add(tree: Tree, n: LineageNode) -> None:
        if n.run_id in shown:
            tree.add("[dim](shown above)[/]")
            return
        shown.add(n.run_id)
        for link in n.inputs:
            if link.context != "input":
                continue
            branch = tree.add(f"{link.kind} [cyan]{link.name}[/] sha256 {link.digest[:16]}… from {link.source}")
            if link.produced_by is not None:
                add(branch.add(label(link.produced_by)), link.produced_by)
            else:
                branch.add("[dim](producer not found in this tracking store)[/]")

    head = (f"[green]{root.model}[/] → " if root.model else "") + label(root)
    tree = Tree(head)
    add(tree, root)
    if root.parent_run_id:
        parent = client.get_run(root.parent_run_id)
        p = parent.data.params
        tree.add(
            f"pipeline run {root.parent_run_id}: config {parent.data.tags.get('config_hash', '?')} "
            f"(world.seed={p.get('world.seed', '?')}, synthesis.seed={p.get('synthesis.seed', '?')}, "
            f"name={p.get('name', '?')})"
        )
    Console().print(tree)
