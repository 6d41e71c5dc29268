"""World generator and authority registry: determinism, schema invariants, the content design others rely on."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from deepresearch.config import WorldConfig
from deepresearch.errors import WorldError
from deepresearch.world.authority import load_authority_registry
from deepresearch.world.generator import (
    ATTRIBUTES,
    CONFLICTABLE,
    ENTITY_TYPES,
    RELATIONS,
    format_value,
    generate_world,
)
from deepresearch.world.schema import WORLD_FILES, EntityType, Tier, World

REPO = Path(__file__).resolve().parents[1]
CFG = WorldConfig(entities_per_type=8, seed=3, conflict_rate=0.5, secondary_pages_per_entity=3)


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(CFG)


def _saved_bytes(world: World, out: Path) -> dict[str, bytes]:
    world.save(out)
    return {name: (out / name).read_bytes() for name in (*WORLD_FILES, "manifest.json")}


# ---- determinism --------------------------------------------------------------------------------
def test_same_seed_gives_identical_files(tmp_path):
    a = _saved_bytes(generate_world(CFG), tmp_path / "a")
    b = _saved_bytes(generate_world(CFG), tmp_path / "b")
    assert a == b


def test_same_seed_identical_across_processes_with_other_hash_seed(tmp_path, world):
    # Set iteration order changes with PYTHONHASHSEED; a generator that leaned on it would differ here.
    manifest = world.save(tmp_path / "here")
    code = (
        "import json; from deepresearch.config import WorldConfig; "
        "from deepresearch.world.generator import generate_world; "
        f"cfg = WorldConfig.model_validate_json({CFG.model_dump_json()!r}); "
        "print(json.dumps(generate_world(cfg).save(__import__('pathlib').Path(r'%s'))['sha256']))"
        % (tmp_path / "there")
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=True
    )
    assert json.loads(res.stdout) == manifest["sha256"]


def test_different_seed_gives_different_world(tmp_path, world):
    other = generate_world(CFG.model_copy(update={"seed": CFG.seed + 1}))
    assert world.save(tmp_path / "a")["sha256"] != other.save(tmp_path / "b")["sha256"]
    assert [e.name for e in world.entities.values()] != [e.name for e in other.entities.values()]


def test_save_load_round_trip(tmp_path, world):
    world.save(tmp_path)
    back = World.load(tmp_path)
    assert back.entities == world.entities
    assert back.triples == world.triples
    assert back.documents == world.documents


# ---- entities -----------------------------------------------------------------------------------
def test_entity_counts_ids_and_types(world):
    ents = list(world.entities.values())
    assert len(ents) == 6 * CFG.entities_per_type
    assert [e.id for e in ents] == [f"E{i:06d}" for i in range(1, len(ents) + 1)]
    assert Counter(e.type for e in ents) == {t: CFG.entities_per_type for t in ENTITY_TYPES}
    for e in ents:
        assert sorted(e.attributes) == sorted(ATTRIBUTES[e.type]), e


def test_names_and_aliases_are_unique(world):
    names = [e.name for e in world.entities.values()]
    aliases = [a for e in world.entities.values() for a in e.aliases]
    assert len(set(names)) == len(names)
    assert len(set(aliases)) == len(aliases)
    assert not set(names) & set(aliases)
    persons = [e for e in world.entities.values() if e.type == EntityType.person]
    assert all(len(p.name.split()) == 2 for p in persons)
    events = [e for e in world.entities.values() if e.type == EntityType.event]
    assert all(e.name.endswith(str(e.attributes["year"])) for e in events)


def test_descriptions_unique_and_name_free(world):
    descs = [e.description for e in world.entities.values()]
    assert all(descs)
    assert len(set(descs)) == len(descs)
    for e in world.entities.values():
        for label in (e.name, *e.aliases):
            assert label.lower() not in e.description.lower(), (e.name, e.description)


def test_descriptions_unique_on_a_bigger_world():
    # Collisions of the base phrasing are common at this size: the leveling must resolve them.
    big = generate_world(WorldConfig(entities_per_type=400, seed=5, secondary_pages_per_entity=0))
    descs = [e.description for e in big.entities.values()]
    assert len(set(descs)) == len(descs)


# ---- relations ----------------------------------------------------------------------------------
def test_relations_are_typed_and_tails_exist(world):
    spec = {r.name: r for r in RELATIONS}
    seen = set()
    for t in world.triples:
        assert t.relation in spec
        assert world.entities[t.head].type == spec[t.relation].head
        assert world.entities[t.tail].type == spec[t.relation].tail
        assert (t.head, t.relation) not in seen, "at most one tail per relation"
        seen.add((t.head, t.relation))


def test_every_entity_with_relations_has_an_out_edge(world):
    heads = {r.head for r in RELATIONS}
    for e in world.entities.values():
        if e.type in heads:
            assert world.out_edges(e.id), e.id
    # tails are dealt from a deck, so every person/organization/place is some entity's tail here
    for e in world.entities.values():
        if e.type in (EntityType.person, EntityType.organization, EntityType.place):
            assert world.in_edges(e.id), e.id


# ---- documents ----------------------------------------------------------------------------------
def test_document_layout(world):
    per_entity = 1 + CFG.secondary_pages_per_entity
    assert len(world.documents) == len(world.entities) * per_entity
    reg = load_authority_registry()
    for d in world.documents.values():
        # the id is the entity's name as a slug and the page number, the path of the page's URL
        slug, page = d.doc_id.rsplit("-", 1)
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug) and 0 <= int(page) < per_entity
        assert slug.startswith(re.sub(r"[^a-z0-9]+", "-", world.entities[d.about].name.lower()).strip("-"))
        assert d.url == f"https://{d.domain}/{d.doc_id}"
        assert d.tier == reg.tier(d.domain) and d.authority == reg.authority(d.domain)
        assert len(d.paragraphs) == CFG.paragraphs_per_page
        assert d.about in world.entities and d.year is not None
        for c in d.claims:
            assert 0 <= c.paragraph < len(d.paragraphs)
    for e in world.entities.values():
        docs = world.docs_about(e.id)
        assert len(docs) == per_entity
        assert sum(d.tier == Tier.high for d in docs) == 1
        assert world.primary_doc(e.id).doc_id.endswith("-0")


def test_reference_page_states_every_fact_correctly(world):
    for e in world.entities.values():
        ref = world.primary_doc(e.id)
        assert ref is not None and ref.tier == Tier.high
        assert e.name in ref.paragraphs[0] and e.description in ref.paragraphs[0]
        assert all(c.correct and c.subject == e.id for c in ref.claims)
        claims = {c.predicate: c for c in ref.claims}
        expected = {a: str(v) for a, v in e.attributes.items()}
        expected.update({t.relation: t.tail for t in world.out_edges(e.id)})
        assert {p: c.value for p, c in claims.items()} == expected
        for attr, value in e.attributes.items():
            assert format_value(attr, value) in ref.paragraphs[claims[attr].paragraph]
        for t in world.out_edges(e.id):
            tail = world.entities[t.tail]
            assert tail.name in ref.paragraphs[claims[t.relation].paragraph]
            assert world.primary_doc(t.tail).doc_id in ref.links


def test_links_resolve_and_secondary_pages_cite_the_reference(world):
    for d in world.documents.values():
        assert d.doc_id not in d.links
        assert len(set(d.links)) == len(d.links)
        for link in d.links:
            assert link in world.documents
        if d.tier != Tier.high:
            assert d.links[0] == world.primary_doc(d.about).doc_id


def test_low_tier_pages_carry_conflicts(world):
    wrong = [(d, c) for d in world.documents.values() for c in d.claims if not c.correct]
    assert wrong, "conflict_rate=0.5 must produce some wrong claims"
    for d, c in wrong:
        e = world.entities[c.subject]
        assert d.tier == Tier.low
        assert c.predicate in CONFLICTABLE[e.type]
        assert c.value != str(e.attributes[c.predicate])
        assert format_value(c.predicate, int(c.value)) in d.paragraphs[c.paragraph]
        assert sum(not x.correct for x in d.claims) == 1
    for d in world.documents.values():
        if d.tier == Tier.medium:
            assert d.claims and all(c.correct for c in d.claims)


def test_no_conflicts_when_rate_is_zero():
    w = generate_world(CFG.model_copy(update={"conflict_rate": 0.0}))
    assert all(c.correct for d in w.documents.values() for c in d.claims)


def test_paragraphs_per_page_is_respected():
    w = generate_world(WorldConfig(entities_per_type=3, paragraphs_per_page=1, secondary_pages_per_entity=0))
    assert all(len(d.paragraphs) == 1 for d in w.documents.values())
    w = generate_world(WorldConfig(entities_per_type=3, paragraphs_per_page=7, secondary_pages_per_entity=1))
    assert all(len(d.paragraphs) == 7 and all(d.paragraphs) for d in w.documents.values())


# ---- authority registry -------------------------------------------------------------------------
def test_authority_registry_lookups():
    reg = load_authority_registry()
    assert reg.tier("registry.gov.example") == Tier.high
    assert reg.authority("registry.gov.example") == 1.0
    assert reg.authority("notes.blog.example") == reg.tiers[Tier.low]
    assert reg.domains_by_tier("medium") == [d.domain for d in reg.domains if d.tier == Tier.medium]
    assert all(reg.domains_by_tier(t) for t in Tier)
    with pytest.raises(WorldError, match="not in the authority registry"):
        reg.authority("unknown.example")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("schema_version: 1\ntiers: {high: 1.0, medium: 0.6}\ndomains: []\n", "tiers"),
        (
            "schema_version: 1\ntiers: {high: 1.0, medium: 0.6, low: 0.2}\ndomains:\n"
            "  - {domain: a.example, tier: high, kind: gov}\n  - {domain: a.example, tier: low, kind: blog}\n",
            "listed twice",
        ),
        (
            "schema_version: 1\ntiers: {high: 1.0, medium: 0.6, low: 0.2}\ndomains:\n"
            "  - {domain: a.example, tier: top, kind: gov}\n",
            "domains.0.tier",
        ),
        (
            "schema_version: 1\ntiers: {high: 1.0, medium: 0.6, low: 0.2}\ndomains:\n"
            "  - {domain: a.example, tier: high, kind: gov, colour: red}\n",
            "domains.0.colour",
        ),
        ("schema_version: 1\ntiers: [1, 2\n", "not valid YAML"),
    ],
)
def test_authority_registry_errors_name_file_and_field(tmp_path, text, fragment):
    path = tmp_path / "authority.yaml"
    path.write_text(text)
    with pytest.raises(WorldError) as err:
        load_authority_registry(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_missing_authority_registry(tmp_path):
    with pytest.raises(WorldError, match="not found"):
        load_authority_registry(tmp_path / "nope.yaml")
