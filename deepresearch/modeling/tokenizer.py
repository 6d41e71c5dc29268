"""The policy's tokenizer: a byte-level BPE trained on the research world, with Qwen2.5's special
tokens and chat format; and `load_base` for the registry's pretrained models.

    from deepresearch.modeling.tokenizer import train_tokenizer, load_base
    tok = train_tokenizer(tokenizer_corpus(world_dir, datasets_dir), cfg.model)   # base: tiny
    model, tok = load_base(cfg.model)                                          # base: qwen2.5-0.5b, ...

Special tokens are Qwen2.5's: `<|endoftext|>` (eos and pad of the base model), `<|im_start|>`,
`<|im_end|>`, and the added (non-special, so they survive `skip_special_tokens`) tool tokens
`<tool_call> </tool_call> <tool_response> </tool_response>` plus `<answer> </answer>`; each is one id,
placed after the BPE vocabulary as in Qwen2.5. The chat template renders
`<|im_start|>{role}\\n{content}<|im_end|>\\n` per turn; consecutive tool messages become one `user`
turn of `<tool_response>\\n...\\n</tool_response>` blocks, as Qwen2.5's template does.

Normalizer (NFC), pre-tokenizer (Qwen2's regex, then byte-level) and decoder are Qwen2's, so the
tokenizer survives transformers 5's `Qwen2Tokenizer` (which AutoTokenizer uses for every `qwen2`
checkpoint and which rebuilds that pipeline from the vocabulary and merges) unchanged.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from deepresearch.config import ModelConfig, resolve_repo_path
from deepresearch.modeling import ModelError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

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

# Qwen2.5's chat format. Differences from Qwen2.5's own template, on purpose: no default system prompt
# ("You are Qwen, ...") and no `tools=` rendering, because the agent's system prompt
# (deepresearch.agent.loop.system_prompt) already carries the tool signatures in Qwen's wording.
# Assistant messages with structured `tool_calls` (as an OpenAI-compatible server sends back) are
# rendered the way Qwen2.5 renders them.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' and message['tool_calls'] is defined and message['tool_calls'] %}"
    "{{- '<|im_start|>assistant' }}"
    "{%- if message['content'] %}{{- '\\n' + message['content'] }}{%- endif %}"
    "{%- for tool_call in message['tool_calls'] %}"
    "{%- if tool_call['function'] is defined %}{%- set tool_call = tool_call['function'] %}{%- endif %}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' + tool_call['name'] + '\", \"arguments\": ' }}"
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


# ---- base-model registry -----------------------------------------------------------------------


class BaseModelEntry(BaseModel):
    """One entry of registry/base_models.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Literal["built", "path"]  # built: tokenizer + random-init model from config; path: a checkpoint
    path: str | None = None  # local directory (absolute or repo-relative) or s3://bucket/prefix
    upstream: str | None = None  # the published model this is a copy of (documentation; never downloaded)
    description: str = ""

    @model_validator(mode="after")
    def _path_matches_source(self) -> "BaseModelEntry":
        if self.source == "path" and not self.path:
            raise ValueError("source=path needs `path` (a local directory or an s3:// URI)")
        if self.source == "built" and self.path:
            raise ValueError("source=built takes no `path` (the model is built from the config)")
        return self


class BaseModelRegistry(BaseModel):
    """registry/base_models.yaml: name -> entry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1]
    models: dict[str, BaseModelEntry]


def load_base_registry(path: str | Path) -> BaseModelRegistry:
    """Read and validate the base-model catalogue.

    Args:
        path: the YAML file (repo-relative paths are resolved against the repo).
    Returns:
        The validated registry.
    Raises:
        ModelError: missing file, bad YAML, or an invalid entry (file and field named).
    """
    import yaml

    p = resolve_repo_path(path)
    if not p.is_file():
        raise ModelError(
            f"base-model registry not found: {p} (set model.base_models_registry to a YAML file)"
        )
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ModelError(f"base-model registry {p} is not valid YAML: {e}") from e
    try:
        return BaseModelRegistry.model_validate(data)
    except ValidationError as e:
        fields = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ModelError(f"base-model registry {p} is invalid: {fields}") from None


def resolve_base(cfg: ModelConfig) -> BaseModelEntry:
    """The registry entry named by `cfg.base`; ModelError listing the known names otherwise."""
    registry = load_base_registry(cfg.base_models_registry)
    if cfg.base not in registry.models:
        raise ModelError(
            f"model.base={cfg.base!r} is not in {cfg.base_models_registry}; "
            f"known: {', '.join(sorted(registry.models))}"
        )
    return registry.models[cfg.base]


def default_cache_dir() -> Path:
    """Where s3:// models are staged: $DEEPRESEARCH_MODEL_CACHE, else ~/.cache/deepresearch/models."""
    env = os.environ.get("DEEPRESEARCH_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "deepresearch" / "models"


def download_s3_dir(uri: str, cache_dir: Path) -> Path:
    """Copy every object under an s3:// prefix into the cache (once; atomically) and return the directory.

    The endpoint and credentials come from boto3's usual sources (AWS_ENDPOINT_URL for MinIO,
    AWS_ACCESS_KEY_ID, ...). A finished download is reused; a half-finished one is never visible.

    Args:
        uri: `s3://bucket/prefix`.
        cache_dir: parent directory of the staged copies.
    Returns:
        The local directory holding the objects, keyed by the URI.
    """
    import boto3

    m = re.fullmatch(r"s3://([^/]+)/?(.*)", uri)
    if not m:
        raise ModelError(f"{uri!r} is not an s3://bucket/prefix URI")
    bucket, prefix = m.group(1), m.group(2).strip("/")
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    final = Path(cache_dir) / f"{Path(prefix).name or bucket}-{key}"
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        client = boto3.client("s3")
        n = 0
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix + "/" if prefix else ""
        ):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix) + 1 :] if prefix else obj["Key"]
                if not rel or rel.endswith("/"):
                    continue
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, obj["Key"], str(dest))
                n += 1
        if n == 0:
            raise ModelError(f"{uri} holds no objects; stage the model there or fix the path in the registry")
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first: keep theirs
            if not final.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_base(
    cfg: ModelConfig, *, cache_dir: Path | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load the pretrained base model named by `cfg.base` from registry/base_models.yaml.

    Local directories are read in place; s3:// URIs are staged into `cache_dir` first. The tokenizer
    gets our tool tokens and chat template (`prepare_base_tokenizer`); the embeddings grow if it needs more
    rows than the checkpoint has (Qwen2.5's embeddings already have spare rows, so they do not).

    Args:
        cfg: the model section; `cfg.base` names the entry.
        cache_dir: staging directory for s3:// models (default `default_cache_dir()`).
    Returns:
        (model, tokenizer).
    Raises:
        ModelError: unknown name, a `built` entry (use `train_tokenizer` + `build_tiny_model`), or a bad checkpoint.
    """
    from deepresearch.modeling.checkpoint import load_checkpoint

    entry = resolve_base(cfg)
    if entry.source == "built":
        raise ModelError(
            f"model.base={cfg.base!r} is built, not loaded: train its tokenizer with "
            "deepresearch.modeling.tokenizer.train_tokenizer and build the model with "
            "deepresearch.modeling.model.build_tiny_model"
        )
    assert entry.path is not None  # guaranteed by BaseModelEntry's validator
    if entry.path.startswith("s3://"):
        local = download_s3_dir(entry.path, cache_dir or default_cache_dir())
    else:
        local = resolve_repo_path(entry.path)
    model, tokenizer = load_checkpoint(local)
    prepare_base_tokenizer(tokenizer)
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    return model, tokenizer
