"""Harder deep search: questions over sampled KG subgraphs that intersect constraints
(capability `deep_search_subgraph`).

The paper samples subgraphs of 10-40 nodes and asks questions that need several constraints
intersected, not a single chain. Here an answer entity is pinned down by `constraints` clauses,
each true of several entities of its type on its own (so none can be dropped) and all together of
the answer alone (so the question is unambiguous):

    relation   "whose employer is <description of an organization>"          (1 hop to an anchor)
    relation2  "whose employer's headquarters is <description of a place>"   (2 hops to an anchor)
    attribute  "born in the 1950s", "who works as a chemist"                  (a bucket of a value)

Anchors are named by their unique descriptions, never by name. The task's subgraph is the answer,
its anchors and every constraint's candidates with the triples among them, grown by breadth-first
search around the answer to at least `min_nodes` (at most `max_nodes`, else the draw is skipped).

    tasks = synthesize_subgraph(world, 16, min_nodes=8, max_nodes=24, n_constraints=2, seed=0, targets=train)
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Collection

from deepresearch.synthesis.capability_schema import SubgraphConstraint, SubgraphTask
from deepresearch.synthesis.phrasing import relation_phrase
from deepresearch.world.schema import Entity, World

YEAR_ATTRIBUTES = {"birth_year": "born", "founded_year": "founded", "year": "dated", "launch_year": "launched"}
CATEGORY_ATTRIBUTES = {"occupation": "who works as {a}", "industry": "operating in the {v} industry",
                       "genre": "that is {a}", "category": "that is {a}"}


def _a(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def _buckets(world: World) -> dict[tuple, list[str]]:
    """(type, attribute, decade or value) → entity ids, for the attribute clauses."""
    out: dict[tuple, list[str]] = {}
    for x in world.entities.values():
        for attr in YEAR_ATTRIBUTES:
            v = x.attributes.get(attr)
            if isinstance(v, int):
                out.setdefault((x.type, attr, v // 10 * 10), []).append(x.id)
        for attr in CATEGORY_ATTRIBUTES:
            v = x.attributes.get(attr)
            if isinstance(v, str):
                out.setdefault((x.type, attr, v), []).append(x.id)
    return out


def _features(world: World, e: Entity, described: Counter, buckets: dict[tuple, list[str]]) -> list[SubgraphConstraint]:
    """Every clause true of `e`, with the entities of e's type that satisfy it alone."""
    out: list[SubgraphConstraint] = []
    for t in world.out_edges(e.id):
        anchor = world.entities.get(t.tail)
        if anchor is None or described[anchor.description] != 1 or not anchor.description:
            continue
        cands = sorted(x.head for x in world.in_edges(anchor.id) if x.relation == t.relation
                       and world.entities.get(x.head) is not None and world.entities[x.head].type == e.type)
        out.append(SubgraphConstraint(kind="relation", text=f"whose {relation_phrase(t.relation)} is {anchor.description}",
                                      predicate=t.relation, anchor=anchor.id, candidates=cands))
        for t2 in world.out_edges(anchor.id):
            far = world.entities.get(t2.tail)
            if far is None or far.id == e.id or described[far.description] != 1 or not far.description:
                continue
            mids = {x.head for x in world.in_edges(far.id) if x.relation == t2.relation}
            cands2 = sorted({x.head for m in mids for x in world.in_edges(m) if x.relation == t.relation
                             and world.entities.get(x.head) is not None and world.entities[x.head].type == e.type})
            out.append(SubgraphConstraint(
                kind="relation2", predicate=f"{t.relation}/{t2.relation}", anchor=far.id, candidates=cands2,
                text=f"whose {relation_phrase(t.relation)}'s {relation_phrase(t2.relation)} is {far.description}"))
    for attr, verb in YEAR_ATTRIBUTES.items():
        v = e.attributes.get(attr)
        if isinstance(v, int):
            decade = v // 10 * 10
            cands = sorted(buckets[(e.type, attr, decade)])
            out.append(SubgraphConstraint(kind="attribute", text=f"{verb} in the {decade}s", predicate=attr,
                                          value=f"{decade}s", candidates=cands))
    for attr, template in CATEGORY_ATTRIBUTES.items():
        v = e.attributes.get(attr)
        if isinstance(v, str):
            cands = sorted(buckets[(e.type, attr, v)])
            out.append(SubgraphConstraint(kind="attribute", text=template.format(a=_a(v), v=v), predicate=attr,
                                          value=v, candidates=cands))
    return out


def _pinned(combo: tuple[SubgraphConstraint, ...], answer: str) -> bool:
    """All clauses together select `answer` alone, and dropping any one clause leaves several entities."""
    sets = [set(c.candidates) for c in combo]
    if set.intersection(*sets) != {answer}:
        return False
    for i in range(len(sets)):
        rest = [s for j, s in enumerate(sets) if j != i]
        if len(set.intersection(*rest)) < 2:
            return False
    return True


def _subgraph(world: World, answer: str, combo: tuple[SubgraphConstraint, ...], min_nodes: int, max_nodes: int,
              rng: random.Random) -> list[str] | None:
    nodes: dict[str, None] = {answer: None}
    for c in combo:
        if c.anchor:
            nodes.setdefault(c.anchor, None)
        for x in c.candidates:
            nodes.setdefault(x, None)
    if len(nodes) > max_nodes:
        return None
    frontier = [answer]
    while len(nodes) < min_nodes and frontier:
        node = frontier.pop(0)
        nbrs = sorted({t.tail for t in world.out_edges(node)} | {t.head for t in world.in_edges(node)})
        rng.shuffle(nbrs)
        for x in nbrs:
            if x in world.entities and x not in nodes:
                nodes[x] = None
                frontier.append(x)
                if len(nodes) >= min_nodes:
                    break
    return sorted(nodes) if len(nodes) >= min_nodes else None


def synthesize_subgraph(
    world: World, n: int, *, min_nodes: int, max_nodes: int, n_constraints: int, seed: int,
    targets: Collection[str] | None = None,
) -> list[SubgraphTask]:
    """Up to `n` distinct constraint-intersection questions whose answers are `targets` entities."""
    rng = random.Random(f"deep_search_subgraph:{seed}")
    described = Counter(e.description for e in world.entities.values())
    named = Counter(e.name for e in world.entities.values())
    answers = [e for e in world.entities.values() if world.out_edges(e.id) and named[e.name] == 1
               and (targets is None or e.id in targets)]
    rng.shuffle(answers)
    buckets = _buckets(world)
    tasks: list[SubgraphTask] = []
    asked: set[str] = set()
    for e in answers:
        if len(tasks) >= n:
            break
        feats = [f for f in _features(world, e, described, buckets) if len(f.candidates) >= 2]
        combos = [c for c in itertools.combinations(feats, n_constraints)
                  if any(x.kind != "attribute" for x in c) and len({x.predicate for x in c}) == n_constraints
                  and _pinned(c, e.id)]
        if not combos:
            continue
        combo = combos[rng.randrange(len(combos))]
        nodes = _subgraph(world, e.id, combo, min_nodes, max_nodes, rng)
        if nodes is None:
            continue
        # relation clauses first: they are what the agent searches for; attributes narrow the candidates
        combo = tuple(sorted(combo, key=lambda c: c.kind == "attribute"))
        question = f"Which {e.type.value} matches all of these: " + "; ".join(c.text for c in combo) + "?"
        if e.name.lower() in question.lower() or question in asked:
            continue
        asked.add(question)
        node_set = set(nodes)
        edges = [t for x in nodes for t in world.out_edges(x) if t.tail in node_set]  # sorted like world.triples
        tasks.append(SubgraphTask(task_id=f"sg-{seed}-{len(tasks):05d}", question=question, answer=e.name,
                                  aliases=list(e.aliases), hops=len(combo), target=e.id, constraints=list(combo),
                                  nodes=nodes, edges=edges))
    return tasks
