"""The policy's tokenizer: a byte-level BPE trained on the research world, with Qwen2.5's special
tokens and chat format (a pretrained base's tokenizer gets the same tokens: `prepare_base_tokenizer`).

    from deepresearch.modeling.tokenizer import train_tokenizer
    tok = train_tokenizer(tokenizer_corpus(world_dir, datasets_dir), cfg.model)   # base: tiny

Special tokens are Qwen2.5's: `<|endoftext|>` (eos and pad of the base model), `<|im_start|>`,
`<|im_end|>`, and the added (non-special, so they survive `skip_special_tokens`) tool tokens
`<tool_call> </tool_call> <tool_response> </tool_response>` plus `<answer> </answer>`; each is one id,
placed after the BPE vocabulary as in Qwen2.5. The chat template renders
`<|im_start|>{role}\\n{content}<|im_end|>\\n` per turn; consecutive tool messages become one `user`
turn of `<tool_response>\\n...\\n</tool_response>` blocks, as Qwen2.5's template does. As in Qwen2.5,
`tools=` schemas become the `# Tools` section of the system turn (`system_with_tools`) and structured
`tool_calls` become `<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>` blocks (`ToolCall.render`):
the text the agent's messages already carry, so both ways of writing a conversation encode alike.

Normalizer (NFC), pre-tokenizer (Qwen2's regex, then byte-level) and decoder are Qwen2's, so the
tokenizer survives transformers 5's `Qwen2Tokenizer` (which AutoTokenizer uses for every `qwen2`
checkpoint and which rebuilds that pipeline from the vocabulary and merges) unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from deepresearch.config import ModelConfig
from deepresearch.modeling import ModelError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Special tokens (skipped by decode(skip_special_tokens=True)), in Qwen2.5's id order.
SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END)
# Added, non-special tokens: the tool-call markup must survive decoding so the agent loop can parse it.
TOOL_TOKENS: tuple[str, ...] = (
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<answer>",
    "</answer>",
)
ALL_ADDED_TOKENS: tuple[str, ...] = SPECIAL_TOKENS + TOOL_TOKENS

# Qwen2's pre-tokenizer regex, verbatim. It must be: transformers 5 loads every `qwen2` checkpoint's
# tokenizer as `Qwen2Tokenizer`, which rebuilds the pre-tokenizer with this pattern whatever
# tokenizer.json says, so any other pattern would tokenize differently after a save/load round trip.
PRETOKENIZE_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

# Qwen2.5's function-calling section of the system turn, in its words. `tools_section` and the chat
# template's `tools` branch are both built from these two strings.
TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


def tools_section(schemas: Iterable[dict]) -> str:
    """The `# Tools` section Qwen2.5's template writes for `tools=schemas`: one schema per line, each
    as `tojson` writes it (json.dumps, key order kept, non-ASCII kept)."""
    return TOOLS_HEADER + "".join("\n" + json.dumps(s, ensure_ascii=False) for s in schemas) + TOOLS_FOOTER


def system_with_tools(system: str | None, schemas: Iterable[dict]) -> str:
    """The system turn's text for `apply_chat_template(messages, tools=schemas)`: the system message
    (if `messages` starts with one), a blank line, then `tools_section(schemas)`."""
    return (f"{system}\n\n" if system is not None else "") + tools_section(schemas)


def _jinja_str(text: str) -> str:
    """`text` as a single-quoted Jinja string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


# Qwen2.5's chat format. Differences from Qwen2.5's own template, on purpose: no default system prompt
# ("You are Qwen, ..."): with `tools` and no system message the system turn is the tools section alone;
# a call's name goes through `tojson` (the same text for any real tool name, valid JSON for any other);
# arguments given as a string are written as they are (Qwen2.5 would quote them). With `tools`, the
# system turn is `system_with_tools(...)`: the agent's system message (deepresearch.agent.loop.system_prompt)
# is that text, so `apply_chat_template(messages, tools=schemas)` with structured `tool_calls`
# (deepresearch.modeling.chat.to_structured_chat) renders exactly what the model was trained on.
CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages and messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- " + _jinja_str(TOOLS_HEADER) + " }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- " + _jinja_str(TOOLS_FOOTER + IM_END + "\n") + " }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if tools and loop.first and message['role'] == 'system' %}"  # already written with the tools
    "{%- elif message['role'] == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' and message['tool_calls'] is defined and message['tool_calls'] %}"
    "{{- '<|im_start|>assistant' }}"
    "{%- if message['content'] %}{{- '\\n' + message['content'] }}{%- endif %}"
    "{%- for tool_call in message['tool_calls'] %}"
    "{%- if tool_call['function'] is defined %}{%- set tool_call = tool_call['function'] %}{%- endif %}"
    "{{- '\\n<tool_call>\\n{\"name\": ' }}{{- tool_call['name'] | tojson }}{{- ', \"arguments\": ' }}"
    "{{- (tool_call['arguments'] if tool_call['arguments'] is string else tool_call['arguments'] | tojson) }}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_ADDED_TOKEN_SPLIT = re.compile("|".join(re.escape(t) for t in ALL_ADDED_TOKENS))


def _pieces_between_added_tokens(texts: Iterable[str]) -> Iterator[str]:
    """Cut each text at the added tokens, as encoding does, so BPE learns no merges across them."""
    for text in texts:
        for piece in _ADDED_TOKEN_SPLIT.split(text):
            if piece:
                yield piece


def train_tokenizer(texts: Iterable[str], cfg: ModelConfig) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE tokenizer of the tiny model on a corpus.

    Deterministic: the same texts (in the same order) give byte-identical `tokenizer.json`.

    Args:
        texts: the corpus (see `deepresearch.training.data.tokenizer_corpus`); iterated once.
        cfg: `vocab_size` is the total size including the 9 added tokens; a corpus too small to
            support that many merges gives a smaller vocabulary (`len(tokenizer)` is the truth).
    Returns:
        A `PreTrainedTokenizerFast` with eos = pad = `<|endoftext|>`, no bos, and the chat template set.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    n_added = len(ALL_ADDED_TOKENS)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if cfg.vocab_size < len(alphabet) + n_added:
        raise ModelError(
            f"model.vocab_size={cfg.vocab_size} is below the {len(alphabet)} byte symbols plus {n_added} added "
            f"tokens; set model.vocab_size to at least {len(alphabet) + n_added}"
        )
    # Empty prefix/suffix (not None) as Qwen2Tokenizer builds them, so tokenizer.json is identical after a reload.
    backend = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix=""))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size - n_added,
        initial_alphabet=sorted(alphabet),  # every byte is a symbol: nothing is ever unknown
        continuing_subword_prefix="",
        end_of_word_suffix="",
        show_progress=False,
    )
    backend.train_from_iterator(_pieces_between_added_tokens(texts), trainer=trainer)
    # Added after training so their ids follow the BPE vocabulary, in this order, as in Qwen2.5.
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TOKENS])
    return wrap_tokenizer(backend, model_max_length=cfg.max_position_embeddings)


def wrap_tokenizer(backend, *, model_max_length: int) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` holding our added tokens as a transformers tokenizer.

    Args:
        backend: a `tokenizers.Tokenizer` whose added vocabulary contains `ALL_ADDED_TOKENS`.
        model_max_length: the context length the tokenizer reports.
    Returns:
        The wrapped tokenizer with eos = pad = `<|endoftext|>` and `CHAT_TEMPLATE`.
    """
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=ENDOFTEXT,
        pad_token=ENDOFTEXT,
        bos_token=None,
        unk_token=None,
        extra_special_tokens=[IM_START, IM_END],  # Qwen2.5's additional_special_tokens
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    check_tokenizer(tok)
    return tok


def check_tokenizer(tokenizer: PreTrainedTokenizerFast, where: str = "tokenizer") -> None:
    """Raise ModelError unless every added token encodes to exactly one id.

    Args:
        tokenizer: the tokenizer to check.
        where: named in the error (e.g. a checkpoint path).
    """
    for t in ALL_ADDED_TOKENS:
        ids = tokenizer.encode(t, add_special_tokens=False)
        if len(ids) != 1:
            raise ModelError(
                f"{where}: {t!r} encodes to {len(ids)} ids {ids}, expected one; "
                "retrain the tokenizer with deepresearch.modeling.tokenizer.train_tokenizer"
            )


def prepare_base_tokenizer(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """Make a pretrained (Qwen2.5) tokenizer speak our format: add missing tool tokens, set our template.

    Qwen2.5 already has `<tool_call>`...`</tool_response>`; `<answer>`/`</answer>` are added. Returns the
    same tokenizer object, changed in place (the caller resizes the embeddings if it grew).
    """
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    missing_special = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing_special:
        tokenizer.add_tokens(
            [AddedToken(t, special=True, normalized=False) for t in missing_special], special_tokens=True
        )
    missing = [t for t in TOOL_TOKENS if t not in vocab]
    if missing:
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in missing])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = ENDOFTEXT
    tokenizer.chat_template = CHAT_TEMPLATE
    check_tokenizer(tokenizer)
    return tokenizer
