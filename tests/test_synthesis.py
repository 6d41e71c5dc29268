"""Synthesis: obfuscated multi-hop questions, rubric ground truth, expert trajectories, determinism."""

import json
import re

import pytest

from deepresearch.synthesis.rubrics import grade_report
from deepresearch.synthesis.run import research_success, run_task, synthesize
from deepresearch.synthesis.tasks import synthesize_deep_search, synthesize_research
from deepresearch.world.schema import World
from tests.conftest import requires_sandbox


@pytest.fixture(scope="module")
def world(small_world_dir):
    return World.load(small_world_dir)


def test_deep_search_questions_are_obfuscated_multi_hop(world):
    tasks = synthesize_deep_search(world, 20, min_hops=2, max_hops=3, seed=3)
    assert len({t.task_id for t in tasks}) == 20
    for t in tasks:
        assert 2 <= t.hops <= 3
        start = world.entities[t.path[0]]
        assert start.name not in t.question and start.description in t.question  # named only by description
        # the path follows real edges of the graph
        edges = {(x.head, x.tail) for x in world.triples}
        assert all((a, b) in edges for a, b in zip(t.path, t.path[1:]))
        last = world.entities[t.path[-1]]
        if t.answer_attribute is None:
            assert t.answer == last.name and t.hops == len(t.path) - 1
        else:
            assert t.answer == str(last.attributes[t.answer_attribute]) and t.hops == len(t.path)
    assert tasks == synthesize_deep_search(world, 20, min_hops=2, max_hops=3, seed=3)  # seeded


def test_research_rubrics_have_ground_truth_and_penalties(world):
    tasks = synthesize_research(world, 6, seed=1)
    assert any(it.weight < 0 for t in tasks for it in t.rubrics), "some tasks must carry penalty items"
    for t in tasks:
        kinds = {it.check.kind for it in t.rubrics}
        assert {"fact", "citation", "structure"} <= kinds
        assert all(it.axis and it.criterion for it in t.rubrics)


@requires_sandbox
def test_expert_report_satisfies_its_rubric_and_corruptions_are_caught(world, small_cfg, small_world_dir):
    from deepresearch.agent.policies.scripted import ScriptedExpert
    from deepresearch.search.backend import open_backend

    tasks = synthesize_research(world, 6, seed=1)
    task = next(t for t in tasks if any(it.weight < 0 for it in t.rubrics))
    expert = ScriptedExpert(small_cfg.agent, world)
    traj = run_task(expert, task, small_cfg, open_backend(small_cfg.search, small_world_dir), attempt=0)
    assert traj.outcome == "answered" and traj.success
    assert set(traj.citations) <= set(traj.opened_docs)  # every citation was opened
    used = {m.name for m in traj.messages if m.role == "tool"}
    assert used == {"todo", "batch_web_surfer", "file", "shell"}

    labels = grade_report(task, traj.answer)
    assert all(lab == ("satisfied" if it.weight > 0 else "not") for it, lab in zip(task.rubrics, labels))
    # Assert the stale value as fact: the penalty triggers and success is lost.
    penalty = next(it for it in task.rubrics if it.weight < 0)
    bad = penalty.check.values[0]
    corrupted = traj.answer + f"\n\nIn summary, the key figure is {bad} \\cite{{{traj.citations[0]}}}.\n"
    ok, _, labels = research_success(task, corrupted)
    assert not ok and labels[task.rubrics.index(penalty)] == "satisfied"
    # Drop the citations: facts become "partially".
    uncited = re.sub(r"\\cite\{[^}]*\}", "", traj.answer)
    assert "partially" in grade_report(task, uncited)


@requires_sandbox
def test_injected_errors_are_recovered(world, small_cfg, small_world_dir):
    from deepresearch.agent.policies.scripted import ScriptedExpert
    from deepresearch.search.backend import open_backend

    search = open_backend(small_cfg.search, small_world_dir)
    tasks = synthesize_deep_search(world, 6, min_hops=2, max_hops=3, seed=5)
    # an error on every other step roughly doubles the turns: give the episode room for its recoveries
    budget = small_cfg.agent.budget.model_copy(update={"max_turns": 40})
    cfg = small_cfg.model_copy(update={"agent": small_cfg.agent.model_copy(update={"budget": budget})})
    noisy = ScriptedExpert(cfg.agent, world, tool_error_rate=0.5)
    trajs = [run_task(noisy, t, cfg, search, attempt=0) for t in tasks]
    assert sum(t.tool_errors for t in trajs) > 0
    assert all(t.success for t in trajs)  # every injected error was followed by a recovery
    clean = ScriptedExpert(small_cfg.agent, world, tool_error_rate=0.0)
    assert all(run_task(clean, t, small_cfg, search, attempt=0).tool_errors == 0 for t in tasks)


@requires_sandbox
def test_same_config_and_seed_give_hash_identical_datasets(small_cfg, small_world_dir, tmp_path):
    a = synthesize(small_cfg, small_world_dir, tmp_path / "a", progress=False)
    b = synthesize(small_cfg, small_world_dir, tmp_path / "b", progress=False)
    assert a["sha256"] == b["sha256"] and a["digest"] == b["digest"]
    for name in ("deep_search", "deep_research"):
        assert (tmp_path / "a" / name / "trajectories.jsonl").read_bytes() == (
            tmp_path / "b" / name / "trajectories.jsonl"
        ).read_bytes()
    assert a["datasets"]["deep_search"]["success_rate"] == 1.0
    rows = [json.loads(x) for x in (tmp_path / "a" / "deep_research" / "trajectories.jsonl").read_text().splitlines()]
    assert all(r["success"] for r in rows) and all(r["metadata"]["rubric_score"] > 0 for r in rows)

    # the capability datasets: present, non-empty, byte-identical too (a["sha256"] covers every file)
    from deepresearch.synthesis.capabilities import CAPABILITY_DATASETS
    from deepresearch.synthesis.capability_schema import TEXT_ONLY

    for name in CAPABILITY_DATASETS:
        for f in ("tasks.jsonl", "trajectories.jsonl"):
            assert f"{name}/{f}" in a["sha256"], f"{name}/{f} missing"
            assert (tmp_path / "a" / name / f).read_bytes() == (tmp_path / "b" / name / f).read_bytes()
        assert a["datasets"][name]["tasks"] > 0
        if name not in TEXT_ONLY:
            assert a["datasets"][name]["trajectories"] > 0 and a["datasets"][name]["success_rate"] == 1.0
    assert "difficulty_hops2_kept" in a["datasets"]["deep_search_subgraph"]

    # and the gates pass them, each through its own suites
    from deepresearch.quality.gate import run_quality_gates

    report = run_quality_gates(small_cfg.quality, tmp_path / "a", tmp_path / "gated")
    for name in CAPABILITY_DATASETS:
        d = report.datasets[name]
        assert d.tasks_out > 0 and {s.name for s in d.suites} >= {f"{name}.tasks"}
        assert all(s.success for s in d.suites)
        assert (tmp_path / "gated" / name / "tasks.jsonl").is_file()
    assert "plan_consistency" in report.datasets["planning"].pass_rates

    # each stage's mix takes its configured share of the capability rows, on top of its own data
    from deepresearch.modeling.tokenizer import train_tokenizer
    from deepresearch.training.data import tokenizer_corpus
    from deepresearch.training.mixes import capability_samples

    tok = train_tokenizer(tokenizer_corpus(small_world_dir, tmp_path / "gated"), small_cfg.model)
    cfg = small_cfg.model_copy(update={"capabilities": small_cfg.capabilities.model_copy(update={
        "planning": small_cfg.capabilities.planning.model_copy(update={"sft": 0.2}),
        "query_report": small_cfg.capabilities.query_report.model_copy(update={"mid1": 0.5})})})
    extra, counts = capability_samples(cfg, "sft", tmp_path / "gated", tok, n_base=8, seed=0)
    assert counts["planning"] == 2 and len(extra) == sum(counts.values())  # 0.2 * 8 / (1 - 0.2 - ...) → 2
    extra, counts = capability_samples(cfg, "mid1", tmp_path / "gated", tok, n_base=4, seed=0)
    assert counts == {"query_report": 4}  # 0.5 * 4 / 0.5 = 4 of the 6 pairs


def test_missing_world_is_a_clear_error(small_cfg, tmp_path):
    from deepresearch.errors import WorldError

    with pytest.raises(WorldError, match="world directory not found"):
        synthesize(small_cfg, tmp_path / "nope", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
