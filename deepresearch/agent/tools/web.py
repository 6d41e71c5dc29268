"""The `batch_web_surfer` tool: batched web search and page opening in one call.

    <tool_call>{"name": "batch_web_surfer",
                "arguments": {"search": ["a chemist born in 1932"], "open": ["D0000016"]}}</tool_call>

Observation (compact JSON):
    {"search": [{"query": q, "results": [{doc_id, title, domain, authority, score, paragraph}, ...]}],
     "open":   [{doc_id, url, title, domain, authority, year, paragraphs: [...]}
                | {"doc_id": x, "error": "no such document ..."}]}

Opening a page records it in `ctx.opened_docs` (citations are checked against it). An unknown
doc id is an error entry, not a failure, unless nothing at all could be served.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from deepresearch.agent.tools.base import EpisodeContext, Tool, ToolArgs, dumps_observation, register_tool
from deepresearch.errors import ToolError

MAX_QUERIES = 8
MAX_OPENS = 8


class BatchWebSurferArgs(ToolArgs):
    search: list[str] = Field(
        default_factory=list, max_length=MAX_QUERIES, description="search queries, run together (at most 8)"
    )
    open: list[str] = Field(
        default_factory=list, max_length=MAX_OPENS, description="doc ids or URLs of pages to open (at most 8)"
    )
    k: int | None = Field(None, ge=1, le=50, description="results per query (default: the agent's search_k)")

    @model_validator(mode="after")
    def _something_to_do(self) -> BatchWebSurferArgs:
        if not self.search and not self.open:
            raise ValueError("give at least one query in `search` or one doc id/URL in `open`")
        return self


@register_tool
class BatchWebSurfer(Tool):
    name = "batch_web_surfer"
    description = (
        "Search the web and/or open pages in one call. `search`: up to 8 queries; each returns the best "
        "matching paragraphs with their page's doc_id, domain and authority (0-1, higher is more "
        "trustworthy). `open`: up to 8 doc ids or URLs; returns the full page. Cite pages as \\cite{doc_id}."
    )
    Args = BatchWebSurferArgs

    def run(self, args: BatchWebSurferArgs, ctx: EpisodeContext) -> str:
        """Run the searches, then open the pages; returns the JSON observation."""
        if ctx.search is None:
            raise ToolError("batch_web_surfer is unavailable: this episode has no search backend")
        if not args.search and not args.open:
            raise ToolError("batch_web_surfer needs at least one query in `search` or one doc id in `open`")
        k = args.k if args.k is not None else ctx.agent.search_k

        searched = []
        if args.search:
            for query, hits in zip(args.search, ctx.search.search_batch(list(args.search), k)):
                searched.append(
                    {
                        "query": query,
                        "results": [
                            {
                                "doc_id": h.doc_id,
                                "title": h.title,
                                "domain": h.domain,
                                "authority": h.authority,
                                "score": round(h.score, 3),
                                "paragraph": h.paragraph,
                            }
                            for h in hits
                        ],
                    }
                )

        opened = []
        for ref in args.open:
            doc = ctx.search.get_document(ref)
            if doc is None:
                opened.append(
                    {
                        "doc_id": ref,
                        "error": f"no such document: {ref!r} (use a doc_id or URL from search results)",
                    }
                )
                continue
            ctx.note_opened(doc.doc_id)
            opened.append(
                {
                    "doc_id": doc.doc_id,
                    "url": doc.url,
                    "title": doc.title,
                    "domain": doc.domain,
                    "authority": doc.authority,
                    "year": doc.year,
                    "paragraphs": list(doc.paragraphs),
                }
            )
        if args.open and not args.search and all("error" in o for o in opened):
            raise ToolError(
                f"none of the requested pages exist: {', '.join(repr(r) for r in args.open)}; "
                "open doc_ids or URLs taken from search results"
            )
        return dumps_observation({"search": searched, "open": opened})
