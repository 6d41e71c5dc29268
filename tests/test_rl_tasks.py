"""The PPO stage's tasks and rewards, without running anything: judge-scored reports, exact-match
deep search, the floor for episodes without an answer, and the seeded walk through the task pools."""

import pytest


def test_rewards_judge_reports_match_answers_and_floor_missing_answers():
    from deepresearch.agent.schema import Trajectory
    from deepresearch.judge.reward import no_answer_reward
    from deepresearch.rl.buffer import Episode
    from deepresearch.rl.tasks import pool_slice, score_episodes, split_episodes
    from deepresearch.synthesis.schema import DeepSearchTask, ResearchTask, RubricItem

    ds = DeepSearchTask(
        task_id="q", question="?", answer="Paris", aliases=["paris, france"], hops=2, path=[], subgraph=[]
    )
    dr = ResearchTask(
        sample_id="r",
        prompt="p",
        domain="d",
        rubrics=[
            RubricItem(criterion="a", weight=3, axis="x"),
            RubricItem(criterion="b", weight=2, axis="x"),
            RubricItem(criterion="stale", weight=-1, axis="x"),
        ],
    )

    def ep(task, outcome, answer):
        traj = Trajectory(
            trajectory_id="t",
            task_id=task.task_id,
            capability=task.capability,
            policy="hf",
            messages=[],
            outcome=outcome,
            answer=answer,
        )
        return Episode("e", task.task_id, task.capability, [1], [0], [0.0], traj)

    class Judge:  # labels in item order: a satisfied, b partially, penalty triggered
        def label_pairs(self, pairs):
            return ["satisfied", "partially", "satisfied"] * (len(pairs) // 3)

    tasks = [ds, ds, ds, dr, dr, dr]
    eps = [
        ep(ds, "answered", "Paris"),
        ep(ds, "answered", "Lyon"),
        ep(ds, "budget_exhausted", "Paris"),
        ep(dr, "answered", "report"),
        ep(dr, "budget_exhausted", "forced report"),
        ep(dr, "answered", "  "),
    ]
    # report: (3·1 + 2·0 + 1·(−1)) / 5 = 0.4; no answer of its own: −1 / 5 (every penalty, nothing earned)
    assert score_episodes(tasks, eps, Judge()) == pytest.approx([1.0, 0.0, 0.0, 0.4, -0.2, -0.2])
    assert no_answer_reward(dr) == pytest.approx(-0.2) and no_answer_reward(ds) == 0.0
    with pytest.raises(ValueError, match="episode 1 is of task 'r', expected 'q'"):
        score_episodes([ds, ds], [eps[0], eps[3]], Judge())
    assert (
        split_episodes(2, 0.5) == (1, 1)
        and split_episodes(2, 0.9) == (1, 1)
        and split_episodes(4, 1.0) == (4, 0)
    )
    # a pool is walked in seeded passes: every item once per pass, the same items for the same position
    walk = pool_slice("abc", 0, 6, seed="s")
    assert (
        sorted(walk[:3]) == sorted(walk[3:]) == ["a", "b", "c"]
        and pool_slice("abc", 2, 3, seed="s") == walk[2:5]
    )


def test_each_task_is_played_samples_per_task_times_in_a_row():
    from types import SimpleNamespace

    from deepresearch.config import load_config
    from deepresearch.errors import ConfigError
    from deepresearch.rl.tasks import informative_episodes, step_tasks, task_groups

    cfg = load_config("configs/tiny.yaml", ["rl.episodes_per_step=8", "rl.samples_per_task=4", "rl.task_baseline=true"])
    pools = ([SimpleNamespace(task_id=f"ds{i}") for i in range(5)], [SimpleNamespace(task_id=f"dr{i}") for i in range(3)])
    steps = [step_tasks(cfg, pools, s) for s in range(3)]
    for tasks in steps:
        ids = [t.task_id for t in tasks]
        # 2 tasks (one of each capability at the SFT ratio), 4 samples of each, a group's samples together
        assert len(ids) == 8 and ids[0].startswith("ds") and ids[4].startswith("dr")
        assert ids == [ids[0]] * 4 + [ids[4]] * 4
        assert task_groups(tasks) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert len({s[0].task_id for s in steps}) == 3  # each step walks on to new tasks
    # only tasks whose samples earned different rewards go to the update (skip_uniform_groups)
    tasks = steps[0]
    assert informative_episodes(tasks, [1, 0, 0, 1, 0, 0, 0, 0]) == [0, 1, 2, 3]
    assert informative_episodes(tasks, [1, 1, 1, 1, -0.2, -0.2, -0.2, -0.2]) == []
    assert informative_episodes(tasks, [0, 0, 0, 1, 0.5, 0, 0, 0]) == list(range(8))
    with pytest.raises(ConfigError, match="not a multiple of rl.samples_per_task"):
        load_config("configs/tiny.yaml", ["rl.episodes_per_step=8", "rl.samples_per_task=3"])
    for flag in ("task_baseline", "skip_uniform_groups"):
        with pytest.raises(ConfigError, match=f"{flag} needs rl.samples_per_task >= 2"):
            load_config("configs/tiny.yaml", [f"rl.{flag}=true"])


def test_rollout_metrics_report_reward_spread_and_success():
    from deepresearch.agent.schema import Trajectory
    from deepresearch.rl.buffer import Episode
    from deepresearch.rl.train import rollout_metrics
    from deepresearch.synthesis.schema import DeepSearchTask

    task = DeepSearchTask(task_id="q", question="?", answer="a", hops=2, path=[], subgraph=[])

    def ep(success, outcome):
        traj = Trajectory(trajectory_id="t", task_id="q", capability="deep_search", policy="hf", messages=[],
                          outcome=outcome, answer="a", success=success)
        return Episode("e", "q", "deep_search", [1, 2, 3], [0, 1, 1], [0.0, -1.0, -1.0], traj)

    # rewards 1, 0, 0, 1: mean 0.5, population std 0.5; two of four succeeded, three answered
    m = rollout_metrics([task] * 4, [ep(True, "answered"), ep(False, "answered"), ep(False, "budget_exhausted"),
                                     ep(True, "answered")], [1.0, 0.0, 0.0, 1.0])
    assert m["rl/reward_mean"] == 0.5 and m["rl/reward_std"] == 0.5
    assert m["rl/success_rate"] == 0.5 and m["rl/answered_rate"] == 0.75
    assert m["rl/reward_deep_search"] == 0.5 and m["rl/policy_tokens"] == 2.0
