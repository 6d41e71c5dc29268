"""The critic: the policy's transformer backbone (no LM head) plus a scalar value head.

    critic = ValueModel.from_policy("out/sft")        # backbone initialized from the SFT policy
    v = critic.token_values(input_ids, attention_mask)   # (B, T) V(tokens_<t), aligned to tokens
    critic.save_pretrained("out/critic")              # config.json + model.safetensors + value_head.safetensors
    critic = ValueModel.from_pretrained("out/critic")

The directory is an ordinary HF checkpoint of the backbone (loadable by `AutoModel`) plus
`value_head.safetensors` and `critic.json`; it is written to a temp directory and renamed into place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from deepresearch.io import atomic_dir

CRITIC_FORMAT = {"format": "deepresearch-critic", "version": 1}
VALUE_HEAD_FILE = "value_head.safetensors"
CRITIC_FILE = "critic.json"


class ValueModel(nn.Module):
    """A causal-LM backbone (e.g. `Qwen2Model`) with `Linear(hidden, 1)` on every position."""

    def __init__(self, backbone: nn.Module, value_head: nn.Linear | None = None):
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        if value_head is None:
            # Zero init: the critic starts at V = 0 everywhere, so the first advantages are the
            # plain returns rather than returns minus noise from a random head.
            value_head = nn.Linear(hidden, 1)
            nn.init.zeros_(value_head.weight)
            nn.init.zeros_(value_head.bias)
        self.value_head = value_head.to(dtype=next(backbone.parameters()).dtype)

    @property
    def config(self) -> Any:
        return self.backbone.config

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Any) -> "ValueModel":
        """A randomly initialized backbone of an HF config (tests, from-scratch critics)."""
        from transformers import AutoModel

        return cls(AutoModel.from_config(config))

    @classmethod
    def from_policy(cls, policy: str | Path | nn.Module, dtype: torch.dtype | None = None) -> "ValueModel":
        """Initialize the backbone from a causal-LM policy (a checkpoint directory or a loaded model);
        the LM head is dropped and the value head starts at zero. A loaded model is copied, never shared."""
        import copy

        if isinstance(policy, nn.Module):
            backbone = copy.deepcopy(policy.base_model)
            if dtype is not None:
                backbone = backbone.to(dtype)
            return cls(backbone)
        from transformers import AutoModel

        kwargs = {"dtype": dtype} if dtype is not None else {}
        return cls(AutoModel.from_pretrained(str(policy), **kwargs))

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | None = None) -> "ValueModel":
        """Load a critic saved by `save_pretrained`."""
        from safetensors.torch import load_file
        from transformers import AutoModel

        path = Path(path)
        marker = path / CRITIC_FILE
        if not marker.is_file() or not (path / VALUE_HEAD_FILE).is_file():
            raise FileNotFoundError(
                f"{path} is not a critic directory (needs {CRITIC_FILE} and {VALUE_HEAD_FILE}); "
                "to start a critic from a policy checkpoint use ValueModel.from_policy"
            )
        meta = json.loads(marker.read_text())
        if meta.get("format") != CRITIC_FORMAT["format"] or meta.get("version") != CRITIC_FORMAT["version"]:
            raise ValueError(f"{marker}: unsupported critic format {meta!r}, expected {CRITIC_FORMAT!r}")
        kwargs = {"dtype": dtype} if dtype is not None else {}
        backbone = AutoModel.from_pretrained(str(path), **kwargs)
        head_state = load_file(str(path / VALUE_HEAD_FILE))
        head = nn.Linear(head_state["weight"].shape[1], 1)
        head.load_state_dict(head_state)
        return cls(backbone, head)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the critic to `path` atomically (temp directory, then rename); returns the path."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(path) as tmp:
            self.backbone.save_pretrained(str(tmp))
            head = {k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()}
            save_file(head, str(tmp / VALUE_HEAD_FILE))
            (tmp / CRITIC_FILE).write_text(json.dumps(CRITIC_FORMAT, indent=2) + "\n")
        return path

    # -- forward -----------------------------------------------------------------------------

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Values after each prefix.

        Args:
            input_ids: (B, T) token ids.
            attention_mask: (B, T) 1 on real tokens (right padding).
        Returns:
            (B, T) float32, out[:, t] = V(tokens[: t + 1]) — the state after reading token t.
        """
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        return self.value_head(hidden).squeeze(-1).float()

    def token_values(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Values aligned to tokens, as PPO uses them: out[:, t] = V(tokens_<t), the state in which
        token t was chosen (out[:, 0] = 0: the first token is never an action).

        Args:
            input_ids: (B, T); attention_mask: (B, T) or None.
        Returns:
            (B, T) float32.
        """
        return align_to_tokens(self(input_ids, attention_mask))


def align_to_tokens(after: Tensor) -> Tensor:
    """Values after each prefix → values aligned to tokens: (B, T) `forward` output → (B, T) with
    out[:, t] = after[:, t − 1] = V(tokens_<t) and out[:, 0] = 0. What `token_values` returns; the
    learner applies it to the critic engine's forward output."""
    return torch.cat([torch.zeros_like(after[:, :1]), after[:, :-1]], dim=1)
