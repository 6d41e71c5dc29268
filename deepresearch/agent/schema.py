"""Message and trajectory schema in the Qwen2.5 / Hermes tool-call format.

An assistant turn is plain text that may contain
    <tool_call>
    {"name": "batch_web_surfer", "arguments": {"search": ["..."]}}
    </tool_call>
(one or more, each on lines of their own after the turn's text: `ToolCall.render`, `with_tool_calls`,
exactly as Qwen2.5's chat template writes structured `tool_calls`) or a final
    <answer>... report with \\cite{D0000123} ...</answer>
Tool results come back as `tool` messages; the chat template renders them inside
<tool_response>...</tool_response>. Citations are `\\cite{doc_id}`.

`Episode` is a trajectory as the policy saw and sampled it (token ids, action mask, log-probs):
what an HF policy records and RL trains on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TRAJECTORY_SCHEMA_VERSION = 1

ANSWER_RE = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.DOTALL)
CITE_RE = re.compile(r"\\cite\{([^}]*)\}")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")

Role = Literal["system", "user", "assistant", "tool"]
Outcome = Literal["answered", "budget_exhausted", "policy_error"]


class ToolCall(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    def render(self) -> str:
        """The call as Qwen2.5's chat template writes a structured tool call (name first, then arguments)."""
        return render_tool_call(self.name, self.arguments)


def render_tool_call(name: str, arguments: dict[str, Any] | str) -> str:
    """`<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`, character for character as the chat
    template (deepresearch.modeling.tokenizer.CHAT_TEMPLATE) writes a structured call: both through
    json.dumps with non-ASCII kept. Arguments given as text (a server's unparsed, maybe malformed JSON)
    are written as they are, as the template does, so the loop reports what was wrong with them."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return f'<tool_call>\n{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": {args}}}\n</tool_call>'


def with_tool_calls(content: str, calls: Sequence[str]) -> str:
    """An assistant turn's text from its `content` and its rendered calls, joined as the chat template
    joins them: the content (if any), then each call on a line of its own."""
    return "\n".join([content, *calls] if content else calls)


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


MAX_ARGUMENT_DEPTH = 32  # nesting of a tool call's arguments; deeper is refused before any tool sees it
_OPEN, _CLOSE = "<tool_call>", "</tool_call>"


def clean_text(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD: no UTF-8 file or strict JSON encoder accepts them.

    (A policy's text can hold them, and so can JSON strings it writes: json.loads('"\\ud800"').)
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATE_RE.sub("\ufffd", text)


def _clean_arguments(obj: Any) -> tuple[Any, int]:
    """(obj with every string cleaned, its nesting depth), iteratively: deep nesting must not recurse."""
    root: list[Any] = [obj]
    stack: list[tuple[Any, Any, int]] = [(root, 0, 1)]  # (container, key, depth of the value)
    depth = 0
    while stack:
        container, key, d = stack.pop()
        value = container[key]
        depth = max(depth, d)
        if depth > MAX_ARGUMENT_DEPTH:
            return obj, depth
        if isinstance(value, str):
            container[key] = clean_text(value)
        elif isinstance(value, list):
            stack.extend((value, i, d + 1) for i in range(len(value)))
        elif isinstance(value, dict):
            cleaned = {clean_text(k): v for k, v in value.items()}
            container[key] = cleaned
            stack.extend((cleaned, k, d + 1) for k in cleaned)
    return root[0], depth


def _loads(raw: str) -> tuple[Any, str | None]:
    """json.loads, or the reason it failed in words the model can act on."""
    try:
        return json.loads(raw), None
    except json.JSONDecodeError as e:
        return None, f"is not valid JSON ({e.msg} at char {e.pos})"
    except RecursionError:
        return None, "is nested too deeply to parse"
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        return None, f"cannot be parsed ({str(e)[:120]})"


def _blocks(text: str) -> tuple[list[str], str, bool]:
    """(contents of the closed <tool_call> blocks, the text outside them, whether one is left unclosed).

    A linear scan (a regex with a lazy body is quadratic in the number of unclosed tags). Each block
    ends at the first </tool_call> after its opening tag, as a non-greedy regex would.
    """
    blocks, outside, pos, unclosed = [], [], 0, False
    while True:
        start = text.find(_OPEN, pos)
        if start == -1:
            break
        end = text.find(_CLOSE, start + len(_OPEN))
        if end == -1:
            unclosed = True
            break
        outside.append(text[pos:start])
        blocks.append(text[start + len(_OPEN) : end].strip())
        pos = end + len(_CLOSE)
    outside.append(text[pos:])
    return blocks, "".join(outside), unclosed


def parse_assistant(text: str) -> ParsedTurn:
    """Parse an assistant turn into tool calls and/or a final answer.

    A block that is not valid JSON (or too deeply nested, or holding an over-long number), lacks a
    string `name` / object `arguments`, or nests its arguments deeper than MAX_ARGUMENT_DEPTH becomes
    an entry in `errors` (the loop turns it into an error observation) instead of raising. Only an
    <answer> outside the tool calls counts: text inside a call's arguments (say, a report being
    written to a file) never ends the episode.
    """
    text = clean_text(text)
    calls: list[ToolCall] = []
    errors: list[str] = []
    blocks, outside, unclosed = _blocks(text)
    for i, raw in enumerate(blocks):
        obj, why = _loads(raw)
        if why is not None:
            errors.append(f"tool call #{i + 1} {why}: {raw[:200]!r}")
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            errors.append(f'tool call #{i + 1} must be an object with a string "name": {raw[:200]!r}')
            continue
        name = clean_text(obj["name"])
        args = obj.get("arguments", {})
        if isinstance(args, str):  # some models emit arguments as a JSON string
            parsed, why = _loads(args)
            if why is None:
                args = parsed
        if not isinstance(args, dict):
            errors.append(f'tool call #{i + 1} ({name[:100]}): "arguments" must be a JSON object')
            continue
        args, depth = _clean_arguments(args)
        if depth > MAX_ARGUMENT_DEPTH:
            errors.append(f"tool call #{i + 1} ({name[:100]}): arguments nested deeper than {MAX_ARGUMENT_DEPTH} levels")
            continue
        calls.append(ToolCall(name=name, arguments=args))
    # An unterminated <tool_call> is a malformed call too (the model stopped mid-JSON).
    if unclosed or text.count(_OPEN) > len(blocks):
        errors.append("a <tool_call> block is not closed with </tool_call>")
    # Whatever follows an unclosed <tool_call> belongs to that broken call, not to an answer.
    answer_zone = outside.split(_OPEN, 1)[0]
    answer_match = ANSWER_RE.search(answer_zone) if "<answer>" in answer_zone else None
    answer = answer_match.group(1).strip() if answer_match else None
    thought = ANSWER_RE.sub("", outside).strip()
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


@dataclass(frozen=True)
class Episode:
    """One rollout of the agent, as the policy saw and produced it, ready to become RL data."""

    episode_id: str
    task_id: str
    capability: str
    token_ids: list[int]  # (T,) system + user + every turn + every observation, exactly as fed/sampled
    action_mask: list[int]  # (T,) 1 on tokens the policy sampled; 0 on system/user/tool tokens
    logprobs: list[float]  # (T,) log π_old(token_t | tokens_<t) at rl.temperature on action tokens; 0 elsewhere
    trajectory: Trajectory  # the messages, outcome, answer, tool counts, ground-truth success
    weights_version: int = 0  # the policy weights that generated every action token
    attempt: int = 0  # 0 = first run; k > 0 = re-run k times because the worker running it died
    worker: str = ""  # id of the rollout worker that produced it
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.token_ids)
        if len(self.action_mask) != n or len(self.logprobs) != n:
            raise ValueError(
                f"episode {self.episode_id}: token_ids ({n}), action_mask ({len(self.action_mask)}) and "
                f"logprobs ({len(self.logprobs)}) must have the same length"
            )

    @property
    def answer(self) -> str | None:
        return self.trajectory.answer

    @property
    def num_actions(self) -> int:
        return sum(self.action_mask)

    def sampled_ids(self) -> list[int]:
        """The tokens the policy sampled, in order (what `action_mask` selects)."""
        return [tid for tid, m in zip(self.token_ids, self.action_mask) if m]
