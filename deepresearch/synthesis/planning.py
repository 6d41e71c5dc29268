"""Planning and task decomposition (capability `planning`).

The paper reverse-engineers complex queries and feasible plans from the titles, abstracts and
structure of high-quality reports, has a teacher follow the plans, and keeps only trajectories
consistent with the preset plan. Here the world renders long institutional reports about a hub
entity and its neighbours (`world_report`: title, abstract, one section per entity, each fact
cited to that entity's reference page); from each report a query and an ordered plan (one step per
section, naming the page that step must open) are read back (`synthesize_planning`); the expert
executes the plan with `todo` and the tools; `plan_consistency` keeps a trajectory only if its todo
list is the plan, it opened every step's page in plan order and cites each one.

    tasks = synthesize_planning(world, 12, min_sections=3, max_sections=5, seed=0, targets=train)
    ok, reason = plan_consistency(task, trajectory)

Same world + seed → the same reports, queries and plans.
"""

from __future__ import annotations

import random
from collections.abc import Collection

from deepresearch.agent.schema import Trajectory, extract_citations, parse_assistant
from deepresearch.synthesis.capability_schema import PlanningTask, PlanStep
from deepresearch.synthesis.phrasing import (
    attribute_phrase,
    attribute_sentence,
    relation_phrase,
    relation_sentence,
)
from deepresearch.world.schema import Entity, World

# The role an entity plays for the hub when the hub is the tail of its relation.
INVERSE_ROLE = {
    "works_for": "employee",
    "educated_at": "alumnus",
    "founded_by": "founded organization",
    "born_in": "native",
    "headquartered_in": "resident organization",
    "created_by": "work",
    "published_by": "publication",
    "held_in": "hosted event",
    "organized_by": "organized event",
    "made_by": "product",
    "designed_by": "design",
}

REASON_PLAN_MISMATCH = "plan_mismatch"  # the todo list is not the preset plan
REASON_STEP_SKIPPED = "plan_step_skipped"  # a step's page was never opened
REASON_STEP_ORDER = "plan_step_order"  # the steps' pages were opened out of plan order
REASON_STEP_UNCITED = "plan_step_uncited"  # the report does not cite a step's page


def _neighbours(world: World, hub: str) -> list[tuple[str, Entity]]:
    """(role, entity) of the hub's neighbours that have a reference page, out-edges first."""
    out = []
    seen = {hub}
    for t in world.out_edges(hub):
        e = world.entities.get(t.tail)
        if e is not None and e.id not in seen and world.primary_doc(e.id) is not None:
            out.append((relation_phrase(t.relation), e))
            seen.add(e.id)
    for t in world.in_edges(hub):
        e = world.entities.get(t.head)
        if e is not None and e.id not in seen and world.primary_doc(e.id) is not None:
            out.append((INVERSE_ROLE.get(t.relation, "related entity"), e))
            seen.add(e.id)
    return out


def _section(world: World, role: str | None, e: Entity, doc_id: str, hub: Entity) -> list[str]:
    heading = f"## {e.name}" if role is None else f"## {role.capitalize()}: {e.name}"
    lines = [heading]
    for attr, value in list(e.attributes.items())[:3]:
        lines.append(f"{attribute_sentence(attr, e.name, value)} \\cite{{{doc_id}}}.")
    if role is None:
        for t in world.out_edges(e.id)[:2]:
            tail = world.entities.get(t.tail)
            if tail is not None:
                lines.append(f"{relation_sentence(t.relation, e.name, tail.name)} \\cite{{{doc_id}}}.")
    else:
        lines.append(f"Role: {role} of {hub.name} \\cite{{{doc_id}}}.")
    return lines


def world_report(world: World, hub: str, neighbours: list[tuple[str, Entity]]) -> tuple[str, str, list[str], str]:
    """(title, abstract, section names, markdown text) of an institutional report on `hub` and `neighbours`."""
    h = world.entities[hub]
    title = f"{h.name}: an institutional report on its connections"
    parts = "; ".join(f"its {role} {e.name}" for role, e in neighbours)
    abstract = (f"This report reviews {h.name}, {h.description}, and {len(neighbours)} connected entities: {parts}. "
                "Every figure is taken from the reference record of the entity it describes.")
    sections = [h.name] + [f"{role.capitalize()}: {e.name}" for role, e in neighbours]
    lines = [f"# {title}", "", "## Abstract", abstract, ""]
    lines += _section(world, None, h, world.primary_doc(h.id).doc_id, h) + [""]  # type: ignore[union-attr]
    for role, e in neighbours:
        lines += _section(world, role, e, world.primary_doc(e.id).doc_id, h) + [""]  # type: ignore[union-attr]
    return title, abstract, sections, "\n".join(lines).rstrip() + "\n"


def _goal(e: Entity, role: str | None) -> str:
    wanted = ", ".join(attribute_phrase(a) for a in list(e.attributes)[:3]) or "key facts"
    return f"Find the {wanted} of {e.name}" + ("" if role is None else f" (the {role})")


def synthesize_planning(
    world: World, n: int, *, min_sections: int, max_sections: int, seed: int, targets: Collection[str] | None = None
) -> list[PlanningTask]:
    """Up to `n` planning tasks about distinct hub entities (fewer only if the world has too few hubs).

    Args:
        world: the research world.
        n: tasks wanted.
        min_sections, max_sections: entities a report covers, hub included.
        seed: same world + seed (+ targets) → the same tasks.
        targets: entity ids a report may be about, its neighbours too (training entities).
    """
    rng = random.Random(f"planning:{seed}")
    named: dict[str, int] = {}
    for e in world.entities.values():
        named[e.name] = named.get(e.name, 0) + 1
    hubs = []
    for e in world.entities.values():
        if targets is not None and e.id not in targets or named[e.name] != 1 or world.primary_doc(e.id) is None:
            continue
        nb = [(r, x) for r, x in _neighbours(world, e.id) if targets is None or x.id in targets]
        if len(nb) + 1 >= min_sections:
            hubs.append((e, nb))
    rng.shuffle(hubs)
    tasks = []
    for hub, nb in hubs[:n]:
        k = rng.randint(min_sections, min(max_sections, len(nb) + 1)) - 1
        chosen = sorted(rng.sample(range(len(nb)), k))
        neighbours = [nb[i] for i in chosen]
        title, abstract, sections, report = world_report(world, hub.id, neighbours)
        plan = [PlanStep(goal=_goal(hub, None), entity=hub.id, doc_id=world.primary_doc(hub.id).doc_id)]  # type: ignore[union-attr]
        plan += [PlanStep(goal=_goal(e, role), entity=e.id, doc_id=world.primary_doc(e.id).doc_id)  # type: ignore[union-attr]
                 for role, e in neighbours]
        prompt = (f"Write an institutional report titled \"{title}\". {abstract} Give it one section per entity "
                  f"({'; '.join(sections)}) and cite a source for every fact.")
        tasks.append(PlanningTask(task_id=f"pl-{seed}-{len(tasks):05d}", prompt=prompt, target=hub.id, title=title,
                                  abstract=abstract, sections=sections, plan=plan, report=report))
    return tasks


def _todo_steps(traj: Trajectory) -> list[str] | None:
    """The steps of the trajectory's first `todo add` call."""
    for m in traj.messages:
        if m.role != "assistant":
            continue
        for call in parse_assistant(m.content).tool_calls:
            if call.name == "todo" and call.arguments.get("action") == "add":
                steps = call.arguments.get("steps")
                return [str(s) for s in steps] if isinstance(steps, list) else None
    return None


def plan_consistency(task: PlanningTask, traj: Trajectory) -> tuple[bool, str]:
    """Whether a trajectory followed its preset plan; (True, "") or (False, reason: detail).

    Consistent means: the first todo list starts with the plan's goals in order, every step's page
    was opened, in plan order (first openings), and the final report cites every step's page.
    """
    goals = [s.goal for s in task.plan]
    todo = _todo_steps(traj)
    if todo is None or todo[: len(goals)] != goals:
        return False, f"{REASON_PLAN_MISMATCH}: todo list {todo!r} is not the plan"
    opened = traj.opened_docs
    for s in task.plan:
        if s.doc_id not in opened:
            return False, f"{REASON_STEP_SKIPPED}: step {s.goal!r} never opened {s.doc_id}"
    positions = [opened.index(s.doc_id) for s in task.plan]
    if positions != sorted(positions):
        return False, f"{REASON_STEP_ORDER}: pages opened in order {positions}"
    cited = set(extract_citations(traj.answer or ""))
    missing = [s.doc_id for s in task.plan if s.doc_id not in cited]
    if missing:
        return False, f"{REASON_STEP_UNCITED}: the report does not cite {missing}"
    return True, ""
