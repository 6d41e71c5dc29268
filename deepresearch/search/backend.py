"""Search backend protocol, hit type and the backend registry (embedded | http)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Callable, Protocol

from pydantic import BaseModel, ConfigDict

from deepresearch.config import SearchConfig
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
BACKENDS: dict[BackendName, BackendFactory] = {}


def register_backend(name: BackendName) -> Callable[[BackendFactory], BackendFactory]:
    """Decorator registering a backend factory `(cfg, world_dir) -> SearchBackend`; refuses duplicates."""

    def deco(fn: BackendFactory) -> BackendFactory:
        if name in BACKENDS:
            raise ValueError(f"search backend {name.value!r} is already registered")
        BACKENDS[name] = fn
        return fn

    return deco


def open_backend(cfg: SearchConfig, world_dir: Path) -> SearchBackend:
    """Open the configured backend over a world directory."""
    from deepresearch.errors import WorldError
    from deepresearch.search import embedded, http  # noqa: F401 - registers the backends

    if cfg.backend == "embedded" and not Path(world_dir).is_dir():
        raise WorldError(
            f"world directory not found: {world_dir} (build one with `deepresearch world build --out {world_dir}`)"
        )

    try:
        factory = BACKENDS[BackendName(cfg.backend)]
    except (KeyError, ValueError):
        raise ValueError(f"unknown search backend {cfg.backend!r}; valid: {[b.value for b in BackendName]}") from None
    return factory(cfg, Path(world_dir))
