"""Tokenizer, model and checkpoint handling for the policy (and, by reuse, the judge and critic).

    tokenizer.py   byte-level BPE trained on the world corpus, Qwen2.5 special tokens and chat
                   template
    base_models.py the base-model registry (registry/base_models.yaml); `load_base` for its checkpoints
    model.py       the tiny Qwen2-architecture model, random init seeded from config
    chat.py        messages -> token ids + loss mask (1 on assistant content and its <|im_end|>)
    checkpoint.py  Hugging Face checkpoint directories, written atomically, loaded with clear errors

Importing this package is cheap: torch and transformers are imported inside the functions.
"""

from deepresearch.errors import DeepResearchError


class ModelError(DeepResearchError):
    """A model, tokenizer or checkpoint is missing, malformed or inconsistent (names the path and the fix)."""
