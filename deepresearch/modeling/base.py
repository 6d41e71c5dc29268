"""The base model the training stages start from.

    info = build_base(cfg, world_dir, datasets_dir, out_dir)

`model.base: tiny` trains the BPE tokenizer on the world's documents and the synthesized
trajectories, and builds a randomly initialised tiny Qwen2 model from the `model` config section;
any other name loads a pretrained checkpoint staged at the path `registry/base_models.yaml` gives.
Either way the result is a Hugging Face checkpoint directory.
"""

from __future__ import annotations

from pathlib import Path

from deepresearch.config import PipelineConfig


def build_base(cfg: PipelineConfig, world_dir: Path, datasets_dir: Path, out_dir: Path) -> dict:
    """Write the base checkpoint to `out_dir`; returns facts about it (vocabulary, parameters)."""
    from deepresearch.modeling.base_models import load_base, resolve_base
    from deepresearch.modeling.checkpoint import save_checkpoint
    from deepresearch.modeling.tokenizer import train_tokenizer

    entry = resolve_base(cfg.model)
    if entry.source == "built":
        from deepresearch.modeling.model import build_tiny_model
        from deepresearch.training.data import tokenizer_corpus

        tokenizer = train_tokenizer(tokenizer_corpus(world_dir, datasets_dir), cfg.model)
        model = build_tiny_model(cfg.model, tokenizer)
    else:
        model, tokenizer = load_base(cfg.model)
    n_params = sum(p.numel() for p in model.parameters())
    info = {
        "stage": "base",
        "base": cfg.model.base,
        "vocab_size": len(tokenizer),
        "parameters": n_params,
        "config_hash": cfg.hash,
    }
    save_checkpoint(model, tokenizer, out_dir, metadata=info)
    return info
