"""Search backend protocol, hit type and the backend registry (embedded | http)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Callable, Protocol

from pydantic import BaseModel, ConfigDict

from deepresearch.config import SearchConfig
from deepresearch.registry import Registry
from deepresearch.world.schema import Document


class SearchHit(BaseModel):
    """One ranked paragraph; `doc_id` is what the agent cites."""

    model_config = ConfigDict(frozen=True)

    doc_id: str
    url: str
    domain: str
    authority: float
    score: float  # BM25 relevance (before authority-aware reordering)
    paragraph: str
    paragraph_index: int
    title: str


class SearchBackend(Protocol):
    def search(self, query: str, k: int) -> list[SearchHit]: ...

    def search_batch(self, queries: list[str], k: int) -> list[list[SearchHit]]: ...

    def get_document(self, doc_id: str) -> Document | None: ...


class BackendName(str, Enum):
    embedded = "embedded"
    http = "http"


BackendFactory = Callable[[SearchConfig, Path], SearchBackend]
BACKENDS: Registry[BackendFactory] = Registry(
    "search backend", BackendName, plugins=("deepresearch.search.embedded", "deepresearch.search.http")
)


def register_backend(name: BackendName) -> Callable[[BackendFactory], BackendFactory]:
    """Decorator registering a backend factory `(cfg, world_dir) -> SearchBackend`; refuses duplicates."""
    return BACKENDS.register(name)


def open_backend(cfg: SearchConfig, world_dir: Path) -> SearchBackend:
    """Open the configured backend over a world directory."""
    from deepresearch.errors import WorldError

    if cfg.backend == "embedded" and not Path(world_dir).is_dir():
        raise WorldError(
            f"world directory not found: {world_dir} (build one with `deepresearch world build --out {world_dir}`)"
        )
    return BACKENDS.get(cfg.backend)(cfg, Path(world_dir))
