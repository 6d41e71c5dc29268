"""The PPO stage: Ray rollouts of the agent in the real multi-tool environment ⇄ a DeepSpeed learner.

    res = run_ppo(cfg, policy_dir=Path("out/sft/hf"), judge_dir=Path("out/judge/hf"),
                  world_dir=Path("out/world"), out=Path("out/rl"), parent_run_id=parent)
    res.path            # out/rl/policy: the trained policy, an HF checkpoint (HFPolicy / vLLM load it)
    res.critic_path     # out/rl/critic: the learned critic (ValueModel.from_pretrained)
    res.reward_curve    # mean episode reward of every step

One step (`cfg.rl.steps` of them), setup → rollout → reward → experience → update → sync:

1. Tasks. `episodes_per_step` tasks, deep search and deep research mixed in the SFT proportion
   (`training.sft_deep_search_ratio`), drawn from a pool synthesized from the world with `rl.seed`
   on the training side of the entity split (`synthesis.split.training_tasks`), so RL never trains
   on a held-out target or question. Steps walk the pool in a seeded order, reshuffled every pass.
2. Rollout. `collect` on a `RolloutPool` of `rl.rollout_workers` Ray actors playing the current
   policy with the real tools (`batch_web_surfer`, `todo`, `file`, `shell`) under `agent.budget`;
   an actor that dies is replaced and its episode re-run (counted in `rl/reruns`).
3. Reward, one scalar per episode, on its last policy token:
   - deep research: the trained judge labels the final report against every rubric item and
     `judge.reward.report_reward` maps the labels (the paper's asymmetric mapping: only
     "satisfied" earns, a triggered penalty costs its weight).
   - deep search: 1 if `deep_search_correct` (normalized exact match against the answer and its
     aliases) else 0. The paper's RL signal is the rubric judge on reports; a question with one
     checkable answer needs no judge, and exact match is the metric evaluation reports, so the
     reward is that metric itself.
   - Only an episode that ended with its own `<answer>` (outcome "answered") is scored. An answer
     forced by the exhausted budget, a policy error or an empty answer gets the lowest reward the
     task can give: 0 for deep search; −Σ|penalty weights| / Σ positive weights for research (0
     when the rubric has no penalty) — never more than a bad report, so not answering is never a
     way to dodge penalties. The same rule as evaluation, which scores only answered episodes.
4. Experience. Values from the learned critic (`ValueModel`, backbone initialised from the SFT
   policy, zero value head), GAE with `rl.gamma`, `rl.lam` (recipe: 1, 1) over policy tokens only
   (tool observations are skipped, not steps); with `rl.kl_coef` > 0 every policy token's reward
   also gets −kl_coef · KL(π_old ‖ π_ref), π_ref the frozen SFT policy (k1 estimator).
   Old log-probs are the ones the rollout engine recorded at sampling time (temperature 1).
5. Update. `rl.ppo_epochs` passes of shuffled minibatches of `rl.minibatch_size` episodes:
   clipped surrogate + `rl.value_coef` × clipped value loss, policy and critic each in its own
   DeepSpeed engine (`training.engine.init_engine`: torch AdamW, ZeRO stage, bf16 and gradient
   clipping from `training.sft`, learning rates `rl.actor_lr` / `rl.critic_lr`, no weight decay).
6. Sync. `push_weights` sends the new policy to every actor (one `ray.put`); the next step's
   episodes must all report the new version, or the step fails (the rollout would be off-policy).
   The last step pushes nothing: no rollout follows it.

Tracked in the MLflow child run "rl" (per step): rl/reward_mean (and per capability),
rl/answered_rate, rl/success_rate (ground truth), rl/policy_loss, rl/value_loss, rl/clip_frac,
rl/kl (KL(π_old ‖ π_θ) of the update, the policy's drift in one step), rl/kl_ref (KL(π_old ‖ π_ref)
to the SFT reference with the k1 estimator the reward uses, when kl_coef > 0; k1 can dip below 0), rl/reruns, rl/rollout_samples_per_s, rl/rollout_tokens_per_s,
rl/learner_samples_per_s, rl/learner_tokens_per_s. Inputs: the policy, the judge and the world,
each with its sha256 (the digest `run_stage` tags the producing run with as `model.digest`).

The learner runs in this one process (a DeepSpeed world of one); the rollouts run in the Ray actors.
Ray, DeepSpeed, torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence, Union

from pydantic import BaseModel

from deepresearch.config import PipelineConfig, RLConfig, TrainStageConfig
from deepresearch.errors import ConfigError, DeepResearchError

if TYPE_CHECKING:
    import torch
    from deepspeed import DeepSpeedEngine

    from deepresearch.agent.schema import Trajectory
    from deepresearch.judge.model import Judge
    from deepresearch.rl.buffer import Episode, ExperienceBatch
    from deepresearch.synthesis.schema import DeepSearchTask, ResearchTask
    from deepresearch.world.schema import World

    Task = Union[DeepSearchTask, ResearchTask]

POLICY_DIR = "policy"
CRITIC_DIR = "critic"
SUMMARY_FILE = "ppo_run.json"


class PPOError(DeepResearchError):
    """The PPO stage cannot start or go on (bad layout, no tasks, off-policy rollouts)."""


class PPORun(BaseModel):
    """What the PPO stage produced."""

    stage: str = "rl"
    path: str  # the final policy: a Hugging Face checkpoint directory
    critic_path: str  # the learned critic (ValueModel.save_pretrained)
    run_id: str  # MLflow child run "rl" ("" when tracking is off)
    steps: int
    episodes: int  # episodes collected over all steps
    reward_curve: list[float]  # (steps,) mean episode reward of each step
    reruns: int  # episodes re-run because their rollout actor died
    weights_version: int  # policy version the actors hold at the end (steps - 1: the last is not pushed)
    seconds: float
    rollout_samples_per_s: float  # episodes (one sample = one episode) / time inside `collect`
    rollout_tokens_per_s: float  # sampled (policy) tokens / time inside `collect`
    learner_samples_per_s: float  # episodes × ppo_epochs / time inside `ppo_update_deepspeed`
    learner_tokens_per_s: float  # tokens (context + sampled) × ppo_epochs / time inside the PPO update
    metrics: dict[str, float] = {}  # the last step's metrics


# ---- tasks ---------------------------------------------------------------------------------------
def split_episodes(n: int, deep_search_ratio: float) -> tuple[int, int]:
    """How many of `n` episodes are deep search and how many deep research.

    Both capabilities get at least one episode when n >= 2 and the ratio is strictly between 0 and 1.

    Args:
        n: episodes per step.
        deep_search_ratio: fraction of deep-search episodes.
    Returns:
        (n_deep_search, n_deep_research), summing to n.
    """
    n_ds = int(round(n * deep_search_ratio))
    if n >= 2 and 0.0 < deep_search_ratio < 1.0:
        n_ds = min(max(n_ds, 1), n - 1)
    return n_ds, n - n_ds


def rl_task_pools(cfg: PipelineConfig, world: World) -> tuple[list[DeepSearchTask], list[ResearchTask]]:
    """The RL task pools: training-side tasks (targets outside the held-out entities) synthesized with `rl.seed`.

    Each pool has as many tasks as the synthesis stage makes for that capability (a size the world
    is known to support), at most as many as the run's steps need.

    Args:
        cfg: the pipeline config (rl, synthesis, training sections).
        world: the loaded world.
    Returns:
        (deep-search pool, research pool); a pool is empty only when its capability gets no episodes.
    Raises:
        PPOError: the training side of the world cannot supply the pools.
    """
    from deepresearch.synthesis.split import training_tasks

    rl, syn = cfg.rl, cfg.synthesis
    n_ds, n_dr = split_episodes(rl.episodes_per_step, cfg.training.sft_deep_search_ratio)
    try:
        return training_tasks(world, syn, n_deep_search=min(syn.n_deep_search, n_ds * rl.steps),
                              n_deep_research=min(syn.n_deep_research, n_dr * rl.steps), seed=rl.seed)
    except ValueError as e:
        raise PPOError(f"no RL task pool (rl.seed={rl.seed}): {e}") from e


def pool_slice(pool: Sequence[Any], start: int, count: int, *, seed: str) -> list[Any]:
    """Items `start .. start + count - 1` of an endless walk through `pool`, reshuffled on every pass.

    Pure: the same (pool, start, count, seed) gives the same items, so step s of a run draws the
    same tasks whatever ran before it.

    Args:
        pool: the items (non-empty when count > 0).
        start: position of the first item in the walk.
        count: items to take.
        seed: the shuffles' seed; pass p uses random.Random(f"{seed}:{p}").
    Returns:
        `count` items.
    """
    out = []
    orders: dict[int, list[int]] = {}
    for i in range(start, start + count):
        p, k = divmod(i, len(pool))
        if p not in orders:
            orders[p] = list(range(len(pool)))
            random.Random(f"{seed}:{p}").shuffle(orders[p])
        out.append(pool[orders[p][k]])
    return out


def step_tasks(cfg: PipelineConfig, pools: tuple[list, list], step: int) -> list[Task]:
    """The tasks of PPO step `step` (0-based): deep-search ones first, then research ones."""
    n_ds, n_dr = split_episodes(cfg.rl.episodes_per_step, cfg.training.sft_deep_search_ratio)
    ds, dr = pools
    seed = f"rl:{cfg.rl.seed}"
    return pool_slice(ds, step * n_ds, n_ds, seed=f"{seed}:deep_search") + pool_slice(
        dr, step * n_dr, n_dr, seed=f"{seed}:deep_research"
    )


# ---- rewards -------------------------------------------------------------------------------------
def no_answer_reward(task: Task) -> float:
    """The reward of an episode without an answer of its own: the lowest the task can give.

    Deep search: 0 (a wrong answer scores the same). Research: −Σ|w| over penalty items / Σ w over
    positive items, the value of a report that earns nothing and triggers every penalty (0 without
    penalty items).
    """
    from deepresearch.synthesis.schema import DeepSearchTask

    if isinstance(task, DeepSearchTask):
        return 0.0
    positive = sum(it.weight for it in task.rubrics if it.weight > 0)
    if positive <= 0:
        raise PPOError(
            f"research task {task.task_id} has no positive-weight rubric item: its reward is undefined"
        )
    return -sum(-it.weight for it in task.rubrics if it.weight < 0) / positive


def final_answer(traj: Trajectory) -> str | None:
    """The answer an episode is scored on: its own final answer (outcome "answered", non-empty), else None."""
    if traj.outcome != "answered" or not traj.answer or not traj.answer.strip():
        return None
    return traj.answer


def episode_answer(episode: Episode) -> str | None:
    """`final_answer` of an RL episode's trajectory."""
    return final_answer(episode.trajectory)


def score_trajectories(tasks: Sequence[Task], trajectories: Sequence[Trajectory], judge: Judge) -> list[float]:
    """One reward per played episode (see the module docstring, step 3); the judge labels all reports in one call.

    Args:
        tasks: the tasks, in the order of `trajectories`.
        trajectories: the episodes played on them.
        judge: the trained rubric judge.
    Returns:
        Rewards, in episode order.
    """
    from deepresearch.judge.reward import report_reward
    from deepresearch.synthesis.run import deep_search_correct
    from deepresearch.synthesis.schema import DeepSearchTask

    if len(tasks) != len(trajectories):
        raise ValueError(f"{len(tasks)} tasks but {len(trajectories)} episodes")
    rewards: list[float | None] = [None] * len(tasks)
    pairs: list[tuple[str, str]] = []
    judged: list[tuple[int, int, int]] = []  # (episode index, first pair, number of items)
    for i, (task, traj) in enumerate(zip(tasks, trajectories)):
        if traj.task_id != task.task_id:
            raise ValueError(f"episode {i} is of task {traj.task_id!r}, expected {task.task_id!r}")
        answer = final_answer(traj)
        if answer is None:
            rewards[i] = no_answer_reward(task)
        elif isinstance(task, DeepSearchTask):
            rewards[i] = 1.0 if deep_search_correct(task, answer) else 0.0
        else:
            judged.append((i, len(pairs), len(task.rubrics)))
            pairs.extend((answer, it.criterion) for it in task.rubrics)
    labels = judge.label_pairs(pairs) if pairs else []
    for i, first, n in judged:
        rewards[i] = report_reward(labels[first : first + n], [it.weight for it in tasks[i].rubrics])
    return [float(r) for r in rewards]


def score_episodes(tasks: Sequence[Task], episodes: Sequence[Episode], judge: Judge) -> list[float]:
    """`score_trajectories` of RL episodes (what `collect` returned for `tasks`)."""
    return score_trajectories(tasks, [ep.trajectory for ep in episodes], judge)


# ---- the learner ---------------------------------------------------------------------------------
def learner_stage_config(cfg: PipelineConfig, lr: float) -> TrainStageConfig:
    """The DeepSpeed settings of one PPO learner engine: `training.sft`'s ZeRO stage, bf16, gradient
    clipping and seed; learning rate `lr` (constant); one minibatch of `rl.minibatch_size` episodes
    per optimizer step; no weight decay (PPO fine-tunes a trained policy)."""
    return TrainStageConfig(
        **{
            **cfg.training.sft.model_dump(),
            "lr": lr,
            "min_lr_ratio": 1.0,
            "warmup_steps": 0,
            "weight_decay": 0.0,
            "micro_batch_size": cfg.rl.minibatch_size,
            "grad_accum_steps": 1,
            "max_steps": cfg.rl.steps,
            "save_every": cfg.rl.steps,
            "nnodes": 1,
            "nproc_per_node": 1,
        }
    )


def init_learner(
    policy: torch.nn.Module, critic: torch.nn.Module, cfg: PipelineConfig
) -> tuple[DeepSpeedEngine, DeepSpeedEngine]:
    """Wrap the policy and the critic in one DeepSpeed engine each (AdamW, ZeRO from `learner_stage_config`).

    Args:
        policy: the causal LM to train.
        critic: the ValueModel to train.
        cfg: the pipeline config.
    Returns:
        (policy engine, critic engine); both train their modules in place (ZeRO 0-2).
    Raises:
        PPOError: launched with more than one process (the learner is a world of one).
    """
    from deepresearch.training.distributed import dist_env
    from deepresearch.training.engine import init_engine

    env = dist_env()
    if env.world_size > 1:
        raise PPOError(
            f"the PPO learner runs in one process, but WORLD_SIZE={env.world_size}: run the rl stage "
            "without torchrun (its rollouts scale with rl.rollout_workers Ray actors)"
        )
    return (
        init_engine(policy, learner_stage_config(cfg, cfg.rl.actor_lr)),
        init_engine(critic, learner_stage_config(cfg, cfg.rl.critic_lr)),
    )


def ppo_step_deepspeed(
    policy_engine: DeepSpeedEngine, critic_engine: DeepSpeedEngine, batch: ExperienceBatch, rl: RLConfig
) -> dict[str, float]:
    """One optimizer step of both engines on one minibatch (the DeepSpeed twin of `learner.ppo_step`).

    The policy loss reaches only the policy's parameters and the value loss only the critic's, so
    backward of each through its own engine gives exactly the gradients of
    policy_loss + value_coef · value_loss; each engine clips its own gradient norm.

    Returns:
        Metrics named `rl/<metric>`: policy_loss, value_loss, clip_frac, approx_kl, value_mean,
        policy_grad_norm, critic_grad_norm.
    """
    from deepresearch.rl.learner import ppo_losses

    policy_engine.train()
    critic_engine.train()
    losses = ppo_losses(
        policy_engine, critic_engine, batch, clip_eps=rl.clip_eps, value_clip_eps=rl.value_clip_eps
    )
    policy_engine.backward(losses.policy_loss)
    critic_engine.backward(rl.value_coef * losses.value_loss)
    policy_engine.step()
    critic_engine.step()
    pn, cn = policy_engine.get_global_grad_norm(), critic_engine.get_global_grad_norm()
    return {
        "rl/policy_loss": losses.policy_loss.item(),
        "rl/value_loss": losses.value_loss.item(),
        "rl/clip_frac": losses.clip_frac.item(),
        "rl/approx_kl": losses.approx_kl.item(),
        "rl/value_mean": losses.value_mean.item(),
        "rl/policy_grad_norm": float("nan") if pn is None else float(pn),
        "rl/critic_grad_norm": float("nan") if cn is None else float(cn),
    }


def ppo_update_deepspeed(
    policy_engine: DeepSpeedEngine,
    critic_engine: DeepSpeedEngine,
    batch: ExperienceBatch,
    rl: RLConfig,
    *,
    generator: torch.Generator | None = None,
) -> list[dict[str, float]]:
    """`rl.ppo_epochs` passes over `batch` in shuffled minibatches of `rl.minibatch_size` episodes
    (the DeepSpeed twin of `learner.ppo_update`); returns each optimizer step's metrics."""
    from deepresearch.rl.buffer import iter_minibatches

    device = policy_engine.device
    history = []
    for _ in range(rl.ppo_epochs):
        for mb in iter_minibatches(batch, rl.minibatch_size, generator=generator):
            history.append(ppo_step_deepspeed(policy_engine, critic_engine, mb.to(device), rl))
    return history


@contextlib.contextmanager
def full_weights(engine: DeepSpeedEngine) -> Iterator[torch.nn.Module]:
    """The engine's module with every parameter whole: gathered under ZeRO-3, as is under ZeRO 0-2."""
    import deepspeed

    module = engine.module
    if engine.zero_optimization_stage() == 3:
        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            yield module
    else:
        yield module


def chunked_token_values(
    critic: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, chunk: int
) -> torch.Tensor:
    """Critic values aligned to tokens, `chunk` rows at a time, without gradients.

    Args:
        critic: a ValueModel (eval mode is set here).
        input_ids, attention_mask: (B, T).
        chunk: rows per forward pass.
    Returns:
        (B, T) float32 on the inputs' device.
    """
    import torch

    critic.eval()
    with torch.no_grad():
        return torch.cat(
            [
                critic.token_values(input_ids[s : s + chunk], attention_mask[s : s + chunk])
                for s in range(0, input_ids.shape[0], chunk)
            ]
        )


def chunked_token_logprobs(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, chunk: int
) -> torch.Tensor:
    """log π(token_t | tokens_<t) of a causal LM at temperature 1, `chunk` rows at a time, without gradients.

    Returns:
        (B, T) float32 on the inputs' device (column 0 is 0).
    """
    import torch

    from deepresearch.rl.ppo import token_logprobs

    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, input_ids.shape[0], chunk):
            ids = input_ids[s : s + chunk]
            logits = model(input_ids=ids, attention_mask=attention_mask[s : s + chunk]).logits  # (b, T, V)
            out.append(token_logprobs(logits, ids))
    return torch.cat(out)


def build_experience(
    episodes: Sequence[Episode],
    rewards: Sequence[float],
    *,
    critic: torch.nn.Module,
    reference: torch.nn.Module | None,
    rl: RLConfig,
    pad_id: int,
    device: torch.device | str,
) -> tuple[ExperienceBatch, float | None]:
    """Episodes + rewards → the PPO batch: critic values, optional reference log-probs, GAE.

    Args:
        episodes: the step's episodes.
        rewards: one per episode.
        critic: the critic's module (values before the update).
        reference: the frozen SFT policy (needed when rl.kl_coef > 0, else None).
        rl: gamma, lam, kl_coef, minibatch_size (the forward chunk).
        pad_id: the tokenizer's pad id.
        device: where the critic and reference live; the batch is returned there.
    Returns:
        (the ExperienceBatch, token-mean KL(π_old ‖ π_ref) on policy tokens, or None without a reference).
    """
    import torch

    from deepresearch.rl.buffer import make_experience, pad_episodes
    from deepresearch.rl.ppo import kl_penalty, masked_mean

    padded = pad_episodes(episodes, pad_id=pad_id)
    padded = type(padded)(
        *(
            t.to(device)
            for t in (padded.input_ids, padded.attention_mask, padded.action_mask, padded.old_logp)
        )
    )
    values = chunked_token_values(critic, padded.input_ids, padded.attention_mask, rl.minibatch_size)
    ref_logp, kl_ref = None, None
    if reference is not None:
        ref_logp = chunked_token_logprobs(
            reference, padded.input_ids, padded.attention_mask, rl.minibatch_size
        )
        kl_ref = float(
            masked_mean(kl_penalty(padded.old_logp, ref_logp, padded.action_mask, "k1"), padded.action_mask)
        )
    batch = make_experience(
        padded,
        torch.tensor(list(rewards), dtype=torch.float32, device=device),
        values,
        gamma=rl.gamma,
        lam=rl.lam,
        ref_logp=ref_logp,
        kl_coef=rl.kl_coef,
    )
    return batch, kl_ref


# ---- the stage -----------------------------------------------------------------------------------
def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def step_metrics(
    tasks: Sequence[Task], episodes: Sequence[Episode], rewards: Sequence[float]
) -> dict[str, float]:
    """Rollout metrics of one step: rewards (all and per capability), answer and ground-truth success
    rates, tokens per episode."""
    out = {
        "rl/reward_mean": _mean(rewards),
        "rl/reward_min": min(rewards),
        "rl/reward_max": max(rewards),
        "rl/answered_rate": _mean([float(episode_answer(e) is not None) for e in episodes]),
        "rl/success_rate": _mean([float(bool(e.trajectory.success)) for e in episodes]),
        "rl/episode_tokens": _mean([float(len(e.token_ids)) for e in episodes]),
        "rl/policy_tokens": _mean([float(e.num_actions) for e in episodes]),
        "rl/tool_calls": _mean([float(e.trajectory.tool_calls) for e in episodes]),
    }
    for cap in sorted({t.capability for t in tasks}):
        out[f"rl/reward_{cap}"] = _mean([r for t, r in zip(tasks, rewards) if t.capability == cap])
    return out


def rollout_worker_spec(cfg: PipelineConfig, policy_dir: Path, world_dir: Path):
    """Rollout actors on CPU with the transformers engine; with vLLM, each actor takes a slice of the GPU."""
    from deepresearch.rl.engine import EngineOptions
    from deepresearch.rl.rollout import WorkerSpec

    if cfg.rl.engine == "vllm":
        share = 0.5 / cfg.rl.rollout_workers  # the learner keeps the other half of the GPU
        return WorkerSpec(
            model_dir=str(policy_dir),
            world_dir=str(world_dir),
            cfg=cfg,
            num_gpus=share,
            engine_options=EngineOptions(
                device="cuda", dtype="bfloat16", seed=cfg.rl.seed, gpu_memory_utilization=share * 0.8
            ),
        )
    return WorkerSpec(
        model_dir=str(policy_dir),
        world_dir=str(world_dir),
        cfg=cfg,
        engine_options=EngineOptions(device="cpu", seed=cfg.rl.seed),
    )


def _plot_rewards(curve: list[float], path: Path) -> Path | None:
    """The reward curve as a PNG (None when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(1, len(curve) + 1), curve, marker="o")
    ax.set_xlabel("PPO step")
    ax.set_ylabel("mean episode reward")
    ax.set_title("rl/reward_mean")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def run_ppo(
    cfg: PipelineConfig,
    *,
    policy_dir: Path,
    judge_dir: Path,
    world_dir: Path,
    out: Path,
    parent_run_id: str = "",
    execution_id: str = "local",
    progress: bool = True,
) -> PPORun:
    """Train the SFT policy with PPO against the trained judge; returns where the policy and critic are.

    Args:
        cfg: the pipeline config (rl, agent, search, training.sft for the learner's DeepSpeed settings).
        policy_dir: the SFT policy (HF checkpoint): initial policy, critic backbone and KL reference.
        judge_dir: the trained rubric judge (`Judge.load`).
        world_dir: the world the agent searches and the tasks come from.
        out: run directory; gets policy/ (HF checkpoint), critic/, ppo_run.json and reward_curve.png.
        parent_run_id: the pipeline's MLflow parent run ("" for none).
        execution_id: the Flyte execution id, tagged on the run.
        progress: show a progress bar and the end summary.
    Returns:
        The PPORun.
    Raises:
        PPOError: bad seeds, no tasks, a multi-process launch, or episodes from stale weights.
        ModelError: a checkpoint that does not load. RolloutError: an episode kept killing its actors.
    """
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from deepresearch.judge.model import Judge
    from deepresearch.modeling.checkpoint import load_checkpoint, save_checkpoint
    from deepresearch.rl.rollout import RolloutPool, collect
    from deepresearch.rl.value import ValueModel
    from deepresearch.rl.weights import push_weights
    from deepresearch.stages import world_digest
    from deepresearch.tracking import BufferedTracker, stage_run
    from deepresearch.training.stage import artifact_digest as _digest
    from deepresearch.world.schema import World, atomic_write_text

    t_start = time.perf_counter()
    rl = cfg.rl
    policy_dir, judge_dir, world_dir, out = Path(policy_dir), Path(judge_dir), Path(world_dir), Path(out)
    for name, d in (("policy_dir", policy_dir), ("judge_dir", judge_dir), ("world_dir", world_dir)):
        if not d.is_dir():
            raise PPOError(f"run_ppo: {name} {d} is not a directory")
    if rl.engine == "vllm" and not torch.cuda.is_available():
        raise ConfigError("rl.engine=vllm needs a CUDA GPU; use rl.engine=transformers on CPU")

    # ---- setup
    torch.manual_seed(rl.seed)
    world = World.load(world_dir)
    pools = rl_task_pools(cfg, world)
    judge = Judge.load(judge_dir)
    policy, tokenizer = load_checkpoint(policy_dir)
    critic = ValueModel.from_policy(policy)  # the SFT backbone, copied; a zero value head
    reference = load_checkpoint(policy_dir)[0] if rl.kl_coef > 0 else None
    generator = torch.Generator().manual_seed(rl.seed)
    out.mkdir(parents=True, exist_ok=True)

    curve: list[float] = []
    totals = {
        "episodes": 0,
        "reruns": 0,
        "rollout_s": 0.0,
        "rollout_tokens": 0,
        "learn_s": 0.0,
        "learn_samples": 0,
        "learn_tokens": 0,
    }
    metrics: dict[str, float] = {}
    policy_engine = critic_engine = pool = None
    # per-step metrics go through a background-retried buffer: a tracking outage never stalls PPO
    with stage_run(cfg, parent_run_id, "rl", flyte_execution_id=execution_id) as run, \
            BufferedTracker(run, spill=out / "unlogged_tracking.jsonl") as step_log:
        try:
            run.log_dataset(policy_dir, name="policy", context="input", digest=_digest(policy_dir))
            run.log_dataset(judge_dir, name="judge", context="input", digest=_digest(judge_dir))
            run.log_dataset(world_dir, name="world", context="input", digest=world_digest(world_dir))
            run.set_tags({"input.policy": str(policy_dir), "input.judge": str(judge_dir)})
            policy_engine, critic_engine = init_learner(policy, critic, cfg)
            device = policy_engine.device
            if reference is not None:
                reference.to(device)
            pool = RolloutPool(rollout_worker_spec(cfg, policy_dir, world_dir), rl.rollout_workers)

            bar = Progress(
                TextColumn("[bold]rl"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("reward {task.fields[reward]}"),
                TimeElapsedColumn(),
                disable=not progress,
            )
            job = bar.add_task("rl", total=rl.steps, reward="-")
            with bar:
                for step in range(rl.steps):
                    # rollout
                    tasks = step_tasks(cfg, pools, step)
                    result = collect(tasks, pool, seed=f"rl:{rl.seed}:step{step}")
                    stale = result.weights_versions - {pool.weights_version}
                    if stale:
                        raise PPOError(
                            f"step {step}: episodes from weights {sorted(stale)} but the actors should hold "
                            f"version {pool.weights_version}; the rollout is off-policy"
                        )
                    episodes = result.episodes
                    rewards = score_episodes(tasks, episodes, judge)
                    sampled = sum(e.num_actions for e in episodes)

                    # experience (critic values, reference log-probs, GAE), then the update
                    t0 = time.perf_counter()
                    batch, kl_ref = build_experience(
                        episodes,
                        rewards,
                        critic=critic_engine.module,
                        reference=reference,
                        rl=rl,
                        pad_id=tokenizer.pad_token_id,
                        device=device,
                    )
                    t1 = time.perf_counter()
                    history = ppo_update_deepspeed(
                        policy_engine, critic_engine, batch, rl, generator=generator
                    )
                    experience_s, learn_s = t1 - t0, time.perf_counter() - t1
                    learn_tokens = int(batch.attention_mask.sum()) * rl.ppo_epochs

                    # sync: the next step's rollouts use the new policy
                    if step + 1 < rl.steps:
                        with full_weights(policy_engine) as module:
                            push_weights(pool, module.state_dict())

                    curve.append(_mean(rewards))
                    totals["episodes"] += len(episodes)
                    totals["reruns"] += result.reruns
                    totals["rollout_s"] += result.seconds
                    totals["rollout_tokens"] += sampled
                    totals["learn_s"] += learn_s
                    totals["learn_samples"] += len(episodes) * rl.ppo_epochs
                    totals["learn_tokens"] += learn_tokens
                    metrics = {
                        **step_metrics(tasks, episodes, rewards),
                        **{k: _mean([h[k] for h in history]) for k in history[0]},
                        "rl/kl": _mean([h["rl/approx_kl"] for h in history]),
                        "rl/advantage_mean": float(
                            (batch.advantages * batch.action_mask).sum()
                            / batch.action_mask.sum().clamp_min(1)
                        ),
                        "rl/reruns": float(result.reruns),
                        "rl/weights_version": float(pool.weights_version),
                        "rl/rollout_seconds": result.seconds,
                        "rl/rollout_samples_per_s": len(episodes) / max(result.seconds, 1e-9),
                        "rl/rollout_tokens_per_s": sampled / max(result.seconds, 1e-9),
                        "rl/experience_seconds": experience_s,
                        "rl/learner_seconds": learn_s,
                        "rl/learner_samples_per_s": len(episodes) * rl.ppo_epochs / max(learn_s, 1e-9),
                        "rl/learner_tokens_per_s": learn_tokens / max(learn_s, 1e-9),
                    }
                    if kl_ref is not None:
                        metrics["rl/kl_ref"] = kl_ref
                    metrics = {k: v for k, v in metrics.items() if not math.isnan(v)}
                    step_log.log_metrics(metrics, step=step + 1)
                    bar.update(job, advance=1, reward=f"{curve[-1]:.3f}")

            # ---- save
            with full_weights(policy_engine) as module:
                policy_path = save_checkpoint(
                    module,
                    tokenizer,
                    out / POLICY_DIR,
                    metadata={
                        "stage": "rl",
                        "config_hash": cfg.hash,
                        "steps": rl.steps,
                        "init": str(policy_dir),
                        "reward_curve": curve,
                    },
                )
            with full_weights(critic_engine) as module:
                critic_path = module.save_pretrained(out / CRITIC_DIR)
            seconds = time.perf_counter() - t_start
            res = PPORun(
                path=str(policy_path),
                critic_path=str(critic_path),
                run_id=getattr(run, "run_id", None) or "",
                steps=rl.steps,
                episodes=totals["episodes"],
                reward_curve=curve,
                reruns=totals["reruns"],
                weights_version=pool.weights_version,
                seconds=seconds,
                rollout_samples_per_s=totals["episodes"] / max(totals["rollout_s"], 1e-9),
                rollout_tokens_per_s=totals["rollout_tokens"] / max(totals["rollout_s"], 1e-9),
                learner_samples_per_s=totals["learn_samples"] / max(totals["learn_s"], 1e-9),
                learner_tokens_per_s=totals["learn_tokens"] / max(totals["learn_s"], 1e-9),
                metrics=metrics,
            )
            atomic_write_text(out / SUMMARY_FILE, res.model_dump_json(indent=2) + "\n")
            plot = _plot_rewards(curve, out / "reward_curve.png")
            run.log_metrics(
                {
                    "rl/total_reruns": float(res.reruns),
                    "rl/mean_rollout_samples_per_s": res.rollout_samples_per_s,
                    "rl/mean_rollout_tokens_per_s": res.rollout_tokens_per_s,
                    "rl/mean_learner_samples_per_s": res.learner_samples_per_s,
                    "rl/mean_learner_tokens_per_s": res.learner_tokens_per_s,
                    "rl/seconds": seconds,
                }
            )
            run.log_dict(json.loads(res.model_dump_json()), "ppo_run.json")
            if plot is not None:
                run.log_artifact(plot)
            digest = _digest(policy_path)
            # model.digest as run_stage tags its models; dataset.digest is what `deepresearch lineage`
            # follows from a run that logs this policy as an input back to this run
            run.set_tags(
                {
                    "output.path": str(policy_path),
                    "critic.path": str(critic_path),
                    "model.digest": digest,
                    "dataset.digest": digest,
                }
            )
        finally:
            # ---- cleanup
            if pool is not None:
                pool.shutdown()
            for engine in (policy_engine, critic_engine):
                if engine is not None:
                    engine.destroy()
    if progress:
        _print_summary(res)
    return res


def _print_summary(res: PPORun) -> None:
    from rich.console import Console

    curve = " → ".join(f"{r:.3f}" for r in res.reward_curve)
    Console().print(
        f"[bold]rl[/bold]: {res.steps} PPO steps, {res.episodes} episodes ({res.reruns} re-run), "
        f"{res.seconds:.1f} s\n  reward: {curve}\n"
        f"  rollouts: {res.rollout_samples_per_s:.2f} episodes/s, {res.rollout_tokens_per_s:,.0f} sampled tokens/s\n"
        f"  learner: {res.learner_samples_per_s:.2f} samples/s, {res.learner_tokens_per_s:,.0f} tokens/s\n"
        f"  policy: {res.path}\n  critic: {res.critic_path}"
    )
