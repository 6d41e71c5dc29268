"""Search: authority-aware ranking (pure function and through the index), index persistence, HTTP backend."""

from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from deepresearch.config import PipelineConfig, SearchConfig, WorldConfig
from deepresearch.errors import WorldError
from deepresearch.search.backend import open_backend
from deepresearch.search.embedded import EmbeddedSearch, build_index, rerank_by_authority
from deepresearch.search.http import HttpSearch, SearchServiceError, serve
from deepresearch.world.build import build_world
from deepresearch.world.generator import generate_world
from deepresearch.world.schema import Document, Tier, World

CFG = SearchConfig()


# ---- rerank_by_authority on hand-made hits ------------------------------------------------------
@dataclass(frozen=True)
class Hit:
    doc_id: str
    score: float
    authority: float
    paragraph_index: int = 0


def ids(hits) -> list[str]:
    return [h.doc_id for h in hits]


def test_equal_scores_go_to_higher_authority():
    hits = [Hit("D1", 5.0, 0.25), Hit("D2", 5.0, 1.0), Hit("D3", 5.0, 0.6)]
    assert ids(rerank_by_authority(hits, 0.15)) == ["D2", "D3", "D1"]


def test_much_more_relevant_low_authority_stays_first():
    hits = [Hit("Dhigh", 5.0, 1.0), Hit("Dlow", 10.0, 0.25)]
    assert ids(rerank_by_authority(hits, 0.15)) == ["Dlow", "Dhigh"]


def test_comparable_relevance_prefers_authority():
    # 9.0 >= (1 - 0.15) * 10.0 = 8.5: same group, authority decides
    hits = [Hit("Dlow", 10.0, 0.25), Hit("Dhigh", 9.0, 1.0)]
    assert ids(rerank_by_authority(hits, 0.15)) == ["Dhigh", "Dlow"]


def test_groups_are_anchored_on_their_top_score_and_keep_their_order():
    # 10 opens group 1; 8.6 >= 8.5 joins; 7.4 < 8.5 opens group 2 (even though 7.4 >= 0.85 * 8.6);
    # 6.5 >= 0.85 * 7.4 = 6.29 joins group 2.
    hits = [Hit("A", 10.0, 0.25), Hit("B", 8.6, 1.0), Hit("C", 7.4, 0.25), Hit("D", 6.5, 0.6)]
    assert ids(rerank_by_authority(hits, 0.15)) == ["B", "A", "D", "C"]


def test_within_group_ties_break_by_score_then_doc_id_then_paragraph():
    hits = [
        Hit("D2", 9.0, 1.0),
        Hit("D1", 9.0, 1.0, paragraph_index=2),
        Hit("D1", 9.0, 1.0, paragraph_index=0),
        Hit("D3", 9.5, 1.0),
    ]
    assert [(h.doc_id, h.paragraph_index) for h in rerank_by_authority(hits, 0.15)] == [
        ("D3", 0),
        ("D1", 0),
        ("D1", 2),
        ("D2", 0),
    ]


def test_zero_tolerance_is_score_order_with_authority_on_exact_ties():
    hits = [Hit("A", 10.0, 0.25), Hit("B", 9.99, 1.0), Hit("C", 9.99, 0.25), Hit("D", 9.99, 0.6)]
    assert ids(rerank_by_authority(hits, 0.0)) == ["A", "B", "D", "C"]


def test_rerank_is_independent_of_input_order():
    hits = [
        Hit("A", 10.0, 0.25),
        Hit("B", 8.6, 1.0),
        Hit("C", 7.4, 0.25),
        Hit("D", 6.5, 0.6),
        Hit("E", 6.5, 0.6),
    ]
    expected = rerank_by_authority(hits, 0.15)
    for perm in itertools.permutations(hits):
        assert rerank_by_authority(list(perm), 0.15) == expected


def test_rerank_edge_cases():
    assert rerank_by_authority([], 0.15) == []
    with pytest.raises(ValueError, match="tolerance"):
        rerank_by_authority([Hit("A", 1.0, 1.0)], 1.0)


# ---- ranking through the index on a hand-made world ---------------------------------------------
FILLER = [
    "The harbor committee met on Tuesday to discuss ferry timetables.",
    "Local bakers reported record sales of rye bread this winter.",
    "A new cycling path connects the old mill to the train station.",
    "The museum extended its opening hours during the summer months.",
    "Students presented their projects on coastal erosion and tides.",
    "Volunteers repainted the community hall before the spring fair.",
]


def _doc(doc_id: str, tier: Tier, authority: float, paragraphs: list[str]) -> Document:
    domain = {Tier.high: "registry.gov.example", Tier.medium: "metrotimes.news.example"}.get(
        tier, "notes.blog.example"
    )
    return Document(
        doc_id=doc_id,
        url=f"https://{domain}/{doc_id.lower()}",
        domain=domain,
        tier=tier,
        authority=authority,
        title=f"page {doc_id}",
        paragraphs=paragraphs,
    )


@pytest.fixture(scope="module")
def handmade(tmp_path_factory) -> EmbeddedSearch:
    same = "Zorvath reactor output reached forty megawatts in the spring test."
    docs = [
        # identical text on a low (smaller doc id) and a high domain
        _doc("D0000001", Tier.low, 0.25, [same]),
        _doc("D0000002", Tier.high, 1.0, [same]),
        # a highly relevant blog paragraph vs. a weakly relevant (long, one mention) official one
        _doc(
            "D0000003",
            Tier.low,
            0.25,
            ["Quenmar lattice resonance: the quenmar lattice resonance explained."],
        ),
        _doc(
            "D0000004",
            Tier.high,
            1.0,
            [
                "The annual report covers budgets, staffing, buildings, procurement, travel, training, "
                "archives, outreach, maintenance and, in one line among dozens of unrelated subjects, quenmar."
            ],
        ),
        *[_doc(f"D{i + 10:07d}", Tier.medium, 0.6, [text]) for i, text in enumerate(FILLER)],
    ]
    world = World([], [], docs, source="test")
    world_dir = tmp_path_factory.mktemp("handmade")
    world.save(world_dir)
    build_index(world, world_dir / "index", CFG)
    return EmbeddedSearch(CFG, world_dir)


def test_same_text_high_authority_first(handmade):
    hits = handmade.search("Zorvath reactor output", k=2)
    assert ids(hits) == ["D0000002", "D0000001"]
    assert hits[0].score == pytest.approx(hits[1].score)


def test_much_more_relevant_low_authority_paragraph_stays_above(handmade):
    hits = handmade.search("quenmar lattice resonance", k=2)
    assert ids(hits) == ["D0000003", "D0000004"]
    assert hits[0].score > hits[1].score / (1 - CFG.relevance_tolerance)


def test_hit_fields_and_unknown_queries(handmade):
    (hit,) = handmade.search("rye bread sales", k=1)
    assert hit.paragraph == FILLER[1] and hit.paragraph_index == 0
    assert hit.domain == "metrotimes.news.example" and hit.authority == 0.6
    assert hit.url.endswith(hit.doc_id.lower()) and hit.title == f"page {hit.doc_id}"
    assert handmade.search("the of and", k=3) == []  # stopwords only
    assert handmade.search("xyzzy plugh", k=3) == []  # no indexed word
    assert len(handmade.search("the", k=100)) == 0
    assert len(handmade.search("reactor", k=100)) == 2  # k above the corpus size is fine


def test_search_batch_matches_single_searches(handmade):
    queries = ["Zorvath reactor", "", "quenmar", "ferry timetables", "xyzzy"]
    assert handmade.search_batch(queries, 3) == [handmade.search(q, 3) for q in queries]


def test_ties_at_the_candidate_cut_go_to_the_lowest_doc_ids(tmp_path):
    # 12 identical paragraphs, 3 candidates: top-k selection alone would pick an arbitrary three.
    same = "Brelliant tide gauge readings for the northern pier."
    docs = [_doc(f"D{i:07d}", Tier.medium, 0.6, [same]) for i in range(12, 0, -1)]
    docs += [_doc(f"D{i + 100:07d}", Tier.medium, 0.6, [text]) for i, text in enumerate(FILLER)]
    world = World([], [], docs, source="test")
    cfg = SearchConfig(candidate_multiplier=1)
    build_index(world, tmp_path / "index", cfg)
    search = EmbeddedSearch(cfg, tmp_path, world=world)
    assert ids(search.search("brelliant tide gauge", k=3)) == ["D0000001", "D0000002", "D0000003"]


def test_get_document_by_id_and_url(handmade):
    doc = handmade.get_document("D0000003")
    assert doc is not None and doc.doc_id == "D0000003"
    assert handmade.get_document(doc.url) == doc
    assert handmade.get_document("D9999999") is None
    assert handmade.get_document("https://nowhere.example/x") is None


# ---- index persistence on a generated world ------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[World, Path, dict]:
    world = generate_world(WorldConfig(entities_per_type=8, seed=11))
    world_dir = tmp_path_factory.mktemp("tiny")
    world.save(world_dir)
    stats = build_index(world, world_dir / "index", CFG)
    return world, world_dir, stats


def test_index_stats(tiny):
    world, world_dir, stats = tiny
    assert stats["paragraphs"] == world.counts["paragraphs"]
    assert stats["documents"] == world.counts["documents"]
    assert stats["vocab_size"] > 100 and stats["bytes"] > 0
    assert json.loads((world_dir / "index" / "meta.json").read_text())["fingerprint"] == stats["fingerprint"]


def test_index_round_trip_gives_same_results(tiny):
    world, world_dir, _ = tiny
    in_memory = EmbeddedSearch(CFG, world_dir, world=world)
    from_disk = EmbeddedSearch(CFG, world_dir)  # loads the world and the index afresh
    queries = [e.description for e in world.entities.values()] + [e.name for e in world.entities.values()]
    assert from_disk.search_batch(queries, 5) == in_memory.search_batch(queries, 5)


def test_index_bytes_are_deterministic(tiny, tmp_path):
    world, world_dir, stats = tiny
    again = build_index(world, tmp_path / "index", CFG)
    assert again == stats
    for f in sorted((world_dir / "index").rglob("*")):
        if f.is_file():
            assert f.read_bytes() == (tmp_path / "index" / f.relative_to(world_dir / "index")).read_bytes(), f


def test_description_search_finds_the_reference_page(tiny):
    world, world_dir, _ = tiny
    search = EmbeddedSearch(CFG, world_dir, world=world)
    for e in world.entities.values():
        hits = search.search(e.description, k=5)
        assert world.primary_doc(e.id).doc_id in ids(hits), e.description
        name_hits = search.search(e.name, k=5)
        assert all(world.documents[h.doc_id].about == e.id or e.name in h.paragraph for h in name_hits)


def test_open_backend_returns_the_embedded_backend(tiny):
    _, world_dir, _ = tiny
    assert isinstance(open_backend(CFG, world_dir), EmbeddedSearch)


def test_rebuilding_replaces_the_index(tiny, tmp_path):
    world, _, _ = tiny
    build_index(world, tmp_path / "index", CFG)
    (tmp_path / "index" / "stale-file").write_text("x")
    build_index(world, tmp_path / "index", CFG)
    assert not (tmp_path / "index" / "stale-file").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["index"]  # no temp or backup dirs left behind


def test_missing_or_incomplete_index_says_how_to_build(tiny, tmp_path):
    world, world_dir, _ = tiny
    with pytest.raises(WorldError, match="does not exist.*deepresearch world build"):
        EmbeddedSearch(CFG, tmp_path, world=world)
    build_index(world, tmp_path / "index", CFG)
    (tmp_path / "index" / "para_idx.npy").unlink()
    with pytest.raises(WorldError, match="incomplete.*para_idx.npy.*deepresearch world build"):
        EmbeddedSearch(CFG, tmp_path, world=world)


def test_index_of_another_world_or_other_params_is_refused(tiny):
    world, world_dir, _ = tiny
    other = generate_world(WorldConfig(entities_per_type=9, seed=11))
    with pytest.raises(WorldError, match="different world"):
        EmbeddedSearch(CFG, world_dir, world=other)
    with pytest.raises(WorldError, match="k1"):
        EmbeddedSearch(SearchConfig(k1=2.0), world_dir, world=world)


def test_build_world_writes_world_index_and_manifest(tmp_path):
    cfg = PipelineConfig(world=WorldConfig(entities_per_type=4, seed=2))
    manifest = build_world(cfg, tmp_path / "w", show_progress=False)
    assert json.loads((tmp_path / "w" / "manifest.json").read_text()) == manifest
    assert manifest["index"]["paragraphs"] == manifest["counts"]["paragraphs"]
    world = World.load(tmp_path / "w")
    assert world.counts == manifest["counts"]
    assert open_backend(cfg.search, tmp_path / "w").search(next(iter(world.entities.values())).name, 3)


# ---- HTTP backend against the served embedded backend --------------------------------------------
@pytest.fixture(scope="module")
def served(tiny):
    world, world_dir, _ = tiny
    backend = EmbeddedSearch(CFG, world_dir, world=world)
    server = serve(backend)
    yield backend, server
    server.close()


def test_http_search_matches_embedded(served, tiny):
    backend, server = served
    world = tiny[0]
    client = HttpSearch(server.url)
    queries = [e.description for e in list(world.entities.values())[:10]] + ["", "xyzzy"]
    assert client.search_batch(queries, 4) == backend.search_batch(queries, 4)
    assert client.search(queries[0], 2) == backend.search(queries[0], 2)


def test_http_get_document(served):
    backend, server = served
    client = HttpSearch(server.url)
    first = next(iter(backend.world.documents))
    doc = backend.get_document(first)
    assert doc is not None and client.get_document(first) == doc
    assert client.get_document(doc.url) == doc
    assert client.get_document("D9999999") is None


def test_open_backend_http(served):
    backend, server = served
    b = open_backend(SearchConfig(backend="http", http_url=server.url), Path("unused"))
    second = list(backend.world.documents)[1]
    assert isinstance(b, HttpSearch) and b.get_document(second) is not None


def test_http_bad_requests_are_400(served):
    _, server = served
    client = HttpSearch(server.url)
    with pytest.raises(SearchServiceError, match="HTTP 400"):
        client.search("x", 0)
    req = urllib.request.Request(server.url + "/search", data=b'{"queries": "not a list"}', method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=5)
    assert err.value.code == 400


def test_http_unreachable_server_names_the_url(tiny):
    world, world_dir, _ = tiny
    server = serve(EmbeddedSearch(CFG, world_dir, world=world))
    url = server.url
    server.close()
    with pytest.raises(SearchServiceError, match=f"{url}/search is unreachable"):
        HttpSearch(url, timeout=2).search("anything", 3)
    with pytest.raises(SearchServiceError, match="http://"):
        HttpSearch("localhost:8080")
