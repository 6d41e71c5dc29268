"""Messages -> token ids + loss mask, in the chat template's format.

    sample = encode_messages(tokenizer, trajectory.messages)   # SFT / mid-training stage 2
    sample = encode_text(tokenizer, document_text)             # mid-training stage 1

`loss_mask` is 1 exactly on the tokens the policy is trained to produce: an assistant turn's content
and its closing `<|im_end|>`. The turn header `<|im_start|>assistant\\n`, the newline after
`<|im_end|>`, and every system, user and tool token are 0. With `mask_failed_turns=True` (SFT and
mid-training stage 2), an assistant turn whose tool calls came back as errors (a deliberately faulty
call in synthesized data) is context, not a target: the model learns the recovery, not the mistake.

Encoding goes turn by turn so the mask boundaries are exact, and the concatenated ids equal
`tokenizer.apply_chat_template(messages, tokenize=True)` (tested on every synthesized trajectory):
every turn boundary is a special token except the newline ending the assistant header, and Qwen2's
pre-tokenizer keeps that newline a token of its own unless the content itself starts with
whitespace and a newline (`\\s*[\\r\\n]+` would merge them). In that one case the header and the
content are tokenized apart, exactly as at generation time, where the header is the end of the prompt
and the model produces the content's tokens itself: the mask stays exact and the ids decode to the
same text, but differ from the template's single merged newline token.

The same conversation can be written as a Qwen2.5 user writes it, with `tools=` and structured
`tool_calls` (`to_structured_chat`); the template renders that to the same text, so the same ids:

    chat, tools = to_structured_chat(trajectory.messages)
    tokenizer.apply_chat_template(chat, tools=tools) == encode_messages(tokenizer, trajectory.messages).input_ids
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deepresearch.agent.schema import Message, ToolCall, parse_assistant, with_tool_calls
from deepresearch.modeling import ModelError
from deepresearch.modeling.tokenizer import (
    ENDOFTEXT,
    IM_END,
    IM_START,
    TOOLS_FOOTER,
    TOOLS_HEADER,
    system_with_tools,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

ASSISTANT_HEADER = f"{IM_START}assistant\n"


@dataclass(frozen=True)
class EncodedSample:
    """One training document: token ids and which of them are targets."""

    input_ids: list[int]  # (T,) token ids
    loss_mask: list[int]  # (T,) 1 where the token is a training target, else 0

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.loss_mask):
            raise ValueError(
                f"EncodedSample: {len(self.input_ids)} input_ids but {len(self.loss_mask)} loss_mask entries"
            )

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_targets(self) -> int:
        """Tokens with loss (the first token never counts: nothing predicts it)."""
        return sum(self.loss_mask[1:])


@dataclass(frozen=True)
class _Turn:
    """One rendered turn: `head` (never trained) + `body` (trained when `trainable`) + `tail` (never)."""

    head: str
    body: str
    tail: str
    trainable: bool


def to_chat_dicts(messages: Sequence[Message]) -> list[dict[str, str]]:
    """Messages as the `[{"role", "content"}]` dicts `apply_chat_template` and OpenAI servers take."""
    return [{"role": m.role, "content": m.content} for m in messages]


def split_tool_calls(text: str) -> tuple[str, list[ToolCall]] | None:
    """An assistant turn's text as (`content`, structured tool calls), or None when that would not render
    back to exactly `text` (no calls, a malformed call, an answer beside the calls, text between or after
    the calls, arguments written other than as `ToolCall.render` writes them)."""
    if "<tool_call>" not in text:
        return None
    parsed = parse_assistant(text)
    if parsed.errors or parsed.answer is not None or not parsed.tool_calls:
        return None
    calls = list(parsed.tool_calls)
    tail = "\n".join(c.render() for c in calls)
    if text == tail:
        return "", calls
    if text.endswith("\n" + tail) and len(text) > len(tail) + 1:  # "\n" + calls alone: the template writes no "\n"
        return text[: -len(tail) - 1], calls
    return None


def split_system_tools(system: str) -> tuple[str | None, list[dict[str, Any]] | None]:
    """A system message as (the text before its `# Tools` section, the schemas listed in it), when
    `system_with_tools` of those gives back exactly `system`; else (`system`, None)."""
    at = system.rfind(TOOLS_HEADER)
    if at == -1 or not system.endswith(TOOLS_FOOTER):
        return system, None
    if at == 0:
        prefix = None  # a system turn that is the tools section alone: no system message
    elif system[at - 2 : at] == "\n\n":
        prefix = system[: at - 2]
    else:
        return system, None
    listed = system[at + len(TOOLS_HEADER) : len(system) - len(TOOLS_FOOTER)]
    try:
        schemas = [json.loads(line) for line in listed.split("\n")[1:]]  # "\n{...}\n{...}": json.dumps writes no raw newline
    except (ValueError, RecursionError):
        return system, None
    # an empty `tools` gets no tools section from the template: nothing to split off then
    if not schemas or not all(isinstance(x, dict) for x in schemas) or system_with_tools(prefix, schemas) != system:
        return system, None
    return prefix, schemas


def to_structured_chat(messages: Sequence[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The conversation as a Qwen2.5 (or OpenAI) user writes it, and the tool schemas to pass as `tools=`.

    The system prompt loses its `# Tools` section (returned as the schemas; None when it has none),
    assistant turns become `content` + `tool_calls` wherever `split_tool_calls` can split them exactly,
    and tool results are `tool` messages. `apply_chat_template(chat, tools=tools)` then renders exactly
    `render_messages(messages)`: the same text, so the same tokens as training's `encode_messages`.
    """
    chat: list[dict[str, Any]] = []
    tools = None
    for i, m in enumerate(messages):
        if i == 0 and m.role == "system":
            system, tools = split_system_tools(m.content)
            if system is not None:
                chat.append({"role": "system", "content": system})
            continue
        split = split_tool_calls(m.content) if m.role == "assistant" else None
        if split is not None:
            content, calls = split
            chat.append({"role": "assistant", "content": content, "tool_calls": [
                {"type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls
            ]})
        elif m.role == "tool" and m.name is not None:
            chat.append({"role": "tool", "name": m.name, "content": m.content})
        else:
            chat.append({"role": m.role, "content": m.content})
    return chat, tools


def template_renders_structured(tokenizer: PreTrainedTokenizerFast) -> bool:
    """Whether the tokenizer's chat template writes `tools=` and structured `tool_calls` as this project's
    does (`system_with_tools`, `ToolCall.render`). A template without a tools branch (many checkpoints'
    own) drops them: a policy must then pass the conversation as plain text, which every template renders."""
    tools = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}]
    call = ToolCall(name="f", arguments={"q": "x"})
    plain = [Message(role="system", content=system_with_tools("s", tools)), Message(role="user", content="u"),
             Message(role="assistant", content=with_tool_calls("t", [call.render()])),
             Message(role="tool", name="f", content="r")]
    chat, found = to_structured_chat(plain)
    try:
        structured = tokenizer.apply_chat_template(chat, tools=found, tokenize=False)
    except Exception:  # noqa: BLE001 - a template that cannot take them does not render them
        return False
    return found == tools and structured == tokenizer.apply_chat_template(to_chat_dicts(plain), tokenize=False)


def failed_turns(messages: Sequence[Message]) -> set[int]:
    """Indices of assistant messages answered by at least one error observation (before the next assistant turn)."""
    failed: set[int] = set()
    last_assistant: int | None = None
    for i, m in enumerate(messages):
        if m.role == "assistant":
            last_assistant = i
        elif m.role == "tool" and m.is_error and last_assistant is not None:
            failed.add(last_assistant)
    return failed


def _turns(
    messages: Sequence[Message],
    add_generation_prompt: bool,
    mask_failed_turns: bool = False,
    observation_loss: bool = False,
) -> list[_Turn]:
    """Mirror of `CHAT_TEMPLATE` (deepresearch.modeling.tokenizer), one `_Turn` per rendered turn.

    A turn without a body (system, user, tool results) is trained whole when `trainable`: user and
    tool turns are, with `observation_loss`; the system prompt never is.
    """
    failed = failed_turns(messages) if mask_failed_turns else set()
    turns: list[_Turn] = []
    i = 0
    while i < len(messages):
        m = messages[i]
        if m.role == "tool":
            # Consecutive tool results become one user turn, as in Qwen2.5's template.
            parts = []
            while i < len(messages) and messages[i].role == "tool":
                parts.append(f"\n<tool_response>\n{messages[i].content}\n</tool_response>")
                i += 1
            turns.append(_Turn(f"{IM_START}user" + "".join(parts) + f"{IM_END}\n", "", "", observation_loss))
            continue
        if m.role == "assistant":
            turns.append(_Turn(ASSISTANT_HEADER, m.content + IM_END, "\n", i not in failed))
        else:
            trainable = observation_loss and m.role == "user"
            turns.append(_Turn(f"{IM_START}{m.role}\n{m.content}{IM_END}\n", "", "", trainable))
        i += 1
    if add_generation_prompt:
        turns.append(_Turn(ASSISTANT_HEADER, "", "", False))
    return turns


def render_messages(messages: Sequence[Message], *, add_generation_prompt: bool = False) -> str:
    """The chat-template text of `messages` (equal to `apply_chat_template(..., tokenize=False)`)."""
    return "".join(t.head + t.body + t.tail for t in _turns(messages, add_generation_prompt))


def encode_messages(
    tokenizer: PreTrainedTokenizerFast,
    messages: Sequence[Message],
    *,
    add_generation_prompt: bool = False,
    mask_failed_turns: bool = False,
    observation_loss: bool = False,
) -> EncodedSample:
    """Token ids and loss mask of a conversation (loss on assistant content and its `<|im_end|>`).

    Args:
        tokenizer: a tokenizer with our special tokens (`train_tokenizer` or `load_base`).
        messages: system / user / assistant / tool messages, in order.
        add_generation_prompt: append `<|im_start|>assistant\\n` (mask 0), as for a rollout prompt.
        mask_failed_turns: no loss on assistant turns whose tool calls returned an error (`failed_turns`).
        observation_loss: loss on user and tool-result turns too (mid-training stage 2 models the whole
            interaction); the system prompt, the same in every episode, is never a target.
    Returns:
        The EncodedSample; its ids equal `apply_chat_template(to_chat_dicts(messages), tokenize=True)`.
    """
    return _encode(tokenizer, _turns(messages, add_generation_prompt, mask_failed_turns, observation_loss))[0]


@dataclass(frozen=True)
class AssistantSpan:
    """Where one assistant message's content sits in an encoded conversation."""

    message_index: int  # index into the messages
    start: int  # position of the content's first token in input_ids
    offsets: list[tuple[int, int]]  # (character start, end) in the content of each content token, in order
    trainable: bool  # a target in training (not a failed tool-call turn)


def encode_assistant_spans(
    tokenizer: PreTrainedTokenizerFast, messages: Sequence[Message], *, mask_failed_turns: bool = True
) -> tuple[EncodedSample, list[AssistantSpan]]:
    """`encode_messages` plus, per assistant message, its token positions and their character offsets,
    so a span of the text (a tool name, an argument, the answer) can be scored token by token.

    A message whose content tokens cannot be mapped to characters (its tokens differ when the content is
    tokenized alone, see the module docstring) is left out of the spans.
    """
    turns = _turns(messages, False, mask_failed_turns)
    sample, bodies = _encode(tokenizer, turns)
    assistant = [i for i, m in enumerate(messages) if m.role == "assistant"]
    spans = []
    for index, (start, ids), turn in zip(assistant, bodies, [t for t in turns if t.body]):
        alone = tokenizer.backend_tokenizer.encode(turn.body, add_special_tokens=False)
        if alone.ids == ids:
            spans.append(AssistantSpan(index, start, list(alone.offsets), turn.trainable))
    return sample, spans


def _encode(tokenizer: PreTrainedTokenizerFast, turns: list[_Turn]) -> tuple[EncodedSample, list[tuple[int, list[int]]]]:
    """Token ids and loss mask of rendered turns, and (start, ids) of each turn's body."""
    # Encode every string at once (one call into the Rust tokenizer), then stitch. A turn with a body
    # is encoded whole and in parts; a turn that is all head (system, user, tool) only once.
    texts: list[str] = []
    for t in turns:
        texts += [t.head + t.body, t.head, t.body, t.tail] if t.body else [t.head]
    encoded = iter([e.ids for e in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)])
    input_ids: list[int] = []
    loss_mask: list[int] = []
    bodies: list[tuple[int, list[int]]] = []
    for t in turns:
        if not t.body:
            head = next(encoded)
            input_ids += head
            loss_mask += [int(t.trainable)] * len(head)
            continue
        joint, head, body, tail = next(encoded), next(encoded), next(encoded), next(encoded)
        if joint[: len(head)] == head:
            body = joint[len(head) :]  # canonical: the turn tokenized as the template renders it
        bodies.append((len(input_ids) + len(head), body))
        input_ids += head + body + tail
        loss_mask += [0] * len(head) + [int(t.trainable)] * len(body) + [0] * len(tail)
    return EncodedSample(input_ids=input_ids, loss_mask=loss_mask), bodies


def encode_text(tokenizer: PreTrainedTokenizerFast, text: str) -> EncodedSample:
    """Plain text for mid-training stage 1: its ids then `<|endoftext|>`, loss on every token.

    Args:
        tokenizer: a tokenizer with our special tokens.
        text: a document or report (special-token strings inside it are read as those tokens).
    Returns:
        The EncodedSample.
    """
    eos = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    if not isinstance(eos, int) or eos < 0:
        raise ModelError(f"tokenizer has no {ENDOFTEXT} token; build it with train_tokenizer or load_base")
    ids = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids + [eos]
    return EncodedSample(input_ids=ids, loss_mask=[1] * len(ids))
