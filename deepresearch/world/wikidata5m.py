"""Load a Wikidata5m dump (https://deepgraphlearning.github.io/project/wikidata5m) as a World.

    world = load_wikidata5m(Path("data/wikidata5m"), max_entities=50_000)

Files read from the directory (each may also be gzipped, `<name>.gz`):
    wikidata5m_entity.txt     Q-id TAB alias1 TAB alias2 ...      name = first alias
    wikidata5m_relation.txt   P-id TAB alias1 TAB ...             relation names stay P-ids
    wikidata5m_transductive_train.txt (else any wikidata5m_*train*.txt, else another wikidata5m_*.txt)
                              head TAB relation TAB tail
    wikidata5m_text.txt       Q-id TAB description

Each entity with a description gets one page on en.wikipedia.org (high tier; authority 1.0 unless
the authority registry says otherwise) whose paragraphs are the description's sentences, grouped
SENTENCES_PER_PARAGRAPH at a time, and whose links point at the pages of its triples' tails.
`max_entities` keeps the first N entities of the entity file; triples are kept when both ends are
kept and the relation is listed. A missing file raises WorldError. A malformed line does not abort a
multi-million-line load: it is skipped and counted in the LoadReport (with the first few file:line
examples), as are the triples dropped for a missing entity or relation:

    report = LoadReport("wikidata5m")
    world = load_wikidata5m(dir, report=report)
    report.malformed, report.examples, report.dropped_triples   # 3, ["...entity.txt:7: ..."], {"missing_entity": 12}
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from deepresearch.errors import WorldError
from deepresearch.world.schema import Document, Entity, EntityType, Tier, Triple, World

ENTITY_FILE = "wikidata5m_entity.txt"
RELATION_FILE = "wikidata5m_relation.txt"
TEXT_FILE = "wikidata5m_text.txt"
TRIPLES_FILE = "wikidata5m_transductive_train.txt"
WIKI_DOMAIN = "en.wikipedia.org"
SENTENCES_PER_PARAGRAPH = 3

_QID = re.compile(r"Q\d+")
_PID = re.compile(r"P\d+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


def _find(dir: Path, name: str) -> Path | None:
    for cand in (dir / name, dir / f"{name}.gz"):
        if cand.is_file():
            return cand
    return None


def _require(dir: Path, name: str, what: str) -> Path:
    p = _find(dir, name)
    if p is None:
        raise WorldError(f"Wikidata5m {what} file {dir / name} (or {name}.gz) is missing")
    return p


def _triples_path(dir: Path) -> Path:
    p = _find(dir, TRIPLES_FILE)
    if p is not None:
        return p
    special = {ENTITY_FILE, RELATION_FILE, TEXT_FILE}
    names = sorted(q.name for q in dir.glob("wikidata5m_*.txt*") if q.is_file())
    names = [n for n in names if n.removesuffix(".gz") not in special]
    train = [n for n in names if "train" in n]
    for n in train or names:
        return dir / n
    raise WorldError(
        f"Wikidata5m triples file is missing in {dir}: expected {TRIPLES_FILE} "
        "(or another wikidata5m_*train*.txt of head TAB relation TAB tail lines)"
    )


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without newline), skipping blank lines."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield lineno, line


MAX_EXAMPLES = 10  # file:line examples kept per load


@dataclass
class LoadReport:
    """What a dump loader skipped: malformed lines (counted per file, first examples kept) and triples
    dropped because an end or the relation is unknown."""

    source: str
    malformed: int = 0
    malformed_by_file: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)  # "path:line: malformed line: why"
    dropped_triples: dict[str, int] = field(default_factory=dict)  # reason -> count

    def skip(self, path: Path, lineno: int, why: str) -> None:
        """Count one malformed line of `path`."""
        self.malformed += 1
        self.malformed_by_file[path.name] = self.malformed_by_file.get(path.name, 0) + 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{path}:{lineno}: malformed line: {why}")

    def drop(self, reason: str) -> None:
        """Count one triple dropped for `reason` ("missing_entity", "missing_relation")."""
        self.dropped_triples[reason] = self.dropped_triples.get(reason, 0) + 1

    def summary(self) -> str:
        """One paragraph: counts and the examples."""
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(self.dropped_triples.items())) or "none"
        lines = [f"{self.source}: {self.malformed} malformed line(s) skipped {self.malformed_by_file or ''}; "
                 f"triples dropped: {dropped}"]
        return "\n".join(lines + [f"  {e}" for e in self.examples])


def split_paragraphs(text: str, per_paragraph: int = SENTENCES_PER_PARAGRAPH) -> list[str]:
    """Split a description into sentences and group them into paragraphs."""
    sentences = [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]
    return [" ".join(sentences[i : i + per_paragraph]) for i in range(0, len(sentences), per_paragraph)]


def load_wikidata5m(dir: Path, *, max_entities: int | None = None, report: LoadReport | None = None) -> World:
    """Read a Wikidata5m directory into a World (see the module docstring for the format).

    Args:
        dir: directory holding the wikidata5m_*.txt files.
        max_entities: keep only the first N entities of the entity file (None: all).
        report: filled with the skipped lines and dropped triples (a fresh one when None).
    Returns:
        World with source "wikidata5m": EntityType.entity entities, P-id triples, one page per described entity.
    Raises:
        WorldError: a missing directory or file (named), or no valid entity at all (with examples).
    """
    report = report if report is not None else LoadReport("wikidata5m")
    dir = Path(dir)
    if not dir.is_dir():
        raise WorldError(f"Wikidata5m directory not found: {dir} (set world.wikidata5m_dir)")
    if max_entities is not None and max_entities < 1:
        raise WorldError(f"max_entities must be >= 1, got {max_entities}")
    entity_path = _require(dir, ENTITY_FILE, "entity")
    relation_path = _require(dir, RELATION_FILE, "relation")
    text_path = _require(dir, TEXT_FILE, "text")
    triples_path = _triples_path(dir)

    entities: dict[str, Entity] = {}
    for lineno, line in _lines(entity_path):
        if max_entities is not None and len(entities) >= max_entities:
            break
        qid, *aliases = line.split("\t")
        aliases = list(dict.fromkeys(a.strip() for a in aliases if a.strip()))
        if not _QID.fullmatch(qid):
            report.skip(entity_path, lineno, f"expected a Q-id before the first tab, got {qid!r}")
            continue
        if not aliases:
            report.skip(entity_path, lineno, f"entity {qid} has no name (expected Q-id TAB alias ...)")
            continue
        if qid in entities:
            report.skip(entity_path, lineno, f"entity {qid} is listed twice")
            continue
        entities[qid] = Entity(id=qid, type=EntityType.entity, name=aliases[0], aliases=aliases[1:])

    if not entities:
        raise WorldError(f"{entity_path}: no valid entity line\n" + report.summary())
    relations: set[str] = set()
    for lineno, line in _lines(relation_path):
        pid, *aliases = line.split("\t")
        if not _PID.fullmatch(pid) or not any(a.strip() for a in aliases):
            report.skip(relation_path, lineno, f"expected P-id TAB alias ..., got {line[:80]!r}")
            continue
        relations.add(pid)

    triples: list[Triple] = []
    out: dict[str, list[str]] = {}
    for lineno, line in _lines(triples_path):
        parts = line.split("\t")
        if len(parts) != 3 or not all(p.strip() for p in parts):
            report.skip(triples_path, lineno, f"expected head TAB relation TAB tail, got {line[:80]!r}")
            continue
        head, rel, tail = (p.strip() for p in parts)
        if head not in entities or tail not in entities:
            report.drop("missing_entity")
        elif rel not in relations:
            report.drop("missing_relation")
        else:
            triples.append(Triple(head=head, relation=rel, tail=tail))
            out.setdefault(head, []).append(tail)

    texts: dict[str, str] = {}
    for lineno, line in _lines(text_path):
        qid, sep, text = line.partition("\t")
        if not sep or not _QID.fullmatch(qid):
            report.skip(text_path, lineno, f"expected Q-id TAB description, got {line[:80]!r}")
            continue
        if qid in entities and qid not in texts and text.strip():
            texts[qid] = text

    tier, authority = Tier.high, 1.0
    try:
        from deepresearch.world.authority import load_authority_registry

        reg = load_authority_registry()
        if reg.entry(WIKI_DOMAIN) is not None:
            tier, authority = reg.tier(WIKI_DOMAIN), reg.authority(WIKI_DOMAIN)
    except WorldError:
        pass  # no usable registry: Wikipedia stays high tier with authority 1.0

    doc_of: dict[str, str] = {}
    for qid in entities:  # entity-file order
        if qid in texts:
            doc_of[qid] = f"D{len(doc_of) + 1:07d}"
    documents = []
    for qid, doc_id in doc_of.items():
        links = [doc_of[t] for t in dict.fromkeys(out.get(qid, [])) if t in doc_of and t != qid]
        documents.append(
            Document(
                doc_id=doc_id,
                # A real Wikipedia URL that resolves the article from its Wikidata id (names collide).
                url=f"https://{WIKI_DOMAIN}/wiki/Special:GoToLinkedPage/enwiki/{qid}",
                domain=WIKI_DOMAIN,
                tier=tier,
                authority=authority,
                title=entities[qid].name,
                paragraphs=split_paragraphs(texts[qid]),
                about=qid,
                links=links,
            )
        )
    return World(entities.values(), triples, documents, source="wikidata5m", seed=None)
