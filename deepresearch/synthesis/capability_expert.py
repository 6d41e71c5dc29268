"""The scripted expert for the capability datasets: the same careful researcher as
`agent.policies.scripted.ScriptedExpert` (its tool-error injection and recovery, its search-then-
pick), with one script per new task kind. Deterministic given `reset(task, seed=...)`.

    expert = CapabilityExpert(cfg.agent, world, tool_error_rate=0.08, plan_deviation_rate=0.2)
    expert.reset(task, seed="11:pl-11-00000:0")
"""

from __future__ import annotations

import re

from deepresearch.agent.policies.scripted import Script, ScriptedExpert, _call, _parse_obs, _turn
from deepresearch.config import AgentConfig
from deepresearch.synthesis.capability_schema import (
    LongSummaryTask,
    PlanningTask,
    SubgraphTask,
    UrlQATask,
    VerificationTask,
    WikiWalkTask,
)
from deepresearch.synthesis.phrasing import attribute_phrase, attribute_sentence, relation_sentence
from deepresearch.world.schema import World

MAX_OPENS = 8
_STORED_RE = re.compile(r"saved to (outputs/\S+?\.txt)")


def _chunks(items: list[str], k: int = MAX_OPENS) -> list[list[str]]:
    return [items[i : i + k] for i in range(0, len(items), k)]


class CapabilityExpert(ScriptedExpert):
    """ScriptedExpert plus scripts for planning, subgraph, wiki-walk, verification, URL QA and long summaries."""

    def __init__(self, cfg: AgentConfig, world: World, *, tool_error_rate: float = 0.0, detour_rate: float = 0.0,
                 plan_deviation_rate: float = 0.0):
        super().__init__(cfg, world, tool_error_rate=tool_error_rate, detour_rate=detour_rate)
        self.plan_deviation_rate = plan_deviation_rate
        self.deviation: str | None = None

    def reset(self, task, *, seed: str = "") -> None:  # type: ignore[override]
        scripts = {PlanningTask: self._planning, SubgraphTask: self._subgraph, WikiWalkTask: self._wiki_walk,
                   VerificationTask: self._verification, UrlQATask: self._url_qa, LongSummaryTask: self._long_summary}
        make = scripts.get(type(task))
        if make is None:
            super().reset(task, seed=seed)
            return
        super().reset("", seed=seed)  # the rng, counters and state; the script is replaced below
        self.deviation = None
        self._script = make(task)

    # ---- planning ------------------------------------------------------------------------
    def _planning(self, task: PlanningTask) -> Script:
        w = self.world
        order = list(range(len(task.plan)))
        skipped: int | None = None
        if self.rng.random() < self.plan_deviation_rate:
            # a drifting researcher: skips a step or swaps two (what the consistency filter rejects)
            if self.rng.random() < 0.5 and len(order) > 1:
                i = self.rng.randrange(len(order) - 1)
                order[i], order[i + 1] = order[i + 1], order[i]
                self.deviation = "swapped"
            else:
                skipped = self.rng.randrange(len(order))
                order.remove(skipped)
                self.deviation = "skipped"
        steps = [s.goal for s in task.plan] + ["Write the report and answer"]
        yield _turn("The query fixes the report's structure; I turn it into a plan, one step per section.",
                    _call("todo", action="add", steps=steps))
        opened: set[str] = set()
        before: tuple[str, ...] = ()
        for i in order:
            step = task.plan[i]
            e = w.entities[step.entity]
            doc = yield from self._search_and_pick(
                e.name, [w.documents[step.doc_id]], f"Step {i + 1}: {step.goal}.", before)
            yield from self._step(f"Opening the reference page of {e.name}.",
                                  _call("batch_web_surfer", open=[doc.doc_id]), doc.doc_id)
            opened.add(doc.doc_id)
            before = (_call("todo", action="update", id=i + 1, status="done"),)
        report = task.report if skipped is None else task.report.replace(
            f" \\cite{{{task.plan[skipped].doc_id}}}", "")  # what was not read cannot be cited
        yield from self._step("All steps are done; writing the report.",
                              _call("file", action="write", path="report.md", content=report), "report.md", before)
        yield f"The report follows the plan section by section.\n<answer>\n{report.strip()}\n</answer>"

    # ---- subgraph questions --------------------------------------------------------------
    def _subgraph(self, task: SubgraphTask) -> Script:
        w = self.world
        steps = [f"Find the entities that satisfy: {c.text}" for c in task.constraints] + [
            "Intersect the candidate sets and answer"]
        yield _turn("Several conditions must hold at once; I will collect candidates per condition and intersect.",
                    _call("todo", action="add", steps=steps))
        remaining: set[str] | None = None
        cited: list[str] = []
        before: tuple[str, ...] = ()
        for i, c in enumerate(task.constraints, start=1):
            if c.anchor is not None:
                anchor = w.entities[c.anchor]
                doc = yield from self._search_and_pick(anchor.description, w.docs_about(anchor.id),
                                                       f"First I identify {anchor.description}.", before)
                yield from self._step(f"This is {anchor.name}. Opening {doc.doc_id}.",
                                      _call("batch_web_surfer", open=[doc.doc_id]), doc.doc_id)
                cited.append(doc.doc_id)
                kind = w.entities[task.target].type.value
                yield from self._step(f"Searching for the {kind}s linked to {anchor.name}.",
                                      _call("batch_web_surfer", search=[anchor.name], k=8), anchor.name)
            cands = set(c.candidates) if remaining is None else remaining & set(c.candidates)
            pages = [w.primary_doc(x).doc_id for x in sorted(c.candidates if remaining is None else cands)  # type: ignore[union-attr]
                     if w.primary_doc(x) is not None and w.primary_doc(x).doc_id not in cited]  # type: ignore[union-attr]
            for chunk in _chunks(pages):
                yield from self._step(f"Checking the candidates against: {c.text}.",
                                      _call("batch_web_surfer", open=chunk), chunk[0])
                cited.extend(chunk)
            names = ", ".join(w.entities[x].name for x in sorted(cands))
            before = (_call("todo", action="update", id=i, status="done"),)
            remaining = cands
            yield _turn(f"Candidates left after '{c.text}': {names}.", *before)
            before = ()
        ans = w.entities[task.target]
        ref = w.primary_doc(ans.id)
        evidence = " ".join(f"\\cite{{{d}}}" for d in [ref.doc_id] if d in cited)  # type: ignore[union-attr]
        yield f"Only {ans.name} satisfies every condition {evidence}.\n<answer>{task.answer}</answer>"

    # ---- wiki walks ----------------------------------------------------------------------
    def _wiki_walk(self, task: WikiWalkTask) -> Script:
        w = self.world
        yield _turn("I will follow the links page by page and read the two years at the ends.",
                    _call("todo", action="add", steps=[f"Open page {i + 1} of the walk" for i in range(len(task.walk))]
                          + ["Compute the difference and answer"]))
        first = w.documents[task.walk[0]]
        yield from self._step("Opening the start page.", _call("batch_web_surfer", open=[first.url]), first.doc_id)
        for i, (doc_id, eid) in enumerate(zip(task.walk[1:], task.entities[1:]), start=2):
            e = w.entities[eid]
            yield from self._step(f"The page links to {e.name} ({doc_id}); following the link.",
                                  _call("batch_web_surfer", open=[doc_id]), doc_id,
                                  before=(_call("todo", action="update", id=i - 1, status="done"),))
        a, b = w.entities[task.entities[0]], w.entities[task.entities[-1]]
        a_attr = next(k for k in ("birth_year", "founded_year", "year", "launch_year") if isinstance(a.attributes.get(k), int))
        b_attr = next(k for k in ("birth_year", "founded_year", "year", "launch_year") if isinstance(b.attributes.get(k), int))
        yield (f"The {attribute_phrase(a_attr)} of {a.name} is {a.attributes[a_attr]} \\cite{{{task.walk[0]}}}; the "
               f"{attribute_phrase(b_attr)} of {b.name} is {b.attributes[b_attr]} \\cite{{{task.walk[-1]}}}. "
               f"They are {task.answer} years apart.\n<answer>{task.answer}</answer>")

    # ---- verification --------------------------------------------------------------------
    def _verification(self, task: VerificationTask) -> Script:
        """Every tool call of the episode, the plan's included, can fail (`tool_error_rate` per call, the
        paper's 5-10 % of tool errors) and is then retried."""
        w = self.world
        e = w.entities[task.target]
        ref, bad = w.documents[task.authority_doc], w.documents[task.wrong_doc]
        claims = [f"Check claim {i + 1}: " + line.split(" \\cite")[0] for i, line in enumerate(task.draft)]
        yield from self._step("I extract the draft's claims and plan one check per claim.",
                              _call("todo", action="add", steps=claims + ["Write the verified text"]), "plan",
                              tool="todo")
        yield from self._step("Opening the sources the draft cites.",
                              _call("batch_web_surfer", open=[bad.doc_id, ref.doc_id]), bad.doc_id)
        idx = list(e.attributes).index(task.attribute)
        for i, attr in enumerate(e.attributes, start=1):
            if i - 1 == idx:
                continue
            yield from self._step(f"Claim {i} matches {ref.domain} ({attribute_phrase(attr)} {e.attributes[attr]}).",
                                  _call("todo", action="update", id=i, status="done"), "check", tool="todo")
        phrase = attribute_phrase(task.attribute)
        yield from self._step(
            f"Discrepancy in claim {idx + 1}: {bad.domain} ({bad.tier.value} authority, {bad.year}) gives the {phrase} "
            f"as {task.wrong_value}, but {ref.domain} ({ref.tier.value} authority, {ref.year}) gives "
            f"{task.correct_value}. I add a step to resolve it.",
            _call("todo", action="add", steps=[f"Resolve the {phrase} conflict in favour of the more authoritative, "
                                               "more recent source"]), "resolve", tool="todo")
        yield from self._search_and_pick(f"{e.name} {phrase}", [ref], "Looking for further evidence on the figure.")
        n = len(task.draft) + 2
        yield from self._step(
            f"The {ref.tier.value}-authority page from {ref.year} outranks the {bad.tier.value}-authority page "
            f"from {bad.year}: {task.correct_value} stands.",
            _call("todo", action="update", id=n, status="done"), "resolve", tool="todo",
            before=(_call("todo", action="update", id=idx + 1, status="done"),))
        lines = ["## Verified text"]
        for attr, value in e.attributes.items():
            lines.append(f"- {attribute_sentence(attr, e.name, value)} \\cite{{{ref.doc_id}}}.")
        lines += ["", "## Verification",
                  f"- {bad.domain} ({bad.tier.value} authority, {bad.year}) gives an outdated {phrase} of "
                  f"{task.wrong_value}, which conflicts with {ref.domain} ({ref.tier.value} authority, {ref.year}) "
                  f"\\cite{{{bad.doc_id}}}.",
                  f"- Resolved in favour of the more authoritative and more recent source: the {phrase} is "
                  f"{task.correct_value} \\cite{{{ref.doc_id}}}."]
        yield "Every claim is checked; one was corrected.\n<answer>\n" + "\n".join(lines) + "\n</answer>"

    # ---- URL QA --------------------------------------------------------------------------
    def _url_qa(self, task: UrlQATask) -> Script:
        yield from self._step("Opening the page I was given.", _call("batch_web_surfer", open=[task.url]), task.url)
        yield f"The page states it \\cite{{{task.doc_id}}}.\n<answer>{task.answer}</answer>"

    # ---- long summaries ------------------------------------------------------------------
    def _long_summary(self, task: LongSummaryTask) -> Script:
        w = self.world
        e = w.entities[task.target]
        obs = yield from self._step("Opening every page at once.",
                                    _call("batch_web_surfer", open=list(task.doc_ids)), task.doc_ids[0])
        stored = next((m.group(1) for o in obs for m in [_STORED_RE.search(o.content)] if m), None)
        if stored is not None:
            offset: int | None = 0
            while offset is not None:
                args = {"action": "read", "path": stored} | ({"offset": offset} if offset else {})
                obs = yield _turn("The output was stored in the workspace; reading it." if not offset
                                  else "Reading the rest of the stored output.", _call("file", **args))
                data = next((d for d in map(_parse_obs, obs) if d and isinstance(d.get("content"), str)), None)
                offset = None if data is None else data.get("next_offset")
        ref = w.primary_doc(e.id)
        lines = [f"# Summary: {e.name}", f"{e.name} is {e.description} \\cite{{{ref.doc_id}}}."]  # type: ignore[union-attr]
        for attr, value in e.attributes.items():
            lines.append(f"{attribute_sentence(attr, e.name, value)} \\cite{{{ref.doc_id}}}.")  # type: ignore[union-attr]
        for t in w.out_edges(e.id):
            tail = w.entities.get(t.tail)
            tref = w.primary_doc(t.tail)
            if tail is not None and tref is not None and tref.doc_id in task.doc_ids:
                lines.append(f"{relation_sentence(t.relation, e.name, tail.name)} \\cite{{{tref.doc_id}}}.")
        for d in w.docs_about(e.id):
            for c in d.claims:
                if c.subject == e.id and not c.correct and d.doc_id in task.doc_ids:
                    lines.append(f"{d.domain} gives an outdated {attribute_phrase(c.predicate)} of {c.value}, which "
                                 f"conflicts with the reference page \\cite{{{d.doc_id}}}.")
        yield "The summary covers every page.\n<answer>\n" + "\n".join(lines) + "\n</answer>"
