"""The base-model registry (registry/base_models.yaml) and `load_base` for its pretrained models.

    from deepresearch.modeling.base_models import load_base, resolve_base
    entry = resolve_base(cfg.model)            # BaseModelEntry: "built" (tiny) or "path" (a checkpoint)
    model, tok = load_base(cfg.model)          # base: qwen2.5-0.5b, ...: staged from s3:// if needed

A `built` entry is made by `tokenizer.train_tokenizer` + `model.build_tiny_model` (see modeling/base.py).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from deepresearch.config import ModelConfig, resolve_repo_path
from deepresearch.io import atomic_dir, sha256_bytes
from deepresearch.modeling import ModelError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast


class BaseModelEntry(BaseModel):
    """One entry of registry/base_models.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Literal["built", "path"]  # built: tokenizer + random-init model from config; path: a checkpoint
    path: str | None = None  # local directory (absolute or repo-relative) or s3://bucket/prefix
    upstream: str | None = None  # the published model this is a copy of (documentation; never downloaded)
    description: str = ""

    @model_validator(mode="after")
    def _path_matches_source(self) -> "BaseModelEntry":
        if self.source == "path" and not self.path:
            raise ValueError("source=path needs `path` (a local directory or an s3:// URI)")
        if self.source == "built" and self.path:
            raise ValueError("source=built takes no `path` (the model is built from the config)")
        return self


class BaseModelRegistry(BaseModel):
    """registry/base_models.yaml: name -> entry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1]
    models: dict[str, BaseModelEntry]


def load_base_registry(path: str | Path) -> BaseModelRegistry:
    """Read and validate the base-model catalogue.

    Args:
        path: the YAML file (repo-relative paths are resolved against the repo).
    Returns:
        The validated registry.
    Raises:
        ModelError: missing file, bad YAML, or an invalid entry (file and field named).
    """
    import yaml

    p = resolve_repo_path(path)
    if not p.is_file():
        raise ModelError(
            f"base-model registry not found: {p} (set model.base_models_registry to a YAML file)"
        )
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ModelError(f"base-model registry {p} is not valid YAML: {e}") from e
    try:
        return BaseModelRegistry.model_validate(data)
    except ValidationError as e:
        fields = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ModelError(f"base-model registry {p} is invalid: {fields}") from None


def resolve_base(cfg: ModelConfig) -> BaseModelEntry:
    """The registry entry named by `cfg.base`; ModelError listing the known names otherwise."""
    registry = load_base_registry(cfg.base_models_registry)
    if cfg.base not in registry.models:
        raise ModelError(
            f"model.base={cfg.base!r} is not in {cfg.base_models_registry}; "
            f"known: {', '.join(sorted(registry.models))}"
        )
    return registry.models[cfg.base]


def default_cache_dir() -> Path:
    """Where s3:// models are staged: $DEEPRESEARCH_MODEL_CACHE, else ~/.cache/deepresearch/models."""
    env = os.environ.get("DEEPRESEARCH_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "deepresearch" / "models"


def download_s3_dir(uri: str, cache_dir: Path) -> Path:
    """Copy every object under an s3:// prefix into the cache (once; atomically) and return the directory.

    The endpoint and credentials come from boto3's usual sources (AWS_ENDPOINT_URL for MinIO,
    AWS_ACCESS_KEY_ID, ...). A finished download is reused; a half-finished one is never visible.

    Args:
        uri: `s3://bucket/prefix`.
        cache_dir: parent directory of the staged copies.
    Returns:
        The local directory holding the objects, keyed by the URI.
    """
    import boto3

    m = re.fullmatch(r"s3://([^/]+)/?(.*)", uri)
    if not m:
        raise ModelError(f"{uri!r} is not an s3://bucket/prefix URI")
    bucket, prefix = m.group(1), m.group(2).strip("/")
    key = sha256_bytes(uri.encode())[:16]
    final = Path(cache_dir) / f"{Path(prefix).name or bucket}-{key}"
    if final.is_dir():
        return final
    client = boto3.client("s3")
    n = 0
    with atomic_dir(final, keep_existing=True) as tmp:  # another process that finished first keeps its copy
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix + "/" if prefix else ""
        ):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix) + 1 :] if prefix else obj["Key"]
                if not rel or rel.endswith("/"):
                    continue
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, obj["Key"], str(dest))
                n += 1
        if n == 0:
            raise ModelError(f"{uri} holds no objects; stage the model there or fix the path in the registry")
    return final


def load_base(
    cfg: ModelConfig, *, cache_dir: Path | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load the pretrained base model named by `cfg.base` from registry/base_models.yaml.

    Local directories are read in place; s3:// URIs are staged into `cache_dir` first. The tokenizer
    gets our tool tokens and chat template (`prepare_base_tokenizer`); the embeddings grow if it needs more
    rows than the checkpoint has (Qwen2.5's embeddings already have spare rows, so they do not).

    Args:
        cfg: the model section; `cfg.base` names the entry.
        cache_dir: staging directory for s3:// models (default `default_cache_dir()`).
    Returns:
        (model, tokenizer).
    Raises:
        ModelError: unknown name, a `built` entry (use `train_tokenizer` + `build_tiny_model`), or a bad checkpoint.
    """
    from deepresearch.modeling.checkpoint import load_checkpoint
    from deepresearch.modeling.tokenizer import prepare_base_tokenizer

    entry = resolve_base(cfg)
    if entry.source == "built":
        raise ModelError(
            f"model.base={cfg.base!r} is built, not loaded: train its tokenizer with "
            "deepresearch.modeling.tokenizer.train_tokenizer and build the model with "
            "deepresearch.modeling.model.build_tiny_model"
        )
    assert entry.path is not None  # guaranteed by BaseModelEntry's validator
    if entry.path.startswith("s3://"):
        local = download_s3_dir(entry.path, cache_dir or default_cache_dir())
    else:
        local = resolve_repo_path(entry.path)
    model, tokenizer = load_checkpoint(local)
    prepare_base_tokenizer(tokenizer)
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    return model, tokenizer
