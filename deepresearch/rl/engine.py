"""Generation engines: sample one continuation of a token prompt and report log π_θ of each sampled token.

    engine = make_engine("transformers", "out/policy", EngineOptions(device="cpu"))
    gen = engine.generate(prompt_ids, max_new_tokens=256, temperature=1.0, stop_ids=[im_end], seed=7)
    gen.token_ids, gen.logprobs, gen.finish_reason
    engine.load_weights(state_dict)      # or a checkpoint directory

Tokens are sampled from softmax(logits / temperature), but the recorded log-probability is that of
the policy itself, log softmax(logits)[token] (temperature 1): PPO's ratio π_θ/π_old compares the
policy's own probabilities, which is also what the learner recomputes. With temperature = 1 (the
RL default) the two coincide and the rollout is exactly on-policy.

Engines: "transformers" (CPU or one GPU: a KV-cached sampling loop over a HF causal LM) and "vllm"
(GPU only: `vllm.LLM` with `SamplingParams(logprobs=0)` and `logprobs_mode="raw_logprobs"`,
imported lazily; needs the `gpu` extra).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Protocol, Sequence

if TYPE_CHECKING:
    import torch

@dataclass(frozen=True)
class Generation:
    """One sampled continuation."""

    token_ids: list[int]  # (N,) sampled ids; ends with the stop id when finish_reason == "stop"
    logprobs: list[float]  # (N,) log π_θ(token_i | prompt, tokens_<i) at temperature 1
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


class GenerationEngine(Protocol):
    name: str
    max_context_len: int  # prompt + generated tokens may not exceed this

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
ENGINES: dict[EngineName, EngineFactory] = {}


def register_engine(name: EngineName) -> Callable[[EngineFactory], EngineFactory]:
    """Decorator registering an engine factory `(model_dir, options) -> GenerationEngine`; refuses duplicates."""

    def deco(fn: EngineFactory) -> EngineFactory:
        if name in ENGINES:
            raise ValueError(f"generation engine {name.value!r} is already registered")
        ENGINES[name] = fn
        return fn

    return deco


def make_engine(name: str, model_dir: str | Path, options: EngineOptions = EngineOptions()) -> GenerationEngine:
    """Build a generation engine by name over an HF checkpoint directory; the error lists valid names."""
    try:
        key = EngineName(name)
    except ValueError:
        raise ValueError(f"unknown generation engine {name!r}; valid: {', '.join(e.value for e in EngineName)}") from None
    return ENGINES[key](Path(model_dir), options)


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


class TransformersEngine:
    """A HF causal LM on CPU (or one GPU), sampled token by token with a KV cache."""

    name = "transformers"

    def __init__(self, model_dir: str | Path, options: EngineOptions = EngineOptions()):
        import torch
        from transformers import AutoModelForCausalLM

        self.device = torch.device(options.device)
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=_torch_dtype(options.dtype))
        self.model.to(self.device).eval()
        self.max_context_len = int(self.model.config.max_position_embeddings)

    @classmethod
    def from_model(cls, model: Any) -> "TransformersEngine":
        """Wrap an already loaded causal LM (tests, in-process evaluation); the model is used as is."""
        self = cls.__new__(cls)
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.max_context_len = int(model.config.max_position_embeddings)
        return self

    def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        stop_ids: Sequence[int] = (),
        seed: int | None = None,
    ) -> Generation:
        import torch

        if not prompt_ids:
            raise ValueError("generate needs a non-empty prompt")
        if len(prompt_ids) + max_new_tokens > self.max_context_len:
            raise ValueError(
                f"prompt of {len(prompt_ids)} tokens + max_new_tokens {max_new_tokens} exceeds the model's "
                f"context of {self.max_context_len} tokens"
            )
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed if seed is not None else torch.seed())
        stop = set(stop_ids)
        out_ids: list[int] = []
        out_logp: list[float] = []
        finish: Literal["stop", "length"] = "length"
        with torch.inference_mode():
            step_input = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.device)
            past = None
            for _ in range(max_new_tokens):
                out = self.model(input_ids=step_input, past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = out.logits[0, -1].float()  # (V,)
                logp = torch.log_softmax(logits, dim=-1)
                if temperature == 0:
                    token = int(torch.argmax(logits))
                else:
                    probs = torch.softmax(logits / temperature, dim=-1)
                    token = int(torch.multinomial(probs, 1, generator=gen))
                out_ids.append(token)
                out_logp.append(float(logp[token]))
                if token in stop:
                    finish = "stop"
                    break
                step_input = torch.tensor([[token]], dtype=torch.long, device=self.device)
        return Generation(out_ids, out_logp, finish)

    def load_weights(self, weights: "Mapping[str, torch.Tensor] | str | Path") -> None:
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


class VLLMEngine:
    """vLLM on a GPU. Sampled tokens come back with log π_θ at temperature 1 (`raw_logprobs`)."""

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
            logprobs_mode="raw_logprobs",  # log-probs of the unscaled logits: log π_θ at temperature 1
        )
        model_config = getattr(self.llm, "model_config", None) or self.llm.llm_engine.model_config
        self.max_context_len = int(model_config.max_model_len)

    def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        stop_ids: Sequence[int] = (),
        seed: int | None = None,
    ) -> Generation:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(
            n=1,
            temperature=temperature,
            max_tokens=max_new_tokens,
            stop_token_ids=list(stop_ids),
            seed=seed,
            logprobs=0,  # only the sampled token's log-prob
            detokenize=False,
            skip_special_tokens=False,
        )
        request = self.llm.generate([TokensPrompt(prompt_token_ids=list(prompt_ids))], params, use_tqdm=False)[0]
        out = request.outputs[0]
        token_ids = list(out.token_ids)
        logprobs = [float(step[tid].logprob) for step, tid in zip(out.logprobs, token_ids)]
        # "stop": a stop id or the model's EOS was sampled (and is the last of token_ids)
        return Generation(token_ids, logprobs, "stop" if out.finish_reason == "stop" else "length")

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
