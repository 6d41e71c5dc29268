"""Tokenizer, chat encoding, tiny model and checkpoints (deepresearch.modeling).

    uv run pytest tests/test_modeling.py -q

Inputs are real: a tiny world and the expert trajectories the quality gates kept, built by the
project's own generator once per session (`data_dirs`, tests/conftest.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from deepresearch.agent.schema import Message
from deepresearch.config import ModelConfig

# Small enough to build in a second, big enough to have every kind of layer.
SMALL_MODEL = ModelConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)


@pytest.fixture(scope="session")
def corpus(data_dirs) -> list[str]:
    from deepresearch.training.data import tokenizer_corpus

    return list(tokenizer_corpus(*data_dirs))


@pytest.fixture(scope="session")
def tokenizer(corpus):
    from deepresearch.modeling.tokenizer import train_tokenizer

    return train_tokenizer(corpus, ModelConfig())


@pytest.fixture(scope="session")
def trajectories(data_dirs):
    from deepresearch.training.data import read_trajectories

    return read_trajectories(data_dirs[1], "deep_search") + read_trajectories(data_dirs[1], "deep_research")


@pytest.fixture(scope="session")
def model(tokenizer):
    from deepresearch.modeling.model import build_tiny_model

    return build_tiny_model(SMALL_MODEL, tokenizer)


def conversation() -> list[Message]:
    return [
        Message(role="system", content="You are a research agent."),
        Message(role="user", content="Who founded Widelt Company?"),
        Message(
            role="assistant", content='Searching.\n<tool_call>{"name": "todo", "arguments": {}}</tool_call>'
        ),
        Message(role="tool", content='{"ok": true}', name="todo"),
        Message(role="tool", content="error: bad arguments", name="file", is_error=True),
        Message(role="assistant", content="<answer>Decae Pibosk \\cite{D0000028}</answer>"),
    ]


# ---- tokenizer ----------------------------------------------------------------------------------


def test_added_tokens_are_single_ids_after_the_bpe_vocabulary(tokenizer):
    from deepresearch.modeling.tokenizer import ALL_ADDED_TOKENS

    assert len(tokenizer) == ModelConfig().vocab_size  # the corpus supports the full vocabulary
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in ALL_ADDED_TOKENS]
    assert all(len(i) == 1 for i in ids), ids
    # Qwen2.5's layout: added tokens follow the BPE vocabulary, in order, <|endoftext|> first.
    first = len(tokenizer) - len(ALL_ADDED_TOKENS)
    assert [i[0] for i in ids] == list(range(first, len(tokenizer)))
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None
    # Inside text they are still one id each.
    ids = tokenizer.encode("a<tool_call>{}</tool_call>b<answer>x</answer>", add_special_tokens=False)
    assert (
        tokenizer.convert_tokens_to_ids("<tool_call>") in ids
        and tokenizer.convert_tokens_to_ids("</answer>") in ids
    )


def test_tool_tokens_survive_decoding_but_chat_tokens_do_not(tokenizer):
    text = "<|im_start|>assistant\nx <tool_call>{}</tool_call><|im_end|>"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == "assistant\nx <tool_call>{}</tool_call>"


def test_tokenizer_training_is_deterministic(corpus, tokenizer, tmp_path):
    from deepresearch.modeling.tokenizer import train_tokenizer

    again = train_tokenizer(corpus, ModelConfig())
    tokenizer.save_pretrained(tmp_path / "a")
    again.save_pretrained(tmp_path / "b")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    other = train_tokenizer(corpus[: len(corpus) // 2], ModelConfig())
    assert other.backend_tokenizer.to_str() != tokenizer.backend_tokenizer.to_str()


def test_vocab_size_below_the_byte_alphabet_is_refused():
    from deepresearch.modeling import ModelError
    from deepresearch.modeling.tokenizer import train_tokenizer

    with pytest.raises(ModelError, match="at least 265"):
        train_tokenizer(["x"], ModelConfig(vocab_size=300).model_copy(update={"vocab_size": 264}))


# ---- chat template and encoding -----------------------------------------------------------------


def test_chat_template_is_qwen25_format(tokenizer):
    from deepresearch.modeling.chat import render_messages, to_chat_dicts

    expected = (
        "<|im_start|>system\nYou are a research agent.<|im_end|>\n"
        "<|im_start|>user\nWho founded Widelt Company?<|im_end|>\n"
        '<|im_start|>assistant\nSearching.\n<tool_call>{"name": "todo", "arguments": {}}</tool_call><|im_end|>\n'
        # consecutive tool results: one user turn
        '<|im_start|>user\n<tool_response>\n{"ok": true}\n</tool_response>\n'
        "<tool_response>\nerror: bad arguments\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<answer>Decae Pibosk \\cite{D0000028}</answer><|im_end|>\n"
    )
    chat = to_chat_dicts(conversation())
    assert tokenizer.apply_chat_template(chat, tokenize=False) == expected
    assert render_messages(conversation()) == expected
    with_prompt = tokenizer.apply_chat_template(chat[:2], tokenize=False, add_generation_prompt=True)
    assert with_prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert render_messages(conversation()[:2], add_generation_prompt=True) == with_prompt


def test_chat_template_renders_structured_tool_calls_like_qwen(tokenizer):
    chat = [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "todo", "arguments": {"action": "list"}}}
            ],
        }
    ]
    assert tokenizer.apply_chat_template(chat, tokenize=False) == (
        '<|im_start|>assistant\n<tool_call>\n{"name": "todo", "arguments": {"action": "list"}}\n</tool_call><|im_end|>\n'
    )


def test_encode_messages_equals_chat_template_on_real_trajectories(tokenizer, trajectories):
    from deepresearch.modeling.chat import encode_messages, to_chat_dicts

    assert trajectories
    for traj in trajectories:
        sample = encode_messages(tokenizer, traj.messages)
        expected = tokenizer.apply_chat_template(
            to_chat_dicts(traj.messages), tokenize=True, return_dict=False
        )
        assert sample.input_ids == expected, traj.trajectory_id
        assert len(sample.loss_mask) == len(sample.input_ids)


# The template and the hand-built system prompt before the template had a `tools` branch (8b1a1d3): every
# checkpoint trained so far carries this template, and the trained token sequences must not move.
TEMPLATE_BEFORE_TOOLS = (
    "{%- for message in messages %}{%- if message['role'] == 'tool' %}{%- if loop.first or messages[loop.index0 - 1]"
    "['role'] != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}{{- '\\n<tool_response>\\n' + message['content'] + "
    "'\\n</tool_response>' }}{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\\n' }}"
    "{%- endif %}{%- elif message['role'] == 'assistant' and message['tool_calls'] is defined and "
    "message['tool_calls'] %}{{- '<|im_start|>assistant' }}{%- if message['content'] %}{{- '\\n' + message['content'] }}"
    "{%- endif %}{%- for tool_call in message['tool_calls'] %}{%- if tool_call['function'] is defined %}{%- set "
    "tool_call = tool_call['function'] %}{%- endif %}{{- '\\n<tool_call>\\n{\"name\": \"' + tool_call['name'] + '\", "
    "\"arguments\": ' }}{{- (tool_call['arguments'] if tool_call['arguments'] is string else tool_call['arguments'] | "
    "tojson) }}{{- '}\\n</tool_call>' }}{%- endfor %}{{- '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>' + "
    "message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}{%- if "
    "add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _system_prompt_before_tools(schemas: list[dict]) -> str:
    from deepresearch.agent.loop import INSTRUCTIONS

    listed = "".join("\n" + json.dumps(s, ensure_ascii=False) for s in schemas)
    return INSTRUCTIONS + (
        "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>{listed}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n"
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )


def test_tools_branch_leaves_the_trained_encoding_unchanged(tokenizer, trajectories):
    """Before/after: the agent's system prompt is the text it was, and every synthesized trajectory encodes
    to the same ids under today's template as under the template it was trained with."""
    import copy

    from deepresearch.agent.loop import make_tools, system_prompt
    from deepresearch.modeling.chat import encode_messages, to_chat_dicts

    tools = make_tools()
    assert system_prompt(tools) == _system_prompt_before_tools([t.schema() for t in tools.values()])
    before = copy.deepcopy(tokenizer)
    before.chat_template = TEMPLATE_BEFORE_TOOLS
    for traj in trajectories:
        chat = to_chat_dicts(traj.messages)
        ids = before.apply_chat_template(chat, tokenize=True, return_dict=False)
        assert tokenizer.apply_chat_template(chat, tokenize=True, return_dict=False) == ids, traj.trajectory_id
        assert encode_messages(tokenizer, traj.messages).input_ids == ids, traj.trajectory_id


def test_chat_template_renders_tools_as_qwen25_in_the_system_turn(tokenizer):
    from deepresearch.agent.loop import INSTRUCTIONS, make_tools, system_prompt

    tool = {"type": "function", "function": {"name": "todo", "description": "Plan é", "parameters": {"type": "object"}}}
    header = (
        "<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        '{"type": "function", "function": {"name": "todo", "description": "Plan é", "parameters": {"type": "object"}}}\n'
        "</tools>\n\nFor each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n"
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
    )
    user = [{"role": "user", "content": "q"}]
    # no system message: the tools section is the whole system turn (no "You are Qwen" default)
    assert tokenizer.apply_chat_template(user, tools=[tool], tokenize=False) == header + "<|im_start|>user\nq<|im_end|>\n"
    # a system message comes first, then a blank line, then the tools: the agent's system prompt exactly
    tools = make_tools()
    schemas = [t.schema() for t in tools.values()]
    with_tools = tokenizer.apply_chat_template([{"role": "system", "content": INSTRUCTIONS}, *user], tools=schemas,
                                               tokenize=False, add_generation_prompt=True)
    plain = tokenizer.apply_chat_template([{"role": "system", "content": system_prompt(tools)}, *user],
                                          tokenize=False, add_generation_prompt=True)
    assert with_tools == plain
    # no tools, or an empty list: the plain template
    assert tokenizer.apply_chat_template(user, tools=[], tokenize=False) == "<|im_start|>user\nq<|im_end|>\n"


def test_split_tool_calls_only_where_the_template_gives_the_text_back():
    from deepresearch.agent.schema import ToolCall, with_tool_calls
    from deepresearch.modeling.chat import split_system_tools, split_tool_calls

    a, b = ToolCall(name="todo", arguments={"action": "list"}), ToolCall(name="file", arguments={"path": "é.md"})
    for content in ("Planning.", "", "two\nlines"):
        text = with_tool_calls(content, [a.render(), b.render()])
        assert split_tool_calls(text) == (content, [a, b])
    for text in (
        "\n" + a.render(),  # a newline the template would not write
        "Plan " + a.render(),  # the call not on a line of its own
        a.render() + "\nthen more",  # text after the calls
        '<tool_call>\n{"name": "todo", "arguments": {"action":"list"}}\n</tool_call>',  # not json.dumps' spacing
        '<tool_call>\n{"name": "todo", "arguments": {"action": "list"\n</tool_call>',  # malformed
        a.render() + "\n<answer>x</answer>",
        "<answer>x</answer>",
        "no calls",
    ):
        assert split_tool_calls(text) is None, text
    schemas = [a.model_dump(), {"type": "function", "function": {"name": "x"}}]
    from deepresearch.modeling.tokenizer import system_with_tools

    assert split_system_tools(system_with_tools("Be brief.", schemas)) == ("Be brief.", schemas)
    assert split_system_tools(system_with_tools(None, schemas)) == (None, schemas)
    assert split_system_tools("Be brief.") == ("Be brief.", None)
    assert split_system_tools("Be brief." + system_with_tools(None, schemas)) == ("Be brief." + system_with_tools(None, schemas), None)


def test_structured_messages_with_tools_encode_like_training_token_for_token(tokenizer, trajectories):
    """A Qwen2.5 user's form of each trajectory (system prompt + `tools=`, assistant `content` + `tool_calls`,
    `tool` messages) goes through `apply_chat_template` to exactly the ids training encodes."""
    from deepresearch.agent.loop import INSTRUCTIONS, make_tools
    from deepresearch.modeling.chat import encode_messages, render_messages, to_structured_chat

    schemas = [t.schema() for t in make_tools().values()]
    split = dict.fromkeys(("deep_search", "deep_research"), 0)
    for traj in trajectories:
        chat, tools = to_structured_chat(traj.messages)
        assert chat[0] == {"role": "system", "content": INSTRUCTIONS} and tools == schemas
        split[traj.capability] += sum("tool_calls" in m for m in chat)
        assert any(m["role"] == "tool" for m in chat)
        text = tokenizer.apply_chat_template(chat, tools=tools, tokenize=False)
        assert text == render_messages(traj.messages), traj.trajectory_id
        ids = tokenizer.apply_chat_template(chat, tools=tools, tokenize=True, return_dict=False)
        assert ids == encode_messages(tokenizer, traj.messages).input_ids, traj.trajectory_id
        prompt = tokenizer.apply_chat_template(chat[:2], tools=tools, tokenize=True, return_dict=False,
                                               add_generation_prompt=True)
        assert prompt == encode_messages(tokenizer, traj.messages[:2], add_generation_prompt=True).input_ids
    assert all(n > 0 for n in split.values()), split  # structured tool calls in both kinds of trajectory


def test_template_probe_tells_ours_from_one_without_a_tools_branch(tokenizer):
    import copy

    from deepresearch.modeling.chat import template_renders_structured

    assert template_renders_structured(tokenizer)
    before = copy.deepcopy(tokenizer)
    before.chat_template = TEMPLATE_BEFORE_TOOLS
    assert not template_renders_structured(before)


def test_shipped_tiny_base_carries_the_current_chat_template():
    from deepresearch.modeling.tokenizer import CHAT_TEMPLATE

    assert (Path("registry/models/tiny-base/chat_template.jinja").read_text()) == CHAT_TEMPLATE


def _spans(mask: list[int]) -> list[tuple[int, int]]:
    spans, start = [], None
    for i, m in enumerate([*mask, 0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append((start, i))
            start = None
    return spans


def test_loss_mask_covers_exactly_assistant_content_and_im_end(tokenizer):
    from deepresearch.modeling.chat import encode_messages, render_messages

    msgs = conversation()
    sample = encode_messages(tokenizer, msgs)
    ids, text = sample.input_ids, render_messages(msgs)
    assistant = [m.content for m in msgs if m.role == "assistant"]
    spans = _spans(sample.loss_mask)
    assert [tokenizer.decode(ids[a:b]) for a, b in spans] == [c + "<|im_end|>" for c in assistant]
    for (a, b), content in zip(spans, assistant):
        before = tokenizer.decode(ids[:a])
        assert before.endswith("<|im_start|>assistant\n")  # the header is not trained
        assert text.startswith(before + content + "<|im_end|>")  # the span ends at <|im_end|> ...
        assert tokenizer.decode(ids[b : b + 1]) == "\n"  # ... and the newline after it is not trained
    assert sample.n_targets == sum(b - a for a, b in spans)


def test_failed_turns_are_context_not_targets(tokenizer):
    from deepresearch.modeling.chat import encode_messages, failed_turns

    msgs = [
        Message(role="user", content="q"),
        Message(role="assistant", content='<tool_call>{"name": "todo", "arguments": {"action": "lst"}}</tool_call>'),
        Message(role="tool", name="todo", content="error: unknown action 'lst'", is_error=True),
        Message(role="assistant", content='<tool_call>{"name": "todo", "arguments": {"action": "list"}}</tool_call>'),
        Message(role="tool", name="todo", content="[]"),
        Message(role="assistant", content="<answer>42</answer>"),
    ]
    assert failed_turns(msgs) == {1}
    full = encode_messages(tokenizer, msgs)
    masked = encode_messages(tokenizer, msgs, mask_failed_turns=True)
    assert masked.input_ids == full.input_ids  # the same context, fewer targets
    trained = [tokenizer.decode(masked.input_ids[a:b]) for a, b in _spans(masked.loss_mask)]
    assert trained == [msgs[3].content + "<|im_end|>", msgs[5].content + "<|im_end|>"]
    assert len(_spans(full.loss_mask)) == 3


def test_generation_prompt_is_not_trained(tokenizer):
    from deepresearch.modeling.chat import encode_messages, to_chat_dicts

    msgs = conversation()[:2]
    sample = encode_messages(tokenizer, msgs, add_generation_prompt=True)
    assert sample.input_ids == tokenizer.apply_chat_template(
        to_chat_dicts(msgs), tokenize=True, add_generation_prompt=True, return_dict=False
    )
    assert sum(sample.loss_mask) == 0


def test_assistant_content_starting_with_newline_keeps_an_exact_mask(tokenizer):
    # Qwen2's pre-tokenizer would merge the header's "\n" with this content's "\n\n"; the header and
    # the content are then tokenized apart (as at generation time, where the header is the prompt).
    from deepresearch.modeling.chat import encode_messages, render_messages

    msgs = [Message(role="user", content="q"), Message(role="assistant", content="\n\n  Answer.")]
    encode = tokenizer.backend_tokenizer.encode
    head = encode("<|im_start|>assistant\n", add_special_tokens=False).ids
    joint = encode("<|im_start|>assistant\n\n\n  Answer.", add_special_tokens=False).ids
    assert joint[: len(head)] != head  # this is the merging case
    sample = encode_messages(tokenizer, msgs)
    assert tokenizer.decode(sample.input_ids) == render_messages(msgs)
    ((a, b),) = _spans(sample.loss_mask)
    assert tokenizer.decode(sample.input_ids[a:b]) == "\n\n  Answer.<|im_end|>"


def test_encode_text_ends_with_endoftext_and_trains_everything(tokenizer):
    from deepresearch.modeling.chat import encode_text

    sample = encode_text(tokenizer, "Widelt Company was founded in 1987.\n\nIt makes food.")
    assert sample.input_ids[-1] == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert sample.loss_mask == [1] * len(sample.input_ids)
    assert (
        tokenizer.decode(sample.input_ids)
        == "Widelt Company was founded in 1987.\n\nIt makes food.<|endoftext|>"
    )


# ---- model ----------------------------------------------------------------------------------------


def test_tiny_model_is_qwen2_seeded_and_sized_by_the_tokenizer(tokenizer, model):
    import torch

    from deepresearch.modeling.model import build_tiny_model

    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.get_input_embeddings().weight.shape == (len(tokenizer), SMALL_MODEL.hidden_size)
    assert model.config.eos_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    state = torch.get_rng_state()
    same = build_tiny_model(SMALL_MODEL, tokenizer)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    other = build_tiny_model(SMALL_MODEL.model_copy(update={"seed": 1}), tokenizer)
    for (name, a), b in zip(model.state_dict().items(), same.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, other.model.layers[0].mlp.up_proj.weight)


# ---- checkpoints ----------------------------------------------------------------------------------


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits


def test_checkpoint_round_trip(model, tokenizer, tmp_path):
    import torch

    from deepresearch.modeling.checkpoint import load_checkpoint, read_metadata, save_checkpoint

    out = save_checkpoint(
        model, tokenizer, tmp_path / "ckpt" / "step-10", metadata={"stage": "sft", "step": 10}
    )
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "deepresearch.json",
    } <= names
    assert [p.name for p in out.parent.iterdir()] == ["step-10"]  # no temporary directory left
    config = json.loads((out / "config.json").read_text())
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"]  # also readable by transformers 4
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [
        tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")
    ]
    meta = read_metadata(out)
    assert meta["metadata"] == {"stage": "sft", "step": 10} and meta["vocab_size"] == len(tokenizer)

    loaded, tok = load_checkpoint(out)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello"}], tokenize=True, return_dict=False
    )
    assert torch.equal(_logits(model, ids), _logits(loaded, ids))
    assert loaded.dtype == torch.float32
    # transformers 5 loads a qwen2 tokenizer as Qwen2Tokenizer, rebuilt from vocab + merges: it must be ours.
    assert tok.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()
    assert tok.chat_template == tokenizer.chat_template
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|endoftext|>"

    # Saving again over the same directory replaces it whole.
    save_checkpoint(model, tokenizer, out, metadata={"step": 11})
    assert read_metadata(out)["metadata"] == {"step": 11}
    assert [p.name for p in out.parent.iterdir()] == ["step-10"]


def test_failed_save_leaves_nothing_behind(model, tokenizer, tmp_path, monkeypatch):
    from deepresearch.modeling import ModelError
    from deepresearch.modeling.checkpoint import save_checkpoint

    with pytest.raises(ModelError, match="not JSON-serialisable"):
        save_checkpoint(model, tokenizer, tmp_path / "a", metadata={"x": object()})
    assert not (tmp_path / "a").exists()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(tokenizer), "save_pretrained", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, tokenizer, tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def saved(model, tokenizer, tmp_path_factory) -> Path:
    from deepresearch.modeling.checkpoint import save_checkpoint

    return save_checkpoint(model, tokenizer, tmp_path_factory.mktemp("saved") / "ckpt")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_a_training_stage_checkpoint_has_a_model_card(model, tokenizer, tmp_path):
    from deepresearch.modeling.checkpoint import save_checkpoint

    plain = save_checkpoint(model, tokenizer, tmp_path / "plain", metadata={"stage": "sft"})
    assert not (plain / "README.md").exists()  # opt-in: a hand-written card (the shipped base) is never replaced
    meta = {"stage": "sft", "steps": 500, "config_hash": "abc123", "mlflow_run_id": "r123",
            "data": {"sft_data": "d" * 64, "world": "e" * 64}}
    out = save_checkpoint(model, tokenizer, tmp_path / "sft", metadata=meta, card=True)
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-generation\n")
    n = sum(p.numel() for p in model.parameters())
    assert "# deepresearch `sft` checkpoint" in card and f"{n:,}-parameter" in card
    assert "- stage: `sft`, 500 steps\n- config hash: `abc123`\n- MLflow run: `r123`\n" in card
    assert f"- input `sft_data`: `{'d' * 64}`" in card and f"- input `world`: `{'e' * 64}`" in card
    # the example is fenced code, so markdown shows the call's newlines as they are
    assert "```python\n" in card and "apply_chat_template(messages, tools=tools" in card
    assert '```text\nI will search first.\n<tool_call>\n{"name": "batch_web_surfer"' in card
    assert card.count("```") % 2 == 0


def test_load_checkpoint_errors(saved, tmp_path):
    from deepresearch.modeling import ModelError
    from deepresearch.modeling.checkpoint import load_checkpoint

    with pytest.raises(ModelError, match="checkpoint directory not found"):
        load_checkpoint(tmp_path / "nope")

    no_config = _copy(saved, tmp_path / "no_config")
    (no_config / "config.json").unlink()
    with pytest.raises(ModelError, match="config.json is missing"):
        load_checkpoint(no_config)

    no_weights = _copy(saved, tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=f"checkpoint {no_weights} has no weights"):
        load_checkpoint(no_weights)


def test_damaged_weights_and_an_edited_vocab_size_are_named_in_one_line(saved, tmp_path):
    from deepresearch.modeling import ModelError
    from deepresearch.modeling.checkpoint import load_checkpoint

    truncated = _copy(saved, tmp_path / "truncated")
    weights = truncated / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(size // 2)  # a copy or a save interrupted half way
    with pytest.raises(ModelError) as e:
        load_checkpoint(truncated)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{weights} is truncated: {size // 2:,} bytes where its header describes {size:,}")
    assert f"delete {truncated} and re-run the stage that wrote it" in msg

    rows = json.loads((saved / "config.json").read_text())["vocab_size"]
    for edited in (rows - 5, rows + 5):  # fewer rows than the tokenizer's tokens, or more than stored
        ckpt = _copy(saved, tmp_path / f"vocab{edited}")
        config = json.loads((ckpt / "config.json").read_text())
        config["vocab_size"] = edited
        (ckpt / "config.json").write_text(json.dumps(config))
        with pytest.raises(ModelError) as e:
            load_checkpoint(ckpt)
        assert str(e.value) == (
            f"{ckpt / 'config.json'} says vocab_size={edited} but model.safetensors holds an embedding of {rows} rows: "
            f"config.json was edited or belongs to another model; set vocab_size to {rows}"
        )


def test_load_checkpoint_refuses_a_tokenizer_larger_than_the_embedding(model, tokenizer, tmp_path):
    from deepresearch.modeling import ModelError
    from deepresearch.modeling.checkpoint import load_checkpoint, save_checkpoint
    from deepresearch.modeling.tokenizer import wrap_tokenizer

    backend = tokenizer.backend_tokenizer.__class__.from_str(tokenizer.backend_tokenizer.to_str())
    bigger = wrap_tokenizer(backend, model_max_length=4096)
    bigger.add_tokens(["<extra_1>", "<extra_2>"])
    path = save_checkpoint(model, bigger, tmp_path / "mismatch")
    rows = len(tokenizer)
    with pytest.raises(
        ModelError, match=f"tokenizer has {rows + 2} tokens but the model's embedding has {rows} rows"
    ):
        load_checkpoint(path)


# ---- base-model registry --------------------------------------------------------------------------


def test_repo_registry_validates_and_names_the_paper_models():
    from deepresearch.modeling.base_models import load_base_registry

    reg = load_base_registry(ModelConfig().base_models_registry)
    assert reg.models["tiny"].source == "built"
    assert reg.models["qwen2.5-0.5b"].upstream == "Qwen/Qwen2.5-0.5B"
    assert reg.models["qwen2.5-32b-base"].path.startswith("s3://")


def test_shipped_tiny_base_loads_and_reads():
    """The committed base (make base-model) loads through the registry, speaks the chat format, and has
    learned to read: it copies an entity name it never saw out of a page, from a fresh world."""
    import random

    import torch

    from deepresearch.config import WorldConfig, load_config
    from deepresearch.modeling.base_models import load_base
    from deepresearch.modeling.pretrain import AUX_SEED
    from deepresearch.modeling.tokenizer import ALL_ADDED_TOKENS, check_tokenizer
    from deepresearch.synthesis.reading import world_texts
    from deepresearch.world.generator import generate_world

    cfg = load_config("configs/tiny.yaml")
    assert cfg.model.base == "tiny-base"
    model, tok = load_base(cfg.model)
    check_tokenizer(tok)
    assert tok.chat_template and all(t in tok.get_vocab() for t in ALL_ADDED_TOKENS)
    world = generate_world(WorldConfig(seed=AUX_SEED - 1, entities_per_type=10))  # a seed no corpus used
    rng = random.Random(0)
    questions = [t for t in world_texts(world, rng) if "\nQ: What is the " in t and "\n\n" not in t][:20]
    hits = 0
    with torch.no_grad():
        for text in questions:
            prompt, answer = text.rsplit("\nA: ", 1)
            p_ids = tok.encode(prompt + "\nA:", add_special_tokens=False)
            a_ids = tok.encode(" " + answer, add_special_tokens=False)
            pred = model(input_ids=torch.tensor([p_ids + a_ids])).logits[0].argmax(-1)
            hits += all(int(pred[len(p_ids) - 1 + j]) == a for j, a in enumerate(a_ids))
    assert hits >= len(questions) // 2, f"the shipped base answered {hits}/{len(questions)} reading questions"


def test_pretrain_writes_a_loadable_base(tmp_path):
    from deepresearch.config import TrainStageConfig
    from deepresearch.modeling.checkpoint import load_checkpoint
    from deepresearch.modeling.pretrain import pretrain, pretrain_corpus

    corpus = pretrain_corpus(1, 4)
    assert corpus == pretrain_corpus(1, 4) and len(corpus) > 20
    assert {t.split(" ", 1)[0] for t in corpus} <= {"open:", "search:"}
    mc = ModelConfig(vocab_size=600, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024)
    tc = TrainStageConfig(seq_len=256, micro_batch_size=2, max_steps=2, warmup_steps=0, save_every=2,
                          zero_stage=0, nproc_per_node=1)
    info = pretrain(mc, tc, tmp_path / "base", n_worlds=1, entities_per_type=4, n_format_tasks=2, progress=False)
    assert info["steps"] == 2 and info["texts"] == len(corpus)
    model, tok = load_checkpoint(tmp_path / "base")
    assert model.config.hidden_size == 32 and len(tok) <= 600


def test_registry_errors(tmp_path):
    from deepresearch.modeling import ModelError
    from deepresearch.modeling.base_models import load_base, load_base_registry

    with pytest.raises(ModelError, match="is built, not loaded"):
        load_base(ModelConfig(base="tiny"))
    with pytest.raises(ModelError, match="known: qwen2.5-0.5b, qwen2.5-32b-base, tiny, tiny-base"):
        load_base(ModelConfig(base="gpt-2"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nmodels:\n  m:\n    source: path\n")
    with pytest.raises(ModelError, match=r"models\.m: Value error, source=path needs `path`"):
        load_base_registry(bad)


def _registry(tmp_path: Path, path: str) -> ModelConfig:
    reg = tmp_path / "base_models.yaml"
    reg.write_text(f"schema_version: 1\nmodels:\n  local:\n    source: path\n    path: {path}\n")
    return ModelConfig(base="local", base_models_registry=str(reg))


def test_load_base_from_a_local_directory(saved, model, tmp_path):
    import torch

    from deepresearch.modeling.base_models import load_base

    base, tok = load_base(_registry(tmp_path, str(saved)))
    ids = tok.encode("Widelt Company <answer>", add_special_tokens=False)
    assert torch.equal(_logits(base, ids), _logits(model, ids))


def test_load_base_stages_an_s3_prefix_once(saved, model, tmp_path, monkeypatch):
    import boto3
    import torch
    from moto import mock_aws

    from deepresearch.modeling.base_models import load_base

    for k, v in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="models")
        for f in saved.iterdir():
            s3.upload_file(str(f), "models", f"Tiny/{f.name}")
        cfg = _registry(tmp_path, "s3://models/Tiny")
        base, tok = load_base(cfg, cache_dir=tmp_path / "cache")
        staged = list((tmp_path / "cache").iterdir())
        assert len(staged) == 1 and staged[0].name.startswith("Tiny-")
        s3.delete_object(Bucket="models", Key="Tiny/model.safetensors")
        load_base(cfg, cache_dir=tmp_path / "cache")  # served from the cache
    ids = tok.encode("hello", add_special_tokens=False)
    assert torch.equal(_logits(base, ids), _logits(model, ids))


# ---- next-action probe (deepresearch.evaluation.probe) ---------------------------------------------
def test_turn_spans_cut_a_turn_into_what_the_probe_scores():
    from deepresearch.agent.schema import ToolCall
    from deepresearch.evaluation.probe import turn_spans

    text = "Plan first.\n" + ToolCall(name="todo", arguments={"action": "add", "items": ["a"]}).render() + "\n" + \
        ToolCall(name="batch_web_surfer", arguments={"open": ["D0000001"]}).render()
    got = [(kind, text[a:b]) for kind, a, b in turn_spans(text)]
    assert got == [
        ("thought", "Plan first."),
        ("tool", "todo"), ("plan", '{"action": "add", "items": ["a"]}'),
        ("tool", "batch_web_surfer"), ("open", '{"open": ["D0000001"]}'),
    ]
    answer = "<answer>Mara Quell</answer>"
    assert [(k, answer[a:b]) for k, a, b in turn_spans(answer)] == [("answer", "Mara Quell")]


class _Oracle:
    """A stand-in causal LM whose argmax after ids[:t] is ids[t] (shift=1: always right) or ids[t-1] (shift=0)."""

    def __init__(self, vocab: int, shift: int):
        import torch

        self.vocab, self.shift = vocab, shift
        self.config = type("Config", (), {"max_position_embeddings": 1 << 20})()
        self._p = torch.nn.Parameter(torch.zeros(1))

    def parameters(self):
        return iter([self._p])

    def __call__(self, input_ids, use_cache=False):
        import torch

        ids = input_ids[0]
        logits = torch.zeros(1, len(ids), self.vocab)  # (1, T, V)
        target = torch.cat([ids[1:], ids[-1:]]) if self.shift else ids
        logits[0, torch.arange(len(ids)), target] = 1.0
        return type("Out", (), {"logits": logits})()


def test_probe_scores_a_perfect_and_a_useless_model(tokenizer, trajectories):
    from deepresearch.evaluation.probe import KINDS, combine, next_action_probe, probe_table

    trajs = trajectories[:3]
    perfect = next_action_probe(_Oracle(len(tokenizer), 1), tokenizer, trajs)
    assert set(perfect) == set(KINDS)
    scored = {k: s for k, s in perfect.items() if s.n}
    assert {"tool", "turn", "answer"} <= set(scored)
    assert all(s.accuracy == 1.0 for s in scored.values())  # greedy from the expert's prefix writes every span
    # a model that repeats its last token never writes a whole turn
    useless = next_action_probe(_Oracle(len(tokenizer), 0), tokenizer, trajs)
    assert useless["turn"].n == perfect["turn"].n and useless["turn"].correct == 0
    # cut at 200 tokens: later turns are not scored
    cut = next_action_probe(_Oracle(len(tokenizer), 1), tokenizer, trajs, max_tokens=200)
    assert cut["turn"].n < perfect["turn"].n
    both = combine([perfect, useless])
    assert both["turn"].n == 2 * perfect["turn"].n and both["turn"].accuracy == 0.5
    table = probe_table({"oracle": perfect, "useless": useless})
    assert table.splitlines()[2].startswith("| oracle | ") and "100 %" in table
