"""Experience: agent rollouts as tokens (`agent.schema.Episode`) padded into a PPO batch (`ExperienceBatch`).

    padded = pad_episodes(episodes, pad_id=tok.pad_token_id)          # PaddedEpisodes (B, T)
    values = critic.token_values(padded.input_ids, padded.attention_mask)   # learner side
    batch = make_experience(padded, rewards, values, gamma=1.0, lam=1.0)
    for mb in iter_minibatches(batch, 4, generator=torch.Generator().manual_seed(0)):
        ...  # ppo_step(policy, critic, mb, cfg)

Every per-token tensor is aligned to tokens (see `rl.ppo`): entry t is about the decision that
produced token t from tokens[:t]; position 0 is never an action.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Iterator, Sequence

import torch
from torch import Tensor

from deepresearch.agent.schema import Episode
from deepresearch.rl.ppo import (
    get_advantage_estimator,
    kl_penalty,
    leave_one_out_baseline,
    masked_whiten,
    terminal_rewards,
)


@dataclass(frozen=True)
class PaddedEpisodes:
    """Episodes right-padded into tensors; what the learner runs its critic and reference model on."""

    input_ids: Tensor  # (B, T) long, padded with pad_id
    attention_mask: Tensor  # (B, T) long, 1 on real tokens
    action_mask: Tensor  # (B, T) float32, 1 on tokens the policy sampled
    old_logp: Tensor  # (B, T) float32, log π_old(a_t|s_t) on action tokens, 0 elsewhere

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def pad_episodes(episodes: Sequence[Episode], pad_id: int) -> PaddedEpisodes:
    """Right-pad episodes to the longest one.

    Args:
        episodes: B episodes.
        pad_id: token id used for padding (masked out everywhere).
    Returns:
        PaddedEpisodes with (B, T), T = the longest episode.
    """
    if not episodes:
        raise ValueError("pad_episodes needs at least one episode")
    B, T = len(episodes), max(len(e.token_ids) for e in episodes)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(B, T, dtype=torch.long)
    action_mask = torch.zeros(B, T, dtype=torch.float32)
    old_logp = torch.zeros(B, T, dtype=torch.float32)
    for b, e in enumerate(episodes):
        n = len(e.token_ids)
        input_ids[b, :n] = torch.tensor(e.token_ids, dtype=torch.long)
        attention_mask[b, :n] = 1
        action_mask[b, :n] = torch.tensor(e.action_mask, dtype=torch.float32)
        old_logp[b, :n] = torch.tensor(e.logprobs, dtype=torch.float32)
    return PaddedEpisodes(input_ids, attention_mask, action_mask, old_logp)


@dataclass(frozen=True)
class ExperienceBatch:
    """A PPO batch: B episodes padded to T tokens, with everything the losses need."""

    input_ids: Tensor  # (B, T) long token ids
    attention_mask: Tensor  # (B, T) long, 1 on real tokens
    action_mask: Tensor  # (B, T) float, 1 on policy tokens
    old_logp: Tensor  # (B, T) log π_old(a_t|s_t), recorded at rollout
    old_values: Tensor  # (B, T) V_old(s_t) from the critic before the update
    advantages: Tensor  # (B, T) A_t, 0 off the action mask
    returns: Tensor  # (B, T) R_t, the critic's targets, 0 off the action mask
    rewards: Tensor  # (B, T) token rewards the advantages were computed from (terminal reward − KL)
    ref_logp: Tensor | None = None  # (B, T) log π_ref(a_t|s_t), when a KL term is used

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: Tensor) -> "ExperienceBatch":
        """The rows `index` (a (b,) long tensor), with trailing all-padding columns cut off."""
        rows = {f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[index]) for f in fields(self)}
        T = int(rows["attention_mask"].sum(1).max())
        return ExperienceBatch(**{k: (None if v is None else v[:, :T]) for k, v in rows.items()})

    def to(self, device: torch.device | str) -> "ExperienceBatch":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if getattr(self, f.name) is not None})


def make_experience(
    padded: PaddedEpisodes,
    rewards: Tensor,
    old_values: Tensor,
    *,
    gamma: float,
    lam: float,
    estimator: str = "gae",
    ref_logp: Tensor | None = None,
    kl_coef: float = 0.0,
    kl_kind: str = "k1",
    whiten_advantages: bool = False,
    groups: Tensor | None = None,
) -> ExperienceBatch:
    """Turn padded episodes, their rewards and the critic's values into a PPO batch.

    The episode reward goes on the last policy token; with `kl_coef` > 0 each policy token also gets
    −kl_coef · KL(π_old ‖ π_ref) (estimator `kl_kind`). Advantages come from the registered
    `estimator` ("gae": GAE over policy tokens, observation tokens skipped).

    Args:
        padded: from `pad_episodes`.
        rewards: (B,) one scalar reward per episode (e.g. the judge's mapped label).
        old_values: (B, T) critic values aligned to tokens (`ValueModel.token_values`).
        gamma, lam: GAE parameters (the recipe uses 1.0, 1.0).
        ref_logp: (B, T) reference-policy log-probs; required when kl_coef > 0.
        whiten_advantages: normalize advantages over the batch's policy tokens.
        groups: (B,) long task index of each episode; given, every reward is first centered with the
            leave-one-out mean of its task's other episodes (`leave_one_out_baseline`), so the
            critic and the advantages see how much better than its task's other samples an episode did.
    Returns:
        The ExperienceBatch (CPU or wherever the inputs live).
    """
    mask = padded.action_mask
    if old_values.shape != mask.shape:
        raise ValueError(f"old_values has shape {tuple(old_values.shape)}, expected {tuple(mask.shape)} (B, T)")
    if rewards.shape != (mask.shape[0],):
        raise ValueError(f"rewards has shape {tuple(rewards.shape)}, expected ({mask.shape[0]},) — one per episode")
    if kl_coef > 0 and ref_logp is None:
        raise ValueError("kl_coef > 0 needs ref_logp (the reference policy's log-probs)")
    old_values = old_values.detach().to(torch.float32) * mask
    rewards = rewards.to(torch.float32)
    if groups is not None:
        rewards = rewards - leave_one_out_baseline(rewards, groups.to(rewards.device))
    token_rewards = terminal_rewards(rewards, mask)
    if kl_coef > 0:
        token_rewards = token_rewards - kl_coef * kl_penalty(padded.old_logp, ref_logp, mask, kl_kind)
    advantages, returns = get_advantage_estimator(estimator)(token_rewards, old_values, mask, gamma, lam)
    if whiten_advantages:
        advantages = masked_whiten(advantages, mask)
    return ExperienceBatch(
        input_ids=padded.input_ids,
        attention_mask=padded.attention_mask,
        action_mask=mask,
        old_logp=padded.old_logp,
        old_values=old_values,
        advantages=advantages,
        returns=returns,
        rewards=token_rewards,
        ref_logp=ref_logp,
    )


def iter_minibatches(
    batch: ExperienceBatch, minibatch_size: int, *, generator: torch.Generator | None = None, shuffle: bool = True
) -> Iterator[ExperienceBatch]:
    """Yield minibatches of `minibatch_size` episodes (the last one may be smaller), each trimmed
    to its own longest episode. Shuffled with `generator` unless `shuffle=False`."""
    if minibatch_size < 1:
        raise ValueError(f"minibatch_size must be >= 1, got {minibatch_size}")
    B = len(batch)
    order = torch.randperm(B, generator=generator) if shuffle else torch.arange(B)
    for start in range(0, B, minibatch_size):
        yield batch.select(order[start : start + minibatch_size])


def length_chunks(attention_mask: torch.Tensor, chunk: int) -> Iterator[tuple[torch.Tensor, int]]:
    """Rows of a right-padded (B, T) batch, `chunk` at a time in order of length, each chunk with its
    own length: forwarding (rows, :length) instead of (rows, :T) skips the padding of the longest
    episode, which the other episodes would otherwise carry in every forward pass.

    Yields:
        (row indices (b,) long, the longest of those rows' lengths).
    """
    lengths = attention_mask.sum(1)
    order = torch.argsort(lengths, descending=True, stable=True)
    for s in range(0, len(order), chunk):
        rows = order[s : s + chunk]
        yield rows, int(lengths[rows].max())
