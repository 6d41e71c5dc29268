"""Message and trajectory schema in the Qwen2.5 / Hermes tool-call format.

An assistant turn is plain text that may contain
    <tool_call>{"name": "batch_web_surfer", "arguments": {"search": ["..."]}}</tool_call>
(one or more) or a final
    <answer>... report with \\cite{D0000123} ...</answer>
Tool results come back as `tool` messages; the chat template renders them inside
<tool_response>...</tool_response>. Citations are `\\cite{doc_id}`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TRAJECTORY_SCHEMA_VERSION = 1

TOOL_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
ANSWER_RE = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.DOTALL)
CITE_RE = re.compile(r"\\cite\{([^}]*)\}")

Role = Literal["system", "user", "assistant", "tool"]
Outcome = Literal["answered", "budget_exhausted", "policy_error"]


class ToolCall(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    def render(self) -> str:
        """The call as Qwen2.5's chat template writes a structured tool call (name first, then arguments)."""
        body = json.dumps({"name": self.name, "arguments": self.arguments}, ensure_ascii=False)
        return f"<tool_call>\n{body}\n</tool_call>"


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str
    name: str | None = None  # tool name, on tool messages
    is_error: bool = False  # on tool messages: the observation reports a failed call


class ParsedTurn(BaseModel):
    """What the loop understood of one assistant turn."""

    thought: str  # text outside tool calls and the answer
    tool_calls: list[ToolCall]
    answer: str | None
    errors: list[str]  # malformed tool-call blocks, each described for an error observation


def parse_assistant(text: str) -> ParsedTurn:
    """Parse an assistant turn into tool calls and/or a final answer.

    A block that is not valid JSON, or lacks a string `name` / object `arguments`, becomes an entry
    in `errors` (the loop turns it into an error observation) instead of raising.
    """
    calls: list[ToolCall] = []
    errors: list[str] = []
    for i, m in enumerate(TOOL_CALL_RE.finditer(text)):
        raw = m.group(1)
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            errors.append(f"tool call #{i + 1} is not valid JSON ({e.msg} at char {e.pos}): {raw[:200]!r}")
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            errors.append(f'tool call #{i + 1} must be an object with a string "name": {raw[:200]!r}')
            continue
        args = obj.get("arguments", {})
        if isinstance(args, str):  # some models emit arguments as a JSON string
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                pass
        if not isinstance(args, dict):
            errors.append(f'tool call #{i + 1} ({obj["name"]}): "arguments" must be a JSON object')
            continue
        calls.append(ToolCall(name=obj["name"], arguments=args))
    # An unterminated <tool_call> is a malformed call too (the model stopped mid-JSON).
    n_open = text.count("<tool_call>")
    n_closed = len(TOOL_CALL_RE.findall(text))
    if n_open > n_closed:
        errors.append("a <tool_call> block is not closed with </tool_call>")
    answer_match = ANSWER_RE.search(text) if "<answer>" in text else None
    answer = answer_match.group(1).strip() if answer_match else None
    thought = ANSWER_RE.sub("", TOOL_CALL_RE.sub("", text)).strip()
    return ParsedTurn(thought=thought, tool_calls=calls, answer=answer, errors=errors)


def extract_citations(text: str) -> list[str]:
    """Doc ids cited with \\cite{a} or \\cite{a,b}, in order of first appearance, deduplicated."""
    seen: dict[str, None] = {}
    for group in CITE_RE.findall(text):
        for doc_id in group.split(","):
            doc_id = doc_id.strip()
            if doc_id:
                seen.setdefault(doc_id, None)
    return list(seen)


class Trajectory(BaseModel):
    """One episode of the agent: messages plus what training and the quality gates need."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = TRAJECTORY_SCHEMA_VERSION
    trajectory_id: str
    task_id: str
    capability: str  # "deep_search" | "deep_research" | ...
    policy: str
    messages: list[Message]
    outcome: Outcome
    answer: str | None = None
    tool_calls: int = 0
    tool_errors: int = 0
    turns: int = 0
    tokens: int = 0  # context tokens at the end (approximate counter unless a tokenizer is given)
    opened_docs: list[str] = Field(default_factory=list)
    citations: list[str] = Field(default_factory=list)
    success: bool | None = None  # set by synthesis, which knows the ground truth
    metadata: dict[str, Any] = Field(default_factory=dict)
