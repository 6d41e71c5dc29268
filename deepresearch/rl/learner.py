"""The PPO learner: the actor and the critic, each behind one small `Trainable` interface, and the update.

    learner = init_learner(policy, critic, cfg.rl, cfg.training.sft)  # DeepSpeed engines: what run_ppo uses
    learner = torch_learner(policy, critic, cfg.rl)                   # plain torch AdamW, the same step
    history = ppo_update(learner, batch, cfg.rl, generator=g)         # rl.ppo_epochs × shuffled minibatches
    summarize_updates(history)                                        # rl/policy_loss, rl/clip_frac, rl/kl, ...
    with learner.policy.full_weights() as module: ...                 # whole parameters (gathered under ZeRO-3)
    learner.close()

One step (`ppo_step`) on a minibatch of `rl.minibatch_size` episodes, forwarded `rl.forward_batch` at
a time: forward the policy (log π_θ at `rl.temperature`) and the critic, the clipped surrogate and the
clipped value loss (`rl.ppo`), backward of the policy loss through the policy's Trainable and of
value_coef × value loss through the critic's (the losses share no parameters, so this is the gradient
of policy_loss + value_coef · value_loss), each micro-batch's losses weighted by its share of the
minibatch's policy tokens so that the accumulated gradient is the whole minibatch's token mean; then
each steps once with its own gradient clipping. KL-to-reference, when used, is already in the batch's token rewards
(`experience.build_experience`), not in the loss.

Back ends. `DeepSpeedTrainable` wraps a DeepSpeed engine (`training.engine.init_engine`: torch AdamW,
ZeRO stage and clipping from the training config, bf16 on GPU); `TorchTrainable` wraps a module and a
torch optimizer with the same AdamW settings, for callers that do not want DeepSpeed. On CPU in fp32
both take the same steps (tested); nothing else in the update differs between them.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ContextManager, Iterator, Protocol

import torch
from torch import Tensor, nn

from deepresearch.rl.buffer import iter_minibatches, length_chunks
from deepresearch.rl.ppo import entropy_from_logits, masked_mean, policy_loss, token_logprobs, value_loss
from deepresearch.rl.value import align_to_tokens

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine

    from deepresearch.config import RLConfig, TrainStageConfig
    from deepresearch.rl.buffer import ExperienceBatch


class Trainable(Protocol):
    """A module and what trains it; the only thing the PPO update knows of DeepSpeed or torch."""

    module: nn.Module  # the model; its parameters are updated in place (ZeRO 0-2, plain torch)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The module's forward (through the engine, for DeepSpeed)."""

    def backward(self, loss: Tensor, *, last: bool = True) -> None:
        """Accumulate the gradient of `loss`; `last`: no further backward before the next `step`."""

    def step(self) -> float:
        """Clip the gradients, take an optimizer step, clear the gradients; returns the global
        gradient norm before clipping (NaN when the back end does not report one)."""

    def full_weights(self) -> ContextManager[nn.Module]:
        """The module with every parameter whole, for saving or publishing the weights."""

    def close(self) -> None:
        """Release the back end's resources."""


class TorchTrainable:
    """A module with a plain torch optimizer and global-norm gradient clipping."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, max_grad_norm: float):
        self.module = module
        self.optimizer = optimizer
        self.max_grad_norm = max_grad_norm

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def backward(self, loss: Tensor, *, last: bool = True) -> None:
        loss.backward()

    def step(self) -> float:
        norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    @contextlib.contextmanager
    def full_weights(self) -> Iterator[nn.Module]:
        yield self.module

    def close(self) -> None:
        pass


class DeepSpeedTrainable:
    """A DeepSpeed engine (ZeRO 0-3); clipping and the optimizer come from its config."""

    def __init__(self, engine: DeepSpeedEngine):
        self.engine = engine
        self.module = engine.module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.engine(*args, **kwargs)

    def backward(self, loss: Tensor, *, last: bool = True) -> None:
        # the engine runs with gradient_accumulation_steps 1 (no loss scaling); the caller says where the
        # accumulation ends, so ZeRO 2/3 reduce the gradients once, at the minibatch's last backward
        self.engine.set_gradient_accumulation_boundary(last)
        self.engine.backward(loss)

    def step(self) -> float:
        self.engine.step()  # clips to `gradient_clipping`, steps, zeroes the gradients
        norm = self.engine.get_global_grad_norm()
        return float("nan") if norm is None else float(norm)

    @contextlib.contextmanager
    def full_weights(self) -> Iterator[nn.Module]:
        import deepspeed

        if self.engine.zero_optimization_stage() == 3:
            with deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=None):
                yield self.module
        else:
            yield self.module

    def close(self) -> None:
        self.engine.destroy()


@dataclass
class PPOLearner:
    """The actor and the critic being trained."""

    policy: Trainable  # a causal LM (`.logits` (B, T, V))
    critic: Trainable  # a ValueModel (forward → (B, T) values after each prefix)
    device: torch.device

    def close(self) -> None:
        self.policy.close()
        self.critic.close()


# ---- building learners ----------------------------------------------------------------------------


def learner_stage_config(rl: RLConfig, train: TrainStageConfig, lr: float) -> TrainStageConfig:
    """The DeepSpeed settings of one PPO learner engine: `train`'s ZeRO stage, bf16, gradient clipping
    and seed (the SFT stage's, in the pipeline); learning rate `lr` (constant); micro-batches of
    `rl.forward_batch` episodes, accumulated by the update itself (`ppo_step`, one optimizer step per
    minibatch), not by the engine's counter; no weight decay (PPO fine-tunes a trained policy)."""
    from deepresearch.config import TrainStageConfig

    return TrainStageConfig(
        **{
            **train.model_dump(),
            "lr": lr,
            "min_lr_ratio": 1.0,
            "warmup_steps": 0,
            "weight_decay": 0.0,
            "micro_batch_size": rl.forward_batch,
            "grad_accum_steps": 1,
            "max_steps": rl.steps,
            "save_every": rl.steps,
            "nnodes": 1,
            "nproc_per_node": 1,
        }
    )


def init_learner(policy: nn.Module, critic: nn.Module, rl: RLConfig, train: TrainStageConfig) -> PPOLearner:
    """The PPO stage's learner: the policy and the critic in one DeepSpeed engine each.

    Args:
        policy: the causal LM to train.
        critic: the ValueModel to train.
        rl: learning rates (`actor_lr`, `critic_lr`) and minibatch size.
        train: the training stage whose ZeRO stage, bf16, clipping and seed the engines take.
    Returns:
        The PPOLearner; both engines train their modules in place (ZeRO 0-2).
    Raises:
        ValueError: launched with more than one process (the learner is a world of one).
    """
    from deepresearch.training.distributed import dist_env
    from deepresearch.training.engine import init_engine

    env = dist_env()
    if env.world_size > 1:
        raise ValueError(
            f"the PPO learner runs in one process, but WORLD_SIZE={env.world_size}: run the rl stage "
            "without torchrun (its rollouts scale with rl.rollout_workers Ray actors)"
        )
    p = init_engine(policy, learner_stage_config(rl, train, rl.actor_lr))
    c = init_engine(critic, learner_stage_config(rl, train, rl.critic_lr))
    return PPOLearner(DeepSpeedTrainable(p), DeepSpeedTrainable(c), device=torch.device(p.device))


def torch_learner(policy: nn.Module, critic: nn.Module, rl: RLConfig, *, max_grad_norm: float = 1.0) -> PPOLearner:
    """The same learner without DeepSpeed: torch AdamW with the DeepSpeed engines' betas and eps, no
    weight decay, learning rates `rl.actor_lr` / `rl.critic_lr`, clipping at `max_grad_norm`."""
    from deepresearch.training.engine import ADAM_BETAS, ADAM_EPS

    def trainable(module: nn.Module, lr: float) -> TorchTrainable:
        opt = torch.optim.AdamW(module.parameters(), lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=0.0)
        return TorchTrainable(module, opt, max_grad_norm)

    device = next(policy.parameters()).device
    return PPOLearner(trainable(policy, rl.actor_lr), trainable(critic, rl.critic_lr), device=device)


# ---- the update -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PPOLosses:
    policy_loss: Tensor  # scalar, clipped surrogate (token mean)
    value_loss: Tensor  # scalar, clipped value loss (token mean, ×0.5)
    clip_frac: Tensor  # scalar, fraction of policy tokens where the ratio clip is active (detached)
    approx_kl: Tensor  # scalar, token mean of log π_old − log π_θ: KL(π_old ‖ π_θ) estimate (detached)
    entropy: Tensor  # scalar, token mean of the policy's entropy at its decisions (detached)
    value_mean: Tensor  # scalar, mean V on policy tokens (detached)


def ppo_losses(
    policy: Any,
    critic: Any,
    batch: ExperienceBatch,
    *,
    clip_eps: float,
    value_clip_eps: float,
    temperature: float = 1.0,
) -> PPOLosses:
    """Forward the policy and the critic on `batch` and compute both PPO losses.

    Args:
        policy: callable causal LM (module or engine) returning `.logits` (B, T, V).
        critic: callable value model (module or engine) returning (B, T) values after each prefix.
        batch: B episodes padded to T tokens.
        clip_eps, value_clip_eps: ε of the ratio clip and of the value clip.
        temperature: log π_θ and the entropy are of softmax(logits / temperature), the rollouts' distribution.
    """
    mask = batch.action_mask  # (B, T)
    logits = policy(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits  # (B, T, V)
    logp = token_logprobs(logits, batch.input_ids, temperature)  # (B, T)
    pl, clip_frac = policy_loss(logp, batch.old_logp, batch.advantages, mask, clip_eps)
    values = align_to_tokens(critic(batch.input_ids, batch.attention_mask))  # (B, T)
    vl = value_loss(values, batch.old_values, batch.returns, mask, value_clip_eps)
    with torch.no_grad():
        # the decision that produced token t was made from logits[:, t - 1]
        decisions = logits[:, :-1][mask[:, 1:] > 0]  # (N, V)
        entropy = entropy_from_logits(decisions[None] / temperature).mean() if len(decisions) else logp.new_zeros(())
    return PPOLosses(
        policy_loss=pl,
        value_loss=vl,
        clip_frac=clip_frac,
        approx_kl=masked_mean(batch.old_logp - logp, mask).detach(),
        entropy=entropy,
        value_mean=masked_mean(values, mask).detach(),
    )


def ppo_step(learner: PPOLearner, batch: ExperienceBatch, rl: RLConfig) -> dict[str, float]:
    """One optimizer step of the actor and the critic on one minibatch, forwarded in micro-batches of
    `rl.forward_batch` episodes whose gradients accumulate (weighted by their share of the policy tokens).

    Returns:
        Metrics named `rl/<metric>`: policy_loss, value_loss, clip_frac, kl (KL(π_old ‖ π_θ) before this
        step), entropy, value_mean (token means over the minibatch), policy_grad_norm, critic_grad_norm.
    """
    learner.policy.module.train()
    learner.critic.module.train()
    # longest episodes together, each micro-batch trimmed to its own longest (the sum is order-free)
    micro = [batch.select(rows) for rows, _ in length_chunks(batch.attention_mask, rl.forward_batch)]
    tokens = [float(mb.action_mask.sum()) for mb in micro]
    total = sum(tokens)
    sums = dict.fromkeys(("policy_loss", "value_loss", "clip_frac", "kl", "entropy", "value_mean"), 0.0)
    for i, mb in enumerate(micro):
        w = tokens[i] / total if total else 1.0 / len(micro)
        losses = ppo_losses(
            learner.policy,
            learner.critic,
            mb,
            clip_eps=rl.clip_eps,
            value_clip_eps=rl.value_clip_eps,
            temperature=rl.temperature,
        )
        last = i == len(micro) - 1
        learner.policy.backward(w * losses.policy_loss, last=last)
        learner.critic.backward(w * rl.value_coef * losses.value_loss, last=last)
        for key, value in (("policy_loss", losses.policy_loss), ("value_loss", losses.value_loss),
                           ("clip_frac", losses.clip_frac), ("kl", losses.approx_kl),
                           ("entropy", losses.entropy), ("value_mean", losses.value_mean)):
            sums[key] += w * value.item()
    policy_norm = learner.policy.step()
    critic_norm = learner.critic.step()
    return {**{f"rl/{k}": v for k, v in sums.items()},
            "rl/policy_grad_norm": policy_norm, "rl/critic_grad_norm": critic_norm}


def ppo_update(
    learner: PPOLearner, batch: ExperienceBatch, rl: RLConfig, *, generator: torch.Generator | None = None
) -> list[dict[str, float]]:
    """`rl.ppo_epochs` passes over `batch` in minibatches of `rl.minibatch_size` episodes, shuffled
    with `generator`; returns each optimizer step's metrics (`ppo_step`)."""
    history = []
    for _ in range(rl.ppo_epochs):
        for mb in iter_minibatches(batch, rl.minibatch_size, generator=generator):
            history.append(ppo_step(learner, mb.to(learner.device), rl))
    return history


def summarize_updates(history: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over an update's optimizer steps (NaNs ignored; a metric NaN at every
    step is left out)."""
    out = {}
    for key in history[0] if history else []:
        vals = [h[key] for h in history if not math.isnan(h[key])]
        if vals:
            out[key] = sum(vals) / len(vals)
    return out
