"""CN-DBpedia loader on a sample in exactly the dump's format (UTF-8, subject TAB predicate TAB object)."""

from __future__ import annotations

import gzip

import pytest

from deepresearch.errors import WorldError
from deepresearch.world.cndbpedia import load_cndbpedia, split_name
from deepresearch.world.schema import World
from deepresearch.world.wikidata5m import LoadReport

SAMPLE = [
    "刘德华（中国香港男演员、歌手、词作人）\t中文名\t刘德华",
    "刘德华（中国香港男演员、歌手、词作人）\t外文名\tAndy Lau",
    "刘德华（中国香港男演员、歌手、词作人）\t出生日期\t1961年9月27日",
    "刘德华（中国香港男演员、歌手、词作人）\t代表作品\t无间道",
    "无间道\t导演\t刘伟强",
    "无间道\t上映时间\t2002年12月12日",
    "刘伟强\t职业\t导演",
]


def test_sample_loads_entities_relations_attributes_and_pages(tmp_path):
    path = tmp_path / "baike_triples.txt"
    path.write_text("\n".join(SAMPLE) + "\n", encoding="utf-8")
    world = load_cndbpedia(path)
    by_name = {e.name: e for e in world.entities.values()}
    assert set(by_name) == {"刘德华", "无间道", "刘伟强"}
    andy = by_name["刘德华"]
    assert andy.id == "C0000001" and andy.description == "中国香港男演员、歌手、词作人"
    assert andy.aliases == ["Andy Lau"] and andy.attributes["出生日期"] == "1961年9月27日"
    # objects that are subjects are relations, the rest attributes
    rels = {(world.entities[t.head].name, t.relation, world.entities[t.tail].name) for t in world.triples}
    assert rels == {("刘德华", "代表作品", "无间道"), ("无间道", "导演", "刘伟强")}
    page = world.primary_doc(andy.id)
    assert page.url == "https://baike.baidu.com/item/C0000001" and "刘德华的出生日期是1961年9月27日。" in "".join(page.paragraphs)
    assert page.links == [world.primary_doc(by_name["无间道"].id).doc_id]
    assert any(c.predicate == "代表作品" and c.value == by_name["无间道"].id for c in page.claims)
    # round trip through the world directory format
    world.save(tmp_path / "world")
    again = World.load(tmp_path / "world")
    assert again.entities == world.entities and again.triples == world.triples


def test_malformed_lines_are_skipped_with_file_line_examples(tmp_path):
    path = tmp_path / "baike_triples.txt.gz"
    lines = SAMPLE[:2] + ["只有两列\t没有宾语", "\t空主语\t值"] + SAMPLE[2:]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    report = LoadReport("cndbpedia")
    world = load_cndbpedia(path, report=report)
    assert report.malformed == 2
    assert f"{path}:3" in report.examples[0] and f"{path}:4" in report.examples[1]
    assert len(world.entities) == 3


def test_no_valid_triple_and_missing_file_are_errors(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("坏行\n", encoding="utf-8")
    with pytest.raises(WorldError, match="no valid triple"):
        load_cndbpedia(path)
    with pytest.raises(WorldError, match="not found"):
        load_cndbpedia(tmp_path / "missing.txt")


def test_split_name():
    assert split_name("无间道") == ("无间道", "")
    assert split_name("长城（中国古代军事防御工程）") == ("长城", "中国古代军事防御工程")
