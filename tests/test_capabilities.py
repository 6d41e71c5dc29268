"""The atomic-capability datasets (synthesis/capabilities.py): what each task guarantees, the
plan-consistency and difficulty filters, a verification episode resolving a planted conflict, the
gates and suites, and the training-mix arithmetic. Small world, seconds."""

from __future__ import annotations

import pytest

from deepresearch.synthesis.capabilities import build_tasks, run_capability_task, training_entities
from deepresearch.world.schema import World
from tests.conftest import requires_sandbox


@pytest.fixture(scope="module")
def world(small_world_dir):
    return World.load(small_world_dir)


@pytest.fixture(scope="module")
def search(small_cfg, small_world_dir):
    from deepresearch.search.backend import open_backend

    return open_backend(small_cfg.search, small_world_dir)


@pytest.fixture(scope="module")
def tasks(small_cfg, world, search):
    out, _ = build_tasks(small_cfg, world, search)
    return out


def _expert(cfg, world, **kw):
    from deepresearch.synthesis.capability_expert import CapabilityExpert

    return CapabilityExpert(cfg.agent, world, **kw)


def test_every_capability_targets_training_entities_only(small_cfg, world, tasks):
    from deepresearch.synthesis.split import check_disjoint, heldout_tasks

    train = training_entities(small_cfg, world)
    assert set(tasks) == {"planning", "deep_search_subgraph", "wiki_walk", "verification", "query_report", "url_qa",
                          "long_summary"}
    for name, ts in tasks.items():
        assert ts, f"{name} is empty on the small world"
        assert all(t.target in train for t in ts), name
        assert all(t.capability == name for t in ts)
    held_ds, held_dr = heldout_tasks(world, small_cfg.synthesis, small_cfg.evaluation.model_copy(
        update={"n_deep_search": 4, "n_deep_research": 2}))
    check_disjoint([t for ts in tasks.values() for t in ts], [*held_ds, *held_dr])


def test_subgraph_questions_need_two_intersected_constraints(world, tasks):
    for t in tasks["deep_search_subgraph"]:
        assert t.hops == len(t.constraints) >= 2
        sets = [set(c.candidates) for c in t.constraints]
        assert set.intersection(*sets) == {t.target}  # together: the answer alone
        assert all(len(s) >= 2 for s in sets)  # alone: ambiguous, so no constraint can be dropped
        assert world.entities[t.target].name == t.answer and t.answer not in t.question
        for c in t.constraints:  # each candidate set is what the world says
            if c.kind == "relation":
                assert c.anchor is not None and world.entities[c.anchor].name not in t.question
                assert set(c.candidates) == {x.head for x in world.in_edges(c.anchor) if x.relation == c.predicate
                                             and world.entities[x.head].type == world.entities[t.target].type}
        node_set = set(t.nodes)
        assert t.target in node_set and all(e.head in node_set and e.tail in node_set for e in t.edges)


def test_link_walk_questions_need_two_linked_pages(world, tasks):
    for t in tasks["wiki_walk"]:
        assert len(t.walk) == t.hops + 1 >= 2 and len(set(t.evidence)) >= 2
        for a, b in zip(t.walk, t.walk[1:]):
            assert b in world.documents[a].links  # each step follows a hyperlink
        assert [world.documents[d].about for d in t.walk] == t.entities
        years = []
        for eid in (t.entities[0], t.entities[-1]):
            attrs = world.entities[eid].attributes
            years.append(next(int(attrs[k]) for k in ("birth_year", "founded_year", "year", "launch_year")
                              if isinstance(attrs.get(k), int)))
        assert t.answer == str(abs(years[0] - years[1]))
        assert world.documents[t.walk[0]].url in t.question


def test_difficulty_filter_drops_what_the_shallow_solver_answers(small_cfg, world, search):
    from deepresearch.synthesis.difficulty import difficulty_filter, is_correct, make_solver
    from deepresearch.synthesis.tasks import synthesize_deep_search

    # one-hop questions: the top hit for the description is the start entity's page, which states the answer
    easy = synthesize_deep_search(world, 12, min_hops=1, max_hops=1, seed=3)
    solver = make_solver("shallow", small_cfg, world, search)
    solved = [q for q in easy if is_correct(q, solver(q.question))]
    assert solved, "the shallow solver should answer some one-hop questions"
    kept, stats = difficulty_filter(easy, solver, "shallow", n=len(easy))
    assert {q.task_id for q in kept} == {q.task_id for q in easy} - {q.task_id for q in solved}
    assert stats["dropped"] == len(solved) and stats["by_hops"] == {"1": {"kept": len(kept), "dropped": len(solved)}}
    # and a solver that always knows drops everything; one that never does keeps the first n
    assert difficulty_filter(easy, lambda q: next(t.answer for t in easy if t.question == q), "oracle", n=5)[0] == []
    assert len(difficulty_filter(easy, lambda q: None, "mute", n=5)[0]) == 5
    with pytest.raises(ValueError, match="valid: shallow, openai, checkpoint"):
        make_solver("strong", small_cfg, world, search)


@requires_sandbox
def test_openai_reference_solver_plays_the_react_loop_against_an_endpoint(small_cfg, world, search, tasks, monkeypatch):
    """The `openai` solver is the agent's ReAct loop driven by an OpenAI-compatible server: what the server's
    model answers right is dropped, the rest kept with the model's answer recorded."""
    import json

    from deepresearch.synthesis.difficulty import difficulty_filter, make_solver
    from tests.test_openai_policy import Server

    qs = tasks["deep_search_subgraph"][:2]
    search_call = [{"id": "c1", "type": "function",
                    "function": {"name": "batch_web_surfer", "arguments": json.dumps({"search": [qs[0].question]})}}]
    server = Server([("Searching first.", search_call), (f"<answer>{qs[0].answer}</answer>", None),
                     ("<answer>nobody</answer>", None)])
    try:
        monkeypatch.setenv("TEST_KEY", "sk-test")
        openai = small_cfg.agent.openai.model_copy(update={"base_url": server.url, "model": "teacher",
                                                           "api_key_env": "TEST_KEY"})
        cfg = small_cfg.model_copy(update={"agent": small_cfg.agent.model_copy(update={"openai": openai})})
        kept, stats = difficulty_filter(qs, make_solver("openai", cfg, world, search), "openai", n=2)
    finally:
        server.close()
    assert [q.task_id for q in kept] == [qs[1].task_id]
    assert kept[0].difficulty.solver == "openai" and kept[0].difficulty.solver_answer == "nobody"
    assert stats["attempted"] == 2 and stats["dropped"] == 1
    first = [r["body"]["messages"] for r in server.requests]
    assert qs[0].question in first[0][-1]["content"] and qs[1].question in first[2][-1]["content"]
    assert first[1][-1]["content"].startswith("<tool_response>")  # the search really ran between the turns


@requires_sandbox
def test_checkpoint_reference_solver_runs_a_pipeline_checkpoint(small_cfg, world, search, tasks, tiny_checkpoint, tmp_path):
    """The `checkpoint` solver plays the ReAct loop with an HF checkpoint (`agent.hf.model_dir`): an untrained
    one answers nothing right, so every question is kept, each with what the model said."""
    from deepresearch.synthesis.difficulty import difficulty_filter, make_solver

    qs = tasks["deep_search_subgraph"][:2]
    with pytest.raises(ValueError, match="agent.hf.model_dir"):
        make_solver("checkpoint", small_cfg, world, search)
    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    budget = small_cfg.agent.budget.model_copy(update={"max_turns": 2})
    hf = small_cfg.agent.hf.model_copy(update={"model_dir": str(ckpt), "max_new_tokens": 8})
    cfg = small_cfg.model_copy(update={"agent": small_cfg.agent.model_copy(update={"hf": hf, "budget": budget})})
    kept, stats = difficulty_filter(qs, make_solver("checkpoint", cfg, world, search), "checkpoint", n=2)
    assert [q.task_id for q in kept] == [q.task_id for q in qs] and stats["dropped"] == 0
    assert all(q.difficulty.solver == "checkpoint" and not q.difficulty.solved for q in kept)
    assert all(q.difficulty.solver_answer for q in kept)  # the model generated (a failed policy answers None)


def test_kept_subgraph_and_walk_questions_are_marked_unsolved(tasks):
    for name in ("deep_search_subgraph", "wiki_walk"):
        assert all(t.difficulty is not None and not t.difficulty.solved for t in tasks[name])


@requires_sandbox
def test_plan_consistency_rejects_a_trajectory_that_skips_a_planned_step(small_cfg, world, search, tasks):
    from deepresearch.synthesis.planning import REASON_STEP_ORDER, REASON_STEP_SKIPPED, plan_consistency

    task = tasks["planning"][0]
    good = run_capability_task(_expert(small_cfg, world), task, small_cfg, search, attempt=0)
    assert good.success and plan_consistency(task, good) == (True, "")
    assert [d for d in good.opened_docs if d in {s.doc_id for s in task.plan}] == [s.doc_id for s in task.plan]
    # the drifting expert: skips or swaps steps; the filter names which
    drifting = _expert(small_cfg, world, plan_deviation_rate=1.0)
    seen = {}
    for attempt in range(12):
        traj = run_capability_task(drifting, task, small_cfg, search, attempt=attempt)
        ok, why = plan_consistency(task, traj)
        assert not ok
        seen[traj.metadata["plan_deviation"]] = why
    assert seen["skipped"].startswith(REASON_STEP_SKIPPED) and seen["swapped"].startswith(REASON_STEP_ORDER)
    # a trajectory whose record lacks one step's page is rejected too
    dropped = task.plan[1].doc_id
    edited = good.model_copy(update={"opened_docs": [d for d in good.opened_docs if d != dropped]})
    assert plan_consistency(task, edited)[1].startswith(REASON_STEP_SKIPPED)


@requires_sandbox
def test_verification_resolves_the_planted_conflict_for_the_authoritative_newer_source(small_cfg, world, search, tasks):
    from deepresearch.agent.schema import parse_assistant
    from deepresearch.synthesis.verification import verification_success

    for task in tasks["verification"]:
        wrong, ref = world.documents[task.wrong_doc], world.documents[task.authority_doc]
        assert wrong.authority < ref.authority and wrong.year < ref.year  # the world's planted conflict
        assert any(c.value == task.wrong_value and not c.correct for c in wrong.claims)
        traj = run_capability_task(_expert(small_cfg, world, tool_error_rate=0.1), task, small_cfg, search, attempt=0)
        assert traj.success and verification_success(task, traj.answer) == (True, "")
        assert {task.wrong_doc, task.authority_doc} <= set(traj.opened_docs)
        # the discrepancy reschedules the plan: a second todo `add` with the resolution step
        adds = [c for m in traj.messages if m.role == "assistant" for c in parse_assistant(m.content).tool_calls
                if c.name == "todo" and c.arguments.get("action") == "add"]
        assert len(adds) == 2 and "conflict" in adds[1].arguments["steps"][0]
    # a report that keeps the stale figure fails
    task = tasks["verification"][0]
    assert not verification_success(task, f"The value is {task.wrong_value} \\cite{{{task.authority_doc}}}.")[0]


@requires_sandbox
def test_verification_can_fail_on_every_tool_call_and_recovers(small_cfg, world, search, tasks):
    """The paper's 5-10 % tool errors are per call: in a verification episode every call, the plan's `todo`
    calls included, can be a faulty one followed by a retry (so the injected rate per call is the
    configured one, not a fraction of it)."""
    from deepresearch.agent.schema import parse_assistant

    budget = small_cfg.agent.budget.model_copy(update={"max_turns": 60})  # every call is made twice
    cfg = small_cfg.model_copy(update={"agent": small_cfg.agent.model_copy(update={"budget": budget})})
    task = tasks["verification"][0]
    clean = run_capability_task(_expert(cfg, world), task, cfg, search, attempt=0)
    faulty = run_capability_task(_expert(cfg, world, tool_error_rate=1.0), task, cfg, search, attempt=0)
    assert clean.tool_errors == 0 and faulty.success and faulty.answer == clean.answer

    turns = [[c.name for c in parse_assistant(m.content).tool_calls] for m in clean.messages if m.role == "assistant"]
    turns = [t for t in turns if t]
    # one injected fault before each of the clean episode's turns with calls, todo and web alike
    assert faulty.metadata["injected_errors"] == len(turns) == faulty.tool_errors
    assert {"todo", "batch_web_surfer"} <= {name for t in turns for name in t}
    assert sum(len(t) for t in turns) <= len(turns) + 1  # one call a turn, but for the final two todo updates


@requires_sandbox
def test_long_summary_reads_the_stored_output_back(small_cfg, world, search, tasks):
    task = tasks["long_summary"][0]
    traj = run_capability_task(_expert(small_cfg, world), task, small_cfg, search, attempt=0)
    assert traj.success
    assert any(m.role == "tool" and m.name == "file" for m in traj.messages)  # paged through outputs/NNN_*.txt


def test_query_report_pairs_cite_only_their_sources(world, tasks):
    from deepresearch.agent.schema import extract_citations

    pairs = tasks["query_report"]
    assert {p.kind for p in pairs} == {"report", "document"}
    for p in pairs:
        assert set(extract_citations(p.report)) <= set(p.sources) and all(s in world.documents for s in p.sources)


def test_url_qa_answers_are_on_the_page(world, tasks):
    for t in tasks["url_qa"]:
        doc = world.documents[t.doc_id]
        assert doc.url == t.url and t.url in t.question
        assert any(t.answer in p for p in doc.paragraphs) or any(a in p for a in t.aliases for p in doc.paragraphs)


def test_mix_count_arithmetic():
    from deepresearch.training.mixes import mix_count

    # 0.05 of a mix whose shares add to 0.2, on 152 base rows: 0.05 * 152 / 0.8 = 9.5 → 10 rows, 10 / 162 ≈ 0.06
    assert mix_count(0.05, 0.2, 152, 100) == 10
    assert mix_count(0.05, 0.2, 152, 4) == 4  # never more than the dataset has
    assert mix_count(0.0, 0.2, 152, 100) == 0


def test_shares_must_leave_room_for_the_stage_own_data():
    from deepresearch.config import load_config
    from deepresearch.errors import ConfigError

    with pytest.raises(ConfigError, match="sft shares add up to"):
        load_config("configs/tiny.yaml", ["capabilities.planning.sft=0.6", "capabilities.verification.sft=0.5"])
    with pytest.raises(ConfigError, match="tool_error_rate"):
        load_config("configs/tiny.yaml", ["capabilities.verification.tool_error_rate=0.2"])


def test_difficulty_filter_on_deep_search_when_configured(small_cfg, world, search):
    """Paper scale filters the chain questions too: oversample, drop what the solver answers, keep n."""
    from deepresearch.synthesis.capabilities import deep_search_candidates, filter_deep_search
    from deepresearch.synthesis.difficulty import is_correct, make_solver
    from deepresearch.synthesis.split import training_tasks

    assert deep_search_candidates(small_cfg) == small_cfg.synthesis.n_deep_search  # tiny: not filtered
    same = [object()]
    assert filter_deep_search(small_cfg, world, search, same) == (same, {})
    df = small_cfg.capabilities.difficulty_filter.model_copy(update={"apply_to": ["deep_search"], "oversample": 3.0})
    syn = small_cfg.synthesis.model_copy(update={"min_hops": 1, "max_hops": 1, "n_deep_search": 4})
    cfg = small_cfg.model_copy(update={"synthesis": syn,
                                       "capabilities": small_cfg.capabilities.model_copy(update={"difficulty_filter": df})})
    n = deep_search_candidates(cfg)
    assert n == 12
    ds, _ = training_tasks(world, syn, n_deep_search=n, n_deep_research=0, seed=syn.seed)
    kept, stats = filter_deep_search(cfg, world, search, ds)
    solver = make_solver("shallow", cfg, world, search)
    assert len(kept) <= 4 and not any(is_correct(q, solver(q.question)) for q in kept)
    assert stats["difficulty_attempted"] == stats["difficulty_kept"] + stats["difficulty_dropped"]
    assert stats.get("difficulty_hops1_dropped", 0) > 0  # one-hop chains are what a single search solves


def test_text_pairs_take_no_episode_share():
    from deepresearch.config import load_config
    from deepresearch.errors import ConfigError

    with pytest.raises(ConfigError, match="only mid1"):
        load_config("configs/tiny.yaml", ["capabilities.query_report.sft=0.1"])
