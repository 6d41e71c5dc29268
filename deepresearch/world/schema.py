"""World schema (versioned): entities, typed relations (triples), documents with claims.

On disk a world is a directory:
    manifest.json      schema_version, source, seed, counts, sha256 of each file
    entities.jsonl     one Entity per line, sorted by id
    triples.jsonl      one Triple per line, sorted
    documents.jsonl    one Document per line, sorted by doc_id
    index/             the search index (written by deepresearch.search)
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field

from deepresearch.errors import WorldError
from deepresearch.io import atomic_write_lines, atomic_write_text  # noqa: F401 - atomic_write_text: old import path

WORLD_SCHEMA_VERSION = 1
WORLD_FILES = ("entities.jsonl", "triples.jsonl", "documents.jsonl")


class EntityType(str, Enum):
    person = "person"
    organization = "organization"
    place = "place"
    work = "work"
    event = "event"
    product = "product"
    entity = "entity"  # untyped (e.g. loaded from Wikidata5m without a type map)


class Tier(str, Enum):
    high = "high"  # government / academic / institutional
    medium = "medium"  # news
    low = "low"  # blogs / forums


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Entity(_Frozen):
    id: str  # "E000123" (synthetic) or "Q42" (Wikidata5m)
    type: EntityType
    name: str
    aliases: list[str] = Field(default_factory=list)
    # attribute name -> true value (years, counts, categories); rendered into documents
    attributes: dict[str, str | int] = Field(default_factory=dict)
    description: str = ""  # short, name-free description used to obfuscate questions


class Triple(_Frozen):
    head: str  # entity id
    relation: str  # e.g. "works_for", or a Wikidata property id "P31"
    tail: str  # entity id


class Claim(_Frozen):
    """A fact a document asserts; `correct` False marks a wrong or stale value (ground truth)."""

    subject: str  # entity id
    predicate: str  # attribute or relation name
    value: str  # rendered value (an entity id for relations, a literal for attributes)
    correct: bool = True
    paragraph: int = 0  # index of the paragraph that states it


class Document(_Frozen):
    doc_id: str  # "preiraer-0" (synthetic worlds: name slug + page), "D0001234" (Wikidata5m)
    url: str
    domain: str
    tier: Tier
    authority: float  # from registry/authority_domains.yaml
    title: str
    paragraphs: list[str]
    about: str | None = None  # entity id the page is about
    links: list[str] = Field(default_factory=list)  # doc_ids this page links to
    claims: list[Claim] = Field(default_factory=list)
    year: int | None = None  # publication year; older low-authority pages may be stale


def _dumps(model: BaseModel) -> str:
    return json.dumps(model.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)


class World:
    """An in-memory world with lookups; `save`/`load` to a directory (see module docstring)."""

    def __init__(
        self,
        entities: Iterable[Entity],
        triples: Iterable[Triple],
        documents: Iterable[Document],
        *,
        source: str = "synthetic",
        seed: int | None = None,
    ):
        self.entities: dict[str, Entity] = {e.id: e for e in sorted(entities, key=lambda e: e.id)}
        self.triples: list[Triple] = sorted(set(triples), key=lambda t: (t.head, t.relation, t.tail))
        self.documents: dict[str, Document] = {d.doc_id: d for d in sorted(documents, key=lambda d: d.doc_id)}
        self.source = source
        self.seed = seed
        self._out: dict[str, list[Triple]] = {}
        self._in: dict[str, list[Triple]] = {}
        for t in self.triples:
            self._out.setdefault(t.head, []).append(t)
            self._in.setdefault(t.tail, []).append(t)
        self._docs_about: dict[str, list[Document]] = {}
        for d in self.documents.values():
            if d.about:
                self._docs_about.setdefault(d.about, []).append(d)
        for docs in self._docs_about.values():
            docs.sort(key=lambda d: (-d.authority, d.doc_id))

    # ---- lookups -------------------------------------------------------------------------
    def out_edges(self, entity_id: str) -> list[Triple]:
        return self._out.get(entity_id, [])

    def in_edges(self, entity_id: str) -> list[Triple]:
        return self._in.get(entity_id, [])

    def docs_about(self, entity_id: str) -> list[Document]:
        """Documents about an entity, highest authority first."""
        return self._docs_about.get(entity_id, [])

    def primary_doc(self, entity_id: str) -> Document | None:
        docs = self.docs_about(entity_id)
        return docs[0] if docs else None

    def iter_paragraphs(self) -> Iterator[tuple[Document, int, str]]:
        for d in self.documents.values():
            for i, p in enumerate(d.paragraphs):
                yield d, i, p

    @property
    def counts(self) -> dict[str, int]:
        return {
            "entities": len(self.entities),
            "triples": len(self.triples),
            "documents": len(self.documents),
            "paragraphs": sum(len(d.paragraphs) for d in self.documents.values()),
        }

    # ---- persistence ---------------------------------------------------------------------
    def save(self, out: Path) -> dict:
        """Write the world to `out` (files written atomically; manifest last). Returns the manifest."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        hashes = {
            "entities.jsonl": atomic_write_lines(out / "entities.jsonl", (_dumps(e) for e in self.entities.values())),
            "triples.jsonl": atomic_write_lines(out / "triples.jsonl", (_dumps(t) for t in self.triples)),
            "documents.jsonl": atomic_write_lines(
                out / "documents.jsonl", (_dumps(d) for d in self.documents.values())
            ),
        }
        manifest = {
            "schema_version": WORLD_SCHEMA_VERSION,
            "source": self.source,
            "seed": self.seed,
            "counts": self.counts,
            "sha256": hashes,
        }
        atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return manifest

    @classmethod
    def load(cls, path: Path) -> "World":
        """Load a world directory; raises WorldError naming what is missing or malformed."""
        path = Path(path)
        if not path.is_dir():
            raise WorldError(
                f"world directory not found: {path} (build one with `deepresearch world build --out {path}`)"
            )
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise WorldError(f"{path} is not a world directory: manifest.json is missing")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("schema_version") != WORLD_SCHEMA_VERSION:
            raise WorldError(
                f"{manifest_path}: schema_version {manifest.get('schema_version')!r}, "
                f"this code reads {WORLD_SCHEMA_VERSION}; rebuild the world"
            )
        for name in WORLD_FILES:
            if not (path / name).is_file():
                raise WorldError(f"world directory {path} is incomplete: {name} is missing")

        def read(name: str, model: type[BaseModel]) -> list:
            items = []
            with open(path / name) as f:
                for lineno, line in enumerate(f, 1):
                    try:
                        items.append(model.model_validate_json(line))
                    except Exception as e:  # noqa: BLE001 - re-raised with location
                        raise WorldError(f"{path / name}:{lineno}: malformed {model.__name__}: {e}") from e
            return items

        return cls(
            read("entities.jsonl", Entity),
            read("triples.jsonl", Triple),
            read("documents.jsonl", Document),
            source=manifest.get("source", "synthetic"),
            seed=manifest.get("seed"),
        )
