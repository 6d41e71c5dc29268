"""Walk the lineage recorded in MLflow: model version → the run that produced it → its inputs (with
digests) → the runs that produced those → … → the world, the config and the Flyte executions and images.

    deepresearch lineage models:/policy@champion          # a one-screen listing, each run once
    deepresearch lineage models:/policy/2 --json          # the whole graph, for tools
    deepresearch lineage <run_id>

Links followed: a registered model version's source (its LoggedModel's run, else its `run_id`; when
the version is tagged `model.digest`, the run that wrote that checkpoint); a run's model inputs (MLflow 3
LoggedModels, named by the run's `input.model.<role>` tags) to the run that logged each one
(`source_run_id`); a run's dataset inputs
(context "input") and the run whose `dataset.digest` (or, for a checkpoint, `model.digest`) tag equals
the input's `artifact.digest` input tag (the directory it was cut from), else its `sha256` tag; a run's
parent (`mlflow.parentRunId`), which holds the config params and hash.

A target that does not resolve (no such run, version or alias) raises `LineageError` with one line
saying why; for a missing alias, what the registry recorded about its versions' promotion.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepresearch.config import TrackingConfig
from deepresearch.errors import TrackingError

SHORT = 12  # hex digits of a digest (or git sha) in the listing; --json has them whole
WIDTH = 100  # the listing fits a terminal this wide


class LineageError(TrackingError):
    """A lineage target does not resolve: no such run, registered model, version or alias."""


@dataclass
class DatasetLink:
    name: str
    digest: str  # full sha256 of this input's own content
    source: str
    context: str
    artifact_digest: str = ""  # digest of the artifact directory it was cut from ("" = the input itself)
    produced_by: "LineageNode | None" = None
    # "dataset", "model" (a LoggedModel input: source is its models:/<model_id> URI) or "checkpoint" (a
    # checkpoint directory no run logged as a model, recorded as its files: tracking.datasets)
    kind: str = "dataset"


@dataclass
class LineageNode:
    run_id: str
    stage: str
    status: str
    tags: dict[str, str]  # git sha, config hash, Flyte execution id, image, output path (temporary?) and digest
    inputs: list[DatasetLink] = field(default_factory=list)
    parent_run_id: str | None = None
    model: str | None = None  # "name version N" when reached from a registered model


def _missing(e: Exception) -> bool:
    return getattr(e, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def _versions(client: Any, name: str) -> list[Any]:
    return sorted(client.search_model_versions(f"name='{name}'"), key=lambda mv: int(mv.version))


def _no_alias(client: Any, name: str, alias: str) -> str:
    """Why `name@alias` does not resolve: what the registry recorded about the latest version."""
    versions = _versions(client, name)
    if not versions:
        return f"{name} has no @{alias}: it has no versions yet"
    latest = versions[-1]
    listed = ", ".join(f"v{mv.version}" for mv in versions)
    gate = latest.tags.get("gate")
    if gate:
        decision = json.loads(gate)
        verdict = "was promoted but the alias was moved since" if decision.get("promoted") else "was refused"
        reasons = "; ".join(decision.get("reasons", [])) or "no reasons recorded"
        return f"{name} has no @{alias}; v{latest.version} {verdict}: {reasons}"
    return f"{name} has no @{alias} (versions: {listed}; none was promoted)"


def _model_version(client: Any, target: str) -> Any:
    spec = target[len("models:/") :]
    name, sep, ref = spec.partition("@") if "@" in spec else spec.rpartition("/")
    if not name or not ref:
        raise LineageError(f"model URI {target!r} must be models:/NAME@ALIAS or models:/NAME/VERSION")
    try:
        client.get_registered_model(name)
    except Exception as e:
        if _missing(e):
            raise LineageError(f"no registered model {name!r} in this tracking store") from None
        raise
    try:
        return client.get_model_version_by_alias(name, ref) if sep == "@" else client.get_model_version(name, ref)
    except Exception as e:
        if not _missing(e):
            raise
        if sep == "@":
            raise LineageError(_no_alias(client, name, ref)) from None
        listed = ", ".join(f"v{mv.version}" for mv in _versions(client, name)) or "none"
        raise LineageError(f"{name} has no version {ref} (versions: {listed})") from None


def _source_run(client: Any, mv: Any) -> str:
    """The run that produced a version's checkpoint: its LoggedModel's run, the run whose `model.digest`
    tag is the version's, else the run that registered it."""
    if getattr(mv, "model_id", None):
        try:
            source = client.get_logged_model(mv.model_id).source_run_id
            if source:
                return source
        except Exception:  # noqa: BLE001 - a version without a LoggedModel in this store
            pass
    digest = mv.tags.get("model.digest")
    if digest and mv.run_id:
        registering = client.get_run(mv.run_id)
        runs = client.search_runs(
            [registering.info.experiment_id],
            filter_string=f"tags.`model.digest` = '{digest}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )
        if runs:
            return runs[0].info.run_id
    if not mv.run_id:
        raise LineageError(f"{mv.name} v{mv.version} records no run: its lineage is unknown ({mv.source})")
    return mv.run_id


def trace(target: str, cfg: TrackingConfig, *, max_depth: int = 12) -> LineageNode:
    """Build the lineage graph of a run or registered model (see module docstring).

    Returns:
        The root node; a run reached along several paths is one shared `LineageNode`.
    Raises:
        LineageError: the target does not resolve (one line saying why).
    """
    from mlflow import MlflowClient

    from deepresearch.tracking import check_store, quiet_mlflow, tracking_uri
    from deepresearch.tracking.models import DIGEST_TAG, INPUT_TAG

    uri = tracking_uri(cfg)
    check_store(uri)
    quiet_mlflow()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    model = None
    if target.startswith("models:/"):
        mv = _model_version(client, target)
        run_id, model = _source_run(client, mv), f"{mv.name} version {mv.version}"
    else:
        run_id = target
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
        try:
            run = client.get_run(rid)
        except Exception as e:
            if _missing(e):
                raise LineageError(f"no run {rid!r} in the tracking store {uri}") from None
            raise
        tags = run.data.tags
        keep = {k: tags[k] for k in ("git_sha", "config_hash", "flyte.execution_id", "flyte.image", "output.path",
                                      "output.temporary", "storage.uri", "dataset.digest", "model.digest")
                if k in tags}
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
                artifact_digest=itags.get("artifact.digest", ""),
                kind=itags.get("kind", "dataset"),
            )
            if link.context == "input" and depth < max_depth:
                pid = producer(link.artifact_digest or link.digest, run.info.experiment_id, run)
                if pid and pid != rid:
                    link.produced_by = node(pid, depth + 1)
            n.inputs.append(link)
        return n

    root = node(run_id, 0)
    root.model = model
    return root


def walk(root: LineageNode) -> list[LineageNode]:
    """Every run of the graph once, breadth first from the root (consumers before their producers)."""
    order, seen, queue = [], {root.run_id}, [root]
    while queue:
        n = queue.pop(0)
        order.append(n)
        for link in n.inputs:
            p = link.produced_by
            if p is not None and p.run_id not in seen:
                seen.add(p.run_id)
                queue.append(p)
    return order


def to_json(root: LineageNode, pipeline: dict[str, dict] | None = None) -> dict:
    """The whole graph for tools: every run once (full ids, digests, tags, paths), inputs by run id, and
    the pipeline (parent) runs (`pipeline_runs`)."""
    return {
        "model": root.model,
        "root": root.run_id,
        "pipeline": pipeline or {},
        "runs": [
            {
                "run_id": n.run_id, "stage": n.stage, "status": n.status, "parent_run_id": n.parent_run_id,
                "tags": n.tags,
                "inputs": [
                    {"name": x.name, "kind": x.kind, "context": x.context, "digest": x.digest,
                     "artifact_digest": x.artifact_digest,
                     "source": x.source, "produced_by": x.produced_by.run_id if x.produced_by else None}
                    for x in n.inputs
                ],
            }
            for n in walk(root)
        ],
    }


def stable_path(path: str, temporary: str | None = None) -> str | None:
    """`path` for display, relative to the working directory when under it; None for a temporary location
    that will not be there later.

    Args:
        temporary: the run's `output.temporary` tag, which the stage that wrote the path set from its own
            temp directory (`tracking.output_tags`). Absent (a run recorded before the tag existed): a
            path under this process's temp directory or in a local Flyte sandbox (`.../user_space*/...`)
            counts as temporary.
    """
    if not path:
        return None
    if "://" in path and not path.startswith("file://"):
        return path  # object storage
    p = Path(path.removeprefix("file://"))
    if temporary is not None:
        if temporary == "true":
            return None
    elif p.resolve().is_relative_to(Path(tempfile.gettempdir()).resolve()) or any(
        part.startswith("user_space") for part in p.parts
    ):
        return None
    resolved = p.resolve()
    return str(resolved.relative_to(Path.cwd())) if resolved.is_relative_to(Path.cwd()) else str(p)


def _fit(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def render_lines(root: LineageNode, *, pipeline: dict[str, dict] | None = None, width: int = WIDTH) -> list[str]:
    """The listing: each run once (breadth first from the one that produced the target), its inputs
    naming their producer by short name, short digests, stable paths only; then the pipeline run(s).

    Args:
        pipeline: parent run id → {"config_hash": ..., "params": "k=v ..."} (what `render` reads).
    """
    order = walk(root)
    short: dict[str, str] = {}
    for n in order:
        taken = sum(1 for s in short.values() if s.split("#")[0] == n.stage)
        short[n.run_id] = n.stage if not taken else f"{n.stage}#{taken + 1}"
    col = max(len(s) for s in short.values())
    lines = []
    if root.model:
        lines.append(f"{root.model} ← produced by {short[root.run_id]} (run {root.run_id})")
    for n in order:
        t = n.tags
        lines.append(f"{short[n.run_id]:<{col}}  run {n.run_id}  {n.status}")
        facts = [f"git {t.get('git_sha', '?')[:SHORT]}", f"config {t.get('config_hash', '?')}"]
        if t.get("flyte.execution_id", "local") != "local":
            facts.append(f"flyte {t['flyte.execution_id']}")
        if t.get("flyte.image", "local") != "local":
            facts.append(f"image {t['flyte.image']}")
        out_digest = t.get("model.digest") or t.get("dataset.digest")
        if out_digest:
            facts.append(f"wrote {out_digest[:SHORT]}")
        lines.append(_fit(" " * (col + 2) + " · ".join(facts), width))
        where = t.get("storage.uri") or stable_path(t.get("output.path", ""), t.get("output.temporary"))
        if where:
            lines.append(_fit(" " * (col + 2) + f"at {where}", width))
        inputs = [x for x in n.inputs if x.context == "input"]
        name_col = max((len(x.name) for x in inputs), default=0)
        for x in inputs:
            origin = f"from {short[x.produced_by.run_id]}" if x.produced_by else "producer not in this store"
            lines.append(_fit(" " * (col + 2) + f"← {x.name:<{name_col}}  {x.digest[:SHORT]}  {origin}", width))
    for pid, info in (pipeline or {}).items():
        lines.append(f"pipeline run {pid}  config {info.get('config_hash', '?')}")
        if info.get("params"):
            lines.append(_fit(" " * (col + 2) + info["params"], width))
    return lines


def pipeline_runs(root: LineageNode, cfg: TrackingConfig) -> dict[str, dict]:
    """The pipeline (parent) runs of the graph's runs: id → {"config_hash", "params": "name=… world.seed=…"}."""
    from mlflow import MlflowClient

    from deepresearch.tracking import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri(cfg))
    pipeline = {}
    for pid in dict.fromkeys(n.parent_run_id for n in walk(root) if n.parent_run_id):
        try:
            parent = client.get_run(pid)
        except Exception:  # noqa: BLE001 - a parent deleted from the store: its children still show
            continue
        p = parent.data.params
        seeds = " ".join(f"{k}={p[k]}" for k in ("name", "world.seed", "synthesis.seed") if k in p)
        pipeline[pid] = {"config_hash": parent.data.tags.get("config_hash", "?"), "params": seeds}
    return pipeline


def render(root: LineageNode, cfg: TrackingConfig) -> None:
    """Print the listing (`render_lines`), with the pipeline runs' config and seeds."""
    for line in render_lines(root, pipeline=pipeline_runs(root, cfg)):
        print(line)
