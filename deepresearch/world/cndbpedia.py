"""Load a CN-DBpedia triple dump as a World, as `wikidata5m.py` does for Wikidata5m.

    report = LoadReport("cndbpedia")
    world = load_cndbpedia(Path("data/cndbpedia/baike_triples.txt"), report=report)

The dump (http://kw.fudan.edu.cn/cndbpedia, `baike_triples.txt`, may be gzipped) is UTF-8 text, one
triple per line, subject TAB predicate TAB object:

    刘德华（中国香港男演员、歌手、词作人）	出生日期	1961年9月27日
    刘德华（中国香港男演员、歌手、词作人）	代表作品	无间道
    无间道	导演	刘伟强

Every distinct subject becomes an entity (ids "C0000001", ... in order of first appearance): its name
is the subject without the full-width disambiguation suffix "（...）", which becomes its description.
A triple whose object is itself a subject is a relation (the predicate, as is, names it); any other
object is an attribute value of the subject (the first value of a predicate wins; `中文名`, `外文名`,
`别名` values become aliases). Each entity gets one page on baike.baidu.com (high tier unless the
authority registry says otherwise): its facts as sentences "<name>的<predicate>是<object>。", grouped
SENTENCES_PER_PARAGRAPH to a paragraph, one Claim per fact, links to the pages of its relations' tails.

Malformed lines (not three non-empty tab-separated fields) are skipped and counted in the LoadReport
with file:line examples; relations to an unknown entity cannot arise (objects that are not subjects
are attributes), but `max_triples` may cut a dump short.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from deepresearch.errors import WorldError
from deepresearch.world.schema import Claim, Document, Entity, EntityType, Tier, Triple, World
from deepresearch.world.wikidata5m import LoadReport

BAIKE_DOMAIN = "baike.baidu.com"
SENTENCES_PER_PARAGRAPH = 4
ALIAS_PREDICATES = ("中文名", "外文名", "别名")
_OPEN, _CLOSE = "（", "）"


def split_name(subject: str) -> tuple[str, str]:
    """("刘德华", "中国香港男演员、歌手、词作人") from "刘德华（中国香港男演员、歌手、词作人）"."""
    if subject.endswith(_CLOSE) and _OPEN in subject:
        i = subject.index(_OPEN)
        if i > 0:
            return subject[:i], subject[i + 1 : -1]
    return subject, ""


def load_cndbpedia(path: Path, *, max_triples: int | None = None, report: LoadReport | None = None) -> World:
    """Read a CN-DBpedia triple file into a World (format in the module docstring).

    Args:
        path: the triple file (`.gz` is read compressed).
        max_triples: read at most this many valid triples (None: all).
        report: filled with the skipped lines (a fresh one when None).
    Returns:
        World with source "cndbpedia": EntityType.entity entities, one page per entity.
    Raises:
        WorldError: the file is missing or holds no valid triple (with the first malformed lines).
    """
    path = Path(path)
    report = report if report is not None else LoadReport("cndbpedia")
    if not path.is_file():
        raise WorldError(f"CN-DBpedia triple file not found: {path} (set world.cndbpedia_path)")
    rows: list[tuple[str, str, str]] = []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="strict") as f:
        try:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                parts = line.split("\t")
                if len(parts) != 3 or not all(p.strip() for p in parts):
                    report.skip(path, lineno, f"expected subject TAB predicate TAB object, got {line[:80]!r}")
                    continue
                rows.append((parts[0].strip(), parts[1].strip(), parts[2].strip()))
                if max_triples is not None and len(rows) >= max_triples:
                    break
        except UnicodeDecodeError as e:
            raise WorldError(f"{path}: not UTF-8 text near line {len(rows) + report.malformed + 1}: {e}") from e
    if not rows:
        raise WorldError(f"{path}: no valid triple\n" + report.summary())

    ids: dict[str, str] = {}
    for s, _, _ in rows:
        if s not in ids:
            ids[s] = f"C{len(ids) + 1:07d}"
    facts: dict[str, list[tuple[str, str, str | None]]] = {s: [] for s in ids}  # (predicate, text, tail id)
    attrs: dict[str, dict[str, str]] = {s: {} for s in ids}
    aliases: dict[str, list[str]] = {s: [] for s in ids}
    triples = []
    for s, p, o in rows:
        if o in ids and o != s:
            triples.append(Triple(head=ids[s], relation=p, tail=ids[o]))
            facts[s].append((p, split_name(o)[0], ids[o]))
        else:
            attrs[s].setdefault(p, o)
            facts[s].append((p, o, None))
            if p in ALIAS_PREDICATES and o not in aliases[s] and o != split_name(s)[0]:
                aliases[s].append(o)

    tier, authority = Tier.high, 1.0
    try:
        from deepresearch.world.authority import load_authority_registry

        reg = load_authority_registry()
        if reg.entry(BAIKE_DOMAIN) is not None:
            tier, authority = reg.tier(BAIKE_DOMAIN), reg.authority(BAIKE_DOMAIN)
    except WorldError:
        pass

    entities, documents = [], []
    for n, (s, eid) in enumerate(ids.items(), 1):
        name, desc = split_name(s)
        entities.append(Entity(id=eid, type=EntityType.entity, name=name, aliases=aliases[s],
                               attributes=attrs[s], description=desc))
        sentences, claims, links = [], [], []
        for p, text, tail in facts[s]:
            para = len(sentences) // SENTENCES_PER_PARAGRAPH
            sentences.append(f"{name}的{p}是{text}。")
            claims.append(Claim(subject=eid, predicate=p, value=tail or text, paragraph=para))
            if tail is not None and f"D{int(tail[1:]):07d}" not in links:
                links.append(f"D{int(tail[1:]):07d}")
        paragraphs = ["".join(sentences[i : i + SENTENCES_PER_PARAGRAPH])
                      for i in range(0, len(sentences), SENTENCES_PER_PARAGRAPH)]
        documents.append(Document(doc_id=f"D{n:07d}", url=f"https://{BAIKE_DOMAIN}/item/{eid}", domain=BAIKE_DOMAIN,
                                  tier=tier, authority=authority, title=s, paragraphs=paragraphs, about=eid,
                                  links=links, claims=claims))
    return World(entities, triples, documents, source="cndbpedia", seed=None)
