"""PPO math as pure functions over tensors: GAE over agent trajectories, the clipped surrogate,
the clipped value loss, KL estimators, masked statistics, and the advantage-estimator registry.

Conventions (shared with `rl.buffer`, `rl.value` and `agent.policies.hf`):
  - every per-token tensor is (B, T) and *aligned to tokens*: entry t concerns the decision that
    produced token t from the context tokens[:t] — logp[:, t] = log π(token_t | tokens_<t),
    values[:, t] = V(tokens_<t). Position 0 is never an action.
  - `mask` (B, T) is 1 on tokens the policy sampled (assistant tokens) and 0 on system, user and
    tool-observation tokens and on padding. Losses are token means over the mask.
  - rewards live on policy tokens; the episode reward sits on the last one (`terminal_rewards`).

Nothing here logs, calls `.item()` or reads a config object: callers pass the numbers.

    adv, ret = get_advantage_estimator("gae")(rewards, values, mask, gamma=1.0, lam=1.0)
    loss, clip_frac = policy_loss(logp, old_logp, adv, mask, clip_eps=0.2)
"""

from __future__ import annotations

from enum import Enum
from typing import Callable

import torch
from torch import Tensor

from deepresearch.registry import Registry

# ---------------------------------------------------------------------------------------------
# masked statistics


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of `x` where `mask` is 1. x, mask: (B, T); returns a scalar, or (B,) / (T,) along `dim`."""
    return (x * mask).sum() if dim is None else (x * mask).sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `x` over entries where `mask` is 1 (token mean). x, mask: (B, T).

    Returns a scalar (dim=None) or a reduction along `dim`. An all-zero mask gives 0, not NaN, so an
    episode without policy tokens contributes nothing instead of poisoning the batch.
    """
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp_min(1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp_min(1.0)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of `x` over masked entries (scalar). Bessel-corrected when `unbiased` and n > 1."""
    mask = mask.to(x.dtype)
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        var = var * torch.where(n > 1, n / (n - 1).clamp_min(1.0), torch.ones_like(n))
    return var


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """How much of the returns' variance the critic explains, over masked entries (scalar):
    1 − Var(R − V) / Var(R). 1: perfect; 0: no better than a constant; < 0: worse than one.

    values, returns, mask: (B, T). Returns NaN when the returns do not vary (nothing to explain).
    """
    var_r = masked_var(returns, mask, unbiased=False)
    var_err = masked_var(returns - values, mask, unbiased=False)
    return torch.where(var_r > 0, 1.0 - var_err / var_r.clamp_min(1e-12), torch.full_like(var_r, float("nan")))


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalize `x` to zero mean and unit variance over masked entries; unmasked entries become 0.

    x, mask: (B, T) → (B, T). With `shift_mean=False` only the scale changes (the mean is kept),
    which preserves the sign of advantages when a batch is all successes or all failures.
    """
    mask = mask.to(x.dtype)
    mean = masked_mean(x, mask)
    whitened = (x - mean) * torch.rsqrt(masked_var(x, mask) + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


# ---------------------------------------------------------------------------------------------
# advantage-estimator registry


class AdvantageEstimator(str, Enum):
    gae = "gae"  # learned critic + GAE(γ, λ): the Step-DeepResearch recipe (γ = λ = 1)
    reinforce = "reinforce"  # reward-to-go without a baseline (critic-free ablation)


# (rewards (B,T), values (B,T), mask (B,T), gamma, lam) -> (advantages (B,T), returns (B,T))
AdvantageFn = Callable[[Tensor, Tensor, Tensor, float, float], tuple[Tensor, Tensor]]
ADVANTAGE_ESTIMATORS: Registry[AdvantageFn] = Registry("advantage estimator", AdvantageEstimator)


def register_advantage_estimator(name: AdvantageEstimator | str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator registering an advantage estimator under `name` (an AdvantageEstimator member); refuses duplicates."""
    return ADVANTAGE_ESTIMATORS.register(name)


def get_advantage_estimator(name: AdvantageEstimator | str) -> AdvantageFn:
    """Look up an estimator by name; the error lists the valid names."""
    return ADVANTAGE_ESTIMATORS.get(name)


# ---------------------------------------------------------------------------------------------
# rewards, advantages, returns


def terminal_rewards(rewards: Tensor, mask: Tensor) -> Tensor:
    """Place each episode's scalar reward on its last policy token.

    Args:
        rewards: (B,) one reward per episode.
        mask: (B, T) 1 on policy tokens.
    Returns:
        (B, T) zeros except rewards[b] at the last t with mask[b, t] = 1 (a row without policy
        tokens stays all zero).
    """
    B, T = mask.shape
    m = mask > 0
    positions = torch.arange(T, device=mask.device).expand(B, T)
    last = torch.where(m, positions, torch.full_like(positions, -1)).max(dim=1).values  # (B,) -1: none
    out = torch.zeros(B, T, dtype=rewards.dtype, device=rewards.device)
    has_action = last >= 0
    rows = torch.arange(B, device=mask.device)[has_action]
    out[rows, last[has_action]] = rewards[has_action]
    return out


def leave_one_out_baseline(rewards: Tensor, groups: Tensor) -> Tensor:
    """Each episode's baseline: the mean reward of the other episodes of its group (RLOO, Kool et al.
    2019; Ahmadian et al. 2024, arXiv 2402.14740).

    Args:
        rewards: (B,) one reward per episode.
        groups: (B,) long, the episode's group (its task); every group needs at least 2 episodes.
    Returns:
        (B,) baselines; rewards − baselines sums to 0 within every group.
    Raises:
        ValueError: a group with a single episode (it has no other samples to compare with).
    """
    n = torch.zeros(int(groups.max()) + 1, dtype=rewards.dtype, device=rewards.device).index_add_(
        0, groups, torch.ones_like(rewards)
    )
    if bool((n[groups] < 2).any()):
        raise ValueError("leave_one_out_baseline: a group has one episode; the baseline needs 2 or more")
    total = torch.zeros_like(n).index_add_(0, groups, rewards)
    return (total[groups] - rewards) / (n[groups] - 1)


def gae_reference(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """GAE written as the textbook per-episode loop; the reference `gae` is tested against.

    Policy tokens of one row, in order, are the decision steps k = 1..n (observation tokens between
    them are skipped, not steps):  δ_k = r_k + γ V_{k+1} − V_k  (V_{n+1} = 0),
    A_k = δ_k + γλ A_{k+1}  (A_{n+1} = 0),  R_k = A_k + V_k.  Schulman et al. 2015, arXiv 1506.02438.

    Args / Returns: as `gae`.
    """
    adv = torch.zeros_like(values)
    ret = torch.zeros_like(values)
    B, T = values.shape
    for b in range(B):
        next_value, next_adv = 0.0, 0.0
        for t in reversed(range(T)):
            if mask[b, t] <= 0:
                continue
            delta = float(rewards[b, t]) + gamma * next_value - float(values[b, t])
            next_adv = delta + gamma * lam * next_adv
            next_value = float(values[b, t])
            adv[b, t] = next_adv
            ret[b, t] = next_adv + next_value
    return adv, ret


@register_advantage_estimator(AdvantageEstimator.gae)
def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation over the policy tokens of agent trajectories.

    A reverse scan over time, vectorized over the batch. Observation tokens (mask 0) are jumped
    over: the scan carries the next policy token's value and advantage across them, so consecutive
    policy tokens on either side of a tool response are consecutive decision steps. Rewards on
    mask-0 positions are ignored (put the episode reward on the last policy token with
    `terminal_rewards`). With γ = λ = 1 (the recipe's setting) A_t = Σ_{j≥t} r_j − V_t.
    γ = λ = 1 uses that closed form (two reverse cumsums); otherwise the scan is a Python loop over T
    of (B,)-sized ops (about 5 s for 8 × 128K tokens on a 2-core CPU).

    Args:
        rewards: (B, T) per-token rewards, nonzero only on policy tokens.
        values: (B, T) V_old(tokens_<t), aligned to tokens.
        mask: (B, T) 1 on policy tokens, 0 on prompt, observation and padding tokens.
        gamma: discount per decision step (per policy token).
        lam: GAE λ.
    Returns:
        advantages (B, T), returns (B, T) = advantages + values; both 0 where mask = 0.
    """
    m = (mask > 0).to(values.dtype)
    if gamma == 1.0 and lam == 1.0:
        # δ_k = r_k + V_{k+1} − V_k telescopes: A_k = Σ_{j≥k} δ_j = Σ_{j≥k} r_j − V_k (V_{n+1} = 0).
        returns = torch.flip(torch.cumsum(torch.flip(rewards * m, [1]), dim=1), [1]) * m
        return (returns - values) * m, returns
    B, T = values.shape
    next_value = values.new_zeros(B)  # V of the next policy token to the right (0 past the end)
    next_adv = values.new_zeros(B)
    adv = torch.zeros_like(values)
    for t in range(T - 1, -1, -1):
        m_t = m[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        a_t = delta + gamma * lam * next_adv
        adv[:, t] = a_t * m_t
        # On an observation token keep carrying the values from the right.
        next_value = m_t * values[:, t] + (1 - m_t) * next_value
        next_adv = m_t * a_t + (1 - m_t) * next_adv
    returns = (adv + values) * m
    return adv, returns


@register_advantage_estimator(AdvantageEstimator.reinforce)
def reinforce_returns(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """REINFORCE without a baseline: advantage = return = discounted reward-to-go over policy tokens.

    Same signature as `gae` (values and λ are unused); equal to `gae` with values = 0 and λ = 1.
    Useful as a critic-free ablation.

    Returns:
        advantages (B, T), returns (B, T); both 0 where mask = 0.
    """
    return gae(rewards, torch.zeros_like(values), mask, gamma, 1.0)


# ---------------------------------------------------------------------------------------------
# losses


def policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, clip_eps: float
) -> tuple[Tensor, Tensor]:
    """PPO clipped surrogate (Schulman et al. 2017, arXiv 1707.06347), token mean over the mask.

    per token: max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)) with ρ = exp(logp − old_logp).

    Args:
        logp: (B, T) log π_θ(a_t|s_t) under the current policy (carries the gradient).
        old_logp: (B, T) log π_old(a_t|s_t) recorded at rollout time.
        advantages: (B, T) A_t (no gradient).
        mask: (B, T) 1 on policy tokens.
        clip_eps: ε.
    Returns:
        loss: scalar to minimize.
        clip_frac: scalar, fraction of policy tokens where the clipped term is the active one (detached).
    """
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_frac = masked_mean((clipped > unclipped).to(logp.dtype), mask).detach()
    return loss, clip_frac


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_eps: float) -> Tensor:
    """Clipped value loss (as in OpenAI baselines' PPO2): 0.5 · token-mean of
    max((V − R)², (V_clip − R)²), V_clip = V_old + clip(V − V_old, −ε, ε).

    Args:
        values: (B, T) V_φ(s_t) under the current critic (carries the gradient).
        old_values: (B, T) V_old(s_t) recorded when the batch was made.
        returns: (B, T) regression targets R_t.
        mask: (B, T) 1 on policy tokens.
        clip_eps: ε for the value clip (in the reward's units).
    Returns:
        scalar loss.
    """
    v_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    err = torch.maximum((values - returns) ** 2, (v_clipped - returns) ** 2)
    return 0.5 * masked_mean(err, mask)


class KLEstimator(str, Enum):
    """Per-token estimators of KL(π_θ ‖ π_ref) from a sample a ~ π_θ (Schulman, "Approximating KL
    divergence", 2020). With log r = log π_ref(a) − log π_θ(a):"""

    k1 = "k1"  # −log r: unbiased, high variance, can be negative per token
    k2 = "k2"  # ½ (log r)²: biased, low variance, ≥ 0
    k3 = "k3"  # (r − 1) − log r: unbiased, low variance, ≥ 0 ("low_var_kl" in verl)


def kl_penalty(logp: Tensor, ref_logp: Tensor, mask: Tensor, kind: str | KLEstimator = "k1") -> Tensor:
    """Per-token KL estimate between the policy and a reference policy, 0 off the mask.

    Args:
        logp: (B, T) log π_θ(a_t|s_t).
        ref_logp: (B, T) log π_ref(a_t|s_t).
        mask: (B, T) 1 on policy tokens.
        kind: "k1" | "k2" | "k3" (see `KLEstimator`).
    Returns:
        (B, T) estimates; take `masked_mean` for a loss, or subtract β· it from token rewards.
    """
    try:
        kind = KLEstimator(kind)
    except ValueError:
        raise ValueError(f"unknown KL estimator {kind!r}; valid: {', '.join(k.value for k in KLEstimator)}") from None
    log_ratio = ref_logp - logp  # log r
    if kind is KLEstimator.k1:
        kl = -log_ratio
    elif kind is KLEstimator.k2:
        kl = 0.5 * log_ratio**2
    else:
        # exp() of a large log-ratio overflows to inf and the gradient to NaN; ±20 is far beyond any
        # ratio PPO keeps (verl clamps the same way).
        log_ratio = log_ratio.clamp(-20.0, 20.0)
        kl = torch.exp(log_ratio) - 1.0 - log_ratio
    return kl * mask.to(kl.dtype)


def token_logprobs(logits: Tensor, input_ids: Tensor, temperature: float = 1.0) -> Tensor:
    """Log-probabilities of each token under the model that produced `logits`, aligned to tokens.

    Args:
        logits: (B, T, V) from a causal LM run on `input_ids` (logits[:, t] predicts token t+1).
        input_ids: (B, T) token ids.
        temperature: divide logits by this first (1.0 = log π_θ itself, what PPO ratios use).
    Returns:
        (B, T) with out[:, t] = log softmax(logits[:, t−1] / temperature)[input_ids[:, t]] and
        out[:, 0] = 0. Computed as gathered logit − logsumexp, one row at a time, in float32, so a
        (B, T, V) log-softmax is never materialized.
    """
    B, T = input_ids.shape
    out = torch.zeros(B, T, dtype=torch.float32, device=logits.device)
    for b in range(B):
        lg = logits[b, :-1].float() / temperature  # (T-1, V)
        picked = lg.gather(-1, input_ids[b, 1:].unsqueeze(-1)).squeeze(-1)  # (T-1,)
        out[b, 1:] = picked - torch.logsumexp(lg, dim=-1)
    return out


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the next-token distribution at every position. logits (B, T, V) → (B, T) float32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)
