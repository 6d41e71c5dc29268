"""The scripted expert: a policy that knows the world and acts like a careful researcher.

It plans with `todo`, searches and opens sources with `batch_web_surfer` (choosing documents from
the search results it sees), cross-checks figures against higher-authority pages, drafts the report
with `file`, revises it with a search/replace patch, checks it with `shell`, and answers with
`\\cite{doc_id}` citations. Its trajectories are the synthesis stage's training data.

Deep search reads from paragraph-level retrieval, as the paper's knowledge-dense search does: a plan
step per "the X of" in the question, then per hop one search with the entity's name and the words
pages use for the relation (`Wivim Labs was founded by`), the fact restated from the most
authoritative hit that states it (a conflicting, less authoritative hit is named and overruled); a
page is opened only when the hits do not settle the fact. Measured on the tiny model (README,
"Learning signal"): an episode is ~20 % shorter, and the page-id copying that most failed episodes
went wrong on is gone from nearly every episode.

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
from deepresearch.synthesis.phrasing import (
    ATTRIBUTE_SENTENCE,
    attribute_phrase,
    attribute_sentence,
    relation_phrase,
    relation_sentence,
)
from deepresearch.synthesis.report import draft_lines, plan_report, render_report, revision_lines
from deepresearch.synthesis.schema import DeepSearchTask, ResearchTask
from deepresearch.world.generator import fact_words, format_value
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


def _hits(obs: list[Message]) -> list[Any]:
    """The pages the web tool's observations among `obs` name (search hits and opened pages), in order."""
    return [h for m in obs if not m.is_error and m.name == "batch_web_surfer" for h in parse_hits(m.content)]


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

    def _maybe_error(self, kind: str, tool: str = "batch_web_surfer") -> str | None:
        """With probability tool_error_rate, a faulty call of the `tool` call about to be made (`kind`:
        what it is about, for a web call the query a malformed call would carry)."""
        if self.rng.random() >= self.tool_error_rate:
            return None
        self.injected_errors += 1
        variant = self.rng.randrange(3)
        if tool == "todo":
            if variant == 0:  # malformed JSON: the closing braces are missing
                return '<tool_call>\n{"name": "todo", "arguments": {"action": "list"\n</tool_call>'
            if variant == 1:  # an action the tool does not have
                return _call("todo", action="done", id=1)
            return _call("todo", action="update", id=1, steps=[kind])  # an argument `update` does not take
        if variant == 0:  # malformed JSON: the closing braces are missing
            return '<tool_call>\n{"name": "batch_web_surfer", "arguments": {"search": ["' + kind + '"]\n</tool_call>'
        if variant == 1:  # wrong argument name
            return _call("batch_web_surfer", query=[kind])
        return _call("batch_web_surfer", open=["D9999999"])  # a document that does not exist

    def _step(
        self, thought: str, call: str, kind: str, before: tuple[str, ...] = (), tool: str = "batch_web_surfer"
    ) -> Script:
        """Yield one action (after the calls `before`, in the same turn), preceded (sometimes) by a
        faulty call of `tool` and a recovery turn."""
        bad = self._maybe_error(kind, tool)
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
        for m in obs:
            if m.is_error or m.name != "batch_web_surfer":
                continue
            hits = [h for h in parse_hits(m.content) if h.doc_id in wanted_ids and not h.opened]
            if hits:
                best = max(hits, key=lambda h: (h.authority, -hits.index(h)))
                return wanted_ids[best.doc_id]
        return wanted[0]

    def _detour(self, entity: Entity) -> Script:
        if self.rng.random() < self.detour_rate:
            q = f"{entity.name} news"
            yield _turn("Let me also look for recent coverage.", _call("batch_web_surfer", search=[q], k=3))

    def _forced_answer(self) -> str:
        return "<answer>Budget exhausted before the research was complete.</answer>"

    # ---- deep search ---------------------------------------------------------------------
    def _open_reference(self, entity: Entity) -> Script:
        """Open the entity's reference page: the search results did not settle what it needed."""
        ref = self.world.primary_doc(entity.id)
        yield from self._step(
            f"The results do not settle it. Opening {ref.doc_id}.", _call("batch_web_surfer", open=[ref.doc_id]), ref.doc_id
        )

    def _stated(self, hits: list[Any], subject: Entity, predicate: str, words: str) -> list[tuple[Any, str, bool]]:
        """(hit, value as written, correct) for each hit whose text states `predicate` of `subject`."""
        w = self.world
        out = []
        for h in hits:
            doc = w.documents.get(h.doc_id)
            claim = next((c for c in doc.claims if c.subject == subject.id and c.predicate == predicate), None) if doc else None
            if claim is None:
                continue
            value = w.entities[claim.value].name if claim.value in w.entities else (
                format_value(predicate, int(claim.value)) if claim.value.isdigit() else claim.value
            )
            if f"{subject.name} {words} {value}" in h.text:
                out.append((h, value, claim.correct))
        return out

    def _read_fact(
        self, subject: Entity, predicate: str, truth: str, thought: str, before: tuple[str, ...] = ()
    ) -> Script:
        """Search for a fact with the words its page uses and read it from the hits; returns the sentence
        that states it (with any conflict noticed on the way). The fact is read from the most
        authoritative hit that states it; when that hit is wrong, or none states it, or the world's pages
        have no sentence template for it (a loaded world), the subject's reference page is opened."""
        words = fact_words(subject.type, predicate)
        query = f"{subject.name} {words}" if words else subject.name
        obs = yield from self._step(thought, _call("batch_web_surfer", search=[query]), query, before)
        hits = _hits(obs)
        stated = self._stated(hits, subject, predicate, words) if words else []
        best = max(stated, key=lambda x: (x[0].authority, -stated.index(x)), default=None)
        if best is None or not best[2]:
            yield from self._open_reference(subject)
            sentence = (f"{subject.name} {words} {truth}." if words else
                        (attribute_sentence if predicate in ATTRIBUTE_SENTENCE else relation_sentence)(predicate, subject.name, truth) + ".")
            best = None
        else:
            sentence = f"{subject.name} {words} {best[1]}."
        conflict = next(((h, v) for h, v, _ in stated if v != truth), None)
        if conflict is not None:  # verification across sources: a conflicting, less authoritative page
            ref_domain = best[0].domain if best else self.world.primary_doc(subject.id).domain
            sentence += f" {conflict[0].domain} gives {conflict[1]}, but {ref_domain} is more authoritative."
        return sentence

    def _deep_search(self, task: DeepSearchTask) -> Script:
        """Identify the start entity from the search results, then one search per hop with the words the
        pages use for the relation (`Wivim Labs was founded by`), reading each fact from the paragraph the
        search returns and stating it; pages are opened only when the results do not settle a fact."""
        w = self.world
        path = [w.entities[e] for e in task.path]
        rels = {(t.head, t.tail): t.relation for t in task.subgraph}
        hops = [rels.get((a.id, b.id), "related") for a, b in zip(path, path[1:])]
        attr = task.answer_attribute
        # one step per "the X of" in the question, in the order they are resolved: each relation, then the
        # attribute asked for (without that step the plan hid the attribute in the last one)
        steps = [f"Identify {path[0].description}"] + [
            f"Find the {relation_phrase(r)} of {('it' if i else 'that ' + a.type.value)}"
            for i, (a, r) in enumerate(zip(path, hops))
        ] + ([f"Find the {attribute_phrase(attr)} of it"] if attr else []) + [
            "Verify the answer against an authoritative source and answer"
        ]
        yield _turn("I will plan the search first.", _call("todo", action="add", steps=steps))

        start = path[0]
        obs = yield from self._step(
            f"First I need to identify {start.description}.",
            _call("batch_web_surfer", search=[start.description]),
            start.description,
        )
        hits = _hits(obs)
        if not any(f"{start.name} is {start.description}" in h.text for h in hits):
            yield from self._open_reference(start)
        said = f"{start.name} is {start.description}."
        yield from self._detour(start)
        for i, (a, b, r) in enumerate(zip(path, path[1:], hops), start=1):
            said = yield from self._read_fact(
                a, r, b.name, f"{said} Next: the {relation_phrase(r)} of {a.name}.",
                before=(_call("todo", action="update", id=i, status="done"),),
            )
        answer_entity = path[-1]
        # the answer as the pages write it ("119,000"; exact match ignores the comma)
        answer = format_value(attr, int(task.answer)) if attr and task.answer.isdigit() else task.answer
        if attr:
            said = yield from self._read_fact(
                answer_entity, attr, answer, f"{said} Next: the {attribute_phrase(attr)} of {answer_entity.name}.",
                before=(_call("todo", action="update", id=len(path), status="done"),),
            )
        chain = "; ".join(f"{a.name} → {relation_phrase(r)} → {b.name}" for a, b, r in zip(path, path[1:], hops))
        yield f"{said} The chain is: {chain}.\n<answer>{answer}</answer>"

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

