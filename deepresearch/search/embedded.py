"""Embedded search backend: a persistent paragraph-level BM25 index (bm25s) with authority-aware ranking.

    stats = build_index(world, world_dir / "index", cfg.search)     # once, after World.save
    search = EmbeddedSearch(cfg.search, world_dir)                  # loads the index and the documents
    hits = search.search("a chemist born in 1932", k=5)

Index directory (written to a temp directory, then renamed into place):
    meta.json       format version, counts, BM25 parameters, fingerprint of the world it indexes
    bm25/           bm25s.BM25.save output: CSC matrix of precomputed BM25 scores + vocabulary
    para_doc.npy    (P,) int32  index row -> position of its document in doc_ids.json
    para_idx.npy    (P,) int32  index row -> paragraph index inside that document
    doc_ids.json    document ids in world order

Ranking: BM25 retrieves k * candidate_multiplier paragraphs (ties at the cut go to the lowest
doc ids, so results do not depend on the scoring backend), then `rerank_by_authority` moves
higher-authority pages up only among results of comparable relevance (see its docstring).

Indexes of >= NUMBA_MIN_PARAGRAPHS paragraphs are served by bm25s's numba backend (about 20x
faster than numpy at 1M paragraphs); its JIT compile takes ~10 s on the first query of a process,
so long-lived servers call `warmup()` once at start.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

from deepresearch.errors import WorldError
from deepresearch.io import atomic_dir
from deepresearch.search.backend import BackendName, SearchHit, register_backend
from deepresearch.world.schema import Document, World

if TYPE_CHECKING:
    from deepresearch.config import SearchConfig

INDEX_FORMAT_VERSION = 1
INDEX_FILES = (
    "meta.json",
    "para_doc.npy",
    "para_idx.npy",
    "doc_ids.json",
    "bm25/params.index.json",
    "bm25/vocab.index.json",
    "bm25/data.csc.index.npy",
    "bm25/indices.csc.index.npy",
    "bm25/indptr.csc.index.npy",
)
# The same token pattern bm25s uses by default: words of two or more characters.
_TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")
# Below this many paragraphs numpy scoring is already sub-millisecond, and numba's one-off JIT
# compile (seconds) would dominate; above it numba's fused score + top-k loop wins.
NUMBA_MIN_PARAGRAPHS = 50_000


# ---- authority-aware ranking (pure) -------------------------------------------------------------
class _Rankable(Protocol):
    @property
    def score(self) -> float: ...

    @property
    def authority(self) -> float: ...

    @property
    def doc_id(self) -> str: ...


H = TypeVar("H", bound=_Rankable)


def rerank_by_authority(hits: Sequence[H], tolerance: float) -> list[H]:
    """Order hits by relevance, preferring higher authority among hits of comparable relevance.

    Hits are sorted by score (desc), then cut greedily into groups: a hit joins the current group
    while its score is >= (1 - tolerance) * the group's top score, otherwise it opens a new group.
    Inside a group: authority desc, then score desc, then doc_id, then paragraph index; groups keep
    their order. So a much more relevant low-authority paragraph stays above a weakly relevant
    high-authority one, while near-ties go to the more authoritative source.

    Args:
        hits: objects with `score`, `authority`, `doc_id` (and optionally `paragraph_index`).
        tolerance: relative score band of a group, in [0, 1); 0 means pure score order.
    Returns:
        A new list with the same hits, reordered; deterministic for any input order.
    """
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")

    def pidx(h) -> int:
        return getattr(h, "paragraph_index", 0)

    ordered = sorted(hits, key=lambda h: (-h.score, h.doc_id, pidx(h)))
    out: list[H] = []
    group: list[H] = []
    top = 0.0
    for h in ordered:
        if group and h.score < (1.0 - tolerance) * top:
            out.extend(sorted(group, key=lambda g: (-g.authority, -g.score, g.doc_id, pidx(g))))
            group = []
        if not group:
            top = h.score
        group.append(h)
    out.extend(sorted(group, key=lambda g: (-g.authority, -g.score, g.doc_id, pidx(g))))
    return out


# ---- building -----------------------------------------------------------------------------------
def world_fingerprint(world: World) -> str:
    """Digest of the documents' ids and paragraph counts: what the index rows point into."""
    h = hashlib.sha256()
    for d in world.documents.values():
        h.update(f"{d.doc_id}:{len(d.paragraphs)}\n".encode())
    return h.hexdigest()[:16]


def _build_command(world_dir: Path) -> str:
    return f"`deepresearch world build --out {world_dir}`"


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_index(world: World, index_dir: Path, cfg: SearchConfig) -> dict:
    """Build and persist the paragraph-level BM25 index of a world.

    Args:
        world: the world whose paragraphs are indexed (one index row per paragraph, world order).
        index_dir: destination; replaced as a whole once the new index is complete.
        cfg: search config (k1, b).
    Returns:
        Deterministic stats: format_version, paragraphs, documents, vocab_size, k1, b, bytes, fingerprint.
    Raises:
        WorldError: the world has no paragraphs.
    """
    import bm25s
    import numpy as np
    import Stemmer
    from bm25s.tokenization import Tokenizer

    index_dir = Path(index_dir)
    docs = list(world.documents.values())
    para_doc: list[int] = []
    para_idx: list[int] = []
    texts: list[str] = []
    for di, d in enumerate(docs):
        for pi, p in enumerate(d.paragraphs):
            para_doc.append(di)
            para_idx.append(pi)
            texts.append(p)
    if not texts:
        raise WorldError("cannot build a search index: the world has no document paragraphs")

    # bm25s.Tokenizer assigns ids in first-seen order (bm25s.tokenize goes through a set, whose
    # order changes with PYTHONHASHSEED), so the index bytes depend only on the world.
    tokenizer = Tokenizer(stemmer=Stemmer.Stemmer("english"), stopwords="en", splitter=_TOKEN_RE.pattern)
    tokens = tokenizer.tokenize(texts, update_vocab=True, return_as="tuple", show_progress=False)
    del texts
    retriever = bm25s.BM25(k1=cfg.k1, b=cfg.b, backend="numpy")
    retriever.index(tokens, create_empty_token=False, show_progress=False)
    vocab_size = len(tokens.vocab)
    del tokens

    with atomic_dir(index_dir) as tmp:
        retriever.save(str(tmp / "bm25"), show_progress=False)
        np.save(tmp / "para_doc.npy", np.asarray(para_doc, dtype=np.int32))
        np.save(tmp / "para_idx.npy", np.asarray(para_idx, dtype=np.int32))
        (tmp / "doc_ids.json").write_text(json.dumps([d.doc_id for d in docs]))
        stats = {
            "format_version": INDEX_FORMAT_VERSION,
            "paragraphs": len(para_doc),
            "documents": len(docs),
            "vocab_size": vocab_size,
            "k1": cfg.k1,
            "b": cfg.b,
            "fingerprint": world_fingerprint(world),
        }
        # meta.json is written last: its presence marks a complete index.
        (tmp / "meta.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
        stats["bytes"] = _dir_bytes(tmp)
    return stats


# ---- serving ------------------------------------------------------------------------------------
@register_backend(BackendName.embedded)
class EmbeddedSearch:
    """The embedded backend: BM25 over paragraphs of a world directory, authority-aware ranking.

    `EmbeddedSearch(cfg, world_dir)` is also the registry factory signature. Pass `world=` to reuse
    an already loaded World (it must be the one the index was built from; checked by fingerprint).
    Safe to share between threads (the HTTP server does).
    """

    def __init__(
        self,
        cfg: SearchConfig,
        world_dir: Path,
        *,
        world: World | None = None,
        index_dir: Path | None = None,
        backend: Literal["auto", "numpy", "numba"] = "auto",
    ):
        import bm25s
        import numpy as np
        import Stemmer
        from bm25s.stopwords import STOPWORDS_EN

        self.cfg = cfg
        self.world_dir = Path(world_dir)
        self.index_dir = Path(index_dir) if index_dir is not None else self.world_dir / "index"
        missing = [f for f in INDEX_FILES if not (self.index_dir / f).is_file()]
        if missing:
            what = (
                "does not exist"
                if not self.index_dir.is_dir()
                else f"is incomplete (missing {', '.join(missing)})"
            )
            raise WorldError(
                f"search index {self.index_dir} {what}; build it with {_build_command(self.world_dir)}"
            )
        meta = json.loads((self.index_dir / "meta.json").read_text())
        if meta.get("format_version") != INDEX_FORMAT_VERSION:
            raise WorldError(
                f"{self.index_dir / 'meta.json'}: index format {meta.get('format_version')!r}, this code reads "
                f"{INDEX_FORMAT_VERSION}; rebuild it with {_build_command(self.world_dir)}"
            )
        if (meta["k1"], meta["b"]) != (cfg.k1, cfg.b):
            raise WorldError(
                f"search index {self.index_dir} was built with k1={meta['k1']}, b={meta['b']} but the config asks "
                f"k1={cfg.k1}, b={cfg.b}; rebuild it with {_build_command(self.world_dir)}"
            )
        self.world = world if world is not None else World.load(self.world_dir)
        if world_fingerprint(self.world) != meta["fingerprint"]:
            raise WorldError(
                f"search index {self.index_dir} was built for a different world than {self.world_dir}; "
                f"rebuild it with {_build_command(self.world_dir)}"
            )
        self.meta = meta
        self.n_paragraphs = int(meta["paragraphs"])
        if backend == "auto":
            backend = "numba" if self.n_paragraphs >= NUMBA_MIN_PARAGRAPHS else "numpy"
        self.backend = backend
        self._bm25 = bm25s.BM25.load(
            str(self.index_dir / "bm25"),
            mmap=False,
            show_progress=False,
            override_params={"backend": backend},
        )
        self._vocab: dict[str, int] = self._bm25.vocab_dict
        self._para_doc = np.load(self.index_dir / "para_doc.npy")
        self._para_idx = np.load(self.index_dir / "para_idx.npy")
        doc_ids = json.loads((self.index_dir / "doc_ids.json").read_text())
        self._docs: list[Document] = [self.world.documents[d] for d in doc_ids]
        self._stopwords = frozenset(STOPWORDS_EN)
        # PyStemmer objects are not thread-safe; the word -> token id cache makes the lock rare.
        self._stemmer = Stemmer.Stemmer("english")
        self._stem_lock = threading.Lock()
        self._word_ids: dict[str, int | None] = {}
        self._by_url: dict[str, str] | None = None

    # ---- queries ---------------------------------------------------------------------------------
    def _query_ids(self, query: str) -> list[int]:
        """Token ids of a query (same analysis as the corpus); unknown words are dropped."""
        ids: list[int] = []
        for word in _TOKEN_RE.findall(query.lower()):
            if word in self._stopwords:
                continue
            tid = self._word_ids.get(word, -1)
            if tid == -1:
                with self._stem_lock:
                    stem = self._stemmer.stemWord(word)
                tid = self._vocab.get(stem)
                if len(self._word_ids) < 1_000_000:  # bound the cache for long-running servers
                    self._word_ids[word] = tid
            if tid is not None and tid not in ids:
                ids.append(tid)
        return ids

    def search(self, query: str, k: int) -> list[SearchHit]:
        """Top-k paragraphs for one query."""
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: list[str], k: int) -> list[list[SearchHit]]:
        """Top-k paragraphs for each query; a query with no indexed word gets no hits."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        token_ids = [self._query_ids(q) for q in queries]
        live = [i for i, ids in enumerate(token_ids) if ids]
        out: list[list[SearchHit]] = [[] for _ in queries]
        if not live:
            return out
        n_cand = min(k * self.cfg.candidate_multiplier, self.n_paragraphs)
        # One extra candidate reveals whether a score tie straddles the cut (see _exact_top).
        n_fetch = min(n_cand + 1, self.n_paragraphs)
        rows, scores = self._bm25.retrieve(
            [token_ids[i] for i in live], k=n_fetch, show_progress=False, n_threads=0, return_as="tuple"
        )
        for row, qi in enumerate(live):
            r, s = rows[row], scores[row]
            if n_fetch > n_cand and s[n_cand - 1] > 0 and s[n_cand] == s[n_cand - 1]:
                r, s = self._exact_top(token_ids[qi], n_cand, s[n_cand - 1])
            hits = []
            for pos, score in zip(r[:n_cand].tolist(), s[:n_cand].tolist()):
                if score <= 0.0:  # padding when fewer than n_cand paragraphs match
                    continue
                doc = self._docs[self._para_doc[pos]]
                pi = int(self._para_idx[pos])
                hits.append(
                    SearchHit(
                        doc_id=doc.doc_id,
                        url=doc.url,
                        domain=doc.domain,
                        authority=doc.authority,
                        score=score,
                        paragraph=doc.paragraphs[pi],
                        paragraph_index=pi,
                        title=doc.title,
                    )
                )
            out[qi] = rerank_by_authority(hits, self.cfg.relevance_tolerance)[:k]
        return out

    def _exact_top(self, token_ids: list[int], n: int, cut: float):
        """The n best rows when several rows tie at the cut score: ties go to the lowest rows.

        Top-k selection (numpy partition or numba heap) picks an arbitrary subset of rows tied at
        the cut, and the two backends pick differently. Rows are in (doc_id, paragraph) order, so
        taking the lowest tied rows matches rerank_by_authority's own tie-break and makes results
        independent of the backend. Templated pages tie often, so this path is common but cheap.
        """
        import numpy as np

        scores = self._bm25.get_scores_from_ids(token_ids)  # (P,) float32, same arithmetic as retrieve
        above = np.flatnonzero(scores > cut)
        if len(above) >= n:  # only if the two score computations disagreed; stay exact anyway
            rows = above[np.lexsort((above, -scores[above]))[:n]]
        else:
            rows = np.concatenate([above, np.flatnonzero(scores == cut)[: n - len(above)]])
        return rows, scores[rows]

    def get_document(self, doc_id: str) -> Document | None:
        """A document by doc_id or by URL; None when unknown."""
        doc = self.world.documents.get(doc_id)
        if doc is not None:
            return doc
        if self._by_url is None:
            self._by_url = {d.url: d.doc_id for d in self.world.documents.values()}
        key = self._by_url.get(doc_id.strip())
        return self.world.documents.get(key) if key is not None else None

    def warmup(self) -> None:
        """Run one query so a numba backend compiles now rather than on the first real search."""
        tid = next((i for w, i in self._vocab.items() if w), None)  # any real token; "" has no postings
        if tid is not None:
            self._bm25.retrieve([[tid]], k=1, show_progress=False, n_threads=0)
            self._bm25.get_scores_from_ids([tid])  # the tie path's scorer is compiled separately
