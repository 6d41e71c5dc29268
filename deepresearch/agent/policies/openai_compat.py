"""A policy backed by any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, a hosted teacher).

Tool calls travel as Hermes text (`<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`, each on
lines of its own after the turn's text) inside assistant content, and tool results as
`<tool_response>` blocks in user turns — exactly what Qwen2.5's chat template renders — so the
server needs no tool-call parser. If the server does parse tool calls into structured `tool_calls`
(vLLM's `hermes` parser), they are turned back into that text with `ToolCall.render`, as the chat
template would write them.

Config: `agent.openai.{base_url, model, api_key_env, temperature, max_tokens, timeout_s}`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from deepresearch.agent.policies.base import PolicyName, register_policy
from deepresearch.agent.schema import Message, ToolCall, render_tool_call, with_tool_calls
from deepresearch.config import AgentConfig, OpenAIPolicyConfig


def to_openai_messages(messages: list[Message]) -> list[dict[str, str]]:
    """Map our messages to chat-completions messages; consecutive tool results share one user turn."""
    out: list[dict[str, str]] = []
    for m in messages:
        if m.role == "tool":
            block = f"<tool_response>\n{m.content}\n</tool_response>"
            if out and out[-1]["role"] == "user" and out[-1]["content"].startswith("<tool_response>"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


class OpenAIPolicy:
    """Calls `POST {base_url}/chat/completions` once per turn."""

    name = "openai"

    def __init__(self, cfg: OpenAIPolicyConfig):
        from openai import OpenAI

        self.cfg = cfg
        self.client = OpenAI(
            base_url=cfg.base_url,
            api_key=os.environ.get(cfg.api_key_env) or "EMPTY",  # local servers accept any key
            timeout=cfg.timeout_s,
            max_retries=2,
        )

    def reset(self, task: Any, *, seed: str = "") -> None:
        pass  # stateless: the conversation carries everything

    def act(self, messages: list[Message], tools: list[dict[str, Any]]) -> str:
        resp = self.client.chat.completions.create(
            model=self.cfg.model,
            messages=to_openai_messages(messages),
            temperature=self.cfg.temperature,
            max_tokens=self.cfg.max_tokens,
        )
        if not resp.choices:
            raise RuntimeError(f"{self.cfg.base_url} returned no choices for model {self.cfg.model!r}")
        msg = resp.choices[0].message
        text = msg.content or ""
        if not msg.tool_calls:
            return text
        calls = []
        for call in msg.tool_calls:
            fn = call.function
            try:
                args = json.loads(fn.arguments or "{}")
            except (ValueError, RecursionError):
                args = None
            # arguments that are not a JSON object stay as the server sent them: the loop reports them
            name = fn.name or ""
            calls.append(ToolCall(name=name, arguments=args).render() if isinstance(args, dict)
                         else render_tool_call(name, fn.arguments))
        # a hermes parser keeps the newline before the first <tool_call> in `content`; the template adds it
        return with_tool_calls(text[:-1] if text.endswith("\n") else text, calls)


@register_policy(PolicyName.openai)
def _make_openai(cfg: AgentConfig, world: Any) -> OpenAIPolicy:
    return OpenAIPolicy(cfg.openai)
