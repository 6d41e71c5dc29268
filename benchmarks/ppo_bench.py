"""PPO throughput benchmark on the tiny config: rollout samples/s over N Ray actors, learner samples/s.

    uv run python benchmarks/ppo_bench.py                     # workers 1 and 2, 32 episodes, 8-episode batches
    uv run python benchmarks/ppo_bench.py --workers 1,2,4 --episodes 64 --repeats 5
    uv run python benchmarks/ppo_bench.py --no-learner        # rollouts only

Rollouts. A tiny world (`world.entities_per_type=12`), a BPE tokenizer trained on its documents and
a randomly initialised tiny Qwen2 policy sized by configs/tiny.yaml's `model` section. For each N in
--workers: a `RolloutPool` of N actors (the transformers engine on CPU, one torch thread each, the
real tools under `agent.budget`), one untimed warm-up `collect` of one episode per actor, then
`collect` of --episodes tasks (deep search and research mixed), each actor playing its share
concurrently as `run_ppo` does. Reports episodes/s and sampled (policy) tokens/s.
A random policy rarely samples a stop token, so nearly every turn runs to --max-new-tokens: the
figures are those of full-length turns, and every episode ends by exhausting --max-turns.

Learner. A synthetic `ExperienceBatch` of the shape the rollouts produced (--batch episodes of the
measured mean length, the measured fraction of policy tokens, random advantages and returns), then
`rl.ppo_epochs` passes of minibatches of `rl.minibatch_size` through `learner.ppo_update`, with the
DeepSpeed back end (`learner.init_learner`, what `run_ppo` uses) and the plain-torch one
(`learner.torch_learner`), each on its own copy of the models; one warm-up update each, then the timed
updates alternate between the two, on --learner-threads torch threads (default: as run_ppo, the machine's
cores, `cpu_threads_per_process`). Reports
samples/s (episodes × epochs / s) and tokens/s (median update).

Prints a table and writes benchmarks/results/ppo.json (with the machine and its load average, since
a shared CPU changes these figures a lot).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "ppo.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", default="1,2", help="comma-separated numbers of Ray rollout actors")
    p.add_argument("--episodes", type=int, default=32, help="timed episodes per worker count")
    p.add_argument("--max-new-tokens", type=int, default=64, help="rl.max_new_tokens (per assistant turn)")
    p.add_argument("--max-turns", type=int, default=3, help="agent.budget.max_turns")
    p.add_argument(
        "--batch", type=int, default=8, help="episodes in the learner's batch (rl.episodes_per_step)"
    )
    p.add_argument("--minibatch", type=int, default=4, help="rl.minibatch_size")
    p.add_argument("--epochs", type=int, default=2, help="rl.ppo_epochs")
    p.add_argument("--seq-len", type=int, default=0, help="learner episode length (0: the rollouts' mean)")
    p.add_argument("--repeats", type=int, default=3, help="timed learner updates per learner")
    p.add_argument("--learner-threads", type=int, default=None,
                   help="torch intra-op threads of the learner (default: the cores, as run_ppo)")
    p.add_argument("--no-rollout", action="store_true", help="skip the rollout part")
    p.add_argument("--no-learner", action="store_true", help="skip the learner part")
    p.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON results")
    return p.parse_args(argv)


def bench_config(args: argparse.Namespace):
    """configs/tiny.yaml with a small world and the benchmark's RL settings (tracking off)."""
    from deepresearch.config import load_config

    return load_config(
        "configs/tiny.yaml",
        [
            "world.entities_per_type=12",
            "synthesis.n_deep_search=8",
            "synthesis.n_deep_research=8",
            f"agent.budget.max_turns={args.max_turns}",
            f"rl.max_new_tokens={args.max_new_tokens}",
            f"rl.episodes_per_step={args.batch}",
            f"rl.minibatch_size={args.minibatch}",
            f"rl.ppo_epochs={args.epochs}",
            "tracking.enabled=false",
        ],
    )


def build_policy(cfg, world_dir: Path, out: Path) -> Path:
    """A random tiny Qwen2 policy with a tokenizer trained on the world's documents (and the agent's
    system prompt, so tool-call framing tokenizes as in training); saved as an HF checkpoint."""
    from deepresearch.agent.loop import FORCE_ANSWER, NO_ACTION, make_tools, system_prompt
    from deepresearch.modeling.checkpoint import save_checkpoint
    from deepresearch.modeling.model import build_tiny_model
    from deepresearch.modeling.tokenizer import train_tokenizer
    from deepresearch.training.data import document_text, iter_documents

    corpus = [document_text(d) for d in iter_documents(world_dir)] + [
        system_prompt(make_tools()),
        FORCE_ANSWER,
        NO_ACTION,
    ] * 3
    tokenizer = train_tokenizer(corpus, cfg.model)
    return save_checkpoint(
        build_tiny_model(cfg.model, tokenizer), tokenizer, out, metadata={"stage": "bench"}
    )


def bench_rollouts(cfg, policy_dir: Path, world_dir: Path, n_workers: int, n_episodes: int) -> dict:
    """Episodes/s and sampled tokens/s of `collect` over `n_workers` actors (after one warm-up episode each)."""
    from deepresearch.rl.rollout import RolloutPool, collect
    from deepresearch.rl.train import rollout_worker_spec
    from deepresearch.synthesis.tasks import synthesize_deep_search, synthesize_research
    from deepresearch.world.schema import World

    world = World.load(world_dir)
    sc = cfg.synthesis
    ds = synthesize_deep_search(world, sc.n_deep_search, min_hops=sc.min_hops, max_hops=sc.max_hops, seed=5)
    dr = synthesize_research(world, sc.n_deep_research, seed=5)
    tasks = [t for pair in zip(ds, dr) for t in pair]
    timed = [tasks[i % len(tasks)] for i in range(n_episodes)]
    t0 = time.perf_counter()
    pool = RolloutPool(rollout_worker_spec(cfg, policy_dir, world_dir), n_workers)
    start_s = time.perf_counter() - t0
    try:
        collect(tasks[:n_workers], pool, seed="warmup")
        res = collect(timed, pool, seed="timed")
    finally:
        pool.shutdown()
    eps = res.episodes
    sampled = sum(e.num_actions for e in eps)
    return {
        "workers": n_workers,
        "episodes": len(eps),
        "seconds": round(res.seconds, 3),
        "episodes_per_s": round(len(eps) / res.seconds, 4),
        "sampled_tokens_per_s": round(sampled / res.seconds, 1),
        "mean_episode_tokens": round(statistics.mean(len(e.token_ids) for e in eps), 1),
        "mean_sampled_tokens": round(sampled / len(eps), 1),
        "policy_token_fraction": round(sampled / sum(len(e.token_ids) for e in eps), 4),
        "pool_start_s": round(start_s, 2),
        "reruns": res.reruns,
    }


def synthetic_batch(B: int, T: int, action_fraction: float, vocab: int, seed: int = 0):
    """An ExperienceBatch of B episodes × T tokens: the last `action_fraction` of each episode split into
    8 policy-token turns (as agent episodes interleave turns and observations), random everything else."""
    import torch

    from deepresearch.rl.buffer import ExperienceBatch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (B, T), generator=g)  # (B, T)
    mask = torch.zeros(B, T)  # (B, T)
    n_act = max(8, int(T * action_fraction))
    per_turn = max(1, n_act // 8)
    starts = torch.linspace(T // 4, T - per_turn, 8).long()
    for s in starts.tolist():
        mask[:, s : s + per_turn] = 1.0
    old_logp = -torch.rand(B, T, generator=g) * 3 * mask
    old_values = torch.randn(B, T, generator=g) * 0.1 * mask
    adv = torch.randn(B, T, generator=g) * mask
    return ExperienceBatch(
        input_ids=ids,
        attention_mask=torch.ones(B, T, dtype=torch.long),
        action_mask=mask,
        old_logp=old_logp,
        old_values=old_values,
        advantages=adv,
        returns=(adv + old_values) * mask,
        rewards=torch.zeros(B, T),
    )


def bench_learners(cfg, policy_dir: Path, batch, repeats: int) -> list[dict]:
    """Samples/s and tokens/s of PPO updates on `batch`, plain-torch and DeepSpeed learners.

    Each learner trains its own copy of the policy and critic. After one warm-up update each, the
    timed updates alternate between the two, so a change in the load of a shared machine hits both alike.
    """
    import torch

    from deepresearch.modeling.checkpoint import load_checkpoint
    from deepresearch.rl.learner import init_learner, ppo_update, torch_learner
    from deepresearch.rl.value import ValueModel

    rl = cfg.rl

    def models():
        policy, _ = load_checkpoint(policy_dir)
        return policy, ValueModel.from_policy(policy)

    learners = {
        "deepspeed": init_learner(*models(), rl, cfg.training.sft),
        "torch": torch_learner(*models(), rl, max_grad_norm=cfg.training.sft.grad_clip),
    }
    updates = {
        kind: (lambda learner=learner: ppo_update(learner, batch, rl, generator=torch.Generator().manual_seed(0)))
        for kind, learner in learners.items()
    }
    times: dict[str, list[float]] = {kind: [] for kind in updates}
    try:
        for update in updates.values():
            update()  # warm-up
        for _ in range(repeats):
            for kind, update in updates.items():
                t0 = time.perf_counter()
                update()
                times[kind].append(time.perf_counter() - t0)
    finally:
        for learner in learners.values():
            learner.close()
    B, T = batch.input_ids.shape
    out = []
    for kind, ts in times.items():
        s = statistics.median(ts)
        out.append(
            {
                "learner": kind,
                "batch": [B, T],
                "optimizer_steps_per_update": rl.ppo_epochs * -(-B // rl.minibatch_size),
                "update_s_median": round(s, 3),
                "update_s_all": [round(t, 3) for t in ts],
                "samples_per_s": round(B * rl.ppo_epochs / s, 4),
                "tokens_per_s": round(B * T * rl.ppo_epochs / s, 1),
            }
        )
    return out


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the results written to --out."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from deepresearch.io import atomic_write_text
    from deepresearch.world.build import build_world

    args = parse_args(argv)
    console = Console()
    cfg = bench_config(args)
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="ppo-bench-"))
    results: dict = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads_learner": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
            "loadavg_at_start": [round(x, 2) for x in load_before],
        },
        "config": {
            "max_new_tokens": args.max_new_tokens,
            "max_turns": args.max_turns,
            "episodes": args.episodes,
            "batch": args.batch,
            "minibatch": args.minibatch,
            "ppo_epochs": args.epochs,
            "model": {k: getattr(cfg.model, k) for k in ("hidden_size", "num_hidden_layers", "vocab_size")},
        },
        "rollout": [],
        "learner": [],
    }
    try:
        with console.status("building the world and a random tiny policy"):
            build_world(cfg, tmp / "world")
            policy_dir = build_policy(cfg, tmp / "world", tmp / "policy")
        T, frac = args.seq_len or 1800, 0.04
        if not args.no_rollout:
            from deepresearch.rl.rollout import ensure_ray

            ensure_ray()
            for n in [int(x) for x in args.workers.split(",")]:
                with console.status(f"rollouts over {n} actor(s)"):
                    r = bench_rollouts(cfg, policy_dir, tmp / "world", n, args.episodes)
                console.print(
                    f"rollout, {n} actor(s): {r['episodes_per_s']:.3f} episodes/s, "
                    f"{r['sampled_tokens_per_s']:.0f} sampled tokens/s"
                )
                results["rollout"].append(r)
            last = results["rollout"][-1]
            T = args.seq_len or int(last["mean_episode_tokens"])
            frac = last["policy_token_fraction"]
            import ray

            ray.shutdown()
        from transformers import AutoTokenizer

        vocab = len(AutoTokenizer.from_pretrained(str(policy_dir)))
        batch = synthetic_batch(args.batch, T, frac, vocab)
        if not args.no_learner:
            from deepresearch.training.distributed import cpu_threads_per_process

            torch.set_num_threads(args.learner_threads or cpu_threads_per_process())
            results["machine"]["torch_threads_learner"] = torch.get_num_threads()
            with console.status("learners: DeepSpeed and plain torch, alternating"):
                results["learner"] = bench_learners(cfg, policy_dir, batch, args.repeats)
        for r in results["learner"]:
            console.print(
                f"learner, {r['learner']}: {r['samples_per_s']:.3f} samples/s, {r['tokens_per_s']:.0f} tokens/s"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]

    table = Table(title="PPO throughput (tiny config)")
    for col in ("part", "setting", "samples/s", "tokens/s", "detail"):
        table.add_column(col)
    for r in results["rollout"]:
        table.add_row(
            "rollout",
            f"{r['workers']} Ray actor(s)",
            f"{r['episodes_per_s']:.3f} episodes/s",
            f"{r['sampled_tokens_per_s']:.0f} sampled",
            f"{r['episodes']} episodes in {r['seconds']:.1f} s, "
            f"{r['mean_episode_tokens']:.0f} tokens each; pool start {r['pool_start_s']:.1f} s",
        )
    for r in results["learner"]:
        B, T = r["batch"]
        table.add_row(
            "learner",
            r["learner"],
            f"{r['samples_per_s']:.3f}",
            f"{r['tokens_per_s']:.0f}",
            f"batch {B}×{T}, {r['optimizer_steps_per_update']} optimizer steps, "
            f"update {r['update_s_median']:.2f} s (median)",
        )
    console.print(table)
    console.print(
        f"load average at start {results['machine']['loadavg_at_start']}, "
        f"at end {results['machine']['loadavg_at_end']} ({os.cpu_count()} CPUs)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
