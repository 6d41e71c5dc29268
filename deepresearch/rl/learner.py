"""One PPO optimization step (actor + critic) over an ExperienceBatch, in plain torch.

    metrics = ppo_step(policy, critic, minibatch, cfg.rl, policy_optimizer=popt, critic_optimizer=copt)
    history = ppo_update(policy, critic, batch, cfg.rl, policy_optimizer=popt, critic_optimizer=copt)

`ppo_losses` is the forward half (losses as tensors, nothing stepped), so a DeepSpeed engine can
run its own `backward`/`step` on them; `ppo_step` adds backward, gradient clipping and the
optimizer steps for a plain-torch (CPU) learner. KL-to-reference, when used, is already in the
batch's token rewards (`make_experience(kl_coef=...)`), not in the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from deepresearch.rl.ppo import masked_mean, policy_loss, token_logprobs, value_loss

if TYPE_CHECKING:
    from deepresearch.config import RLConfig
    from deepresearch.rl.buffer import ExperienceBatch
    from deepresearch.rl.value import ValueModel


@dataclass(frozen=True)
class PPOLosses:
    policy_loss: Tensor  # scalar, clipped surrogate (token mean)
    value_loss: Tensor  # scalar, clipped value loss (token mean, ×0.5)
    clip_frac: Tensor  # scalar, fraction of policy tokens where the ratio clip is active (detached)
    approx_kl: Tensor  # scalar, token mean of log π_old − log π_θ: KL(π_old ‖ π_θ) estimate (detached)
    value_mean: Tensor  # scalar, mean V on policy tokens (detached)


def ppo_losses(
    policy: nn.Module,
    critic: "ValueModel",
    batch: "ExperienceBatch",
    *,
    clip_eps: float,
    value_clip_eps: float,
) -> PPOLosses:
    """Forward the policy and the critic on `batch` and compute both PPO losses.

    Args:
        policy: causal LM returning `.logits` (B, T, V).
        critic: value model (`token_values` → (B, T)).
        batch: B episodes padded to T tokens.
        clip_eps, value_clip_eps: ε of the ratio clip and of the value clip.
    """
    mask = batch.action_mask
    logits = policy(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits  # (B, T, V)
    logp = token_logprobs(logits, batch.input_ids)  # (B, T)
    pl, clip_frac = policy_loss(logp, batch.old_logp, batch.advantages, mask, clip_eps)
    values = critic.token_values(batch.input_ids, batch.attention_mask)  # (B, T)
    vl = value_loss(values, batch.old_values, batch.returns, mask, value_clip_eps)
    return PPOLosses(
        policy_loss=pl,
        value_loss=vl,
        clip_frac=clip_frac,
        approx_kl=masked_mean(batch.old_logp - logp, mask).detach(),
        value_mean=masked_mean(values, mask).detach(),
    )


def ppo_step(
    policy: nn.Module,
    critic: "ValueModel",
    batch: "ExperienceBatch",
    cfg: "RLConfig",
    *,
    policy_optimizer: torch.optim.Optimizer,
    critic_optimizer: torch.optim.Optimizer,
    max_grad_norm: float = 1.0,
) -> dict[str, float]:
    """One optimizer step of the actor and the critic on one minibatch.

    Returns:
        metrics named `rl/<metric>`: policy_loss, value_loss, clip_frac, approx_kl, value_mean,
        policy_grad_norm, critic_grad_norm.
    """
    policy.train()
    critic.train()
    policy_optimizer.zero_grad(set_to_none=True)
    critic_optimizer.zero_grad(set_to_none=True)
    losses = ppo_losses(policy, critic, batch, clip_eps=cfg.clip_eps, value_clip_eps=cfg.value_clip_eps)
    (losses.policy_loss + cfg.value_coef * losses.value_loss).backward()
    policy_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
    critic_norm = torch.nn.utils.clip_grad_norm_(critic.parameters(), max_grad_norm)
    policy_optimizer.step()
    critic_optimizer.step()
    return {
        "rl/policy_loss": losses.policy_loss.item(),
        "rl/value_loss": losses.value_loss.item(),
        "rl/clip_frac": losses.clip_frac.item(),
        "rl/approx_kl": losses.approx_kl.item(),
        "rl/value_mean": losses.value_mean.item(),
        "rl/policy_grad_norm": float(policy_norm),
        "rl/critic_grad_norm": float(critic_norm),
    }


def ppo_update(
    policy: nn.Module,
    critic: "ValueModel",
    batch: "ExperienceBatch",
    cfg: "RLConfig",
    *,
    policy_optimizer: torch.optim.Optimizer,
    critic_optimizer: torch.optim.Optimizer,
    generator: torch.Generator | None = None,
    max_grad_norm: float = 1.0,
) -> list[dict[str, float]]:
    """`cfg.ppo_epochs` passes over `batch` in shuffled minibatches of `cfg.minibatch_size` episodes;
    returns each step's metrics."""
    from deepresearch.rl.buffer import iter_minibatches

    history = []
    for _ in range(cfg.ppo_epochs):
        for mb in iter_minibatches(batch, cfg.minibatch_size, generator=generator):
            history.append(
                ppo_step(policy, critic, mb, cfg, policy_optimizer=policy_optimizer,
                         critic_optimizer=critic_optimizer, max_grad_norm=max_grad_norm)
            )
    return history
