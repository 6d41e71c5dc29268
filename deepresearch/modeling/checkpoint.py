"""Checkpoints as standard Hugging Face directories, written atomically, loaded with clear errors.

    save_checkpoint(model, tokenizer, "out/sft/step-100", metadata={"stage": "sft", "step": 100})
    model, tokenizer = load_checkpoint("out/sft/step-100")

A checkpoint directory holds

    config.json  model.safetensors (or shards + index)  generation_config.json
    tokenizer.json  tokenizer_config.json  chat_template.jinja
    deepresearch.json   {"schema_version", "vocab_size", "num_parameters", "metadata": {...}}

which transformers and vLLM load as they are. It is written into a temporary sibling directory and
renamed into place, so a crash never leaves a half-written checkpoint under the final name.
`generation_config.json` stops generation at `<|im_end|>` or `<|endoftext|>`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepresearch.io import atomic_dir
from deepresearch.modeling import ModelError
from deepresearch.modeling.tokenizer import ENDOFTEXT, IM_END

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

CHECKPOINT_SCHEMA_VERSION = 1
METADATA_FILE = "deepresearch.json"
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model.bin", "pytorch_model-*.bin")


def _token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int | None:
    tid = tokenizer.convert_tokens_to_ids(token)
    return tid if isinstance(tid, int) and tid >= 0 and tid != tokenizer.unk_token_id else None


def _add_v4_config_keys(path: Path) -> None:
    """Mirror transformers 5's `rope_parameters.rope_theta` and `dtype` as the v4 keys `rope_theta` and
    `torch_dtype`: a reader on transformers 4 (e.g. a vLLM image) would otherwise fall back to
    rope_theta = 10000 without a word (Qwen2.5 uses 1e6). transformers 5 reads both spellings."""
    cfg = json.loads(path.read_text())
    theta = (cfg.get("rope_parameters") or {}).get("rope_theta")
    if theta is not None:
        cfg.setdefault("rope_theta", theta)
    if "dtype" in cfg:
        cfg.setdefault("torch_dtype", cfg["dtype"])
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def save_checkpoint(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    out_dir: str | Path,
    metadata: dict[str, Any] | None = None,
    *,
    card: bool = False,
) -> Path:
    """Write model, tokenizer (with chat template), generation config and our metadata, atomically.

    Args:
        model: a transformers model holding full (not ZeRO-3 partitioned) weights.
        tokenizer: its tokenizer.
        out_dir: the checkpoint directory; an existing one is replaced.
        metadata: JSON-serialisable facts to keep with the weights (stage, step, config hash, ...).
        card: also write a model card (`README.md`, `model_card_text`) from the metadata.
    Returns:
        `out_dir` as a Path.
    Raises:
        ModelError: metadata that is not JSON-serialisable (nothing is written).
    """
    from transformers import GenerationConfig

    from deepresearch.console import quiet

    quiet()
    out_dir = Path(out_dir)
    try:
        meta_json = json.dumps(metadata or {}, sort_keys=True)
    except TypeError as e:
        raise ModelError(f"save_checkpoint({out_dir}): metadata is not JSON-serialisable ({e})") from e
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        _add_v4_config_keys(tmp / "config.json")
        eot, im_end = _token_id(tokenizer, ENDOFTEXT), _token_id(tokenizer, IM_END)
        GenerationConfig(
            eos_token_id=[t for t in (im_end, eot) if t is not None],
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot,
            bos_token_id=None,
        ).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # transformers 5 records its own class name; the generic name also loads in transformers 4 (vLLM).
        tc_path = tmp / "tokenizer_config.json"
        tc = json.loads(tc_path.read_text())
        tc["tokenizer_class"] = "PreTrainedTokenizerFast"
        tc_path.write_text(json.dumps(tc, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        info = {
            "schema_version": CHECKPOINT_SCHEMA_VERSION,
            "vocab_size": len(tokenizer),
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "metadata": json.loads(meta_json),
        }
        (tmp / METADATA_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        if card:
            (tmp / "README.md").write_text(model_card_text(info))
    return out_dir


# What each stage's checkpoint is, for its model card.
STAGE_DESCRIPTIONS = {
    "mid1": "mid-trained (stage 1) on the world's documents and research reports as plain text",
    "mid2": "mid-trained (stage 2) on whole tool-call trajectories, tool results included",
    "sft": "fine-tuned on expert Deep Search and Deep Research trajectories (loss on the agent's turns)",
    "rl": "the SFT policy trained further with PPO on the rubric judge's reward",
    "judge": "the rubric judge: labels a report against one rubric item (satisfied, partly, not)",
}

_PROMPTING = """## Prompting it with tools

The tokenizer carries the Qwen2.5 chat template it was trained with: `tools=` go into the system turn,
assistant `tool_calls` and `tool` messages are written as in training, token for token.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path)
# OpenAI-style function schemas; the agent's: [t.schema() for t in deepresearch.agent.loop.make_tools().values()]
tools = [{{"type": "function", "function": {{"name": "batch_web_surfer", "description": "Search and open pages.",
          "parameters": {{"type": "object", "properties": {{"search": {{"type": "array"}}}}}}}}}}]
messages = [{{"role": "system", "content": instructions}},  # the agent's: deepresearch.agent.loop.INSTRUCTIONS
            {{"role": "user", "content": "Who founded Widelt Company?"}}]
inputs = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                 return_dict=True, return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=256)
print(tok.decode(out[0, inputs["input_ids"].shape[1]:]))
```

It calls tools as

```text
I will search first.
<tool_call>
{{"name": "batch_web_surfer", "arguments": {{"search": ["Widelt Company founder"]}}}}
</tool_call>
```

Send a call back as an assistant message with `tool_calls`, its result as a `tool` message; the final
answer comes inside `<answer></answer>`, citing pages as `\\cite{{doc_id}}`.{note}
"""

_JUDGING = """## Using it

```python
from deepresearch.judge.model import Judge

judge = Judge.load(path)  # reads judge.json: the labels and what of a report it reads
judge.label_pairs([(report, "States the founding year")])  # one of {labels} per pair
```
"""


def model_card_text(info: dict[str, Any]) -> str:
    """A checkpoint's model card (README.md): what it is, how it was trained, how to prompt it with tools.

    Args:
        info: `deepresearch.json`'s content: `num_parameters`, `vocab_size` and `metadata`, whose `stage`,
            `steps`, `config_hash`, `mlflow_run_id` and `data` ({input name: content digest}) it states.
    Returns:
        Markdown with Hugging Face front matter.
    """
    meta = info.get("metadata", {})
    stage = meta.get("stage", "?")
    judge = stage == "judge"
    facts = [f"- stage: `{stage}`" + (f", {meta['steps']} steps" if "steps" in meta else "")]
    if "config_hash" in meta:
        facts.append(f"- config hash: `{meta['config_hash']}`")
    facts.append(f"- MLflow run: `{meta['mlflow_run_id']}`" if meta.get("mlflow_run_id") else "- MLflow run: none (tracking off)")
    facts += [f"- input `{name}`: `{digest}` (content digest, `deepresearch.io.dir_digest`)"
              for name, digest in sorted((meta.get("data") or {}).items())]
    if judge:
        usage = _JUDGING.format(labels=" / ".join(f"`{label}`" for label in meta.get("labels", [])) or "the labels")
    else:
        note = ("\n\nThis stage trained on plain text only: the tool-call format is learned from `mid2` on."
                if stage == "mid1" else "")
        usage = _PROMPTING.format(note=note)
    kind = "sequence classifier" if judge else "causal LM"
    what = STAGE_DESCRIPTIONS.get(stage, f"written by the `{stage}` stage")
    return f"""---
library_name: transformers
pipeline_tag: {"text-classification" if judge else "text-generation"}
tags: [deepresearch, qwen2, {stage}]
---
# deepresearch `{stage}` checkpoint

A {info.get("num_parameters", 0):,}-parameter Qwen2 {kind} (vocabulary {info.get("vocab_size", "?")}) from the
Step-DeepResearch pipeline's `{stage}` stage: {what}. `deepresearch lineage` on its registered version
shows the runs and data behind it.

## How it was trained

{chr(10).join(facts)}

{usage}"""


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The `deepresearch.json` of a checkpoint ({} for a checkpoint we did not write, e.g. a base model)."""
    p = Path(path) / METADATA_FILE
    return json.loads(p.read_text()) if p.is_file() else {}


def _config_vocab_size(path: Path) -> int | None:
    cfg = json.loads((path / "config.json").read_text())
    vocab = cfg.get("vocab_size", (cfg.get("text_config") or {}).get("vocab_size"))
    return vocab if isinstance(vocab, int) else None


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The tensor table of a .safetensors file, after checking the file holds every byte it announces.

    Raises:
        ModelError: the file is shorter (or longer) than its header says, or the header is unreadable:
            one line naming the file and what to do.
    """
    import struct

    fix = f"the write was interrupted or the file was damaged; delete {path.parent} and re-run the stage that wrote it"
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError(f"the header says {n} bytes of metadata but the file has {size}")
            header = json.loads(f.read(n))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError, IndexError) as e:
        raise ModelError(f"{path} is not a readable safetensors file ({e}); {fix}") from None
    if 8 + n + end != size:
        raise ModelError(
            f"{path} is truncated: {size:,} bytes where its header describes {8 + n + end:,}; {fix}"
            if size < 8 + n + end
            else f"{path} has {size - 8 - n - end:,} bytes more than its header describes; {fix}"
        )
    return header


def _embedding_rows(path: Path) -> tuple[int, Path] | None:
    """(rows of the input embedding, the file holding it) from the safetensors headers, without loading weights."""
    found = None
    for file in sorted(path.glob("*.safetensors")):  # every shard is checked, not only the embedding's
        for name, t in _safetensors_header(file).items():
            if found is None and name.endswith(("embed_tokens.weight", "wte.weight", "word_embeddings.weight")):
                found = (int(t["shape"][0]), file)
    return found


def load_checkpoint(
    path: str | Path,
    *,
    model_cls: Any = None,
    dtype: Any = "auto",
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load a checkpoint directory written by `save_checkpoint` (or any HF causal-LM directory).

    Args:
        path: the checkpoint directory.
        model_cls: a transformers class with `from_pretrained` (default AutoModelForCausalLM; the critic
            and the judge pass their own).
        dtype: passed to `from_pretrained` ("auto": the dtype the weights were saved in).
    Returns:
        (model in eval mode, tokenizer).
    Raises:
        ModelError: the directory, config.json, the weights or the tokenizer is missing, a weights file is
            truncated, config.json's vocab_size disagrees with the stored embedding, or the tokenizer
            has more tokens than the model has embedding rows (one line each, naming the file and the fix).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from deepresearch.console import quiet

    quiet()
    path = Path(path)
    if not path.is_dir():
        raise ModelError(
            f"checkpoint directory not found: {path} (pass a directory written by save_checkpoint)"
        )
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} is not a Hugging Face checkpoint: config.json is missing")
    if not any(any(path.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise ModelError(
            f"checkpoint {path} has no weights (no *.safetensors or pytorch_model*.bin); "
            "it was not written completely, or points at the wrong directory"
        )
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise ModelError(
            f"checkpoint {path} has no tokenizer (tokenizer.json / tokenizer_config.json missing)"
        )
    # The weights' own headers first (cheap, no tensor is read): a truncated file, or a config.json
    # whose vocab_size disagrees with the embedding actually stored, is named as such, not left to
    # surface as a tokenizer mismatch or a long traceback from deep inside transformers.
    stored = _embedding_rows(path)
    declared = _config_vocab_size(path)
    if stored is not None and declared is not None and stored[0] != declared:
        raise ModelError(
            f"{path / 'config.json'} says vocab_size={declared} but {stored[1].name} holds an embedding of "
            f"{stored[0]} rows: config.json was edited or belongs to another model; set vocab_size to {stored[0]}"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise ModelError(f"checkpoint {path}: the tokenizer does not load: {e}") from e

    def check_vocab(rows: int) -> None:
        if len(tokenizer) > rows:
            raise ModelError(
                f"checkpoint {path}: vocabulary mismatch: the tokenizer has {len(tokenizer)} tokens but the model's "
                f"embedding has {rows} rows; save the tokenizer the model was trained with, or resize the "
                "embeddings (model.resize_token_embeddings) before saving"
            )

    rows = stored[0] if stored is not None else declared
    if rows is not None:
        check_vocab(rows)  # before reading the weights, which may be large
    cls = model_cls or AutoModelForCausalLM
    try:
        model = cls.from_pretrained(str(path), dtype=dtype)
    except Exception as e:  # noqa: BLE001 - SafetensorError, RuntimeError (size mismatch), OSError, ...
        raise ModelError(
            f"checkpoint {path}: the model does not load ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
            "re-run the stage that wrote it"
        ) from e
    check_vocab(model.get_input_embeddings().weight.shape[0])
    return model.eval(), tokenizer
