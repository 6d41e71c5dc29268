"""Experience: a step's episodes and rewards → the PPO batch (critic values, reference log-probs, GAE).

    batch = build_experience(episodes, rewards, critic=learner.critic.module, reference=ref_model,
                             rl=cfg.rl, pad_id=tokenizer.pad_token_id, device=learner.device)
    experience_metrics(batch)      # rl/advantage_mean, rl/explained_variance, rl/kl_ref, ...

The critic and the reference policy run without gradients, `rl.forward_batch` episodes per forward
pass. Advantages follow `rl` exactly as documented on `config.RLConfig`: the episode reward on the
last policy token, −kl_coef · KL(π_old ‖ π_ref) on every policy token when kl_coef > 0, GAE with
(gamma, lam) over policy tokens only, optionally whitened. Every log-probability is at
`rl.temperature`, the distribution the rollouts sampled from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from deepresearch.rl.buffer import ExperienceBatch, length_chunks, make_experience, pad_episodes
from deepresearch.rl.ppo import explained_variance, kl_penalty, masked_mean, masked_var, token_logprobs

if TYPE_CHECKING:
    from deepresearch.config import RLConfig
    from deepresearch.rl.buffer import Episode


def _chunked(fn, input_ids: torch.Tensor, attention_mask: torch.Tensor, chunk: int) -> torch.Tensor:
    """`fn(ids, mask)` → (b, t) float over `length_chunks`, scattered back into a (B, T) float32 tensor
    (0 past each chunk's length; what lies on padding is masked out downstream)."""
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    for rows, T in length_chunks(attention_mask, chunk):
        out[rows, :T] = fn(input_ids[rows, :T], attention_mask[rows, :T]).to(torch.float32)
    return out


def chunked_token_values(
    critic: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, chunk: int
) -> torch.Tensor:
    """Critic values aligned to tokens, `chunk` rows at a time (`length_chunks`), without gradients.

    Args:
        critic: a ValueModel (eval mode is set here; the caller's train() comes back on the next step).
        input_ids, attention_mask: (B, T).
        chunk: rows per forward pass.
    Returns:
        (B, T) float32 on the inputs' device.
    """
    critic.eval()
    with torch.no_grad():
        return _chunked(critic.token_values, input_ids, attention_mask, chunk)


def chunked_token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    chunk: int,
    temperature: float = 1.0,
) -> torch.Tensor:
    """log π(token_t | tokens_<t) of a causal LM at `temperature`, `chunk` rows at a time
    (`length_chunks`), without gradients.

    Returns:
        (B, T) float32 on the inputs' device (column 0 is 0).
    """
    model.eval()

    def logprobs(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return token_logprobs(model(input_ids=ids, attention_mask=mask).logits, ids, temperature)

    with torch.no_grad():
        return _chunked(logprobs, input_ids, attention_mask, chunk)


def build_experience(
    episodes: Sequence[Episode],
    rewards: Sequence[float],
    *,
    critic: torch.nn.Module,
    reference: torch.nn.Module | None,
    rl: RLConfig,
    pad_id: int,
    device: torch.device | str,
    groups: Sequence[int] | None = None,
) -> ExperienceBatch:
    """Episodes + rewards → the PPO batch: critic values, reference log-probs (when kl_coef > 0), GAE.

    Args:
        episodes: the step's episodes (log π_old recorded by the rollout engine at rl.temperature).
        rewards: one per episode.
        critic: the critic's module (values before the update).
        reference: the frozen SFT policy (needed when rl.kl_coef > 0, else None).
        rl: gamma, lam, whiten_advantages, kl_coef, kl_estimator, temperature, forward_batch (the
            forward chunk).
        pad_id: the tokenizer's pad id.
        device: where the critic and reference live; the batch is returned there.
        groups: each episode's task index (`rl.tasks.task_groups`); needed when rl.task_baseline is on
            (rewards centered on the leave-one-out mean of the task's other samples), ignored otherwise.
    Returns:
        The ExperienceBatch (with `ref_logp` when a reference was given).
    Raises:
        ValueError: kl_coef > 0 without a reference, or one reward per episode not given.
    """
    if rl.kl_coef > 0 and reference is None:
        raise ValueError("rl.kl_coef > 0 needs the reference policy (the frozen SFT checkpoint)")
    if len(rewards) != len(episodes):
        raise ValueError(f"{len(episodes)} episodes but {len(rewards)} rewards")
    if rl.task_baseline and (groups is None or len(groups) != len(episodes)):
        raise ValueError("rl.task_baseline needs each episode's task index (groups), one per episode")
    padded = pad_episodes(episodes, pad_id=pad_id)
    padded = type(padded)(
        *(t.to(device) for t in (padded.input_ids, padded.attention_mask, padded.action_mask, padded.old_logp))
    )
    values = chunked_token_values(critic, padded.input_ids, padded.attention_mask, rl.forward_batch)  # (B, T)
    ref_logp = None
    if reference is not None:
        ref_logp = chunked_token_logprobs(
            reference, padded.input_ids, padded.attention_mask, rl.forward_batch, rl.temperature
        )  # (B, T)
    return make_experience(
        padded,
        torch.tensor(list(rewards), dtype=torch.float32, device=device),
        values,
        gamma=rl.gamma,
        lam=rl.lam,
        ref_logp=ref_logp,
        kl_coef=rl.kl_coef,
        kl_kind=rl.kl_estimator,
        whiten_advantages=rl.whiten_advantages,
        groups=torch.tensor(list(groups), dtype=torch.long, device=device) if rl.task_baseline else None,
    )


def experience_metrics(batch: ExperienceBatch) -> dict[str, float]:
    """What a batch says about the learning signal, over its policy tokens.

    Returns:
        rl/advantage_mean, rl/advantage_std, rl/return_mean, rl/value_mean (V_old), rl/explained_variance
        (of the returns by V_old; NaN when every return is equal), and rl/kl_ref (token-mean k1
        estimate of KL(π_old ‖ π_ref); only with a reference; k1 can dip below 0 on a batch).
    """
    m = batch.action_mask
    out = {
        "rl/advantage_mean": float(masked_mean(batch.advantages, m)),
        "rl/advantage_std": float(masked_var(batch.advantages, m).sqrt()),
        "rl/return_mean": float(masked_mean(batch.returns, m)),
        "rl/value_mean": float(masked_mean(batch.old_values, m)),
        "rl/explained_variance": float(explained_variance(batch.old_values, batch.returns, m)),
    }
    if batch.ref_logp is not None:
        out["rl/kl_ref"] = float(masked_mean(kl_penalty(batch.old_logp, batch.ref_logp, m, "k1"), m))
    return out
