"""Behaviour of the quality gates: each filter on hand-built trajectories, the expectation suites,
and the gate end to end on small RAW directories (written under tmp_path)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from deepresearch.agent.schema import Message, ToolCall, Trajectory
from deepresearch.config import ExpectationConfig, QualityConfig
from deepresearch.errors import DataQualityError
from deepresearch.quality.expectations import raise_if_failed, validate_dataset
from deepresearch.quality.filters import (
    citation_report,
    drop_near_duplicate_tasks,
    drop_repetition_loops,
    keep_shortest_successful,
    require_valid_citations,
)
from deepresearch.quality.gate import QualityReport, run_quality_gates, trajectory_frame
from deepresearch.synthesis.schema import DeepSearchTask, ResearchTask, RubricItem

# ---- builders -----------------------------------------------------------------------------------


def make_traj(
    trajectory_id: str,
    task_id: str,
    *,
    capability: str = "deep_search",
    n_calls: int = 2,
    tokens: int = 100,
    success: bool | None = True,
    answer: str | None = None,
    opened: list[str] | None = None,
    calls: list[ToolCall] | None = None,
    thoughts: list[str] | None = None,
) -> Trajectory:
    """A well-formed trajectory: one assistant turn per tool call, then the answer."""
    if calls is None:
        calls = [
            ToolCall(name="batch_web_surfer", arguments={"search": [f"{task_id} query {i}"]})
            for i in range(n_calls)
        ]
    if thoughts is None:
        thoughts = [f"Thought {i} on {task_id}." for i in range(len(calls))]  # no 4-gram repeats
    if answer is None:
        answer = (
            "Paris" if capability == "deep_search" else "## Findings\nThe museum opened in 1901 \\cite{D1}."
        )
    opened = ["D1"] if opened is None else opened
    messages = [
        Message(role="system", content="You are a research agent."),
        Message(role="user", content="Q?"),
    ]
    for thought, call in zip(thoughts, calls):
        messages.append(Message(role="assistant", content=f"{thought}\n{call.render()}"))
        messages.append(Message(role="tool", name=call.name, content="result text"))
    messages.append(Message(role="assistant", content=f"Done.\n<answer>{answer}</answer>"))
    return Trajectory(
        trajectory_id=trajectory_id,
        task_id=task_id,
        capability=capability,
        policy="scripted",
        messages=messages,
        outcome="answered",
        answer=answer,
        tool_calls=len(calls),
        turns=len(calls) + 1,
        tokens=tokens,
        opened_docs=opened,
        success=success,
    )


def ds_task(task_id: str, question: str | None = None) -> DeepSearchTask:
    return DeepSearchTask(
        task_id=task_id,
        question=question or f"Which city hosts the organization founded by the person behind {task_id}?",
        answer="Paris",
        hops=2,
        path=["E1", "E2"],
        subgraph=[],
    )


def dr_task(task_id: str, prompt: str | None = None) -> ResearchTask:
    return ResearchTask(
        sample_id=task_id,
        prompt=prompt or f"Write a cited report on the history and collections of museum {task_id}.",
        domain="culture",
        rubrics=[RubricItem(criterion="States the opening year", weight=1.0, axis="factual_accuracy")],
    )


def write_jsonl(path: Path, items) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(x.model_dump_json() + "\n" for x in items))


def write_raw(root: Path, ds_tasks, ds_trajs, dr_tasks, dr_trajs) -> Path:
    write_jsonl(root / "deep_search" / "tasks.jsonl", ds_tasks)
    write_jsonl(root / "deep_search" / "trajectories.jsonl", ds_trajs)
    write_jsonl(root / "deep_research" / "tasks.jsonl", dr_tasks)
    write_jsonl(root / "deep_research" / "trajectories.jsonl", dr_trajs)
    (root / "manifest.json").write_text(json.dumps({"schema_version": 1}) + "\n")
    return root


def standard_raw(root: Path) -> Path:
    """Two deep-search tasks (one with a longer second attempt, one near-duplicate task) and two
    research tasks (one attempt citing an unopened doc)."""
    ds_tasks = [ds_task("S1"), ds_task("S2"), ds_task("S3", question=ds_task("S1").question.upper() + "!!")]
    ds_trajs = [
        make_traj("S1-a", "S1", n_calls=3),
        make_traj("S1-b", "S1", n_calls=2),
        make_traj("S2-a", "S2", n_calls=1),
        make_traj("S3-a", "S3", n_calls=1),
    ]
    dr_tasks = [dr_task("R1"), dr_task("R2")]
    dr_trajs = [
        make_traj("R1-a", "R1", capability="deep_research", n_calls=2),
        make_traj("R2-a", "R2", capability="deep_research", n_calls=2, opened=["D9"]),
        make_traj("R2-b", "R2", capability="deep_research", n_calls=4, answer="A report without sources."),
    ]
    return write_raw(root, ds_tasks, ds_trajs, dr_tasks, dr_trajs)


CFG = QualityConfig(expectations=ExpectationConfig(min_rows=1))


# ---- filters ------------------------------------------------------------------------------------


def test_shortest_successful_keeps_fewest_tool_calls_and_drops_unsolved_tasks():
    trajs = [
        make_traj("A-long", "A", n_calls=3),
        make_traj("A-short", "A", n_calls=2),
        make_traj("A-failed", "A", n_calls=1, success=False),
        make_traj("B-1", "B", n_calls=1, success=False),
        make_traj("B-2", "B", n_calls=1, success=None),
    ]
    res = keep_shortest_successful(trajs)
    assert [t.trajectory_id for t in res.kept] == ["A-short"]  # the failed 1-call attempt never wins
    assert {d.id: d.reason for d in res.dropped} == {
        "A-long": "not_shortest",
        "A-failed": "unsuccessful",
        "B-1": "task_without_success",
        "B-2": "task_without_success",
    }


def test_shortest_successful_ties_break_on_tokens_then_id_regardless_of_order():
    trajs = [
        make_traj("A-z", "A", n_calls=2, tokens=50),
        make_traj("A-y", "A", n_calls=2, tokens=80),
        make_traj("B-z", "B", n_calls=2, tokens=50),
        make_traj("B-a", "B", n_calls=2, tokens=50),
    ]
    for order in (trajs, trajs[::-1]):
        kept = {t.task_id: t.trajectory_id for t in keep_shortest_successful(order).kept}
        assert kept == {"A": "A-z", "B": "B-a"}
    # output follows the first appearance of each task in the input
    assert [t.task_id for t in keep_shortest_successful(trajs[::-1]).kept] == ["B", "A"]


def test_ngram_loop_dropped_and_normal_trajectory_kept():
    looping = make_traj(
        "loop",
        "A",
        n_calls=2,
        thoughts=["I should check the source again. " * 4, "I should check the source again. " * 4],
    )  # "i should check the" ×8 > 6
    # "i will check the" six times is exactly the limit (more than max_repeats is a loop)
    normal = make_traj("ok", "A", n_calls=6, thoughts=[f"I will check the source {i}." for i in range(6)])
    res = drop_repetition_loops([looping, normal], n=4, max_repeats=6, max_identical_tool_calls=3)
    assert [t.trajectory_id for t in res.kept] == ["ok"]
    assert res.dropped[0].id == "loop" and res.dropped[0].reason == "ngram_loop"
    assert "repeated 8 times" in res.dropped[0].detail


def test_tool_call_json_frame_does_not_count_as_an_ngram_loop():
    # 12 calls share the '{"name": "batch_web_surfer", "arguments": ...' frame; only prose is counted
    t = make_traj("many", "A", n_calls=12, thoughts=[f"Clue {i}." for i in range(12)])
    assert drop_repetition_loops([t], n=4, max_repeats=6, max_identical_tool_calls=3).kept == [t]


def test_identical_tool_call_run_dropped_but_alternating_calls_kept():
    same = ToolCall(name="batch_web_surfer", arguments={"search": ["x"], "k": 5})
    same_reordered = ToolCall(name="batch_web_surfer", arguments={"k": 5, "search": ["x"]})
    other = ToolCall(name="todo", arguments={"add": "y"})
    loop = make_traj("loop", "A", calls=[same, same_reordered, same, same])  # 4 in a row > 3
    three = make_traj("three", "A", calls=[same, same, same, other])
    alternating = make_traj("alt", "A", calls=[same, other, same, other, same, other, same])
    res = drop_repetition_loops([loop, three, alternating], n=4, max_repeats=6, max_identical_tool_calls=3)
    assert [t.trajectory_id for t in res.kept] == ["three", "alt"]
    assert res.dropped[0].reason == "tool_call_loop" and "4 times in a row" in res.dropped[0].detail


def test_minhash_drops_near_duplicate_keeps_first_and_distinct():
    base = (
        "Which river flows through the capital of the country whose national museum was founded by the "
        "architect who designed the old observatory on the northern hill near the harbour in the year "
        "the railway first reached the town"
    )
    tasks = [
        ds_task("T1", base),
        ds_task("T2", "Which city is twinned with the birthplace of the composer of the anthem?"),
        # same words, different case/spacing/punctuation
        ds_task("T3", base.upper().replace(" ", "  ") + "?!"),
        ds_task("T4", base.replace("town", "village")),  # one word changed at the end
    ]
    res = drop_near_duplicate_tasks(tasks, lambda t: t.question, threshold=0.85, num_perm=128)
    assert [t.task_id for t in res.kept] == ["T1", "T2"]
    assert [(d.id, d.reason, d.duplicate_of) for d in res.dropped] == [
        ("T3", "near_duplicate", "T1"),
        ("T4", "near_duplicate", "T1"),
    ]


def test_citation_to_unopened_doc_dropped():
    good = make_traj("good", "R", capability="deep_research", opened=["D1", "D2"])
    bad = make_traj("bad", "R", capability="deep_research", answer="X \\cite{D1,D7}.", opened=["D1"])
    assert citation_report(bad).model_dump() == {
        "cited": ["D1", "D7"],
        "valid": ["D1"],
        "invalid": ["D7"],
        "rate": 0.5,
    }
    res = require_valid_citations([good, bad], require_citations=False)
    assert [t.trajectory_id for t in res.kept] == ["good"]
    assert res.dropped[0].reason == "invalid_citation" and "D7" in res.dropped[0].detail


def test_research_without_citation_dropped_only_when_required():
    uncited = make_traj("uncited", "R", capability="deep_research", answer="A report without sources.")
    search = make_traj("search", "S", capability="deep_search", answer="Paris")  # deep search need not cite
    required = require_valid_citations([uncited, search], require_citations=True)
    assert [t.trajectory_id for t in required.kept] == ["search"]
    assert required.reason_counts() == {"missing_citation": 1}
    assert len(require_valid_citations([uncited, search], require_citations=False).kept) == 2


# ---- expectation suites -------------------------------------------------------------------------


def test_trajectory_suite_passes_on_clean_data():
    trajs = [make_traj(f"R{i}-a", f"R{i}", capability="deep_research") for i in range(3)]
    res = validate_dataset(
        "deep_research.trajectories", trajectory_frame(trajs), ExpectationConfig(min_rows=3)
    )
    assert res.success and res.n_rows == 3
    assert all(e.success for e in res.expectations)
    assert res.expectations[0].type == "expect_table_columns_to_match_set"  # suite order is kept
    assert any(e.column == "n_citations" for e in res.expectations)  # research must cite
    raise_if_failed([res])  # no error


def test_suite_failure_lists_every_failed_expectation():
    trajs = [make_traj("A-a", "A", n_calls=5), make_traj("A-b", "A", n_calls=1)]  # duplicate task_id too
    res = validate_dataset(
        "deep_search.trajectories", trajectory_frame(trajs), ExpectationConfig(max_tool_calls=3)
    )
    failed = {(e.type, e.column) for e in res.failed}
    assert failed == {
        ("expect_column_values_to_be_between", "tool_calls"),
        ("expect_column_values_to_be_unique", "task_id"),
    }
    with pytest.raises(DataQualityError) as exc:
        raise_if_failed([res])
    assert len(exc.value.failed) == 2
    assert "tool_calls" in str(exc.value) and "1 of 2 rows unexpected" in str(exc.value)


def test_unknown_suite_name_lists_valid_ones():
    with pytest.raises(ValueError, match="deep_search.trajectories"):
        validate_dataset("nope", trajectory_frame([]), ExpectationConfig())


# ---- the gate -----------------------------------------------------------------------------------


def test_gate_failing_expectation_raises_with_report_and_writes_nothing(tmp_path):
    raw = standard_raw(tmp_path / "raw")
    out = tmp_path / "out"
    cfg = QualityConfig(expectations=ExpectationConfig(min_rows=1, max_tool_calls=1))  # S1-b has 2 calls
    with pytest.raises(DataQualityError) as exc:
        run_quality_gates(cfg, raw, out)
    err = exc.value
    assert any("expect_column_values_to_be_between" in f and "'tool_calls'" in f for f in err.failed)
    assert "deep_search.trajectories" in str(err)
    report = err.report
    assert isinstance(report, QualityReport) and not report.passed and report.digest is None
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # no temp directory left behind


def test_gate_end_to_end_outputs_and_stable_digest(tmp_path):
    raw = standard_raw(tmp_path / "raw")
    r1 = run_quality_gates(CFG, raw, tmp_path / "out1")
    r2 = run_quality_gates(CFG, raw, tmp_path / "out2")
    r3 = run_quality_gates(CFG, raw, tmp_path / "out1")  # replaces an existing OUT
    assert r1.passed and r1.digest == r2.digest == r3.digest

    out = tmp_path / "out1"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == json.loads((tmp_path / "out2" / "manifest.json").read_text())
    assert manifest["digest"] == r1.digest
    for rel, sha in manifest["sha256"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == sha
    assert set(manifest["sha256"]) == {
        "deep_search/tasks.jsonl",
        "deep_search/trajectories.jsonl",
        "deep_research/tasks.jsonl",
        "deep_research/trajectories.jsonl",
        "quality_report.json",
    }
    assert manifest["counts"] == {
        "deep_search": {"tasks": 2, "trajectories": 2},
        "deep_research": {"tasks": 2, "trajectories": 1},
    }

    def ids(rel):
        return [json.loads(line)["trajectory_id"] for line in (out / rel).read_text().splitlines()]

    assert ids("deep_search/trajectories.jsonl") == ["S1-b", "S2-a"]  # S3 near-duplicate of S1
    assert ids("deep_research/trajectories.jsonl") == ["R1-a"]  # R2-a cites D1 unopened, R2-b cites nothing
    ds = r1.datasets["deep_search"]
    assert ds.dropped == {"near_duplicate": 1, "not_shortest": 1, "task_removed": 1}
    assert r1.datasets["deep_research"].dropped == {"invalid_citation": 1, "missing_citation": 1}
    assert json.loads((out / "quality_report.json").read_text())["digest"] == r1.digest
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_gate_missing_raw_file_names_the_path(tmp_path):
    raw = standard_raw(tmp_path / "raw")
    (raw / "deep_research" / "trajectories.jsonl").unlink()
    with pytest.raises(DataQualityError, match=r"deep_research/trajectories\.jsonl"):
        run_quality_gates(CFG, raw, tmp_path / "out")


def test_gate_malformed_line_names_file_and_line(tmp_path):
    raw = standard_raw(tmp_path / "raw")
    path = raw / "deep_search" / "trajectories.jsonl"
    path.write_text(path.read_text() + '{"trajectory_id": "broken"\n')
    with pytest.raises(DataQualityError, match=r"deep_search/trajectories\.jsonl:5: malformed Trajectory"):
        run_quality_gates(CFG, raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()
