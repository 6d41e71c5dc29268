"""One episode of a policy on a task: a fresh workspace, every registered tool, the budget, then close.

    traj = play_episode(policy, task, cfg.agent, search, seed="7:ds-0003:0", trajectory_id="ds-0003:a0")

The one episode runner: synthesis (the scripted expert), RL rollouts (HF policies over a batching
engine) and evaluation (any checkpoint) all call it, so an episode means the same thing in each.
The policy is `reset` for the task with `seed`; its own token count (`count_tokens`, e.g. an HF
policy's tokenizer) measures the context and output budgets when it has one, else `approx_tokens`.
The workspace is a temp directory removed afterwards, and the tools' state (`EpisodeContext`: shell
sandbox, opened pages) is closed even when the episode raises.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepresearch.agent.loop import approx_tokens, make_tools, run_episode
from deepresearch.agent.tools.base import EpisodeContext

if TYPE_CHECKING:
    from deepresearch.agent.policies.base import Policy
    from deepresearch.agent.schema import Trajectory
    from deepresearch.config import AgentConfig
    from deepresearch.search.backend import SearchBackend


def task_prompt(task: Any) -> str:
    """The user message of a task: its question (deep search and the capability datasets' questions), its
    prompt (deep research) or its query (a reverse-engineered report query)."""
    for field in ("question", "prompt", "query"):
        prompt = getattr(task, field, None)
        if prompt:
            return prompt
    raise TypeError(f"an episode needs a task with a question, a prompt or a query, got {type(task).__name__}")


def play_episode(
    policy: "Policy",
    task: Any,
    agent: "AgentConfig",
    search: "SearchBackend | None",
    *,
    seed: str,
    trajectory_id: str | None = None,
) -> "Trajectory":
    """Reset `policy` for `task` and run one ReAct episode in a fresh workspace.

    Args:
        policy: any registered policy (it keeps no state between episodes but what `reset` sets).
        task: a DeepSearchTask or ResearchTask (`task_id`, `capability`, a question or a prompt).
        agent: the agent section: budget, tool settings (shell sandbox, search k, ...).
        search: the search backend the web tool queries.
        seed: the episode's seed (the policy's sampling, the expert's detours and injected errors).
        trajectory_id: default f"{task_id}:{policy name}".
    Returns:
        The trajectory, ungraded (`synthesis.run.grade` adds ground-truth success).
    """
    policy.reset(task, seed=seed)
    with tempfile.TemporaryDirectory(prefix="episode-") as ws:
        ctx = EpisodeContext(workspace=Path(ws), agent=agent, search=search)
        try:
            return run_episode(
                policy,
                task_prompt(task),
                task_id=task.task_id,
                capability=task.capability,
                ctx=ctx,
                budget=agent.budget,
                tools=make_tools(),
                trajectory_id=trajectory_id,
                count_tokens=getattr(policy, "count_tokens", approx_tokens),
            )
        finally:
            ctx.close()
