"""Generation engines: sample one continuation of a token prompt and report log π_θ of each sampled token.

    engine = make_engine("transformers", "out/policy", EngineOptions(device="cpu"))
    gen = engine.generate(prompt_ids, max_new_tokens=256, temperature=1.0, stop_ids=[im_end], seed=7)
    gen.token_ids, gen.logprobs, gen.finish_reason
    gens = engine.generate_many([GenRequest(p, max_new_tokens=256, seed=i) for i, p in enumerate(prompts)])
    engine.load_weights(state_dict)      # or a checkpoint directory

Tokens are sampled from softmax(logits / temperature), and the recorded log-probability is that of
the same distribution, log softmax(logits / temperature)[token]: the probability of the action under
the policy that took it, which is what PPO's ratio π_θ/π_old needs (the learner recomputes log π_θ at
`rl.temperature` too). Greedy decoding (temperature 0) records log softmax(logits)[token].

Engines: "transformers" (CPU or one GPU: a KV-cached sampling loop over a HF causal LM) and "vllm"
(GPU only: `vllm.LLM` with `SamplingParams(logprobs=0)` and `logprobs_mode="processed_logprobs"`, the
log-probs after temperature scaling, imported lazily; needs the `gpu` extra).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Protocol, Sequence

from deepresearch.registry import Registry

if TYPE_CHECKING:
    import torch

@dataclass(frozen=True)
class Generation:
    """One sampled continuation."""

    token_ids: list[int]  # (N,) sampled ids; ends with the stop id when finish_reason == "stop"
    logprobs: list[float]  # (N,) log π_θ(token_i | prompt, tokens_<i) at the sampling temperature (1 if greedy)
    finish_reason: Literal["stop", "length"]


@dataclass(frozen=True)
class EngineOptions:
    """Construction options shared by every engine (each uses the ones that apply to it)."""

    device: str = "cpu"  # transformers: "cpu", "cuda", "cuda:1"; vllm always uses the GPU
    dtype: str = "float32"  # "float32" | "bfloat16" | "float16"
    seed: int = 0
    gpu_memory_utilization: float = 0.5  # vllm: fraction of GPU memory for weights + KV cache
    max_model_len: int | None = None  # vllm: context limit (default: the model's)
    enforce_eager: bool = False  # vllm: skip CUDA-graph capture (faster start, slower decode)
    # transformers: KV caches of this many recent sequences are kept, so that an episode's next turn
    # prefills only its new tokens (vllm has its own prefix caching); 0 disables
    prefix_cache_entries: int = 64


@dataclass(frozen=True)
class GenRequest:
    """One prompt to continue, with its own budget, temperature, stop ids and seed."""

    prompt_ids: Sequence[int]
    max_new_tokens: int
    temperature: float = 1.0  # 0 = greedy
    stop_ids: Sequence[int] = ()
    seed: int | None = None


class GenerationEngine(Protocol):
    name: str
    max_context_len: int  # prompt + generated tokens may not exceed this

    def generate_many(self, requests: Sequence[GenRequest]) -> list[Generation]:
        """Continue several prompts in one batch; row i of the result answers `requests[i]`."""

    def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        stop_ids: Sequence[int] = (),
        seed: int | None = None,
    ) -> Generation:
        """Sample up to `max_new_tokens` after `prompt_ids`, stopping after any of `stop_ids`."""

    def load_weights(self, weights: "Mapping[str, torch.Tensor] | str | Path") -> None:
        """Replace the model's weights with a state dict (HF parameter names) or a checkpoint directory."""


class EngineName(str, Enum):
    transformers = "transformers"
    vllm = "vllm"


EngineFactory = Callable[[Path, EngineOptions], GenerationEngine]
ENGINES: Registry[EngineFactory] = Registry("generation engine", EngineName)


def register_engine(name: EngineName) -> Callable[[EngineFactory], EngineFactory]:
    """Decorator registering an engine factory `(model_dir, options) -> GenerationEngine`; refuses duplicates."""
    return ENGINES.register(name)


def make_engine(name: str, model_dir: str | Path, options: EngineOptions = EngineOptions()) -> GenerationEngine:
    """Build a generation engine by name over an HF checkpoint directory; the error lists valid names."""
    return ENGINES.get(name)(Path(model_dir), options)


def _torch_dtype(name: str):
    import torch

    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; valid: float32, bfloat16, float16") from None


def read_checkpoint_tensors(path: str | Path) -> dict[str, "torch.Tensor"]:
    """Every tensor of the *.safetensors files in an HF checkpoint directory (or one file)."""
    from safetensors.torch import load_file

    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in {path} (expected an HF checkpoint directory)")
    out: dict = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


def _preallocated_cache(layers: Sequence[tuple[Any, Any]], capacity: int) -> Any:
    """A DynamicCache over per-layer (keys, values) of shape (B, kv_heads, L, head_dim) whose decoding
    steps write into buffers of `capacity` positions instead of concatenating: `DynamicLayer.update`
    copies the whole cache every token, which at long context costs more than the model itself."""
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class _Preallocated(DynamicLayer):
        def __init__(self, keys: torch.Tensor, values: torch.Tensor):
            super().__init__()
            b, h, n, d = keys.shape
            self._k = keys.new_empty(b, h, max(capacity, n), d)
            self._v = values.new_empty(b, h, max(capacity, n), d)
            self._k[:, :, :n], self._v[:, :, :n] = keys, values
            self._n = n
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
            self.keys, self.values = self._k[:, :, :n], self._v[:, :, :n]

        def update(self, key_states, value_states, *args, **kwargs):
            q = key_states.shape[-2]
            if self._n + q > self._k.shape[-2]:  # past the planned capacity: fall back to growing
                self._k = torch.cat([self._k[:, :, : self._n], key_states], dim=-2)
                self._v = torch.cat([self._v[:, :, : self._n], value_states], dim=-2)
            else:
                self._k[:, :, self._n : self._n + q] = key_states
                self._v[:, :, self._n : self._n + q] = value_states
            self._n += q
            self.keys, self.values = self._k[:, :, : self._n], self._v[:, :, : self._n]
            return self.keys, self.values

    cache = DynamicCache()
    cache.layers = [_Preallocated(k, v) for k, v in layers]
    return cache


CPU_ATTENTION = "deepresearch_sdpa_gqa"


def _sdpa_gqa_attention(
    module: Any,
    query: "torch.Tensor",
    key: "torch.Tensor",
    value: "torch.Tensor",
    attention_mask: "torch.Tensor | None",
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple["torch.Tensor", None]:
    """transformers' SDPA attention, except that grouped-query attention never copies the KV cache.

    With a padding mask (batched decoding), transformers repeats every key/value head to the query
    heads (`repeat_kv`: a copy of the whole cache per layer per token) because CUDA's fused kernels
    need that; torch's CPU kernels take the mask and `enable_gqa` together. At ~1K tokens of context
    the copy was most of a batched decoding step on CPU. query (B, H, q, D), key/value (B, H_kv, k, D)
    → (B, q, H, D); the same numbers as "sdpa".
    """
    import torch

    if attention_mask is not None and attention_mask.ndim == 4:
        attention_mask = attention_mask[:, :, :, : key.shape[-2]]
    is_causal = query.shape[2] > 1 and attention_mask is None and getattr(module, "is_causal", True)
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=is_causal,
        enable_gqa=key.shape[1] != query.shape[1],
    )
    return out.transpose(1, 2).contiguous(), None


def _cpu_attention() -> str:
    """Register `_sdpa_gqa_attention` (and SDPA's mask builder under the same name) with transformers
    once; returns the name to pass as `attn_implementation`."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(CPU_ATTENTION, _sdpa_gqa_attention)
    AttentionMaskInterface.register(CPU_ATTENTION, sdpa_mask)
    return CPU_ATTENTION


class _OneFromMany:
    """`generate` of one prompt as a batch of one: engines implement `generate_many` only."""

    def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        stop_ids: Sequence[int] = (),
        seed: int | None = None,
    ) -> Generation:
        return self.generate_many([GenRequest(prompt_ids, max_new_tokens, temperature, stop_ids, seed)])[0]


class _PrefixCache:
    """KV caches of recently generated sequences, so an agent's next turn prefills only its new tokens.

    An episode's context only grows: turn t+1's prompt is turn t's prompt, its sampled tokens, then
    the new observations. Each entry is (token ids, per-layer (keys, values) of exactly those ids);
    a lookup returns the longest entry that is a prefix of the prompt. Least recently used entries
    are dropped beyond `capacity`.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.entries: list[tuple[list[int], list[tuple[Any, Any]]]] = []  # most recently used last

    def _best(self, prompt: Sequence[int]) -> int:
        best = -1
        for i, (ids, _) in enumerate(self.entries):
            # a strict prefix: at least the prompt's last token must still be fed for its logits
            if len(ids) < len(prompt) and (best < 0 or len(ids) > len(self.entries[best][0])):
                if list(prompt[: len(ids)]) == ids:
                    best = i
        return best

    def cached_length(self, prompt: Sequence[int]) -> int:
        """Tokens of `prompt` a lookup would find cached (0 if none); the recency order is not touched."""
        best = self._best(prompt)
        return len(self.entries[best][0]) if best >= 0 else 0

    def lookup(self, prompt: Sequence[int]) -> tuple[int, list[tuple[Any, Any]] | None]:
        best = self._best(prompt)
        if best < 0:
            return 0, None
        entry = self.entries.pop(best)
        self.entries.append(entry)
        return len(entry[0]), entry[1]

    def store(self, ids: list[int], layers: list[tuple[Any, Any]]) -> None:
        if self.capacity <= 0 or not ids:
            return
        self.entries = [e for e in self.entries if not (len(e[0]) <= len(ids) and ids[: len(e[0])] == e[0])]
        self.entries.append((ids, layers))
        del self.entries[: max(0, len(self.entries) - self.capacity)]

    def clear(self) -> None:
        self.entries.clear()


def sample_tokens(
    logits: "torch.Tensor", temperatures: Sequence[float], u: "torch.Tensor"
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """One token per row by inverse-CDF sampling from softmax(logits / T), and its log-probability.

    Args:
        logits: (r, V) next-token logits, float32.
        temperatures: r temperatures; 0 = greedy (argmax, log-prob at temperature 1).
        u: (r,) float64 uniform draws in [0, 1), one per row (from the row's own generator).
    Returns:
        tokens (r,) long: the first token whose cumulative probability exceeds u (a zero-probability
        token is never chosen); logp (r,) float32: log softmax(logits / T)[token].
    """
    import torch

    scale = torch.tensor([t if t > 0 else 1.0 for t in temperatures], device=logits.device)[:, None]
    logp = torch.log_softmax(logits / scale, dim=-1)  # (r, V)
    cdf = logp.double().exp().cumsum(-1)  # (r, V), float64 so the last entry is 1 up to ~1e-16
    sampled = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0].clamp_max(logits.shape[-1] - 1)
    greedy = torch.tensor([t == 0 for t in temperatures], device=logits.device)
    tokens = torch.where(greedy, logits.argmax(-1), sampled)  # (r,)
    return tokens, logp.gather(-1, tokens[:, None])[:, 0]


MIN_SHARED_PREFIX = 32  # tokens; a shorter common prefix is not worth a forward pass of its own


class TransformersEngine(_OneFromMany):
    """A HF causal LM on CPU (or one GPU), sampled token by token with a KV cache, batched across
    requests, and a prefix cache across turns."""

    name = "transformers"

    def __init__(self, model_dir: str | Path, options: EngineOptions = EngineOptions()):
        import torch
        from transformers import AutoModelForCausalLM

        self.device = torch.device(options.device)
        # on CPU, attention that never copies the KV cache for grouped-query heads (see _sdpa_gqa_attention)
        attn = {"attn_implementation": _cpu_attention()} if self.device.type == "cpu" else {}
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=_torch_dtype(options.dtype), **attn)
        self.model.to(self.device).eval()
        self.max_context_len = int(self.model.config.max_position_embeddings)
        self.prefix_cache = _PrefixCache(options.prefix_cache_entries)

    @classmethod
    def from_model(cls, model: Any) -> "TransformersEngine":
        """Wrap an already loaded causal LM (tests, in-process evaluation); the model is used as is
        (its attention implementation too: the caller may be training it)."""
        self = cls.__new__(cls)
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.max_context_len = int(model.config.max_position_embeddings)
        self.prefix_cache = _PrefixCache(EngineOptions().prefix_cache_entries)
        return self

    def _check(self, r: GenRequest) -> None:
        if not r.prompt_ids:
            raise ValueError("generate needs a non-empty prompt")
        if r.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {r.max_new_tokens}")
        if len(r.prompt_ids) + r.max_new_tokens > self.max_context_len:
            raise ValueError(
                f"prompt of {len(r.prompt_ids)} tokens + max_new_tokens {r.max_new_tokens} exceeds the model's "
                f"context of {self.max_context_len} tokens"
            )

    def generate_many(self, requests: Sequence[GenRequest]) -> list[Generation]:
        """Batched decoding. Each prompt is prefilled alone (causal attention, no padding: no (L, L)
        mask is ever built, which matters at long context on CPU); the KV caches are then left-padded
        into one batch and decoded together, one forward per token for all rows. Row i draws from its
        own seeded generator, so its tokens do not depend on which other requests share the batch
        (up to float rounding of the batched matmuls). A batch of one is exactly the unbatched loop.
        """
        import torch
        from transformers import DynamicCache

        for r in requests:
            self._check(r)
        if not requests:
            return []
        n = len(requests)
        gens = []
        for r in requests:
            g = torch.Generator(device=self.device)
            g.manual_seed(r.seed if r.seed is not None else torch.seed())
            gens.append(g)
        stops = [set(r.stop_ids) for r in requests]
        out_ids: list[list[int]] = [[] for _ in range(n)]
        out_logp: list[list[float]] = [[] for _ in range(n)]
        finish: list[Literal["stop", "length"]] = ["length"] * n
        done = [False] * n

        def pick(rows: list[int], logits: torch.Tensor) -> list[int]:
            """Next token of each row in `rows` from its logits (len(rows), V), in one pass over the batch;
            row i's draw comes from its own generator, so it does not depend on the other rows."""
            u = torch.stack([torch.rand((), generator=gens[i], device=logits.device, dtype=torch.float64)
                             for i in rows])  # (r,) one small draw per row
            tokens, chosen = sample_tokens(logits, [requests[i].temperature for i in rows], u)
            out = []
            for i, token, lp in zip(rows, tokens.tolist(), chosen.tolist()):
                out_ids[i].append(token)
                out_logp[i].append(lp)
                if token in stops[i]:
                    finish[i], done[i] = "stop", True
                elif len(out_ids[i]) >= requests[i].max_new_tokens:
                    done[i] = True
                out.append(token)
            return out

        with torch.inference_mode():
            self._cache_shared_prefix(requests)
            # prefill, one prompt at a time, from the longest cached prefix
            lens = [len(r.prompt_ids) for r in requests]
            caches, first = [], []
            for i, r in enumerate(requests):
                cached, layers = self.prefix_cache.lookup(r.prompt_ids)
                ids = torch.tensor([list(r.prompt_ids[cached:])], dtype=torch.long, device=self.device)
                past = DynamicCache(layers) if layers is not None else None
                # logits of the last position only: the LM head over a whole prompt is wasted work
                out = self.model(input_ids=ids, past_key_values=past, use_cache=True, logits_to_keep=1)
                caches.append(out.past_key_values)
                first.extend(pick([i], out.logits[0, -1:].float()))
            budget = max(r.max_new_tokens for r in requests)
            if n == 1:  # the plain KV-cached loop: no mask, no explicit positions
                layers = [(layer.keys, layer.values) for layer in caches[0].layers]
                past, token = _preallocated_cache(layers, lens[0] + budget), first[0]
                while not done[0]:
                    out = self.model(input_ids=torch.tensor([[token]], device=self.device),
                                     past_key_values=past, use_cache=True, logits_to_keep=1)
                    past = out.past_key_values
                    (token,) = pick([0], out.logits[0, -1:].float())
                # the KV of prompt + sampled tokens but the last (which was never fed)
                self._remember(list(requests[0].prompt_ids) + out_ids[0][:-1], past, 0, 0)
                return [Generation(out_ids[0], out_logp[0], finish[0])]
            # merge the caches: left-pad every layer's keys/values to the longest prompt
            width = max(lens)
            layers = []
            for layer in range(len(caches[0].layers)):
                ks, vs = [], []
                for i, c in enumerate(caches):
                    k, v = c.layers[layer].keys, c.layers[layer].values  # (1, kv_heads, L_i, head_dim)
                    pad = width - lens[i]
                    ks.append(torch.nn.functional.pad(k, (0, 0, pad, 0)))
                    vs.append(torch.nn.functional.pad(v, (0, 0, pad, 0)))
                layers.append((torch.cat(ks), torch.cat(vs)))
            past = _preallocated_cache(layers, width + budget)
            del caches, layers
            attn = torch.zeros(n, width, dtype=torch.long, device=self.device)
            for i, length in enumerate(lens):
                attn[i, width - length:] = 1
            tokens = first
            pos = torch.tensor(lens, dtype=torch.long, device=self.device)
            while not all(done):
                attn = torch.cat([attn, torch.ones(n, 1, dtype=torch.long, device=self.device)], dim=1)
                out = self.model(
                    input_ids=torch.tensor(tokens, device=self.device)[:, None],
                    attention_mask=attn,
                    position_ids=pos[:, None],
                    past_key_values=past,
                    use_cache=True,
                    logits_to_keep=1,
                )
                past = out.past_key_values
                logits = out.logits[:, -1].float()
                pos = pos + 1
                # finished rows keep a slot (their extra tokens are never returned)
                active = [i for i in range(n) if not done[i]]
                for i, token in zip(active, pick(active, logits[active])):
                    tokens[i] = token
            # row i's valid KV: its prompt (after the padding), then the tokens it fed while active
            for i, r in enumerate(requests):
                self._remember(list(r.prompt_ids) + out_ids[i][:-1], past, i, width - lens[i])
        return [Generation(out_ids[i], out_logp[i], finish[i]) for i in range(n)]

    def _cache_shared_prefix(self, requests: Sequence[GenRequest]) -> None:
        """Prefill once, and cache, the prefix every prompt of the batch shares, when some row would
        otherwise prefill it itself: the first turns of a batch of episodes share the system prompt
        and tool schemas (~80 % of a tiny-config episode's prefill), which then cost one prefill."""
        import os

        import torch
        from transformers import DynamicCache

        if len(requests) < 2 or self.prefix_cache.capacity <= 0:
            return
        prompts = [list(r.prompt_ids) for r in requests]
        shared = os.path.commonprefix(prompts)[: min(len(p) for p in prompts) - 1]  # a strict prefix of each
        if len(shared) < MIN_SHARED_PREFIX or all(self.prefix_cache.cached_length(p) >= len(shared) for p in prompts):
            return
        # continue from the longest cached part of `shared` (a strict prefix of it: else every row had it)
        cached, layers = self.prefix_cache.lookup(shared)
        ids = torch.tensor([shared[cached:]], dtype=torch.long, device=self.device)
        past = DynamicCache(layers) if layers is not None else None
        out = self.model(input_ids=ids, past_key_values=past, use_cache=True, logits_to_keep=1)
        self.prefix_cache.store(shared, [(layer.keys, layer.values) for layer in out.past_key_values.layers])

    def _remember(self, ids: list[int], past: Any, row: int, start: int) -> None:
        """Store row `row` of cache `past`, columns [start, start + len(ids)), as the KV of `ids`."""
        if self.prefix_cache.capacity <= 0:
            return
        end = start + len(ids)
        layers = [(layer.keys[row : row + 1, :, start:end].clone(), layer.values[row : row + 1, :, start:end].clone())
                  for layer in past.layers]
        self.prefix_cache.store(ids, layers)

    def load_weights(self, weights: "Mapping[str, torch.Tensor] | str | Path") -> None:
        self.prefix_cache.clear()  # cached keys and values were computed with the old weights
        state = read_checkpoint_tensors(weights) if isinstance(weights, (str, Path)) else dict(weights)
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        # A checkpoint of a model with tied embeddings stores the matrix once (embed_tokens).
        tied = {"lm_head.weight"} if getattr(self.model.config, "tie_word_embeddings", False) else set()
        missing = [k for k in missing if k not in tied]
        if missing or unexpected:
            raise ValueError(
                f"weights do not match the model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]} "
                "(push the policy's full state_dict with HF parameter names)"
            )
        if tied:
            self.model.tie_weights()


@register_engine(EngineName.transformers)
def _make_transformers(model_dir: Path, options: EngineOptions) -> TransformersEngine:
    return TransformersEngine(model_dir, options)


def _vllm_load_tensors(tensors: dict, model: Any) -> None:
    # Runs inside each vLLM worker (sent by `LLM.apply_model`); vLLM models map HF names
    # (q/k/v → fused qkv, gate/up → fused gate_up) in their own `load_weights`.
    model.load_weights(weights=tensors.items())


def _vllm_load_dir(path: str, model: Any) -> None:
    model.load_weights(weights=read_checkpoint_tensors(path).items())


class VLLMEngine(_OneFromMany):
    """vLLM on a GPU. Sampled tokens come back with log π_θ at the sampling temperature (`processed_logprobs`)."""

    name = "vllm"

    def __init__(self, model_dir: str | Path, options: EngineOptions = EngineOptions()):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("the vllm engine needs a CUDA GPU; use engine 'transformers' on CPU")
        # Weight updates send a function to vLLM's workers (`apply_model`), which vLLM only
        # unpickles when this is set; the function and its arguments come from this process.
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError("the vllm engine needs vllm: install the gpu extra (uv sync --extra gpu)") from e

        self.llm = LLM(
            model=str(model_dir),
            dtype=options.dtype,
            seed=options.seed,
            gpu_memory_utilization=options.gpu_memory_utilization,
            max_model_len=options.max_model_len,
            enforce_eager=options.enforce_eager,
            enable_prefix_caching=True,  # every turn of an episode re-sends the growing context
            # log-probs after temperature scaling (no top-k/top-p/penalties are set, so nothing else
            # changes them): log π_θ of the distribution each token was sampled from
            logprobs_mode="processed_logprobs",
        )
        model_config = getattr(self.llm, "model_config", None) or self.llm.llm_engine.model_config
        self.max_context_len = int(model_config.max_model_len)

    def generate_many(self, requests: Sequence[GenRequest]) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [
            SamplingParams(
                n=1,
                temperature=r.temperature,
                max_tokens=r.max_new_tokens,
                stop_token_ids=list(r.stop_ids),
                seed=r.seed,
                logprobs=0,  # only the sampled token's log-prob
                detokenize=False,
                skip_special_tokens=False,
            )
            for r in requests
        ]
        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in requests]
        result = []
        for request in self.llm.generate(prompts, params, use_tqdm=False):
            out = request.outputs[0]
            token_ids = list(out.token_ids)
            logprobs = [float(step[tid].logprob) for step, tid in zip(out.logprobs, token_ids)]
            # "stop": a stop id or the model's EOS was sampled (and is the last of token_ids)
            result.append(Generation(token_ids, logprobs, "stop" if out.finish_reason == "stop" else "length"))
        return result

    def load_weights(self, weights: "Mapping[str, torch.Tensor] | str | Path") -> None:
        if isinstance(weights, (str, Path)):
            fn = functools.partial(_vllm_load_dir, str(weights))
        else:
            fn = functools.partial(_vllm_load_tensors, {k: v.detach().cpu() for k, v in weights.items()})
        self.llm.apply_model(fn)
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights


@register_engine(EngineName.vllm)
def _make_vllm(model_dir: Path, options: EngineOptions) -> VLLMEngine:
    return VLLMEngine(model_dir, options)
