"""The scripted expert: a policy that knows the world and acts like a careful researcher.

It plans with `todo`, searches and opens sources with `batch_web_surfer` (choosing documents from
the search results it sees), cross-checks figures against higher-authority pages, drafts the report
with `file`, revises it with a search/replace patch, checks it with `shell`, and answers with
`\\cite{doc_id}` citations. Its trajectories are the synthesis stage's training data.

Per-episode randomness (seeded by the caller) adds:
  - injected tool errors (malformed JSON, a wrong argument name, a missing document) followed by a
    recovery turn, at `tool_error_rate` per step;
  - detours (an extra, unneeded search) at `detour_rate`, so attempts differ in length.
"""

from __future__ import annotations

import json
import random
from typing import Any, Generator

from deepresearch.agent.policies.base import PolicyName, register_policy
from deepresearch.agent.schema import Message, ToolCall
from deepresearch.agent.tools.web import parse_hits
from deepresearch.config import AgentConfig
from deepresearch.synthesis.phrasing import attribute_phrase, relation_phrase
from deepresearch.synthesis.report import draft_lines, plan_report, render_report, revision_lines
from deepresearch.synthesis.schema import DeepSearchTask, ResearchTask
from deepresearch.world.generator import format_value
from deepresearch.world.schema import Document, Entity, World

Script = Generator[str, list[Message], None]


def _call(name: str, **arguments: Any) -> str:
    return ToolCall(name=name, arguments=arguments).render()


def _parse_obs(msg: Message) -> dict[str, Any] | None:
    """A JSON observation (the file tool's), else None."""
    if msg.is_error:
        return None
    try:
        obj = json.loads(msg.content)
    except json.JSONDecodeError:
        return None  # summarized to a file, or not JSON
    return obj if isinstance(obj, dict) else None


def _turn(thought: str, *calls: str) -> str:
    """An assistant turn as Qwen2.5 renders a message with tool calls: the text, then each call on its own lines."""
    return "\n".join([thought, *calls])


class ScriptedExpert:
    """Knows the world; see the module docstring. Deterministic given `reset(task, seed=...)`."""

    name = "scripted"

    def __init__(self, cfg: AgentConfig, world: World, *, tool_error_rate: float = 0.0, detour_rate: float = 0.0):
        if world is None:
            raise ValueError("the scripted expert needs a world (pass --world DIR)")
        self.cfg = cfg
        self.world = world
        self.tool_error_rate = tool_error_rate
        self.detour_rate = detour_rate
        self._script: Script | None = None
        self._seen = 0
        self._names = sorted(
            ((e.name.lower(), e.id) for e in world.entities.values()), key=lambda x: (-len(x[0]), x[1])
        )
        self.injected_errors = 0

    # ---- Policy protocol -----------------------------------------------------------------
    def reset(self, task: DeepSearchTask | ResearchTask | str, *, seed: str = "") -> None:
        self.rng = random.Random(f"scripted:{seed}")
        self.injected_errors = 0
        self._seen = 0
        self._candidates: list[Document] = []  # other pages on the entity the last search showed
        if isinstance(task, DeepSearchTask):
            self._script = self._deep_search(task)
        elif isinstance(task, ResearchTask):
            self._script = self._research(task.about or self._entity_for_text(task.prompt), task.prompt)
        else:
            self._script = self._research(self._entity_for_text(str(task)), str(task))
        self._started = False

    def act(self, messages: list[Message], tools: list[dict[str, Any]]) -> str:
        assert self._script is not None, "call reset(task) before act()"
        new = messages[self._seen :]
        self._seen = len(messages) + 1  # +1: the assistant message the loop appends next
        if messages and messages[-1].role == "user" and messages[-1].content.startswith("Budget exhausted"):
            return self._forced_answer()
        try:
            if not self._started:
                self._started = True
                return next(self._script)
            return self._script.send([m for m in new if m.role == "tool"])
        except StopIteration:
            return "<answer>I could not complete the research.</answer>"

    # ---- helpers -------------------------------------------------------------------------
    def _entity_for_text(self, text: str) -> str | None:
        low = text.lower()
        for name, eid in self._names:
            if name in low:
                return eid
        return None

    def _maybe_error(self, kind: str) -> str | None:
        """With probability tool_error_rate, a faulty call of the kind about to be made."""
        if self.rng.random() >= self.tool_error_rate:
            return None
        self.injected_errors += 1
        variant = self.rng.randrange(3)
        if variant == 0:  # malformed JSON: the closing braces are missing
            return '<tool_call>\n{"name": "batch_web_surfer", "arguments": {"search": ["' + kind + '"]\n</tool_call>'
        if variant == 1:  # wrong argument name
            return _call("batch_web_surfer", query=[kind])
        return _call("batch_web_surfer", open=["D9999999"])  # a document that does not exist

    def _step(self, thought: str, call: str, kind: str, before: tuple[str, ...] = ()) -> Script:
        """Yield one action (after the calls `before`, in the same turn), preceded (sometimes) by a
        faulty call and a recovery turn."""
        bad = self._maybe_error(kind)
        if bad is not None:
            obs = yield _turn(thought, *before, bad)
            err = next((m.content[:160] for m in obs if m.is_error), "the call failed")
            thought, before = f"The previous call failed ({err}). Retrying with a corrected call.", ()
        return (yield _turn(thought, *before, call))

    def _search_and_pick(
        self, query: str, wanted: list[Document], thought: str, before: tuple[str, ...] = ()
    ) -> Script:
        """Search, then return the most authoritative `wanted` page among the hits (else the top wanted)."""
        obs = yield from self._step(thought, _call("batch_web_surfer", search=[query]), query, before)
        wanted_ids = {d.doc_id: d for d in wanted}
        self._candidates = []
        for m in obs:
            if m.is_error or m.name != "batch_web_surfer":
                continue
            hits = [h for h in parse_hits(m.content) if h.doc_id in wanted_ids and not h.opened]
            if hits:
                best = max(hits, key=lambda h: (h.authority, -hits.index(h)))
                # the other pages on the entity among the hits, in hit order: a second source it can see
                self._candidates = [wanted_ids[h.doc_id] for h in hits if h is not best]
                return wanted_ids[best.doc_id]
        return wanted[0]

    def _detour(self, entity: Entity) -> Script:
        if self.rng.random() < self.detour_rate:
            q = f"{entity.name} news"
            yield _turn("Let me also look for recent coverage.", _call("batch_web_surfer", search=[q], k=3))

    def _forced_answer(self) -> str:
        return "<answer>Budget exhausted before the research was complete.</answer>"

    # ---- deep search ---------------------------------------------------------------------
    def _deep_search(self, task: DeepSearchTask) -> Script:
        w = self.world
        path = [w.entities[e] for e in task.path]
        rels = {(t.head, t.tail): t.relation for t in task.subgraph}
        steps = [f"Identify {path[0].description}"] + [
            f"Find the {relation_phrase(rels.get((a.id, b.id), 'related'))} of {('it' if i else 'that ' + a.type.value)}"
            for i, (a, b) in enumerate(zip(path, path[1:]))
        ] + ["Verify the answer against an authoritative source and answer"]
        yield _turn("I will plan the search first.", _call("todo", action="add", steps=steps))

        cited: list[str] = []
        start = path[0]
        doc = yield from self._search_and_pick(
            start.description, w.docs_about(start.id), f"First I need to identify {start.description}."
        )
        yield from self._step(
            f"This result looks like the entity described. Opening {doc.doc_id}.",
            _call("batch_web_surfer", open=[doc.doc_id]),
            doc.doc_id,
        )
        cited.append(doc.doc_id)
        yield from self._detour(start)
        for i, (a, b) in enumerate(zip(path, path[1:]), start=2):
            phrase = relation_phrase(rels.get((a.id, b.id), "related"))
            doc = yield from self._search_and_pick(
                b.name,
                w.docs_about(b.id),
                f"{a.name}'s {phrase} is {b.name}. Next I look up {b.name}.",
                before=(_call("todo", action="update", id=i - 1, status="done"),),
            )
            yield from self._step(
                f"Opening the most authoritative page on {b.name}.",
                _call("batch_web_surfer", open=[doc.doc_id]),
                doc.doc_id,
            )
            cited.append(doc.doc_id)
        answer_entity = path[-1]
        attr = task.answer_attribute
        # the answer as the reference page writes it ("119,000"; exact match ignores the comma), so it is
        # copied from the page, not re-formatted
        answer = format_value(attr, int(task.answer)) if attr and task.answer.isdigit() else task.answer
        # An attribute answer is stated as soon as its page has been read (the page just opened is the
        # nearest place to copy it from), then cross-checked on a second source: preferably one the
        # search results showed, else the entity's next page.
        found = f" {answer_entity.name}'s {attribute_phrase(attr)} is {answer}." if attr else ""
        verify = [d for d in self._candidates if d.doc_id not in cited][:1] or [
            d for d in w.docs_about(answer_entity.id) if d.doc_id not in cited
        ][:1]
        if verify:
            obs = yield from self._step(
                f"{found.strip()} Cross-checking with a second source.".strip(),
                _call("batch_web_surfer", open=[verify[0].doc_id]),
                verify[0].doc_id,
                before=(_call("todo", action="update", id=len(path), status="in_progress"),),
            )
            del obs
        ref = w.primary_doc(answer_entity.id)
        note = ""
        if attr is not None and verify:
            other = next(
                (c for c in verify[0].claims if c.subject == answer_entity.id and c.predicate == attr), None
            )
            if other is not None and not other.correct:
                note = (
                    f" The {verify[0].tier.value}-authority page {verify[0].domain} gives {other.value}, which "
                    f"conflicts with the reference page; I trust the authoritative source \\cite{{{ref.doc_id}}}."
                )
        chain = "; ".join(
            f"{a.name} → {relation_phrase(rels.get((a.id, b.id), 'related'))} → {b.name}"
            for a, b in zip(path, path[1:])
        )
        evidence = " ".join(f"\\cite{{{d}}}" for d in cited)
        yield f"The chain is: {chain}.{found}{note} Evidence: {evidence}.\n<answer>{answer}</answer>"

    # ---- deep research -------------------------------------------------------------------
    def _research(self, entity_id: str | None, prompt: str) -> Script:
        w = self.world
        if entity_id is None:
            # Unknown subject: search the prompt and research the entity of the top hit.
            obs = yield _turn(
                "I will start by searching for the topic.", _call("batch_web_surfer", search=[prompt[:200]])
            )
            for m in obs:
                for h in [] if m.is_error else parse_hits(m.content):
                    d = w.documents.get(h.doc_id)
                    if d is not None and d.about and entity_id is None:
                        entity_id = d.about
            if entity_id is None:
                yield "<answer>I found no sources on this topic in the available corpus.</answer>"
                return
        e = w.entities[entity_id]
        yield _turn(f"I will research {e.name} and plan the work.", _call(
            "todo",
            action="add",
            steps=[
                f"Collect sources on {e.name}",
                "Cross-check figures against authoritative sources",
                "Draft the report",
                "Revise, verify citations and answer",
            ],
        ))
        ref = yield from self._search_and_pick(e.name, w.docs_about(e.id), f"Searching for sources on {e.name}.")
        plan = plan_report(w, e.id, ref)
        opened = [ref, *plan.others]
        yield from self._step(
            f"Opening the reference page and {len(plan.others)} secondary sources.",
            _call("batch_web_surfer", open=[d.doc_id for d in opened]),
            ref.doc_id,
        )
        yield from self._detour(e)

        # Cross-check: attributes a lower-authority page claims differently; related entities' pages.
        if plan.conflicts or plan.tail_docs:
            thought = (
                f"{plan.conflicts[0][2].domain} disagrees with the reference page on the "
                f"{attribute_phrase(plan.conflicts[0][0])}; checking related authoritative pages."
                if plan.conflicts
                else "Checking the authoritative pages of related entities."
            )
            yield from self._step(
                thought,
                _call("batch_web_surfer", open=[d.doc_id for d in plan.tail_docs] or [ref.doc_id]),
                e.name,
                before=(_call("todo", action="update", id=1, status="done"),),
            )

        # Draft: one fact per line, each cited.
        lines = draft_lines(plan)
        draft = "\n".join(lines) + "\n"
        yield from self._step(
            "Writing the first draft.",
            _call("file", action="write", path="report.md", content=draft),
            "report.md",
            before=(_call("todo", action="update", id=2, status="done"),),
        )

        # Revise: add the verification section and references with a search/replace patch.
        revision = revision_lines(plan)
        last = lines[-1]
        patch = f"<<<<<<< SEARCH\n{last}\n=======\n{last}\n" + "\n".join(revision) + "\n>>>>>>> REPLACE"
        yield from self._step(
            "Adding the verification notes and references.",
            _call("file", action="patch", path="report.md", patch=patch),
            "report.md",
            before=(_call("todo", action="update", id=3, status="done"),),
        )
        yield _turn("Checking the length of the report.", _call("shell", command="wc -w report.md"))
        # Read the report back, page by page (the file tool pages long files).
        parts: list[str] = []
        offset: int | None = 0
        while offset is not None:
            args = {"action": "read", "path": "report.md"} | ({"offset": offset} if offset else {})
            obs = yield _turn("Reading the final report." if not offset else "Reading the rest.", _call("file", **args))
            data = next((d for d in map(_parse_obs, obs) if d and isinstance(d.get("content"), str)), None)
            if data is None:
                parts = []
                break
            parts.append(data["content"])
            offset = data.get("next_offset")
        report = "".join(parts)
        if not report:  # the read failed: fall back to what was written
            report = render_report(plan)
        yield f"The report is complete and every fact is cited.\n<answer>\n{report.strip()}\n</answer>"


@register_policy(PolicyName.scripted)
def _make_scripted(cfg: AgentConfig, world: World | None) -> ScriptedExpert:
    return ScriptedExpert(cfg, world)

