"""The `batch_web_surfer` tool: batched web search and page opening in one call.

    <tool_call>
    {"name": "batch_web_surfer", "arguments": {"search": ["a chemist born in 1932"], "open": ["D0000016"]}}
    </tool_call>

The observation is compact text, one block per query and per opened page, blank-line separated:
a header line per page, `[doc_id] title | domain | authority a` (opened pages add `| year`), then
its text (the matching paragraph for a search hit, every paragraph for an opened page):

    search: a chemist born in 1932
    [D0000016] Ada Brell: official record | registry.gov.example | authority 1
    Ada Brell is a chemist born in 1932. ...

    open: [D0000016] Ada Brell: official record | registry.gov.example | authority 1 | 2021
    Ada Brell is a chemist born in 1932. ...
    Ada Brell was born in the town of ...

Nothing in it is markup the model must reproduce, so a small model spends its context on the
evidence: an expert deep-search episode is about a quarter of the tokens it took as JSON
(measured in the README's "Learning signal"). `parse_hits` reads the header lines back.

Opening a page records it in `ctx.opened_docs` (citations are checked against it). An unknown
doc id is an error entry, not a failure, unless nothing at all could be served.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from pydantic import Field, model_validator

from deepresearch.agent.tools.base import EpisodeContext, Tool, ToolArgs, register_tool
from deepresearch.errors import ToolError

if TYPE_CHECKING:
    from deepresearch.search.backend import SearchHit
    from deepresearch.world.schema import Document

MAX_QUERIES = 8
MAX_OPENS = 8


class BatchWebSurferArgs(ToolArgs):
    search: list[str] = Field(
        default_factory=list, max_length=MAX_QUERIES, description="queries"
    )
    open: list[str] = Field(
        default_factory=list, max_length=MAX_OPENS, description="doc ids (or URLs)"
    )
    k: int | None = Field(None, ge=1, le=50, description="results per query")

    @model_validator(mode="after")
    def _something_to_do(self) -> BatchWebSurferArgs:
        if not self.search and not self.open:
            raise ValueError("give at least one query in `search` or one doc id/URL in `open`")
        return self


@register_tool
class BatchWebSurfer(Tool):
    name = "batch_web_surfer"
    description = (
        "Search and/or open pages. search: queries; each returns the best matching paragraphs, each "
        "under its page's [doc_id], title, domain and authority (0-1, higher is more trustworthy). "
        "open: doc ids; returns the whole page."
    )
    Args = BatchWebSurferArgs

    def run(self, args: BatchWebSurferArgs, ctx: EpisodeContext) -> str:
        """Run the searches, then open the pages; returns the observation text."""
        if ctx.search is None:
            raise ToolError("batch_web_surfer is unavailable: this episode has no search backend")
        if not args.search and not args.open:
            raise ToolError("batch_web_surfer needs at least one query in `search` or one doc id in `open`")
        k = args.k if args.k is not None else ctx.agent.search_k

        blocks = [
            render_search(query, hits)
            for query, hits in zip(args.search, ctx.search.search_batch(list(args.search), k) if args.search else [])
        ]
        n_missing = 0
        for ref in args.open:
            doc = ctx.search.get_document(ref)
            if doc is None:
                n_missing += 1
                blocks.append(f"open: [{ref}] error: no such document (open a doc_id from search results)")
                continue
            ctx.note_opened(doc.doc_id)
            blocks.append(render_page(doc))
        if args.open and not args.search and n_missing == len(args.open):
            raise ToolError(
                f"none of the requested pages exist: {', '.join(repr(r) for r in args.open)}; "
                "open doc_ids or URLs taken from search results"
            )
        return "\n\n".join(blocks)


def render_search(query: str, hits: Sequence[SearchHit]) -> str:
    """One query's block: `search: query`, then a header line and the matching paragraph per hit."""
    lines = [f"search: {query}"]
    for h in hits:
        lines += [_header(h.doc_id, h.title, h.domain, h.authority), h.paragraph]
    if not hits:
        lines.append("(no results)")
    return "\n".join(lines)


def render_page(doc: Document) -> str:
    """An opened page's block: `open: ` + its header line (with the year), then every paragraph."""
    return "open: " + _header(doc.doc_id, doc.title, doc.domain, doc.authority, doc.year) + "\n" + "\n".join(doc.paragraphs)


def _header(doc_id: str, title: str, domain: str, authority: float, year: int | None = None) -> str:
    """`[doc_id] title | domain | authority a[ | year]`: one line naming a page (see `parse_hits`)."""
    return f"[{doc_id}] {title} | {domain} | authority {authority:g}" + (f" | {year}" if year is not None else "")


_HEADER_RE = re.compile(r"^(?:open: )?\[([^\]\s]+)\] (.*) \| (\S+) \| authority ([0-9.]+)(?: \| (\d+))?$", re.MULTILINE)


class Hit(NamedTuple):
    """A page named in an observation, in order of appearance."""

    doc_id: str
    title: str
    domain: str
    authority: float
    opened: bool  # an opened page (else a search hit)
    text: str = ""  # the lines under the header: the matching paragraph of a hit, an opened page's text


def parse_hits(observation: str) -> list[Hit]:
    """The pages an observation of this tool names, in order (search hits and opened pages).

    The inverse of the header lines `run` writes; used by the scripted expert, which reads the
    observation as the model does instead of asking the search backend behind the agent's back.
    """
    heads = list(_HEADER_RE.finditer(observation))
    ends = [m.start() for m in heads[1:]] + [len(observation)]
    return [
        Hit(
            m.group(1), m.group(2), m.group(3), float(m.group(4)), m.group(0).startswith("open: "),
            # the lines up to the next header, less blank lines and the next query's `search: ` line
            "\n".join(ln for ln in observation[m.end() : end].split("\n") if ln and not ln.startswith("search: ")),
        )
        for m, end in zip(heads, ends)
    ]
