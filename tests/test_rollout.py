"""Rollout side of PPO: the HF policy's token bookkeeping, the generation engine, the critic, the
experience buffer, and Ray rollouts with a dying actor and a weight push.

A tiny random Qwen2 model and a BPE tokenizer with a Qwen2.5-style chat template are built here
(no downloads). The random model writes junk; the ReAct loop still ends every episode (the budget
forces an answer), which is all the rollout machinery needs.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from deepresearch.agent.loop import FORCE_ANSWER, NO_ACTION, make_tools, run_episode, system_prompt
from deepresearch.agent.policies.hf import ChatTemplateError, ContextFullError, HFPolicy
from deepresearch.agent.schema import Message, ToolCall
from deepresearch.agent.tools.base import EpisodeContext
from deepresearch.config import BudgetConfig, apply_overrides, config_from_dict
from deepresearch.generation.engine import (
    EngineName,
    Generation,
    GenRequest,
    TransformersEngine,
    make_engine,
    register_engine,
)
from deepresearch.rl.buffer import iter_minibatches, make_experience, pad_episodes
from deepresearch.rl.ppo import token_logprobs

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>",
           "<tool_response>", "</tool_response>", "<answer>", "</answer>"]
# Qwen2.5's template, reduced to what our messages use (system/user/assistant text, tool results
# grouped into one user turn of <tool_response> blocks).
TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
BUDGET = BudgetConfig(max_turns=2, max_tool_calls=4, max_context_tokens=16_384)


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [system_prompt(make_tools()), FORCE_ANSWER, NO_ACTION,
              "thinking about the question; search, open, verify, answer with citations \\cite{D0000001}"]
    tok.train_from_iterator(corpus * 3, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                 additional_special_tokens=SPECIAL[3:])
    hf.chat_template = TEMPLATE
    return hf


def build_model(vocab_size: int, seed: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      tie_word_embeddings=True)
    return Qwen2ForCausalLM(cfg).eval()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread, as in the rollout actors: on small CPUs more threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random policy checkpoint: config, safetensors, tokenizer with chat template."""
    out = tmp_path_factory.mktemp("policy")
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(str(out))
    build_model(len(tokenizer), seed=0).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    # Loaded back from the checkpoint, as the rollout actors do: with a qwen2 config.json next to it,
    # transformers 5 loads it as Qwen2Tokenizer, whose pre-tokenizer differs from the trained one.
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


@pytest.fixture(scope="module")
def model(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()


@pytest.fixture(scope="module")
def rl_cfg(small_cfg):
    data = apply_overrides(small_cfg.model_dump(mode="json"), [
        "agent.budget.max_turns=2", "agent.budget.max_tool_calls=4",
        "rl.max_new_tokens=16", "rl.temperature=1.0", "rl.rollout_workers=2",
    ])
    return config_from_dict(data, "test_rollout")


@pytest.fixture(scope="module")
def search(small_world_dir, small_cfg):
    from deepresearch.search.backend import open_backend

    return open_backend(small_cfg.search, small_world_dir)


@pytest.fixture(scope="module")
def tasks(small_world_dir):
    from deepresearch.synthesis.tasks import synthesize_deep_search, synthesize_research
    from deepresearch.world.schema import World

    world = World.load(small_world_dir)
    return (synthesize_deep_search(world, 3, min_hops=2, max_hops=2, seed=0)
            + synthesize_research(world, 1, seed=0))


def forward_logprobs(model, ids: list[int], temperature: float = 1.0) -> torch.Tensor:
    x = torch.tensor([ids])
    with torch.no_grad():
        return token_logprobs(model(x).logits, x, temperature)[0]


def check_episode_alignment(ep, model, tokenizer, turns=None):
    """mask=1 exactly on sampled tokens, and the recorded log-probs are the model's own."""
    ids = torch.tensor(ep.token_ids)
    mask = torch.tensor(ep.action_mask, dtype=torch.bool)
    assert len(ep.token_ids) == len(ep.action_mask) == len(ep.logprobs) and mask.any()
    if turns is not None:
        assert ep.sampled_ids() == [t for turn in turns for t in turn.sampled_ids]
    recomputed = forward_logprobs(model, ep.token_ids)
    recorded = torch.tensor(ep.logprobs)
    assert torch.allclose(recomputed[mask], recorded[mask], atol=1e-4), (recomputed[mask] - recorded[mask]).abs().max()
    assert torch.all(recorded[~mask] == 0)
    # The tokens are the conversation as the chat template writes it, up to the last sampled token.
    rendered = tokenizer.apply_chat_template([{"role": m.role, "content": m.content} for m in ep.trajectory.messages],
                                             tokenize=False)
    assert rendered.startswith(tokenizer.decode(ids.tolist(), skip_special_tokens=False))


# ---------------------------------------------------------------------------------------------
# the engine and the policy, in process


def test_transformers_engine_records_policy_logprobs(model):
    engine = TransformersEngine.from_model(model)
    prompt = [5, 17, 99, 3]
    a = engine.generate(prompt, max_new_tokens=12, temperature=1.0, seed=3)
    b = engine.generate(prompt, max_new_tokens=12, temperature=1.0, seed=3)
    assert a == b and len(a.token_ids) == 12 and a.finish_reason == "length"
    full = forward_logprobs(model, prompt + a.token_ids)[len(prompt):]
    assert torch.allclose(full, torch.tensor(a.logprobs), atol=1e-4)
    # Sampling at temperature 2 records log π of the distribution sampled from: softmax(logits / 2).
    hot = engine.generate(prompt, max_new_tokens=6, temperature=2.0, seed=4)
    assert torch.allclose(forward_logprobs(model, prompt + hot.token_ids, 2.0)[len(prompt):],
                          torch.tensor(hot.logprobs), atol=1e-4)
    assert not torch.allclose(forward_logprobs(model, prompt + hot.token_ids)[len(prompt):],
                              torch.tensor(hot.logprobs), atol=1e-4)
    # greedy decoding records log π at temperature 1
    greedy = engine.generate(prompt, max_new_tokens=4, temperature=0.0)
    assert torch.allclose(forward_logprobs(model, prompt + greedy.token_ids)[len(prompt):],
                          torch.tensor(greedy.logprobs), atol=1e-4)
    stop = a.token_ids[2]
    cut = engine.generate(prompt, max_new_tokens=12, temperature=1.0, stop_ids=[stop], seed=3)
    assert cut.token_ids == a.token_ids[:3] and cut.finish_reason == "stop"
    with pytest.raises(ValueError, match="exceeds the model's context"):
        engine.generate(prompt, max_new_tokens=5000)


def test_sample_tokens_inverse_cdf_by_hand_and_in_distribution():
    from deepresearch.generation.engine import sample_tokens

    # probabilities 0.5, 0.0, 0.25, 0.25: cumulative 0.5, 0.5, 0.75, 1.0
    logits = torch.log(torch.tensor([[0.5, 0.0, 0.25, 0.25]] * 4))
    u = torch.tensor([0.0, 0.49, 0.6, 0.99], dtype=torch.float64)
    tokens, logp = sample_tokens(logits, [1.0] * 4, u)
    assert tokens.tolist() == [0, 0, 2, 3]  # u = 0.6 falls past token 1, whose probability is 0
    assert torch.allclose(logp, torch.log(torch.tensor([0.5, 0.5, 0.25, 0.25])))
    # greedy rows take the argmax and report log π at temperature 1; T = 2 flattens the distribution
    tokens, logp = sample_tokens(logits[:2], [0.0, 2.0], torch.tensor([0.99, 0.99], dtype=torch.float64))
    assert tokens.tolist() == [0, 3] and logp[0].item() == pytest.approx(math.log(0.5))
    assert logp[1].item() == pytest.approx(torch.log_softmax(logits[1] / 2, -1)[3].item())
    # 20,000 draws land in proportion to the probabilities
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(1, 6, generator=g), -1)
    draws, _ = sample_tokens(probs.log().expand(20_000, 6), [1.0] * 20_000,
                             torch.rand(20_000, generator=g, dtype=torch.float64))
    freq = torch.bincount(draws, minlength=6) / 20_000
    assert torch.allclose(freq, probs[0], atol=0.015), (freq, probs)


def test_batched_generation_matches_one_prompt_at_a_time(model, model_dir):
    from deepresearch.generation.engine import CPU_ATTENTION

    engine = TransformersEngine.from_model(model)
    prompts = [[5, 17, 99, 3], [42] * 9, [7, 8]]  # different lengths: the batch is left-padded
    reqs = [GenRequest(p, max_new_tokens=10, temperature=t, seed=i) for i, (p, t) in enumerate(zip(prompts, [1.0, 0.0, 1.0]))]
    batched = engine.generate_many(reqs)
    for r, b in zip(reqs, batched):
        alone = engine.generate(r.prompt_ids, max_new_tokens=10, temperature=r.temperature, seed=r.seed)
        assert b.token_ids == alone.token_ids and b.finish_reason == alone.finish_reason
        assert torch.allclose(torch.tensor(b.logprobs), torch.tensor(alone.logprobs), atol=1e-4)
    # an engine loaded on CPU attends with GQA over the padding mask without copying the cache: same numbers
    loaded = make_engine("transformers", model_dir)
    assert loaded.model.config._attn_implementation == CPU_ATTENTION
    for a, b in zip(loaded.generate_many(reqs), batched):
        assert a.token_ids == b.token_ids
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
    # rows stop independently: one stops at its third token, the others run to their own budgets
    stop = batched[0].token_ids[2]
    mixed = engine.generate_many([GenRequest(prompts[0], 10, 1.0, [stop], 0), GenRequest(prompts[1], 4, 0.0, (), 1)])
    assert mixed[0].token_ids == batched[0].token_ids[:3] and mixed[0].finish_reason == "stop"
    assert mixed[1].token_ids == batched[1].token_ids[:4] and mixed[1].finish_reason == "length"
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        engine.generate_many([GenRequest(prompts[0], 0)])


def test_prefix_cache_prefills_only_new_tokens_and_changes_nothing(model):
    cached = TransformersEngine.from_model(model)
    plain = TransformersEngine.from_model(model)
    plain.prefix_cache.capacity = 0
    calls = []
    hook = model.register_forward_pre_hook(lambda m, args, kw: calls.append(kw["input_ids"].shape[1]), with_kwargs=True)
    try:
        prompts = [[5, 17, 99, 3], [42] * 9]
        turn1 = cached.generate_many([GenRequest(p, 6, 0.0, (), i) for i, p in enumerate(prompts)])
        # the next turns extend each conversation: its sampled tokens, then an observation
        nxt = [p + g.token_ids + [7, 8, 9] for p, g in zip(prompts, turn1)]
        calls.clear()
        turn2 = cached.generate_many([GenRequest(p, 6, 1.0, (), 10 + i) for i, p in enumerate(nxt)])
        assert calls[:2] == [4, 4]  # each row prefilled its last sampled token and the observation only
    finally:
        hook.remove()
    for p, g, seed in zip(nxt, turn2, (10, 11)):
        fresh = plain.generate(p, max_new_tokens=6, temperature=1.0, seed=seed)
        assert g.token_ids == fresh.token_ids
        assert torch.allclose(torch.tensor(g.logprobs), torch.tensor(fresh.logprobs), atol=1e-4)
    cached.load_weights(model.state_dict())  # new weights: nothing cached survives
    assert cached.prefix_cache.entries == []


def test_a_prefix_shared_by_a_batch_is_prefilled_once(model):
    engine = TransformersEngine.from_model(model)
    plain = TransformersEngine.from_model(model)
    plain.prefix_cache.capacity = 0
    system = list(range(100, 140))  # 40 tokens every first turn shares (the system prompt)
    prompts = [system + [5, 6], system + [7, 8, 9], system + [10]]
    calls = []
    hook = model.register_forward_pre_hook(lambda m, args, kw: calls.append(kw["input_ids"].shape[1]), with_kwargs=True)
    try:
        out = engine.generate_many([GenRequest(p, 5, 1.0, (), i) for i, p in enumerate(prompts)])
    finally:
        hook.remove()
    assert calls[:4] == [40, 2, 3, 1]  # the shared prefix once, then each row's own tokens
    for i, (p, g) in enumerate(zip(prompts, out)):
        fresh = plain.generate(p, max_new_tokens=5, temperature=1.0, seed=i)
        assert g.token_ids == fresh.token_ids
        assert torch.allclose(torch.tensor(g.logprobs), torch.tensor(fresh.logprobs), atol=1e-4)


def test_batching_engine_serves_threads_in_batches_with_their_own_results(model):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from deepresearch.generation.batching import BatchingEngine

    engine = TransformersEngine.from_model(model)
    # every client's conversation keeps its place in the prefix cache, however many there are
    assert BatchingEngine(TransformersEngine.from_model(model), clients=100).engine.prefix_cache.capacity == 101
    batcher = BatchingEngine(engine, clients=3)
    turns = {0: 3, 1: 1, 2: 2}  # clients make different numbers of calls, then leave
    seen = {}

    def client(c: int):
        with batcher.client():
            seen[c] = [batcher.generate([c + 5, 11, c + 20][: 1 + t], max_new_tokens=5, seed=10 * c + t)
                       for t in range(turns[c])]

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(client, range(3)))
    assert batcher.batch_sizes == [3, 2, 1]  # every call waited for the unfinished clients
    for c, gens in seen.items():
        for t, g in enumerate(gens):
            alone = engine.generate([c + 5, 11, c + 20][: 1 + t], max_new_tokens=5, seed=10 * c + t)
            assert g.token_ids == alone.token_ids  # log-probs agree up to the rounding of batched matmuls
            assert torch.allclose(torch.tensor(g.logprobs), torch.tensor(alone.logprobs), atol=1e-4)
    # an error in a batch reaches every waiting caller; a client that dies is not waited for
    bad = BatchingEngine(engine, clients=2)
    errors = []

    def failing(prompt):
        with bad.client():
            try:
                bad.generate(prompt, max_new_tokens=5000)
            except ValueError as e:
                errors.append(str(e))

    threads = [threading.Thread(target=failing, args=([1, 2],)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(errors) == 2 and all("exceeds the model's context" in e for e in errors)


def test_sliced_batches_return_short_turns_while_a_long_one_decodes_on(model):
    """With slice_tokens, a client's short turns do not wait for another client's long one; what each
    client gets is what it would get alone (greedy), and sampled runs repeat exactly."""
    from concurrent.futures import ThreadPoolExecutor

    from deepresearch.generation.batching import BatchingEngine

    engine = TransformersEngine.from_model(model)

    def run(slice_tokens: int, temperature: float):
        batcher = BatchingEngine(engine, clients=2, slice_tokens=slice_tokens)
        calls = {0: [([5, 6, 7], 8)], 1: [([9, 10], 2), ([9, 10, 11], 2), ([9, 10, 11, 12], 2)]}
        out = {}

        def client(c: int):
            with batcher.client():
                out[c] = [batcher.generate(p, max_new_tokens=n, temperature=temperature, seed=c)
                          for p, n in calls[c]]

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(client, range(2)))
        return out, batcher.batch_sizes, calls

    out, sizes, calls = run(2, 0.0)
    assert sizes == [2, 2, 2, 1]  # the 8-token turn took 4 slices while the other client made 3 turns
    for c, gens in out.items():
        for (p, n), g in zip(calls[c], gens):
            alone = engine.generate(p, max_new_tokens=n, temperature=0.0, seed=c)
            assert g.token_ids == alone.token_ids and g.finish_reason == "length"
            assert torch.allclose(torch.tensor(g.logprobs), torch.tensor(alone.logprobs), atol=1e-4)
    assert run(0, 0.0)[1] == [2, 1, 1]  # unsliced: the first batch decodes until its longest row is done
    first, again = run(2, 1.0)[0], run(2, 1.0)[0]
    assert [[g.token_ids for g in first[c]] for c in (0, 1)] == [[g.token_ids for g in again[c]] for c in (0, 1)]
    assert len(first[0][0].token_ids) == len(first[0][0].logprobs) == 8
    with pytest.raises(ValueError, match="slice_tokens must be >= 0"):
        BatchingEngine(engine, clients=1, slice_tokens=-1)


def test_engine_registry_refuses_duplicates_and_lists_names(model_dir):
    with pytest.raises(ValueError, match="already registered"):
        register_engine(EngineName.transformers)(lambda d, o: None)
    with pytest.raises(ValueError, match="valid: transformers, vllm"):
        make_engine("sglang", model_dir)


def test_engine_load_weights_from_state_dict_and_directory(model_dir, tokenizer, tmp_path):
    engine = make_engine("transformers", model_dir)
    prompt = [7, 8, 9]
    before = engine.generate(prompt, max_new_tokens=8, seed=1)
    other = build_model(len(tokenizer), seed=1)
    engine.load_weights(other.state_dict())
    after = engine.generate(prompt, max_new_tokens=8, seed=1)
    # near-uniform random models often sample the same ids from the same seed: compare probabilities
    assert not torch.allclose(torch.tensor(after.logprobs), torch.tensor(before.logprobs), atol=1e-3)
    assert torch.allclose(forward_logprobs(other, prompt + after.token_ids)[3:], torch.tensor(after.logprobs), atol=1e-4)
    engine.load_weights(model_dir)  # back to the checkpoint (tied lm_head is not stored in the file)
    assert engine.generate(prompt, max_new_tokens=8, seed=1) == before
    with pytest.raises(ValueError, match="do not match"):
        engine.load_weights({"nope.weight": torch.zeros(1)})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_vllm_engine_records_policy_logprobs_and_loads_weights(model_dir, model, tokenizer):
    pytest.importorskip("vllm", reason="the gpu extra (vllm) is not installed")
    from deepresearch.generation.engine import EngineOptions

    engine = make_engine("vllm", model_dir, EngineOptions(dtype="float32", gpu_memory_utilization=0.2,
                                                          enforce_eager=True, max_model_len=4096))
    prompt = [5, 17, 99, 3]
    gen = engine.generate(prompt, max_new_tokens=12, temperature=1.0, seed=3)
    assert len(gen.token_ids) == len(gen.logprobs) >= 1
    assert torch.allclose(forward_logprobs(model, prompt + gen.token_ids)[4:], torch.tensor(gen.logprobs), atol=1e-3)
    hot = engine.generate(prompt, max_new_tokens=12, temperature=2.0, seed=3)  # log-probs at temperature 2
    assert torch.allclose(forward_logprobs(model, prompt + hot.token_ids, 2.0)[4:], torch.tensor(hot.logprobs),
                          atol=1e-3)
    stop = gen.token_ids[0]
    assert engine.generate(prompt, max_new_tokens=12, stop_ids=[stop], seed=3).finish_reason == "stop"
    other = build_model(len(tokenizer), seed=1)
    engine.load_weights(other.state_dict())
    after = engine.generate(prompt, max_new_tokens=12, temperature=1.0, seed=3)
    assert torch.allclose(forward_logprobs(other, prompt + after.token_ids)[4:], torch.tensor(after.logprobs),
                          atol=1e-3)


def test_hf_policy_episode_with_real_tools_is_aligned(model, tokenizer, search, small_cfg, tmp_path):
    policy = HFPolicy(tokenizer, TransformersEngine.from_model(model), max_new_tokens=16)
    policy.reset("task", seed="s1")
    ctx = EpisodeContext(workspace=tmp_path, agent=small_cfg.agent, search=search)
    try:
        traj = run_episode(policy, "Who founded the company that makes the Zephyr?", task_id="t1",
                           capability="deep_search", ctx=ctx, budget=BUDGET, count_tokens=policy.count_tokens)
    finally:
        ctx.close()
    assert traj.turns == 3 and traj.outcome in {"answered", "budget_exhausted"}  # junk, then the forced answer
    ep = policy.to_experience(traj, weights_version=4)
    assert ep.weights_version == 4 and ep.task_id == "t1" and ep.num_actions == sum(len(t.sampled_ids) for t in policy.turns)
    check_episode_alignment(ep, model, tokenizer, policy.turns)
    for turn, msg in zip(policy.turns, [m for m in traj.messages if m.role == "assistant"]):
        body = turn.sampled_ids[:-1] if turn.finish_reason == "stop" else turn.sampled_ids
        assert msg.content == tokenizer.decode(body, skip_special_tokens=False)
    # Same seed, same episode.
    policy.reset("task", seed="s1")
    ctx = EpisodeContext(workspace=tmp_path / "again", agent=small_cfg.agent, search=search)
    (tmp_path / "again").mkdir()
    try:
        again = run_episode(policy, "Who founded the company that makes the Zephyr?", task_id="t1",
                            capability="deep_search", ctx=ctx, budget=BUDGET, count_tokens=policy.count_tokens)
    finally:
        ctx.close()
    assert policy.to_experience(again).token_ids == ep.token_ids
    with pytest.raises(ValueError, match="do not match"):
        policy.to_experience(traj.model_copy(update={"messages": traj.messages[:2]}))


class ScriptedEngine:
    """Returns scripted token sequences and checks that every prompt is exactly the rendered chat."""

    name = "scripted"
    max_context_len = 100_000

    def __init__(self, tokenizer, outputs):
        self.tokenizer, self.outputs, self.prompts = tokenizer, list(outputs), []

    def generate(self, prompt_ids, *, max_new_tokens, temperature=1.0, stop_ids=(), seed=None):
        self.prompts.append(list(prompt_ids))
        ids, finish = self.outputs.pop(0)
        return Generation(ids, [-0.5] * len(ids), finish)

    def load_weights(self, weights):
        pass


def test_hf_policy_segments_tool_observations_and_turn_ends(tokenizer, small_cfg, tmp_path):
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eos_other = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    call = ToolCall(name="todo", arguments={"action": "add", "steps": ["look it up"]}).render()
    outputs = [
        (enc("plan first " + call) + [im_end], "stop"),  # a tool call, stopped by <|im_end|>
        (enc("rambling without an end"), "length"),  # cut by max_new_tokens: no stop token sampled
        (enc("more") + [eos_other], "stop"),  # stopped by another stop token
        (enc("<answer>done \\cite{D1}</answer>") + [im_end], "stop"),
    ]
    engine = ScriptedEngine(tokenizer, outputs)
    policy = HFPolicy(tokenizer, engine, max_new_tokens=64, stop_ids=[im_end, eos_other])
    policy.reset("t", seed="x")
    ctx = EpisodeContext(workspace=tmp_path, agent=small_cfg.agent)
    seen = []

    class Spy:
        name = "hf"

        def reset(self, task, *, seed=""):
            pass

        def act(self, messages, tools):
            seen.append([{"role": m.role, "content": m.content} for m in messages])
            return policy.act(messages, tools)

    try:
        traj = run_episode(Spy(), "q", task_id="t", capability="deep_search", ctx=ctx,
                           budget=BudgetConfig(max_turns=5), tools=make_tools(["todo"]))
    finally:
        ctx.close()
    assert traj.outcome == "answered" and traj.answer == "done \\cite{D1}" and traj.tool_calls == 1
    assert any(m.role == "tool" for m in traj.messages)
    # Every prompt the engine saw is, token for token, the sampled history plus fresh context, and
    # decodes to exactly what the chat template renders for the conversation at that point.
    for chat, prompt in zip(seen, engine.prompts):
        rendered = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        decoded = tokenizer.decode(prompt, skip_special_tokens=False)
        if "<|endoftext|>" in decoded:  # the sampled EOS stays in the context, then the template's turn end
            decoded = decoded.replace("more<|endoftext|><|im_end|>", "more<|im_end|>")
        assert decoded == rendered
    ep = policy.to_experience(traj)
    assert ep.sampled_ids() == [t for ids, _ in outputs for t in ids]
    turn2 = policy.turns[2]
    # after a length-cut turn the template's "<|im_end|>\n" is context (mask 0), not an action
    assert tokenizer.decode(turn2.context_ids, skip_special_tokens=False).startswith("<|im_end|>\n<|im_start|>user\n")
    # after an <|im_end|>-stopped turn only the "\n" that follows it is context
    assert tokenizer.decode(policy.turns[1].context_ids, skip_special_tokens=False).startswith(
        "\n<|im_start|>user\n<tool_response>")
    assert all(lp == -0.5 for lp, m in zip(ep.logprobs, ep.action_mask) if m)


def test_hf_policy_refuses_non_prefix_stable_template_and_full_context(tokenizer):
    trimming = build_tokenizer()
    trimming.chat_template = TEMPLATE.replace("message.content + '<|im_end|>", "message.content | trim + '<|im_end|>")
    im_end = trimming.convert_tokens_to_ids("<|im_end|>")
    engine = ScriptedEngine(trimming, [(trimming.encode(" padded ", add_special_tokens=False) + [im_end], "stop")] * 2)
    policy = HFPolicy(trimming, engine)
    assert not policy.structured  # a template without a tools branch gets the conversation as plain text
    msgs = [Message(role="system", content="s"), Message(role="user", content="u")]
    text = policy.act(msgs, [])
    assert text == " padded "
    with pytest.raises(ChatTemplateError, match="prefix-stable"):
        policy.act(msgs + [Message(role="assistant", content=text), Message(role="user", content="go on")], [])

    small = ScriptedEngine(tokenizer, [])
    small.max_context_len = 5
    with pytest.raises(ContextFullError):
        HFPolicy(tokenizer, small).act(msgs, [])


def test_rollout_tokens_match_the_sft_encoding(small_cfg, tmp_path):
    """The contract with deepresearch.modeling: an episode's ids are the SFT encoding of its messages,
    and its action mask is the SFT loss mask except on tokens the policy did not sample (the
    <|im_end|> closing a turn cut by max_new_tokens)."""
    import deepresearch.modeling.chat as chat
    import deepresearch.modeling.tokenizer as tokenization
    from deepresearch.config import ModelConfig

    tok = tokenization.train_tokenizer([system_prompt(make_tools()), NO_ACTION, FORCE_ANSWER] * 3,
                                       ModelConfig(vocab_size=600))
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    call = ToolCall(name="todo", arguments={"action": "add", "steps": ["look it up"]}).render()
    outputs = [(enc("plan\n" + call) + [im_end], "stop"), (enc("\n  cut short"), "length"),
               (enc("<answer>done \\cite{D1}</answer>") + [im_end], "stop")]
    policy = HFPolicy(tok, ScriptedEngine(tok, outputs), max_new_tokens=64)
    policy.reset("t", seed="x")
    ctx = EpisodeContext(workspace=tmp_path, agent=small_cfg.agent)
    try:
        traj = run_episode(policy, "q", task_id="t", capability="deep_search", ctx=ctx,
                           budget=BudgetConfig(max_turns=5), tools=make_tools(["todo"]))
    finally:
        ctx.close()
    ep = policy.to_experience(traj)
    # the policy's prompts went through `apply_chat_template(..., tools=)` with the call as `tool_calls`
    assert policy.structured and chat.split_tool_calls(traj.messages[2].content) == ("plan", [ToolCall(
        name="todo", arguments={"action": "add", "steps": ["look it up"]})])
    sft = chat.encode_messages(tok, traj.messages)
    n = len(ep.token_ids)
    assert sft.input_ids[:n] == ep.token_ids and tok.decode(sft.input_ids[n:]) == "\n"
    differ = [i for i in range(n) if sft.loss_mask[i] != ep.action_mask[i]]
    assert len(differ) == 1 and ep.token_ids[differ[0]] == im_end and ep.action_mask[differ[0]] == 0


def test_make_policy_hf_needs_config_section():
    from deepresearch.agent.policies.base import make_policy
    from deepresearch.config import AgentConfig
    from deepresearch.errors import ConfigError

    with pytest.raises(ConfigError, match="agent.hf"):
        make_policy("hf", AgentConfig())


# ---------------------------------------------------------------------------------------------
# critic and experience batch


def test_value_model_save_load_and_alignment(model_dir, model, tmp_path):
    from deepresearch.rl.value import ValueModel

    critic = ValueModel.from_policy(model_dir)
    # the backbone is the policy's transformer
    assert torch.equal(critic.backbone.embed_tokens.weight, model.model.embed_tokens.weight)
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    attn = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    assert torch.all(critic.token_values(ids, attn) == 0)  # zero-initialized head
    torch.nn.init.normal_(critic.value_head.weight, std=0.5)
    after = critic(ids, attn)
    aligned = critic.token_values(ids, attn)
    assert aligned.shape == (2, 4) and torch.all(aligned[:, 0] == 0) and torch.equal(aligned[:, 1:], after[:, :-1])
    saved = critic.save_pretrained(tmp_path / "critic")
    assert {"config.json", "model.safetensors", "value_head.safetensors", "critic.json"} <= {
        p.name for p in saved.iterdir()}
    assert json.loads((saved / "critic.json").read_text())["format"] == "deepresearch-critic"
    loaded = ValueModel.from_pretrained(saved)
    assert torch.allclose(loaded(ids, attn), after, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="from_policy"):
        ValueModel.from_pretrained(model_dir)
    # the critic learns: a few regression steps from V = 0 toward a target of 1
    fresh = ValueModel.from_policy(model)
    opt = torch.optim.Adam(fresh.parameters(), lr=3e-2)
    losses = []
    for _ in range(10):
        loss = ((fresh.token_values(ids, attn)[:, 1:] - 1.0) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(1.0) and losses[-1] < 0.5
    assert fresh.backbone is not model.model  # from a loaded policy: copied, never shared


def test_length_chunked_forwards_match_one_episode_at_a_time(model):
    from deepresearch.rl.buffer import length_chunks
    from deepresearch.rl.experience import chunked_token_logprobs, chunked_token_values
    from deepresearch.rl.value import ValueModel

    gen = torch.Generator().manual_seed(0)
    lengths = [7, 19, 3, 12, 19, 5]
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(3, model.config.vocab_size, (n,), generator=gen)
        attn[i, :n] = 1
    # chunks of 4 rows: the 4 longest together, trimmed to 19; then the 2 shortest, trimmed to 5
    assert [(rows.tolist(), n) for rows, n in length_chunks(attn, 4)] == [([1, 4, 3, 0], 19), ([5, 2], 5)]
    critic = ValueModel.from_policy(model)
    torch.nn.init.normal_(critic.value_head.weight, generator=gen)  # not the zero head: values that differ
    values = chunked_token_values(critic, ids, attn, 4)
    logps = chunked_token_logprobs(model, ids, attn, 4, temperature=0.7)
    with torch.no_grad():
        for i, n in enumerate(lengths):
            one = critic.token_values(ids[i : i + 1, :n], attn[i : i + 1, :n])[0]
            lp = token_logprobs(model(input_ids=ids[i : i + 1, :n]).logits, ids[i : i + 1, :n], 0.7)[0]
            assert torch.allclose(values[i, :n], one, atol=1e-5) and torch.allclose(logps[i, :n], lp, atol=1e-5)
    assert not values[[5, 2], 5:].any() and not logps[[5, 2], 5:].any()  # the short chunk never ran there


def test_pad_episodes_and_make_experience(model, tokenizer):
    from deepresearch.agent.schema import Trajectory
    from deepresearch.rl.buffer import Episode

    def episode(ids, mask, lp):
        traj = Trajectory(trajectory_id="x", task_id="t", capability="c", policy="hf", messages=[], outcome="answered")
        return Episode("e", "t", "c", ids, mask, lp, traj)

    eps = [episode([1, 2, 3, 4, 5], [0, 1, 1, 0, 1], [0, -1, -2, 0, -3]), episode([1, 2, 3], [0, 0, 1], [0, 0, -1])]
    with pytest.raises(ValueError, match="same length"):
        episode([1, 2], [0], [0.0])
    padded = pad_episodes(eps, pad_id=0)
    assert padded.input_ids.tolist() == [[1, 2, 3, 4, 5], [1, 2, 3, 0, 0]]
    assert padded.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert padded.action_mask.tolist() == [[0, 1, 1, 0, 1], [0, 0, 1, 0, 0]]
    values = torch.tensor([[9.0, 0.5, 0.2, 9.0, 0.1], [9.0, 9.0, 0.3, 9.0, 9.0]])
    batch = make_experience(padded, torch.tensor([1.0, -1.0]), values, gamma=1.0, lam=1.0)
    # gamma = lam = 1: A = R - V on policy tokens, R = the episode reward
    assert torch.allclose(batch.advantages, torch.tensor([[0, 0.5, 0.8, 0, 0.9], [0, 0, -1.3, 0, 0]]))
    assert torch.allclose(batch.returns, torch.tensor([[0, 1.0, 1.0, 0, 1.0], [0, 0, -1.0, 0, 0]]))
    assert torch.equal(batch.old_values[0], torch.tensor([0, 0.5, 0.2, 0, 0.1]))
    # two samples of one task: each reward is centered on the other's (1 - (-1) = 2, -1 - 1 = -2)
    grouped = make_experience(padded, torch.tensor([1.0, -1.0]), values, gamma=1.0, lam=1.0, groups=torch.tensor([0, 0]))
    assert torch.allclose(grouped.returns, torch.tensor([[0, 2.0, 2.0, 0, 2.0], [0, 0, -2.0, 0, 0]]))
    assert torch.allclose(grouped.advantages, torch.tensor([[0, 1.5, 1.8, 0, 1.9], [0, 0, -2.3, 0, 0]]))
    # a KL penalty lowers every policy token's reward by kl_coef * (old_logp - ref_logp) (k1)
    ref = padded.old_logp - 0.5 * padded.action_mask
    kl_batch = make_experience(padded, torch.tensor([1.0, -1.0]), values, gamma=1.0, lam=1.0, ref_logp=ref, kl_coef=0.1)
    assert torch.allclose(kl_batch.rewards[0], torch.tensor([0, -0.05, -0.05, 0, 0.95]))
    with pytest.raises(ValueError, match="needs ref_logp"):
        make_experience(padded, torch.tensor([1.0, -1.0]), values, gamma=1.0, lam=1.0, kl_coef=0.1)
    with pytest.raises(ValueError, match="expected \\(2, 5\\)"):
        make_experience(padded, torch.tensor([1.0, -1.0]), values[:, :3], gamma=1.0, lam=1.0)
    mbs = list(iter_minibatches(batch, 1, shuffle=False))
    assert [len(mb) for mb in mbs] == [1, 1] and mbs[1].input_ids.shape == (1, 3)  # trimmed to its own length
    shuffled = list(iter_minibatches(batch, 1, generator=torch.Generator().manual_seed(0)))
    assert sorted(mb.input_ids.shape[1] for mb in shuffled) == [3, 5]


def test_ppo_update_moves_the_policy_toward_the_rewarded_episode(model, tokenizer, small_cfg, tmp_path):
    import copy

    from deepresearch.config import RLConfig
    from deepresearch.rl.learner import ppo_step, ppo_update, torch_learner
    from deepresearch.rl.ppo import masked_mean
    from deepresearch.rl.value import ValueModel

    actor = copy.deepcopy(model)
    policy = HFPolicy(tokenizer, TransformersEngine.from_model(actor), max_new_tokens=8)
    episodes = []
    for k in range(2):
        policy.reset("t", seed=f"s{k}")
        ctx = EpisodeContext(workspace=tmp_path, agent=small_cfg.agent)
        try:
            traj = run_episode(policy, "q", task_id=f"t{k}", capability="deep_search", ctx=ctx,
                               budget=BudgetConfig(max_turns=1), tools=make_tools(["todo"]))
        finally:
            ctx.close()
        episodes.append(policy.to_experience(traj))
    padded = pad_episodes(episodes, pad_id=tokenizer.pad_token_id)
    critic = ValueModel.from_policy(actor)
    with torch.no_grad():
        values = critic.token_values(padded.input_ids, padded.attention_mask)
    batch = make_experience(padded, torch.tensor([1.0, -1.0]), values, gamma=1.0, lam=1.0)
    cfg = RLConfig(ppo_epochs=2, minibatch_size=1, actor_lr=1e-3, critic_lr=1e-3)
    learner = torch_learner(actor, critic, cfg)
    first = ppo_step(learner, batch, cfg)
    # On-policy: the learner's log-probs are the rollout's, so ratio = 1, nothing is clipped and the
    # loss is minus the mean advantage; V = 0 at the start, so the value loss is 0.5 * mean(R^2) = 0.5.
    assert abs(first["rl/kl"]) < 1e-4 and first["rl/clip_frac"] == 0.0
    assert first["rl/policy_loss"] == pytest.approx(-masked_mean(batch.advantages, batch.action_mask).item(), abs=1e-5)
    assert first["rl/value_loss"] == pytest.approx(0.5, abs=1e-5)
    assert 0 < first["rl/entropy"] <= math.log(len(tokenizer)) + 1e-4  # nats, at most uniform's
    history = ppo_update(learner, batch, cfg, generator=torch.Generator().manual_seed(0))
    assert len(history) == 4 and all(set(h) == set(first) for h in history)
    with torch.no_grad():
        logp = token_logprobs(actor(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits,
                              batch.input_ids)
    change = masked_mean(logp - batch.old_logp, batch.action_mask, dim=1)
    assert change[0] > 0 > change[1]  # the rewarded episode became likelier, the punished one less


# ---------------------------------------------------------------------------------------------
# Ray: `collect` with light stand-in actors (fast), then real rollout actors (slow)


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from deepresearch.rl.rollout import ensure_ray

    started = not ray.is_initialized()
    ensure_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()


class StandInPool:
    """What `collect` needs of a RolloutPool, over light actors (no model), to test re-runs quickly."""

    def __init__(self, actor_cls, n, first_dies):
        self.actor_cls, self.replaced = actor_cls, []
        self.workers = [actor_cls.remote(f"w{i}", i in first_dies) for i in range(n)]

    def replace(self, slot):
        import ray

        ray.kill(self.workers[slot])
        self.replaced.append(f"w{slot}.r{len(self.replaced) + 1}")
        self.workers[slot] = self.actor_cls.remote(self.replaced[-1], False)


def stand_in_actor():
    import ray

    @ray.remote(num_cpus=0.25)
    class StandIn:  # defined in a function, so Ray ships it by value to the worker processes
        def __init__(self, name, die_on_first):
            self.name, self.die_on_first, self.runs = name, die_on_first, 0

        def run_many(self, tasks, seeds, attempt):
            import os

            self.runs += 1
            if (self.die_on_first and self.runs == 1) or any(t.task_id == "poison" for t in tasks):
                os._exit(1)
            return [(t.task_id, seed, attempt, self.name) for t, seed in zip(tasks, seeds)]

    return StandIn


def test_collect_reruns_the_share_of_a_dead_actor(ray_session):
    from types import SimpleNamespace

    from deepresearch.rl.rollout import collect

    tasks = [SimpleNamespace(task_id=f"t{i}") for i in range(5)]
    pool = StandInPool(stand_in_actor(), 2, first_dies={0})
    result = collect(tasks, pool, seed="s")
    assert [e[0] for e in result.episodes] == [f"t{i}" for i in range(5)]  # all there, in task order
    assert [e[1] for e in result.episodes] == [f"s:t{i}:{i}" for i in range(5)]  # a re-run keeps its seed
    # task i goes to actor i mod 2: w0's share (t0, t2, t4) was lost with it and re-run on its replacement
    assert result.reruns == 3 and result.replaced_workers == ["w0.r1"]
    assert [(e[2], e[3]) for e in result.episodes] == [(1, "w0.r1"), (0, "w1")] * 2 + [(1, "w0.r1")]
    # more actors than tasks: the idle ones get nothing
    few = collect(tasks[:1], StandInPool(stand_in_actor(), 2, first_dies=set()), seed="s")
    assert [e[:3] for e in few.episodes] == [("t0", "s:t0:0", 0)] and few.reruns == 0


def test_collect_gives_up_on_an_episode_that_kills_every_worker(ray_session):
    from types import SimpleNamespace

    from deepresearch.rl.rollout import RolloutError, collect

    pool = StandInPool(stand_in_actor(), 2, first_dies=set())
    with pytest.raises(RolloutError, match="tasks 'poison' were lost 2 times"):
        collect([SimpleNamespace(task_id="ok"), SimpleNamespace(task_id="poison")], pool, max_reruns=1)


@pytest.fixture(scope="module")
def pool(ray_session, model_dir, small_world_dir, rl_cfg):
    from deepresearch.rl.rollout import RolloutPool, WorkerSpec

    spec = WorkerSpec(model_dir=str(model_dir), world_dir=str(small_world_dir), cfg=rl_cfg, num_cpus=0.5)
    with RolloutPool(spec, n_workers=2, exit_on_episode={0: 0}) as p:  # w0 dies on its first episode
        yield p


@pytest.fixture(scope="module")
def first_rollout(pool, tasks):
    from deepresearch.rl.rollout import collect

    return collect(tasks, pool, seed="step0")


@pytest.mark.slow
def test_rollout_completes_when_an_actor_dies(first_rollout, tasks):
    result = first_rollout
    assert [e.task_id for e in result.episodes] == [t.task_id for t in tasks]  # nothing dropped, in order
    # w0 died on its share (tasks 0 and 2); its replacement played both again
    assert result.reruns == 2 and result.replaced_workers == ["w0.r1"]
    assert [(e.attempt, e.worker) for e in result.episodes] == [(1, "w0.r1"), (0, "w1")] * 2
    for e in result.episodes:
        assert e.weights_version == 0 and e.trajectory.turns >= 1 and e.num_actions > 0
        assert e.trajectory.outcome in {"answered", "budget_exhausted"} and e.trajectory.success is not None
    assert result.episodes[-1].capability == "deep_research" and "rubric_score" in result.episodes[-1].trajectory.metadata


@pytest.mark.slow
def test_rollout_episodes_are_exact_rl_samples(first_rollout, model, tokenizer):
    for ep in first_rollout.episodes:
        check_episode_alignment(ep, model, tokenizer)


@pytest.mark.slow
def test_rerun_reproduces_the_lost_episodes(first_rollout, tasks, model_dir, small_world_dir, rl_cfg):
    """The re-run uses the lost share's seeds and batches it the same way, so it is what the dead actor
    would have made: the same as this process playing that share through the same worker code."""
    from deepresearch.rl.rollout import RolloutWorker, WorkerSpec

    lost = [i for i, e in enumerate(first_rollout.episodes) if e.attempt == 1]
    local = RolloutWorker(WorkerSpec(model_dir=str(model_dir), world_dir=str(small_world_dir), cfg=rl_cfg), "local")
    again = local.run_many([tasks[i] for i in lost], [f"step0:{tasks[i].task_id}:{i}" for i in lost])
    assert [e.token_ids for e in again] == [first_rollout.episodes[i].token_ids for i in lost]
    for e, i in zip(again, lost):
        assert e.logprobs == pytest.approx(first_rollout.episodes[i].logprobs, abs=1e-4)


@pytest.mark.slow
def test_push_weights_changes_generation_and_version(first_rollout, pool, tasks, tokenizer):
    import ray

    from deepresearch.rl.rollout import collect
    from deepresearch.rl.weights import push_weights

    new_model = build_model(len(tokenizer), seed=1)
    version = push_weights(pool, new_model.state_dict())
    assert version == 1 and pool.weights_version == 1
    assert [info["version"] for info in ray.get([w.info.remote() for w in pool.workers])] == [1, 1]
    result = collect(tasks[:2], pool, seed="step0")  # the same seeds as the first rollout
    assert result.reruns == 0 and result.weights_versions == {1}
    for old, new in zip(first_rollout.episodes, result.episodes):
        assert new.token_ids != old.token_ids
        check_episode_alignment(new, new_model, tokenizer)
