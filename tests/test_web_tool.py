"""The batch_web_surfer tool: search + open, error entries, opened-docs bookkeeping, argument errors."""

from __future__ import annotations

import pytest

from deepresearch.agent.tools.base import EpisodeContext
from deepresearch.agent.tools.web import BatchWebSurfer, Hit, parse_hits
from deepresearch.config import AgentConfig, SearchConfig, WorldConfig
from deepresearch.errors import ToolError
from deepresearch.search.embedded import EmbeddedSearch, build_index
from deepresearch.world.generator import generate_world


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    world = generate_world(WorldConfig(entities_per_type=6, seed=4))
    world_dir = tmp_path_factory.mktemp("world")
    world.save(world_dir)
    build_index(world, world_dir / "index", SearchConfig())
    return EmbeddedSearch(SearchConfig(), world_dir, world=world)


@pytest.fixture
def ctx(tmp_path, backend) -> EpisodeContext:
    return EpisodeContext(workspace=tmp_path, agent=AgentConfig(search_k=3), search=backend)


def call(ctx: EpisodeContext, **arguments) -> str:
    return BatchWebSurfer()(arguments, ctx)


def blocks(text: str) -> list[list[str]]:
    """The observation's blocks (one per query and per opened page), each as its lines."""
    return [b.split("\n") for b in text.split("\n\n")]


def test_search_and_open_in_one_call(ctx, backend):
    entity = next(iter(backend.world.entities.values()))
    ref = backend.world.primary_doc(entity.id)
    out = call(ctx, search=[entity.description, entity.name], open=[ref.doc_id])
    first, second, page = blocks(out)
    assert first[0] == f"search: {entity.description}" and second[0] == f"search: {entity.name}"
    for block in (first, second):
        hits = block[1:]
        assert 0 < len(hits) // 2 <= ctx.agent.search_k and len(hits) % 2 == 0  # header + paragraph per hit
        for header, paragraph in zip(hits[::2], hits[1::2]):
            doc = backend.world.documents[header[1:].split("]")[0]]
            assert header == f"[{doc.doc_id}] {doc.title} | {doc.domain} | authority {doc.authority:g}"
            assert paragraph in doc.paragraphs
    hits = parse_hits(out)
    assert ref.doc_id in [h.doc_id for h in hits if not h.opened][: ctx.agent.search_k]
    assert page == [
        f"open: [{ref.doc_id}] {ref.title} | {ref.domain} | authority {ref.authority:g} | {ref.year}",
        *ref.paragraphs,
    ]
    assert hits[-1] == Hit(ref.doc_id, ref.title, ref.domain, ref.authority, True, "\n".join(ref.paragraphs))
    # each hit carries the paragraph printed under its header, which the scripted expert reads
    assert [h.text for h in hits[: len(first) // 2]] == first[2::2]
    assert ctx.opened_docs == [ref.doc_id]


def test_explicit_k_and_search_only(ctx, backend):
    entity = list(backend.world.entities.values())[3]
    out = call(ctx, search=[entity.name], k=1)
    assert len(blocks(out)) == 1 and len(parse_hits(out)) == 1 and not parse_hits(out)[0].opened
    assert ctx.opened_docs == []  # searching does not count as opening


def test_open_by_url_records_the_doc_id(ctx, backend):
    doc = list(backend.world.documents.values())[4]
    out = call(ctx, open=[doc.url, doc.doc_id])
    assert [h.doc_id for h in parse_hits(out)] == [doc.doc_id, doc.doc_id]
    assert ctx.opened_docs == [doc.doc_id]


def test_unknown_doc_id_is_an_error_entry(ctx, backend):
    first = next(iter(backend.world.documents))
    out = call(ctx, open=[first, "D9999999"])
    assert [h.doc_id for h in parse_hits(out)] == [first]
    assert blocks(out)[1] == ["open: [D9999999] error: no such document (open a doc_id from search results)"]
    assert ctx.opened_docs == [first]
    out = call(ctx, search=["anything"], open=["D9999999"])  # a search still answers: no exception
    assert "no such document" in blocks(out)[-1][0]


def test_all_opens_failing_without_search_is_a_tool_error(ctx):
    with pytest.raises(ToolError, match="none of the requested pages exist"):
        call(ctx, open=["D9999999", "https://nowhere.example/page"])
    assert ctx.opened_docs == []


def test_no_search_backend_is_a_tool_error(tmp_path):
    ctx = EpisodeContext(workspace=tmp_path, agent=AgentConfig(), search=None)
    with pytest.raises(ToolError, match="no search backend"):
        call(ctx, search=["anything"])


@pytest.mark.parametrize(
    "arguments",
    [
        {},
        {"search": [], "open": []},
        {"search": "not a list"},
        {"search": [f"q{i}" for i in range(9)]},
        {"open": [f"D{i:07d}" for i in range(9)]},
        {"search": ["x"], "k": 0},
        {"search": ["x"], "depth": 2},
    ],
)
def test_invalid_arguments_are_tool_errors(ctx, arguments):
    with pytest.raises(ToolError, match="invalid arguments for batch_web_surfer"):
        BatchWebSurfer()(arguments, ctx)


def test_schema_is_a_function_schema():
    schema = BatchWebSurfer.schema()
    assert schema["function"]["name"] == "batch_web_surfer"
    props = schema["function"]["parameters"]["properties"]
    assert set(props) == {"search", "open", "k"}
    assert props["search"]["maxItems"] == 8 and props["open"]["maxItems"] == 8
