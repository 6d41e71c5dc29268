"""Evaluation: compliance (ResearchRubrics), deep-search EM/F1, Elo with bootstrap CIs, cost, the report."""

import random

import pytest

from deepresearch.agent.schema import Trajectory
from deepresearch.evaluation.accuracy import evaluate_deep_search, exact_match, token_f1
from deepresearch.evaluation.compliance import GroundTruthLabeler, compliance_score, evaluate_compliance
from deepresearch.evaluation.cost import cost_summary
from deepresearch.evaluation.elo import Game, elo_ratings, elo_with_ci, pairwise_games
from deepresearch.evaluation.intervals import bootstrap_mean, paired_bootstrap_diff, resample_indices
from deepresearch.evaluation.metrics import (
    Difference,
    EpisodeRecord,
    JudgeAgreement,
    MetricEstimate,
    summarize,
)
from deepresearch.evaluation.probe import KINDS, ProbeScore
from deepresearch.evaluation.report import CheckpointEval, EvalResults, write_report
from deepresearch.synthesis.run import deep_search_correct
from deepresearch.synthesis.schema import DeepSearchTask, ResearchTask, RubricCheck, RubricItem
from tests.conftest import tiny_config

# ---- compliance ----------------------------------------------------------------------------------
REPORT = """# Veltrana Labs: research report

## Overview
Veltrana Labs is a robotics company founded in 1987 \\cite{D0000001}.

## Key facts
- It has 4200 employees.
- It was founded in 1984 \\cite{D0000002}.
"""


def _item(kind, weight, **kw):
    return RubricItem(criterion=f"{kind} {kw}", weight=weight, axis="x", check=RubricCheck(kind=kind, **kw))


ITEMS = [
    _item("fact", 3.0, values=["1987"]),  # stated and cited → satisfied (s = 1)
    _item("fact", 2.0, values=["4200", "4,200"]),  # stated without citation → partially (s = 0.5)
    _item("fact", 2.0, values=["Orvane"]),  # absent → not (s = 0)
    _item("penalty", -3.0, values=["1984"]),  # asserted as fact → triggered (s = 1, weight −3)
    _item("structure", 1.0, min_count=3),  # two "## " sections of three → partially (s = 0.5)
]


def test_compliance_by_hand():
    labels = GroundTruthLabeler().label(REPORT, ITEMS)
    assert labels == ["satisfied", "partially", "not", "satisfied", "partially"]
    # Σ positive w = 3 + 2 + 2 + 1 = 8
    # score  = (3·1 + 2·0.5 + 2·0 + (−3)·1 + 1·0.5) / 8 = 1.5 / 8 = 0.1875
    # binary = (3·1 + 2·0   + 2·0 + (−3)·1 + 1·0  ) / 8 = 0
    assert compliance_score(ITEMS, labels) == pytest.approx(0.1875)
    assert compliance_score(ITEMS, labels, binary=True) == pytest.approx(0.0)

    tasks = [ResearchTask(sample_id=s, prompt="p", domain="d", rubrics=ITEMS) for s in ("a", "b")]
    summary = evaluate_compliance(tasks, {"a": REPORT, "b": None}, GroundTruthLabeler())
    # task b produced no report: 0. Mean = (0.1875 + 0) / 2
    assert summary.n == 2 and summary.mean == pytest.approx(0.09375) and summary.mean_binary == 0.0
    assert summary.per_task[1].labels == []
    with pytest.raises(ValueError, match=r"no report entry for 1 task\(s\): \['b'\]"):
        evaluate_compliance(tasks, {"a": REPORT}, GroundTruthLabeler())


def test_compliance_with_a_judge_labeler():
    class Fixed:  # a stand-in for judge.model.Judge: labels every item satisfied
        def label(self, report, items):
            return ["satisfied"] * len(items)

    task = ResearchTask(sample_id="a", prompt="p", domain="d", rubrics=ITEMS)
    # (3 + 2 + 2 − 3 + 1) / 8 = 5/8
    assert evaluate_compliance([task], {"a": REPORT}, Fixed()).mean == pytest.approx(5 / 8)
    unchecked = ResearchTask(sample_id="u", prompt="p", domain="d", rubrics=[RubricItem(criterion="c", weight=1, axis="x")])
    with pytest.raises(ValueError, match="no check; grade it with a trained judge"):
        evaluate_compliance([unchecked], {"u": REPORT}, GroundTruthLabeler())


# ---- accuracy ------------------------------------------------------------------------------------
def test_exact_match_and_f1_by_hand():
    assert exact_match("The Eiffel Tower!", ["Eiffel Tower"]) == 1.0  # case, article, punctuation
    assert exact_match("Eiffel Tower in Paris", ["Eiffel Tower"]) == 0.0
    # pred tokens (eiffel, tower, in, paris), gold (eiffel, tower): P = 2/4, R = 2/2, F1 = 2·0.5·1 / 1.5 = 2/3
    assert token_f1("Eiffel Tower in Paris", ["Eiffel Tower"]) == pytest.approx(2 / 3)
    # max over aliases: vs "Mara Quell" P = 1/1, R = 1/2 → 2/3; vs "Quell" → 1
    assert token_f1("Quell", ["Mara Quell", "Quell"]) == 1.0
    assert token_f1("Mara Quell", ["Mara Quell Institute"]) == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    assert exact_match(None, ["x"]) == token_f1("", ["x"]) == token_f1("Orvane", ["Eiffel Tower"]) == 0.0
    assert exact_match("4,200", ["4200"]) == 1.0  # punctuation is stripped


def test_deep_search_accuracy_matches_synthesis_success():
    def task(i, answer, aliases=()):
        return DeepSearchTask(task_id=f"t{i}", question="q", answer=answer, aliases=list(aliases), hops=2, path=["E1"], subgraph=[])

    tasks = [task(0, "Mara Quell", ["M. Quell"]), task(1, "1987"), task(2, "Orvane")]
    answers = {"t0": "m. quell", "t1": "It was 1987", "t2": None}
    summary = evaluate_deep_search(tasks, answers)
    # EM: 1, 0, 0 → 1/3.  F1: 1; "it was 1987" vs "1987": P = 1/3, R = 1 → 0.5; 0 → mean 1.5/3
    assert summary.exact_match == pytest.approx(1 / 3) and summary.f1 == pytest.approx(0.5)
    assert [p.exact_match == 1.0 for p in summary.per_task] == [deep_search_correct(t, answers[t.task_id]) for t in tasks]


# ---- Elo -----------------------------------------------------------------------------------------
def test_elo_single_game_and_ties_by_hand():
    # E = 1 / (1 + 10^0) = 0.5; the winner moves by 16·(1 − 0.5) = +8, the loser by −8
    assert elo_ratings([Game("t", "a", "b", 1.0)], ["a", "b"], k=16, n_orders=1) == {"a": 1008.0, "b": 992.0}
    ties = [Game(f"t{i}", "a", "b", 0.5) for i in range(5)]
    assert elo_ratings(ties, ["a", "b", "c"]) == {"a": 1000.0, "b": 1000.0, "c": 1000.0}  # c played nothing


def test_pairwise_games_use_common_tasks_and_ties():
    games = pairwise_games({"a": {"t1": 0.5, "t2": 0.9}, "b": {"t1": 0.5, "t2": 0.1, "t3": 1.0}})
    assert games == [Game("t1", "a", "b", 0.5), Game("t2", "a", "b", 1.0)]  # t3: only b scored it


@pytest.fixture(scope="module")
def scores():
    rng = random.Random(0)
    tasks = [f"dr-{i:03d}" for i in range(16)]
    out = {"weak": {}, "mid": {}, "champ": {}}
    for t in tasks:
        w = rng.uniform(0.0, 0.5)
        out["weak"][t] = w
        out["mid"][t] = w + rng.choice([-0.1, 0.0, 0.2, 0.3])  # usually beats weak, sometimes ties or loses
        out["champ"][t] = 1.0  # wins every comparison
    return out


def test_elo_dominating_checkpoint_ranks_first_with_intervals(scores):
    results = elo_with_ci(scores, k=16, n_bootstrap=100, seed=0)
    assert [r.name for r in results] == ["champ", "mid", "weak"]
    for r in results:
        assert r.ci_low <= r.rating <= r.ci_high
    assert sum(r.rating for r in results) == pytest.approx(3000.0)  # zero-sum updates
    assert results[0].ci_low > results[1].ci_high  # the champion is separated from the rest
    assert elo_with_ci(scores, k=16, n_bootstrap=100, seed=0) == results  # seeded
    assert elo_with_ci(scores, k=16, n_bootstrap=100, seed=1) != results
    with pytest.raises(ValueError, match="at least two checkpoints"):
        elo_with_ci({"solo": {"t": 1.0}})


# ---- bootstrap intervals -------------------------------------------------------------------------
def test_bootstrap_mean_by_hand_and_against_a_loop():
    # two tasks scoring 0 and 1: a resample's mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4, so with
    # many resamples the 2.5 % quantile is 0 and the 97.5 % quantile is 1
    est = bootstrap_mean([0.0, 1.0], n_resamples=4000, seed=0)
    assert (est.value, est.ci_low, est.ci_high, est.n) == (0.5, 0.0, 1.0, 2)
    # a constant metric has no spread
    assert bootstrap_mean([0.3] * 7, n_resamples=50, seed=0).ci_low == pytest.approx(0.3)
    # the vectorized mean equals a loop over the very same resampled indices
    rng = random.Random(1)
    values = [rng.random() for _ in range(23)]
    idx = resample_indices(23, n_resamples=300, seed=5)
    loop = sorted(sum(values[i] for i in row) / 23 for row in idx)
    est = bootstrap_mean(values, n_resamples=300, seed=5)
    # numpy's default quantile interpolates linearly between order statistics: position q·(B − 1)
    lo_pos = 0.025 * 299
    assert est.ci_low == pytest.approx(loop[int(lo_pos)] + (lo_pos % 1) * (loop[int(lo_pos) + 1] - loop[int(lo_pos)]))
    assert bootstrap_mean(values, n_resamples=300, seed=5) == est  # seeded
    assert bootstrap_mean(values, n_resamples=300, seed=6) != est


def test_bootstrap_width_matches_the_normal_approximation():
    # 100 tasks, half solved: standard error sqrt(0.25 / 100) = 0.05, so a 95 % interval ≈ 0.5 ± 0.098
    est = bootstrap_mean([1.0, 0.0] * 50, n_resamples=4000, seed=0)
    assert est.ci_low == pytest.approx(0.402, abs=0.02) and est.ci_high == pytest.approx(0.598, abs=0.02)


def test_paired_difference_removes_the_shared_task_variance():
    rng = random.Random(0)
    b = [rng.choice([0.0, 1.0]) for _ in range(40)]
    a = [min(1.0, x + 0.25) for x in b]  # a gains 0.25 on every task b fails, ties where b succeeds
    diff = paired_bootstrap_diff(a, b, n_resamples=2000, seed=0)
    gain = 0.25 * b.count(0.0) / 40
    assert diff.value == pytest.approx(gain)
    assert diff.ci_low > 0 and diff.excludes_loss()  # paired: a is better on every task it differs
    # unpaired, the two means' intervals overlap: the task-to-task spread hides the gain
    ea, eb = bootstrap_mean(a, seed=0), bootstrap_mean(b, seed=0)
    assert ea.ci_low < eb.ci_high
    assert not paired_bootstrap_diff(b, a, seed=0).excludes_loss()
    with pytest.raises(ValueError, match="align task by task"):
        paired_bootstrap_diff([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_mean([])


# ---- cost ----------------------------------------------------------------------------------------
def _traj(i, tokens, calls, turns, **meta):
    return Trajectory(trajectory_id=f"x{i}", task_id=f"t{i}", capability="deep_research", policy="p", messages=[],
                      outcome="answered", tokens=tokens, tool_calls=calls, turns=turns, metadata=meta)


def test_cost_summary():
    trajs = [_traj(0, 100, 2, 3, wall_s=1.0), _traj(1, 300, 5, 6, wall_s=2.0), _traj(2, 200, 8, 9, wall_s=6.0)]
    c = cost_summary(trajs)
    # tokens 100, 300, 200: mean 200, median 200; calls 2, 5, 8: mean 5, median 5; wall 1, 2, 6: mean 3, median 2
    assert (c.n, c.tokens_mean, c.tokens_median, c.tool_calls_mean, c.tool_calls_median) == (3, 200, 200, 5, 5)
    assert (c.turns_mean, c.wall_s_mean, c.wall_s_median) == (6, 3.0, 2.0)
    partial = cost_summary(trajs[:2] + [_traj(3, 1, 1, 1)])  # one episode without a recorded wall time
    assert partial.wall_s_mean is None and partial.wall_s_median is None
    assert cost_summary(trajs, wall_s=[4.0, 4.0, 1.0]).wall_s_median == 4.0
    with pytest.raises(ValueError, match="2 wall times for 3 trajectories"):
        cost_summary(trajs, wall_s=[1.0, 2.0])


# ---- report --------------------------------------------------------------------------------------
def test_write_report(tmp_path, scores):
    trajs = [_traj(0, 100, 2, 3, wall_s=1.0), _traj(1, 300, 5, 6, wall_s=2.0)]
    results = EvalResults(
        title="Tiny evaluation",
        checkpoints=[
            CheckpointEval(name="sft", compliance=0.42, compliance_binary=0.3, exact_match=0.5, f1=0.61, cost=cost_summary(trajs)),
            CheckpointEval(name="rl", compliance=0.55, compliance_binary=0.41, exact_match=0.6, f1=0.7,
                           intervals={"exact_match": MetricEstimate(value=0.6, ci_low=0.45, ci_high=0.75, n=40)}),
        ],
        elo=elo_with_ci(scores, n_bootstrap=20),
        curves={"sft/loss": [(0, 3.1), (10, 2.2), (20, 1.9)], "rl/reward": [(0, 0.1), (1, 0.3)]},
        champion="rl",
        decisions=["policy v2 promoted to champion: mean_reward beats the champion v1"],
        notes=["held-out tasks: seed 1000"],
        differences=[Difference(a="rl", b="sft", metric="exact_match", value=0.1, ci_low=0.02, ci_high=0.19, n=40)],
        probe={"rl": {k: ProbeScore(k, 4 if k == "tool" else 0, 3 if k == "tool" else 0) for k in KINDS}},
        judge_agreement=JudgeAgreement(items=12, reports=2, accuracy=0.75, macro_f1=0.7,
                                       confusion=[[4, 1, 0], [1, 2, 0], [0, 1, 3]]),
    )
    md = write_report(results, tmp_path / "report", files={"episodes.jsonl": "{}\n"})
    out = tmp_path / "report"
    assert md == out / "report.md"
    assert sorted(p.name for p in out.iterdir()) == [
        "curves.png", "elo.png", "episodes.jsonl", "report.html", "report.md", "results.json", "scores.png"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temp directory left beside it
    for png in ("curves.png", "elo.png", "scores.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    assert "| champ |" in text and "(elo.png)" in text
    assert "| rl (champion) | 60% [45%, 75%] |" in text and "| sft | — |" in text  # intervals; sft had none
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    # the decision first, then what separates the checkpoints; no section repeats the metrics
    assert headings[:3] == ["## Decision", "## Held-out metrics, mean [95 % bootstrap interval over tasks]",
                            "## Paired differences, mean [95 % paired bootstrap interval]"]
    assert not {"## Scores", "## Cost per report"} & set(headings)
    decision = text.split("## Decision")[1].split("## ")[0]
    assert "Champion: **rl**" in decision and "- policy v2 promoted to champion: mean_reward" in decision
    assert "policy v2" not in text.split("## Notes")[1]  # stated once, at the top
    # the scores plot sits under the table of the same metrics
    assert text.index("(scores.png)") < text.index("## Paired differences")
    assert "| rl − sft | +10% [+2%, +19%] |" in text  # the paired difference
    assert "| checkpoint | tool |" in text and "| rl | 75 % |" in text  # probe: only kinds with spans
    assert "| 2 | 12 | 0.750 | 0.700 | 4,1,0 / 1,2,0 / 0,1,3 |" in text
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "<td>sft</td>" in page
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert len(headings) == len(set(headings)), headings  # each section once, its plot under its table
    assert page.count("<h2>Elo</h2>") == 1
    # Elo rows in the checkpoints' (pipeline) order, as every other table; names without a checkpoint last
    from deepresearch.evaluation.report import elo_in_order

    ranked = results.model_copy(update={"elo": sorted(results.elo + [r.model_copy(update={"name": n}) for r, n in
                                                                     zip(results.elo, ("rl", "sft"))],
                                                      key=lambda r: -r.rating)})
    names = [r.name for r in elo_in_order(ranked)]
    assert names[:2] == ["sft", "rl"] and sorted(names[2:]) == sorted(r.name for r in results.elo)
    assert EvalResults.model_validate_json((out / "results.json").read_text()) == results
    # a percentile interval may miss its point estimate (few tasks): the plot still draws it
    from deepresearch.evaluation.elo import EloResult
    from deepresearch.evaluation.report import plot_elo

    assert plot_elo([EloResult(name="a", rating=1010.0, ci_low=1012.0, ci_high=1020.0)], tmp_path / "elo.png")
    # a report with means only: no interval to plot, no Elo or curves
    write_report(EvalResults(checkpoints=[CheckpointEval(name="sft", compliance=0.4)]), tmp_path / "small")
    assert sorted(p.name for p in (tmp_path / "small").iterdir()) == ["report.html", "report.md", "results.json"]


def test_write_report_swaps_in_one_version(tmp_path, monkeypatch):
    """The report directory is replaced whole (io.atomic_dir): results.json and report.md never come from two
    different results, a failed write changes nothing, and the evaluation's other files are carried over."""
    from deepresearch.evaluation import report as R

    out = tmp_path / "eval"
    first = EvalResults(title="first", checkpoints=[
        CheckpointEval(name="sft", intervals={"mean_reward": MetricEstimate(value=0.3, ci_low=0.2, ci_high=0.4, n=9)}),
        CheckpointEval(name="rl", intervals={"mean_reward": MetricEstimate(value=0.5, ci_low=0.1, ci_high=0.45, n=9)}),
    ])
    write_report(first, out, files={"episodes.jsonl": "e1\n"})
    (out / "elo.png").write_bytes(b"stale")  # a plot this report does not draw: not carried into the next
    second = first.model_copy(update={"title": "second", "decisions": ["policy v1 not promoted: worse"]})

    def fail(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(R, "render_markdown", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(second, out)
    assert EvalResults.model_validate_json((out / "results.json").read_text()).title == "first"  # unchanged
    assert (out / "report.md").read_text().startswith("# first") and sorted(p.name for p in tmp_path.iterdir()) == ["eval"]
    monkeypatch.undo()
    write_report(second, out)
    assert EvalResults.model_validate_json((out / "results.json").read_text()).title == "second"
    assert (out / "report.md").read_text().startswith("# second") and "policy v1 not promoted" in (out / "report.html").read_text()
    assert (out / "episodes.jsonl").read_text() == "e1\n" and not (out / "elo.png").exists()
    # the interval plot: one panel per measured metric; an interval that misses its mean is still drawn
    assert R.plot_scores(second, tmp_path / "s.png") and not R.plot_scores(EvalResults(checkpoints=[]), tmp_path / "n.png")


# ---- per-checkpoint metrics, paired differences, MLflow names ------------------------------------
def _record(checkpoint, i, *, solved, capability="deep_search", **kw):
    base = dict(checkpoint=checkpoint, task_id=f"{capability}-{i:02d}", capability=capability, outcome="answered",
                well_formed=True, tool_calls=3, tool_errors=0, tokens=100, output_tokens=50, wall_s=1.0,
                answer="a", reward=float(solved))
    if capability == "deep_search":
        base.update(exact_match=float(solved), f1=float(solved))
    else:
        base.update(compliance=0.5 * solved, compliance_binary=0.0)
    return EpisodeRecord(**{**base, **kw})


def _records():
    """base solves deep-search tasks 0-9, sft 0-29 of 40; research: base none of 10, sft all."""
    out = []
    for name, k, research in (("base", 10, False), ("sft", 30, True)):
        out += [_record(name, i, solved=i < k) for i in range(40)]
        out += [_record(name, i, solved=research, capability="deep_research") for i in range(10)]
    return out


def test_summarize_means_intervals_and_paired_differences_joined_by_task():
    records = _records()
    metrics, diffs = summarize(records, ["base", "sft"], n_resamples=500, seed=0)
    base, sft = metrics
    assert (base.exact_match, sft.exact_match) == (10 / 40, 30 / 40)
    assert base.mean_reward == 10 / 50 and sft.mean_reward == 40 / 50  # reward over all 50 tasks
    assert (base.compliance, sft.compliance, sft.well_formed_rate, sft.judge_compliance) == (0.0, 0.5, 1.0, None)
    em = sft.intervals["exact_match"]
    assert em.n == 40 and em.ci_low < 0.75 < em.ci_high and "judge_compliance" not in sft.intervals
    by = {(d.a, d.b, d.metric): d for d in diffs}
    d = by[("sft", "base", "exact_match")]  # consecutive pair: later − earlier
    # sft solves every task base solves plus 20 more: every resample's difference is positive
    assert d.value == pytest.approx(0.5) and d.ci_low > 0.3 and d.n == 40
    assert by[("sft", "base", "mean_tool_calls")].value == 0.0
    assert by[("sft", "base", "compliance")].ci_low == by[("sft", "base", "compliance")].ci_high == 0.5
    # joined by task id: any record order gives the same figures
    shuffled = records[::-1]
    assert summarize(shuffled, ["base", "sft"], n_resamples=500, seed=0) == (metrics, diffs)
    assert summarize(records, ["base", "sft"], n_resamples=500, seed=1) != (metrics, diffs)
    with pytest.raises(ValueError, match="played other tasks"):
        summarize(records[:-1], ["base", "sft"])
    with pytest.raises(ValueError, match="two records of task"):
        summarize(records + records[:1], ["base", "sft"])


def test_mlflow_names_of_intervals_differences_and_probe():
    from deepresearch.evaluation.probe import ProbeScore
    from deepresearch.evaluation.run import mlflow_metrics

    metrics, diffs = summarize(_records(), ["base", "sft"], n_resamples=100, seed=0)
    probe = {"sft": {"all": {"tool": ProbeScore("tool", 4, 3), "open": ProbeScore("open", 0, 0)},
                     "deep_search": {"tool": ProbeScore("tool", 2, 2)}}}
    names = mlflow_metrics(metrics, diffs, probe)
    assert names["eval/sft/exact_match"] == 0.75
    assert names["eval/sft/exact_match_ci_low"] < 0.75 < names["eval/sft/exact_match_ci_high"]
    assert names["eval/diff/sft_vs_base/exact_match"] == pytest.approx(0.5)
    assert {"eval/diff/sft_vs_base/mean_reward_ci_low", "eval/diff/sft_vs_base/mean_reward_ci_high"} <= set(names)
    assert names["probe/sft/tool"] == 0.75 and names["probe/sft/deep_search/tool"] == 1.0
    assert "probe/sft/open" not in names  # no span of that kind: no figure


def test_policy_decision_needs_its_gate_metric_and_the_baseline():
    from deepresearch.config import EvalConfig
    from deepresearch.evaluation.promotion import decide_policy

    records = [r.model_copy(update={"reward": None}) for r in _records()]  # no judge: no reward
    metrics, diffs = summarize(records, ["base", "sft"], n_resamples=100, seed=0)
    by = {m.name: m for m in metrics}
    v = decide_policy(by, diffs, EvalConfig(), candidate="sft", baseline="base", champion=None)
    assert not v.promoted and "mean_reward was not measured" in v.reasons[-1]
    ok = decide_policy(by, diffs, EvalConfig(gate_metric="exact_match"), candidate="sft", baseline="base",
                       champion=None, champion_note="no policy champion yet")
    assert ok.promoted and "decided on the floors and base alone" in ok.reasons[-1]
    worse = decide_policy(by, diffs, EvalConfig(gate_metric="exact_match"), candidate="base", baseline="sft",
                          champion=None)
    assert not worse.promoted and "below sft's 0.7500" in " ".join(worse.reasons)


def test_policy_decision_refuses_a_significant_loss_on_a_guard_metric():
    """A candidate with the better mean reward that is significantly less often well-formed than the
    baseline (as the tiny run's RL against SFT: −11 points [−18, −5]) is not promoted; within noise it is."""
    from deepresearch.config import EvalConfig
    from deepresearch.evaluation.promotion import decide_policy

    def records(rl_malformed):
        out = []
        for i in range(40):
            out.append(_record("sft", i, solved=i < 20))
            # rl solves two more tasks, but its first `rl_malformed` episodes end without an answer of their own
            out.append(_record("rl", i, solved=i < 22, well_formed=i >= rl_malformed))
        return out + [_record(n, i, solved=i < 5, capability="deep_research") for n in ("sft", "rl") for i in range(10)]

    for malformed, promoted in ((12, False), (1, True)):
        metrics, diffs = summarize(records(malformed), ["sft", "rl"], n_resamples=500, seed=0)
        by = {m.name: m for m in metrics}
        assert by["rl"].mean_reward > by["sft"].mean_reward and by["rl"].well_formed_rate >= 0.5  # gate and floor pass
        guards = ["exact_match", "compliance", "well_formed_rate", "judge_compliance"]  # the defaults + one unmeasured
        v = decide_policy(by, diffs, EvalConfig(guard_metrics=guards), candidate="rl", baseline="sft", champion=None)
        text = " ".join(v.reasons)
        assert v.promoted is promoted, text
        assert v.metrics["well_formed_rate_vs_sft"] == pytest.approx(-malformed / 50)
        if promoted:
            assert "well_formed_rate is not significantly worse than sft's" in text
        else:
            assert "well_formed_rate is worse than sft's: paired difference -0.2400" in text
            assert "exact_match is not significantly worse" in text  # EM rose: that guard passes
        assert "compliance is not significantly worse" in text  # the same research scores
        # no judge: judge_compliance has no paired difference; said, and not a refusal
        assert "judge_compliance of rl − sft has no paired difference" in text
    off = decide_policy(by, diffs, EvalConfig(guard_metrics=[]), candidate="rl", baseline="sft", champion=None)
    assert off.promoted and "well_formed_rate is" not in " ".join(off.reasons)


# ---- checkpoints in processes ---------------------------------------------------------------------
def test_checkpoints_played_in_their_own_processes_give_the_episodes_and_probe_of_one_process(
    small_world_dir, tiny_checkpoint, tmp_path
):
    """evaluation.checkpoint_processes: each HF checkpoint plays (and is probed) in a spawned process; the
    episodes, every metric and the probe are those of playing them one after another in this process."""
    from deepresearch.evaluation.run import evaluate

    ckpts = {"mid": tiny_checkpoint(tmp_path / "mid", stage="mid2", words=("delta", "omega")),
             "sft": tiny_checkpoint(tmp_path / "sft", stage="sft"), "expert": "expert"}
    out = {}
    for n in (1, 2):
        cfg = tiny_config("tracking.enabled=false", "evaluation.n_deep_search=3", "evaluation.n_deep_research=1",
                          "evaluation.max_new_tokens=12", "agent.budget.max_turns=3", "evaluation.probe_episodes=1",
                          "evaluation.elo_bootstrap=10", f"evaluation.checkpoint_processes={n}")
        out[n] = evaluate(cfg, small_world_dir, ckpts, tmp_path / f"eval{n}", progress=False)

    def episodes(ev):
        return [r.model_dump(exclude={"wall_s"}) for r in ev.records]

    one, two = out[1], out[2]
    assert episodes(two) == episodes(one) and len(one.records) == 3 * 4
    assert [m.name for m in two.checkpoints] == ["mid", "sft", "expert"]
    assert list(two.probe) == ["mid", "sft"] and two.probe == one.probe
    timed = {"mean_wall_s"}  # wall seconds differ from run to run; nothing else may
    assert [d for d in two.differences if d.metric not in timed] == [d for d in one.differences if d.metric not in timed]
