"""One episode of a policy on a task: a fresh workspace, every registered tool, the budget, then close.

    traj = play_episode(policy, task, cfg.agent, search, seed="7:ds-0003:0", trajectory_id="ds-0003:a0")

The one episode runner: synthesis (the scripted expert), RL rollouts (HF policies over a batching
engine) and evaluation (any checkpoint) all call it, so an episode means the same thing in each.
`deepresearch agent run` calls it too, with a prompt in words and a workspace it keeps.
The policy is `reset` for the task with `seed`; its own token count (`count_tokens`, e.g. an HF
policy's tokenizer) measures the context and output budgets when it has one, else `approx_tokens`.
The workspace is a temp directory removed afterwards (unless one is given), and the tools' state
(`EpisodeContext`: shell sandbox, opened pages) is closed even when the episode raises.
"""

from __future__ import annotations

import contextlib
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


# a prompt in words (`deepresearch agent run --task`) is a deep-research episode of this task id
PROMPT_TASK_ID = "prompt"


def task_prompt(task: Any) -> str:
    """The user message of a task: its question (deep search and the capability datasets' questions), its
    prompt (deep research), its query (a reverse-engineered report query), or the task itself (a str)."""
    if isinstance(task, str):
        return task
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
    workspace: Path | None = None,
) -> "Trajectory":
    """Reset `policy` for `task` and run one ReAct episode in a fresh workspace (or the one given).

    Args:
        policy: any registered policy (it keeps no state between episodes but what `reset` sets).
        task: a DeepSearchTask or ResearchTask (`task_id`, `capability`, a question or a prompt), or a
            prompt in words (a str: a deep-research episode, task id `PROMPT_TASK_ID`).
        agent: the agent section: budget, tool settings (shell sandbox, search k, ...).
        search: the search backend the web tool queries.
        seed: the episode's seed (the policy's sampling, the expert's detours and injected errors).
        trajectory_id: default f"{task_id}:{policy name}".
        workspace: run in this directory (created if missing) and leave it in place, instead of a fresh
            temp directory removed afterwards.
    Returns:
        The trajectory, ungraded (`synthesis.run.grade` adds ground-truth success).
    """
    freeform = isinstance(task, str)
    policy.reset(task, seed=seed)
    scratch = (tempfile.TemporaryDirectory(prefix="episode-") if workspace is None
               else contextlib.nullcontext(workspace))
    with scratch as ws:
        Path(ws).mkdir(parents=True, exist_ok=True)
        ctx = EpisodeContext(workspace=Path(ws), agent=agent, search=search)
        try:
            return run_episode(
                policy,
                task_prompt(task),
                task_id=PROMPT_TASK_ID if freeform else task.task_id,
                capability="deep_research" if freeform else task.capability,
                ctx=ctx,
                budget=agent.budget,
                tools=make_tools(),
                trajectory_id=trajectory_id,
                count_tokens=getattr(policy, "count_tokens", approx_tokens),
            )
        finally:
            ctx.close()
