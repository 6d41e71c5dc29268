"""What a run records about the data it reads or writes: each dataset with its own content digest, its row
count and a schema (what MLflow's dataset drawer shows), and the digest of the artifact directory it is
part of, by which `deepresearch lineage` finds the run that wrote that directory.

    log_parts(run, datasets_dir, ["deep_search", "planning"], context="input")  # quality-gated datasets
    log_world(run, world_dir)                                                    # its documents are the rows
    log_files(run, judge_dir, {"judge_train": "train.jsonl"}, context="input")  # one file, one dataset
    log_checkpoint_files(run, ckpt_dir, name="init_model", digest=d)            # a checkpoint no run logged

Digests are `deepresearch.io`'s: a dataset's is `content_digest` of its own files (what `dir_digest` gives
for its subdirectory), a directory artifact's is `dir_digest` (its manifest's). The same dataset gets the
same name, digest and rows wherever it is logged, as MLflow keeps one record per (name, digest).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from deepresearch.io import MANIFEST, content_digest, dir_digest, file_sha256

PREVIEW_ROWS = 20  # rows the drawer previews, and from which it infers the schema
CHECKPOINT_KIND = "checkpoint"  # the `kind` input tag of a checkpoint logged as its files


def preview(path: Path, n: int = PREVIEW_ROWS, *, count: int | None = None) -> tuple[list[dict], int]:
    """A jsonl file as the MLflow dataset drawer shows it: its first `n` rows, flattened (nested values as
    JSON text, so the schema is one column per key), and its row count (`count` when the caller knows it,
    else the file's lines are counted)."""
    rows, seen = [], 0
    if Path(path).is_file():
        with open(path) as f:
            for seen, line in enumerate(f, 1):
                if seen <= n:
                    obj = json.loads(line)
                    rows.append({k: (v if isinstance(v, (str, int, float, bool)) else json.dumps(v)[:500])
                                 for k, v in obj.items()})
                elif count is not None:
                    break
    return rows, seen if count is None else count


def part_digest(manifest: dict, name: str) -> str:
    """The content digest of one dataset (subdirectory `name`) of an artifact, from its manifest's sha256s:
    what `deepresearch.io.dir_digest` gives for that subdirectory."""
    prefix = f"{name}/"
    return content_digest({rel[len(prefix):]: h for rel, h in manifest["sha256"].items() if rel.startswith(prefix)})


def log_part(run: Any, artifact: Path, manifest: dict, name: str, *, context: str, logged_as: str | None = None) -> None:
    """Log dataset `name` of an artifact directory (raw or quality-gated datasets) as a run input/output.

    Its rows are its trajectories (what training reads), or its tasks when it has none (query_report's
    text pairs): the same table wherever the dataset is logged.
    """
    rows, count = preview(artifact / name / "trajectories.jsonl")
    if count == 0:
        rows, count = preview(artifact / name / "tasks.jsonl")
    run.log_dataset(artifact / name, name=logged_as or name, context=context, digest=part_digest(manifest, name),
                    rows=rows, num_rows=count, artifact_digest=manifest["digest"])


def log_parts(run: Any, artifact: Path, names: Iterable[str], *, context: str, prefix: str = "") -> None:
    """`log_part` for each of `names` the artifact's manifest lists (logged as `prefix + name`)."""
    artifact = Path(artifact)
    manifest = json.loads((artifact / MANIFEST).read_text())
    listed = {rel.split("/", 1)[0] for rel in manifest["sha256"]}
    for name in names:
        if name in listed:
            log_part(run, artifact, manifest, name, context=context, logged_as=prefix + name)


def log_world(run: Any, world_dir: Path, *, context: str = "input", digest: str | None = None) -> None:
    """The world as one dataset: its digest (`dir_digest`, what the world stage tags `dataset.digest`; pass
    it when already computed), its documents as the rows (the pages the search tool serves and mid-training
    reads)."""
    world_dir = Path(world_dir)
    manifest = world_dir / MANIFEST
    count = json.loads(manifest.read_text()).get("counts", {}).get("documents") if manifest.is_file() else None
    rows, count = preview(world_dir / "documents.jsonl", count=count)
    run.log_dataset(world_dir, name="world", context=context, digest=digest or dir_digest(world_dir), rows=rows, num_rows=count)


def log_files(run: Any, artifact: Path, files: Mapping[str, str], *, context: str) -> None:
    """Each jsonl file of a directory artifact as its own dataset (name → file relative to `artifact`): its
    digest is `content_digest` of that one file, its rows the file's lines; the artifact's digest links it
    to the run that wrote the directory (the judge's train and held-out pairs)."""
    artifact = Path(artifact)
    manifest = artifact / MANIFEST
    listed = json.loads(manifest.read_text()).get("sha256", {}) if manifest.is_file() else {}
    whole = dir_digest(artifact)
    for name, rel in files.items():
        sha = listed.get(rel) or file_sha256(artifact / rel)
        rows, count = preview(artifact / rel)
        run.log_dataset(artifact / rel, name=name, context=context, digest=content_digest({Path(rel).name: sha}),
                        rows=rows, num_rows=count, artifact_digest=whole)


def log_checkpoint_files(run: Any, path: Path, *, name: str, digest: str) -> None:
    """A checkpoint directory that no run logged as a model (a registry base model, a store that was down
    when it was trained), as what it is: a directory of files, one row each (file, bytes), under its content
    digest (the `model.digest` its producing run tagged), with the input tag kind=checkpoint. The files are
    not hashed again: `digest` already names their content."""
    path = Path(path)
    rows = [{"file": p.relative_to(path).as_posix(), "bytes": p.stat().st_size}
            for p in sorted(path.rglob("*")) if p.is_file()]
    run.log_dataset(path, name=name, context="input", digest=digest, rows=rows, tags={"kind": CHECKPOINT_KIND})
