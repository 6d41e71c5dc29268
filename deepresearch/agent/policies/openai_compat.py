"""A policy backed by any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, a hosted teacher).

Tool calls travel as Hermes text (`<tool_call>{...}</tool_call>`) inside assistant content, and tool
results as `<tool_response>` blocks in user turns — exactly what Qwen2.5's chat template renders — so
the server needs no tool-call parser. If the server does parse tool calls into structured
`tool_calls`, they are turned back into Hermes text.

Config: `agent.openai.{base_url, model, api_key_env, temperature, max_tokens, timeout_s}`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from deepresearch.agent.policies.base import PolicyName, register_policy
from deepresearch.agent.schema import Message
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
        for call in msg.tool_calls or []:
            fn = call.function
            try:
                args = json.loads(fn.arguments or "{}")
            except json.JSONDecodeError:
                args = fn.arguments  # left malformed on purpose: the loop reports it to the model
            text += "\n<tool_call>" + json.dumps({"name": fn.name, "arguments": args}) + "</tool_call>"
        return text


@register_policy(PolicyName.openai)
def _make_openai(cfg: AgentConfig, world: Any) -> OpenAIPolicy:
    return OpenAIPolicy(cfg.openai)
