"""Versioned catalogs in `registry/`: authority domains, base models, data sources, images.

    deepresearch.catalogs.validate_all()   # raises naming the file and field of the first problem

Each catalog is a YAML file validated by a pydantic model (unknown keys rejected).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deepresearch.config import REPO_ROOT
from deepresearch.errors import ConfigError

REGISTRY = REPO_ROOT / "registry"
_SHA256 = r"^[0-9a-f]{64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataSource(_Strict):
    name: str
    kind: Literal["synthetic", "wikidata5m"]
    description: str = ""
    config: str | None = None  # synthetic: the config whose world this pins
    world_sha256: str | None = Field(None, pattern=_SHA256)
    uri: str | None = None  # wikidata5m: where the dump is staged
    files: dict[str, str] = Field(default_factory=dict)  # file name -> sha256

    @model_validator(mode="after")
    def _complete(self) -> "DataSource":
        if self.kind == "synthetic" and not (self.config and self.world_sha256):
            raise ValueError(f"synthetic source {self.name!r} needs config and world_sha256")
        if self.kind == "wikidata5m":
            if not self.uri or not self.files:
                raise ValueError(f"wikidata5m source {self.name!r} needs uri and files with sha256s")
            import re

            bad = [f for f, h in self.files.items() if not re.fullmatch(_SHA256, h)]
            if bad:
                raise ValueError(f"source {self.name!r}: files {bad} lack a valid sha256")
        return self


class DataSourcesCatalog(_Strict):
    schema_version: Literal[1]
    sources: list[DataSource]


class ImageEntry(_Strict):
    name: str
    gpu: bool
    purpose: str


class ImagesCatalog(_Strict):
    schema_version: Literal[1]
    images: dict[str, ImageEntry]


def _load(path: Path, model: type[BaseModel]) -> BaseModel:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"catalog {path} cannot be read: {e}") from e
    try:
        return model.model_validate(data)
    except ValidationError as e:
        fields = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"catalog {path} is invalid: {fields}") from None


def load_data_sources(path: Path | None = None) -> DataSourcesCatalog:
    return _load(path or REGISTRY / "data_sources.yaml", DataSourcesCatalog)  # type: ignore[return-value]


def load_images(path: Path | None = None) -> ImagesCatalog:
    return _load(path or REGISTRY / "images.yaml", ImagesCatalog)  # type: ignore[return-value]


def validate_all() -> dict[str, int]:
    """Validate every catalog; returns entry counts per catalog."""
    from deepresearch.modeling.base_models import load_base_registry
    from deepresearch.world.authority import load_authority_registry

    return {
        "authority_domains": len(load_authority_registry(REGISTRY / "authority_domains.yaml").domains),
        "base_models": len(load_base_registry(REGISTRY / "base_models.yaml").models),
        "data_sources": len(load_data_sources().sources),
        "images": len(load_images().images),
    }
