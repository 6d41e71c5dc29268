"""Wikidata5m loader on a small sample written in exactly the real file format."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from deepresearch.errors import WorldError
from deepresearch.world.schema import EntityType, Tier, World
from deepresearch.world.wikidata5m import load_wikidata5m, split_paragraphs

ENTITIES = [
    "Q42\tDouglas Adams\tDouglas Noel Adams\tDNA",
    "Q5\thuman\thumans",
    "Q145\tUnited Kingdom\tUK\tU.K.",
    "Q350\tCambridge",
    "Q3918\tuniversity\tuniversities",
]
RELATIONS = ["P31\tinstance of\tis a", "P27\tcountry of citizenship\tcitizenship", "P19\tplace of birth"]
TRIPLES = [
    "Q42\tP31\tQ5",
    "Q42\tP27\tQ145",
    "Q42\tP19\tQ350",
    "Q350\tP17\tQ145",  # P17 is not in the relation file: dropped
    "Q42\tP31\tQ99999",  # unknown tail: dropped
    "Q350\tP31\tQ3918",
]
TEXTS = [
    "Q42\tDouglas Noël Adams was an English author. He wrote The Hitchhiker's Guide to the Galaxy. "
    "Adams was born in Cambridge. He studied at St John's College. He died in 2001. "
    "His ashes are in Highgate Cemetery. A dolphin was named after him.",
    "Q145\tThe United Kingdom is a country in Europe.",
    "Q350\tCambridge is a city in England. It is home to a university.",
    "Q77777\tAn entity that is not in the entity file.",
]


def write_sample(d: Path, *, triples_name: str = "wikidata5m_transductive_train.txt") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "wikidata5m_entity.txt").write_text("\n".join(ENTITIES) + "\n")
    (d / "wikidata5m_relation.txt").write_text("\n".join(RELATIONS) + "\n")
    (d / triples_name).write_text("\n".join(TRIPLES) + "\n")
    (d / "wikidata5m_text.txt").write_text("\n".join(TEXTS) + "\n")
    return d


def test_loads_entities_triples_and_documents(tmp_path):
    w = load_wikidata5m(write_sample(tmp_path))
    assert w.source == "wikidata5m"
    assert set(w.entities) == {"Q42", "Q5", "Q145", "Q350", "Q3918"}
    adams = w.entities["Q42"]
    assert adams.name == "Douglas Adams"
    assert adams.aliases == ["Douglas Noel Adams", "DNA"]
    assert adams.type == EntityType.entity
    assert {(t.head, t.relation, t.tail) for t in w.triples} == {
        ("Q42", "P31", "Q5"),
        ("Q42", "P27", "Q145"),
        ("Q42", "P19", "Q350"),
        ("Q350", "P31", "Q3918"),
    }
    # one page per entity with a description; entities without one get none
    assert sorted(d.about for d in w.documents.values()) == ["Q145", "Q350", "Q42"]
    page = w.primary_doc("Q42")
    assert page.domain == "en.wikipedia.org" and page.tier == Tier.high and page.authority == 1.0
    assert page.title == "Douglas Adams"
    assert page.url.endswith("/Q42")
    assert len(page.paragraphs) == 3  # 7 sentences, grouped by 3
    assert page.paragraphs[0].startswith("Douglas Noël Adams was an English author.")
    assert page.links == [w.primary_doc("Q145").doc_id, w.primary_doc("Q350").doc_id]
    assert len({d.url for d in w.documents.values()}) == len(w.documents)


def test_max_entities_keeps_the_first_n(tmp_path):
    w = load_wikidata5m(write_sample(tmp_path), max_entities=3)
    assert list(w.entities) == sorted(["Q42", "Q5", "Q145"])
    assert {(t.head, t.tail) for t in w.triples} == {("Q42", "Q5"), ("Q42", "Q145")}
    assert sorted(d.about for d in w.documents.values()) == ["Q145", "Q42"]


def test_round_trips_through_save_and_load(tmp_path):
    w = load_wikidata5m(write_sample(tmp_path / "raw"))
    w.save(tmp_path / "world")
    back = World.load(tmp_path / "world")
    assert back.source == "wikidata5m"
    assert back.documents == w.documents and back.triples == w.triples


def test_other_train_file_name_and_gzip(tmp_path):
    d = write_sample(tmp_path, triples_name="wikidata5m_inductive_train.txt")
    text = d / "wikidata5m_text.txt"
    with gzip.open(d / "wikidata5m_text.txt.gz", "wt", encoding="utf-8") as f:
        f.write(text.read_text())
    text.unlink()
    w = load_wikidata5m(d)
    assert len(w.triples) == 4 and len(w.documents) == 3


@pytest.mark.parametrize(
    ("name", "lines", "where"),
    [
        ("wikidata5m_entity.txt", ENTITIES[:2] + ["Q145"] + ENTITIES[3:], "wikidata5m_entity.txt:3"),
        ("wikidata5m_entity.txt", ENTITIES + ["X1\tnot a q-id"], "wikidata5m_entity.txt:6"),
        ("wikidata5m_entity.txt", ENTITIES + ["Q42\tDouglas Adams again"], "wikidata5m_entity.txt:6"),
        ("wikidata5m_relation.txt", RELATIONS + ["P99"], "wikidata5m_relation.txt:4"),
        (
            "wikidata5m_transductive_train.txt",
            TRIPLES[:1] + ["Q42\tP31"] + TRIPLES[1:],
            "wikidata5m_transductive_train.txt:2",
        ),
        ("wikidata5m_text.txt", ["Q42 without a tab"] + TEXTS, "wikidata5m_text.txt:1"),
    ],
)
def test_malformed_line_is_skipped_counted_and_located(tmp_path, name, lines, where):
    """A malformed line no longer aborts the load: it is skipped, counted, and shown as file:line."""
    from deepresearch.world.wikidata5m import LoadReport

    d = write_sample(tmp_path)
    (d / name).write_text("\n".join(lines) + "\n")
    report = LoadReport("wikidata5m")
    world = load_wikidata5m(d, report=report)
    assert report.malformed == 1 and report.malformed_by_file == {name: 1}
    assert any(where in e and "malformed line" in e for e in report.examples)
    assert where in report.summary()
    assert "Q42" in world.entities and "Q350" in world.entities  # the good lines around it still load


def test_dropped_triples_are_counted_by_reason(tmp_path):
    from deepresearch.world.wikidata5m import LoadReport

    report = LoadReport("wikidata5m")
    load_wikidata5m(write_sample(tmp_path), report=report)
    # P17 is not in the relation file; Q99999 is not in the entity file
    assert report.dropped_triples == {"missing_entity": 1, "missing_relation": 1}
    assert report.malformed == 0


def test_entity_file_without_a_valid_line_is_an_error(tmp_path):
    d = write_sample(tmp_path)
    (d / "wikidata5m_entity.txt").write_text("X1\tnot a q-id\nQ5\n")
    with pytest.raises(WorldError, match="no valid entity") as err:
        load_wikidata5m(d)
    assert "wikidata5m_entity.txt:1" in str(err.value) and "wikidata5m_entity.txt:2" in str(err.value)


@pytest.mark.parametrize(
    "name",
    [
        "wikidata5m_entity.txt",
        "wikidata5m_relation.txt",
        "wikidata5m_text.txt",
        "wikidata5m_transductive_train.txt",
    ],
)
def test_missing_file_is_named(tmp_path, name):
    d = write_sample(tmp_path)
    (d / name).unlink()
    with pytest.raises(WorldError, match="missing") as err:
        load_wikidata5m(d)
    assert ("wikidata5m_transductive_train.txt" if "train" in name else name) in str(err.value)


def test_missing_directory(tmp_path):
    with pytest.raises(WorldError, match="not found"):
        load_wikidata5m(tmp_path / "nowhere")


def test_split_paragraphs():
    assert split_paragraphs("One. Two! Three? Four.", per_paragraph=2) == ["One. Two!", "Three? Four."]
    assert split_paragraphs("No sentence end") == ["No sentence end"]
    assert split_paragraphs("It cost 3.5 dollars. Then it rose.", per_paragraph=1) == [
        "It cost 3.5 dollars.",
        "Then it rose.",
    ]
