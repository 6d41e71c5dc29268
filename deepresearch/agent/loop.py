"""The ReAct loop: the policy proposes, tool calls run, observations are appended, until
`<answer>` or the budget (turns, tool calls, context tokens, generated tokens, turns without an
action) runs out.

    traj = run_episode(policy, prompt, task_id="t1", capability="deep_research",
                       ctx=EpisodeContext(workspace, cfg.agent, search), budget=cfg.agent.budget)

Running out of budget forces one last policy call asking for the final answer; a tool error
(bad arguments, unknown tool, malformed JSON, timeout) becomes an error observation. Neither
ever ends the episode with an exception. A policy that raises, or breaks its contract by returning
something other than text, ends the episode with outcome "policy_error" and a message naming it.
Every text that enters the trajectory is cleaned of lone surrogates, so it always serializes.
"""

from __future__ import annotations

import re
from typing import Callable

from deepresearch.agent.policies.base import Policy
from deepresearch.agent.schema import Message, Trajectory, clean_text, extract_citations, parse_assistant
from deepresearch.agent.tools.base import EpisodeContext, Tool, all_tools
from deepresearch.config import BudgetConfig
from deepresearch.errors import ToolError
from deepresearch.modeling.tokenizer import system_with_tools

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")

FORCE_ANSWER = (
    "Budget exhausted ({reason}). Do not call any more tools. Write your final answer now inside "
    "<answer></answer>, using only what you have found, citing sources as \\cite{{doc_id}}."
)
NO_ACTION = (
    "Your last message contained neither a <tool_call> nor an <answer>. Call a tool, or give the final "
    "answer inside <answer></answer>."
)


def approx_tokens(text: str) -> int:
    """Deterministic token estimate (words and punctuation) used when no tokenizer is given."""
    return len(_TOKEN_RE.findall(text))


INSTRUCTIONS = (
    "You are a deep research agent. Plan with todo, search and open pages with batch_web_surfer, and trust "
    "the most authoritative source (government, academic and institutional pages outrank news, which "
    "outranks blogs and forums). Write reports with file; use shell when it helps. Give the final answer "
    "inside <answer></answer>, citing the pages you opened as \\cite{doc_id}."
)


def system_prompt(tools: dict[str, Tool]) -> str:
    """The agent's system message: the instructions, then the tools in Qwen2.5's function-calling format.

    It is the system turn `apply_chat_template([{"role": "system", "content": INSTRUCTIONS}, ...],
    tools=schemas)` writes with this project's template (`system_with_tools`): a Qwen2.5 user who passes
    `tools=` gets the prompt the model was trained on, and `to_structured_chat` splits it back.
    """
    return system_with_tools(INSTRUCTIONS, [t.schema() for t in tools.values()])


def make_tools(names: list[str] | None = None) -> dict[str, Tool]:
    """Instantiate tools by name (default: every registered tool), in a stable order."""
    registry = all_tools()
    names = sorted(registry) if names is None else names
    out: dict[str, Tool] = {}
    for name in names:
        if name not in registry:
            raise ToolError(f"unknown tool {name!r}; available tools: {', '.join(sorted(registry))}")
        out[name] = registry[name]()
    return out


def _act(policy: Policy, messages: list[Message], schemas: list[dict]) -> str:
    """The policy's next turn; a non-str reply is the policy's bug, reported as such."""
    text = policy.act(messages, schemas)
    if not isinstance(text, str):
        raise TypeError(
            f"policy {_policy_name(policy)!r} ({type(policy).__name__}) returned {type(text).__name__} "
            f"instead of the assistant turn's text (a str): {text!r:.200}"
        )
    return clean_text(text)


def _policy_name(policy: Policy) -> str:
    name = getattr(policy, "name", None)
    return clean_text(name) if isinstance(name, str) else type(policy).__name__


def _context_tokens(messages: list[Message], count: Callable[[str], int]) -> int:
    return sum(count(m.content) + 4 for m in messages)  # +4: role and separator tokens


def run_episode(
    policy: Policy,
    prompt: str,
    *,
    task_id: str,
    capability: str,
    ctx: EpisodeContext,
    budget: BudgetConfig,
    tools: dict[str, Tool] | None = None,
    trajectory_id: str | None = None,
    count_tokens: Callable[[str], int] = approx_tokens,
) -> Trajectory:
    """Run one ReAct episode and return its trajectory. Never raises for tool or budget problems.

    Args:
        policy: proposes each assistant turn (already `reset` for this task by the caller).
        prompt: the user's task text.
        ctx: per-episode tool state (workspace, search backend); closed by the caller.
        budget: max turns, tool calls, context tokens, generated tokens and turns without an action.
        count_tokens: the policy's token count, for the context and generated-token budgets.
        tools: the tools offered (default: all registered tools).
    Returns:
        The trajectory; `outcome` is "answered", "budget_exhausted" or "policy_error".
    """
    from deepresearch.agent.tools.file import store_long_output

    tools = make_tools() if tools is None else tools
    schemas = [t.schema() for t in tools.values()]
    messages = [Message(role="system", content=system_prompt(tools)), Message(role="user", content=clean_text(prompt))]
    turns = n_calls = n_errors = generated = idle = 0
    answer: str | None = None
    outcome = "answered"
    metadata: dict = {}

    def observe(name: str | None, content: str, is_error: bool) -> None:
        nonlocal n_errors
        n_errors += int(is_error)
        messages.append(Message(role="tool", name=name, content=clean_text(content), is_error=is_error))

    while True:
        tokens = _context_tokens(messages, count_tokens)
        reason = (
            f"{turns} turns" if turns >= budget.max_turns
            else f"context of {tokens} tokens" if tokens >= budget.max_context_tokens
            else f"{n_calls} tool calls" if n_calls >= budget.max_tool_calls and turns > 0
            else f"{generated} generated tokens"
            if budget.max_output_tokens is not None and generated >= budget.max_output_tokens
            else f"{idle} turns without a tool call or an answer"
            if budget.max_idle_turns is not None and idle >= budget.max_idle_turns
            else None
        )
        if reason is not None:
            outcome = "budget_exhausted"
            metadata["budget_reason"] = reason
            messages.append(Message(role="user", content=FORCE_ANSWER.format(reason=reason)))
            try:
                text = _act(policy, messages, schemas)
            except Exception as e:  # noqa: BLE001 - a failing policy ends the episode, not the run
                metadata["policy_error"] = clean_text(f"{type(e).__name__}: {e}")
                outcome = "policy_error"
                break
            turns += 1
            generated += count_tokens(text)
            messages.append(Message(role="assistant", content=text))
            parsed = parse_assistant(text)
            # The forced turn's text is the answer even without tags: never lose the work.
            answer = parsed.answer if parsed.answer is not None else parsed.thought
            break

        try:
            text = _act(policy, messages, schemas)
        except Exception as e:  # noqa: BLE001
            metadata["policy_error"] = clean_text(f"{type(e).__name__}: {e}")
            outcome = "policy_error"
            break
        turns += 1
        generated += count_tokens(text)
        messages.append(Message(role="assistant", content=text))
        parsed = parse_assistant(text)
        for err in parsed.errors:
            observe(None, f"error: {err}", True)
        if parsed.answer is not None:  # the answer ends the episode; calls beside it are not run
            answer = parsed.answer
            break
        idle = 0 if parsed.tool_calls else idle + 1
        if not parsed.tool_calls and not parsed.errors:
            messages.append(Message(role="user", content=NO_ACTION))
            continue
        for call in parsed.tool_calls:
            if n_calls >= budget.max_tool_calls:
                observe(call.name, f"error: tool-call budget of {budget.max_tool_calls} exhausted; not run", True)
                continue
            n_calls += 1
            tool = tools.get(call.name)
            if tool is None:
                observe(call.name, f"error: unknown tool {call.name!r}; available tools: {', '.join(tools)}", True)
                continue
            try:
                out = tool(call.arguments, ctx)
                if not isinstance(out, str):
                    raise TypeError(f"the tool returned {type(out).__name__}, not text")
                out = store_long_output(ctx, call.name, clean_text(out))
            except ToolError as e:
                observe(call.name, f"error: {e}", True)
                continue
            except Exception as e:  # noqa: BLE001 - a tool bug (or RecursionError, MemoryError...) must not end the episode
                observe(call.name, f"error: {call.name} failed: {type(e).__name__}: {e}", True)
                continue
            observe(call.name, out, False)

    metadata["output_tokens"] = generated  # what the policy generated (its assistant turns), forced turn included
    citations = extract_citations(answer or "")
    return Trajectory(
        trajectory_id=trajectory_id or f"{task_id}:{_policy_name(policy)}",
        task_id=task_id,
        capability=capability,
        policy=_policy_name(policy),
        messages=messages,
        outcome=outcome,
        answer=answer,
        tool_calls=n_calls,
        tool_errors=n_errors,
        turns=turns,
        tokens=_context_tokens(messages, count_tokens),
        opened_docs=list(ctx.opened_docs),
        citations=citations,
        metadata=metadata,
    )
