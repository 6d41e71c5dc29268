"""The PPO stage: Ray rollouts of the agent in the real multi-tool environment ⇄ a DeepSpeed learner.

    res = run_ppo(cfg, policy_dir=Path("out/sft/hf"), judge_dir=Path("out/judge/hf"),
                  world_dir=Path("out/world"), out=Path("out/rl"), parent_run_id=parent)
    res.path            # out/rl/policy: the trained policy, an HF checkpoint (HFPolicy / vLLM load it)
    res.critic_path     # out/rl/critic: the learned critic (ValueModel.from_pretrained)
    res.reward_curve    # mean episode reward of every step

One step (`cfg.rl.steps` of them), setup → rollout → reward → experience → update → sync:

1. Tasks (`rl.tasks`): `episodes_per_step / samples_per_task` tasks mixed in the SFT proportion, each
   played `samples_per_task` times, from pools synthesized with `rl.seed` on the training side of the
   entity split (`synthesis.split.training_tasks`), so RL never trains on a held-out target or question.
2. Rollout (`rl.rollout`): `collect` on a `RolloutPool` of `rl.rollout_workers` Ray actors; each plays
   its share of the step's episodes concurrently with the real tools under `agent.budget`, their turns
   decoded in batches, sampling at `rl.temperature`. An actor that dies is replaced and its episodes
   re-run with the same seeds (`rl/reruns`).
3. Reward (`judge.reward.score_trajectories`), one scalar per episode: the judge's rubric labels mapped
   asymmetrically for reports, exact match for deep search, the task's floor without an answer.
4. Experience (`rl.experience`): with `rl.skip_uniform_groups`, only the episodes of tasks whose samples
   earned different rewards; with `rl.task_baseline`, each reward centered on its task's other samples;
   critic values (`ValueModel`, the SFT backbone with a zero value head), the optional KL-to-reference
   shaping, GAE(γ, λ) over policy tokens, as documented on `RLConfig`.
5. Update (`rl.learner`): `rl.ppo_epochs` passes of shuffled minibatches of `rl.minibatch_size`
   episodes, clipped surrogate + value_coef × clipped value loss, policy and critic each in its own
   DeepSpeed engine (training.sft's ZeRO stage, bf16 and clipping; `rl.actor_lr` / `rl.critic_lr`).
6. Sync (`rl.weights`): `push_weights` sends the new policy to every actor (one `ray.put`); the next
   step's episodes must all report the new version, or the step fails (the rollout would be
   off-policy). The last step pushes nothing: no rollout follows it.

Tracked in the MLflow child run "rl", per step, so the signal can be tuned by measurement:
  rollout      rl/reward_mean, rl/reward_std, rl/reward_min, rl/reward_max, rl/reward_<capability>,
               rl/success_rate (ground truth), rl/answered_rate, rl/episode_tokens, rl/policy_tokens,
               rl/tool_calls, rl/reruns, rl/update_episodes (those the update trains on)
  experience   rl/advantage_mean, rl/advantage_std, rl/return_mean, rl/value_mean,
               rl/explained_variance (of the returns by the critic before the update),
               rl/kl_ref (KL(π_old ‖ π_ref), k1, when kl_coef > 0)
  update       rl/policy_loss, rl/value_loss, rl/clip_frac, rl/kl (KL(π_old ‖ π_θ): the policy's drift
               within the update), rl/entropy, rl/policy_grad_norm, rl/critic_grad_norm
  throughput   rl/rollout_samples_per_s, rl/rollout_tokens_per_s (sampled), rl/learner_samples_per_s,
               rl/learner_tokens_per_s, and the seconds of each phase
Inputs: the policy, the judge and the world, each with its sha256 (the digest `run_stage` tags the
producing run with as `model.digest`).

The learner runs in this one process (a DeepSpeed world of one) on the cores the machine gives it
(`cpu_threads_per_process`): the rollouts run in the Ray actors (one thread each), which are idle while
the learner works and the other way round. On the 2-core machine the tiny model's PPO update ran at
1,800–2,600 tokens/s on both cores against 1,100–1,300 on one (32 episodes per step). Ray, DeepSpeed and
transformers are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from pydantic import BaseModel

from deepresearch.config import PipelineConfig
from deepresearch.errors import ConfigError
from deepresearch.rl.tasks import (
    PPOError,
    informative_episodes,
    rl_task_pools,
    score_episodes,
    step_tasks,
    task_groups,
)

if TYPE_CHECKING:
    from deepresearch.rl.buffer import Episode
    from deepresearch.rl.rollout import WorkerSpec
    from deepresearch.rl.tasks import Task

__all__ = ["PPOError", "PPORun", "run_ppo", "rollout_metrics", "rollout_worker_spec"]

POLICY_DIR = "policy"
CRITIC_DIR = "critic"
SUMMARY_FILE = "ppo_run.json"


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
    learner_samples_per_s: float  # episodes × ppo_epochs / time inside `ppo_update`
    learner_tokens_per_s: float  # tokens (context + sampled) × ppo_epochs / time inside the PPO update
    metrics: dict[str, float] = {}  # the last step's metrics
    model_id: str = ""  # the policy's MLflow LoggedModel ("" when tracking is off or could not log it)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def rollout_metrics(tasks: Sequence[Task], episodes: Sequence[Episode], rewards: Sequence[float]) -> dict[str, float]:
    """Rollout metrics of one step: rewards (mean, population std, range, per capability), answer and
    ground-truth success rates, tokens and tool calls per episode."""
    from deepresearch.judge.reward import final_answer

    mean = _mean(rewards)
    out = {
        "rl/reward_mean": mean,
        "rl/reward_std": math.sqrt(_mean([(r - mean) ** 2 for r in rewards])),
        "rl/reward_min": min(rewards),
        "rl/reward_max": max(rewards),
        "rl/answered_rate": _mean([float(final_answer(e.trajectory) is not None) for e in episodes]),
        "rl/success_rate": _mean([float(bool(e.trajectory.success)) for e in episodes]),
        "rl/episode_tokens": _mean([float(len(e.token_ids)) for e in episodes]),
        "rl/policy_tokens": _mean([float(e.num_actions) for e in episodes]),
        "rl/tool_calls": _mean([float(e.trajectory.tool_calls) for e in episodes]),
    }
    for cap in sorted({t.capability for t in tasks}):
        out[f"rl/reward_{cap}"] = _mean([r for t, r in zip(tasks, rewards) if t.capability == cap])
    return out


def rollout_worker_spec(cfg: PipelineConfig, policy_dir: Path, world_dir: Path) -> WorkerSpec:
    """Rollout actors on CPU with the transformers engine; with vLLM, each actor takes a slice of the GPU."""
    from deepresearch.generation.engine import EngineOptions
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


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the body with `n` torch intra-op threads (restored after)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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

    from deepresearch.io import atomic_write_text, dir_digest
    from deepresearch.judge.model import Judge
    from deepresearch.modeling.checkpoint import load_checkpoint, save_checkpoint
    from deepresearch.rl.experience import build_experience, experience_metrics
    from deepresearch.rl.learner import init_learner, ppo_update, summarize_updates
    from deepresearch.rl.rollout import RolloutPool, collect
    from deepresearch.rl.value import ValueModel
    from deepresearch.rl.weights import push_weights
    from deepresearch.tracking import BufferedTracker, log_trained_model, output_tags, stage_params, stage_run
    from deepresearch.tracking.datasets import log_world
    from deepresearch.training.distributed import cpu_threads_per_process
    from deepresearch.world.schema import World

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
    totals = dict.fromkeys(
        ("episodes", "reruns", "rollout_s", "rollout_tokens", "learn_s", "learn_samples", "learn_tokens"), 0.0
    )
    metrics: dict[str, float] = {}
    learner = pool = None
    # per-step metrics go through a background-retried buffer: a tracking outage never stalls PPO; the
    # learner's machine (this process's: Ray actors are on it locally) is sampled as `system/*` metrics
    with stage_run(cfg, parent_run_id, "rl", flyte_execution_id=execution_id, system_metrics=True) as run, \
            BufferedTracker(run, spill=out / "unlogged_tracking.jsonl") as step_log, \
            torch_threads(cpu_threads_per_process()):
        try:
            # the SFT policy and the judge are their training runs' LoggedModels (tagged input.model.<role>
            # with their model ids; their directories are temporary, so no path is recorded)
            inputs = {"policy": dir_digest(policy_dir), "judge": dir_digest(judge_dir), "world": dir_digest(world_dir)}
            run.log_model_input(policy_dir, name="policy", digest=inputs["policy"])
            run.log_model_input(judge_dir, name="judge", digest=inputs["judge"])
            log_world(run, world_dir, digest=inputs["world"])
            try:
                learner = init_learner(policy, critic, rl, cfg.training.sft)
            except ValueError as e:
                raise PPOError(str(e)) from e
            if reference is not None:
                reference.to(learner.device)
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
                    # rollout and reward
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

                    # experience, then the update (of the episodes that carry a signal, with skip_uniform_groups)
                    keep = informative_episodes(tasks, rewards) if rl.skip_uniform_groups else range(len(tasks))
                    t0 = time.perf_counter()
                    batch, history = None, []
                    if keep:
                        batch = build_experience(
                            [episodes[i] for i in keep],
                            [rewards[i] for i in keep],
                            critic=learner.critic.module,
                            reference=reference,
                            rl=rl,
                            pad_id=tokenizer.pad_token_id,
                            device=learner.device,
                            groups=task_groups([tasks[i] for i in keep]),
                        )
                    t1 = time.perf_counter()
                    if batch is not None:
                        history = ppo_update(learner, batch, rl, generator=generator)
                    experience_s, learn_s = t1 - t0, time.perf_counter() - t1
                    learn_tokens = int(batch.attention_mask.sum()) * rl.ppo_epochs if batch is not None else 0

                    # sync: the next step's rollouts use the new policy
                    if step + 1 < rl.steps:
                        with learner.policy.full_weights() as module:
                            push_weights(pool, module.state_dict())

                    curve.append(_mean(rewards))
                    for key, value in (
                        ("episodes", len(episodes)),
                        ("reruns", result.reruns),
                        ("rollout_s", result.seconds),
                        ("rollout_tokens", sampled),
                        ("learn_s", learn_s),
                        ("learn_samples", len(keep) * rl.ppo_epochs),
                        ("learn_tokens", learn_tokens),
                    ):
                        totals[key] += value
                    metrics = {
                        **rollout_metrics(tasks, episodes, rewards),
                        **(experience_metrics(batch) if batch is not None else {}),
                        **summarize_updates(history),
                        "rl/update_episodes": float(len(keep)),
                        "rl/reruns": float(result.reruns),
                        "rl/weights_version": float(pool.weights_version),
                        "rl/rollout_seconds": result.seconds,
                        "rl/rollout_samples_per_s": len(episodes) / max(result.seconds, 1e-9),
                        "rl/rollout_tokens_per_s": sampled / max(result.seconds, 1e-9),
                        "rl/experience_seconds": experience_s,
                        "rl/learner_seconds": learn_s,
                        "rl/learner_samples_per_s": len(keep) * rl.ppo_epochs / max(learn_s, 1e-9),
                        "rl/learner_tokens_per_s": learn_tokens / max(learn_s, 1e-9),
                    }
                    metrics = {k: v for k, v in metrics.items() if not math.isnan(v)}
                    step_log.log_metrics(metrics, step=step + 1)
                    bar.update(job, advance=1, reward=f"{curve[-1]:.3f}")

            # ---- save
            with learner.policy.full_weights() as module:
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
                        "data": inputs,
                        **({"mlflow_run_id": run.run_id} if getattr(run, "run_id", None) else {}),
                    },
                    card=True,
                )
            with learner.critic.full_weights() as module:
                critic_path = module.save_pretrained(out / CRITIC_DIR)
            digest = dir_digest(policy_path)
            model_id = log_trained_model(run, policy_path, stage="rl", digest=digest, params=stage_params(cfg, "rl"))
            seconds = time.perf_counter() - t_start
            res = PPORun(
                path=str(policy_path),
                critic_path=str(critic_path),
                run_id=getattr(run, "run_id", None) or "",
                steps=rl.steps,
                episodes=int(totals["episodes"]),
                reward_curve=curve,
                reruns=int(totals["reruns"]),
                weights_version=pool.weights_version,
                seconds=seconds,
                rollout_samples_per_s=totals["episodes"] / max(totals["rollout_s"], 1e-9),
                rollout_tokens_per_s=totals["rollout_tokens"] / max(totals["rollout_s"], 1e-9),
                learner_samples_per_s=totals["learn_samples"] / max(totals["learn_s"], 1e-9),
                learner_tokens_per_s=totals["learn_tokens"] / max(totals["learn_s"], 1e-9),
                metrics=metrics,
                model_id=model_id or "",
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
            if model_id and curve:
                run.log_metrics({"rl/final_reward_mean": curve[-1]}, model_id=model_id)
            run.log_dict(json.loads(res.model_dump_json()), "ppo_run.json")
            if plot is not None:
                run.log_artifact(plot)
            # model.digest as run_stage tags its models; dataset.digest is what `deepresearch lineage`
            # follows from a run that logs this policy as an input back to this run
            run.set_tags(
                {
                    **output_tags(policy_path),  # the critic beside it, equally temporary or not
                    "critic.path": str(critic_path),
                    "model.digest": digest,
                    "dataset.digest": digest,
                }
            )
        finally:
            # ---- cleanup
            if pool is not None:
                pool.shutdown()
            if learner is not None:
                learner.close()
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
