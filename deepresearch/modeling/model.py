"""The tiny policy: a Qwen2-architecture causal LM, randomly initialised from the model config.

    tok = train_tokenizer(corpus, cfg.model)
    model = build_tiny_model(cfg.model, tok)      # seeded by cfg.model.seed; vocab = len(tok)

The architecture is the one of Qwen2.5 (GQA, RoPE, SwiGLU, RMSNorm, q/k/v biases), so every code path
that trains the tiny model on CPU is the one that trains Qwen2.5-32B-Base on the cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deepresearch.config import ModelConfig
from deepresearch.modeling.tokenizer import ENDOFTEXT

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM


def tiny_qwen2_config(cfg: ModelConfig, tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    """The Qwen2Config of the tiny model (fp32, sdpa attention, no sliding window).

    Args:
        cfg: the model section (sizes, RoPE base, tied embeddings).
        tokenizer: its length is the vocabulary size; `<|endoftext|>` is eos and pad.
    Returns:
        The config.
    """
    from transformers import Qwen2Config

    eot = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=cfg.tie_word_embeddings,
        use_sliding_window=False,
        bos_token_id=None,
        eos_token_id=eot,
        pad_token_id=eot,
        dtype="float32",
    )


def build_tiny_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerFast) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2ForCausalLM; the same `cfg.seed` gives the same weights.

    The global torch RNG is left as it was (the init runs under a forked RNG).

    Args:
        cfg: the model section.
        tokenizer: the tokenizer the model will be trained with (vocab = len(tokenizer)).
    Returns:
        The model in eval mode, fp32, on CPU, with sdpa attention.
    """
    import torch
    from transformers import Qwen2ForCausalLM

    config = tiny_qwen2_config(cfg, tokenizer)
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Qwen2ForCausalLM(config)
    return model.eval()
