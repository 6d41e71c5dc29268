"""Rollouts: Ray actors that play the agent in the real multi-tool environment under a budget.

    ensure_ray()                                       # local Ray, or the cluster at RAY_ADDRESS
    with RolloutPool(WorkerSpec(model_dir="out/sft", world_dir="out/world", cfg=cfg),
                     n_workers=cfg.rl.rollout_workers) as pool:
        result = collect(tasks, pool, seed=f"step{step}")
        result.episodes        # one Episode per task, in task order (tokens, action mask, log π_old)
        result.reruns          # episodes re-run because their worker died mid-batch
        push_weights(pool, policy.state_dict())        # after the PPO update (rl.weights)

Each `RolloutWorker` actor holds a generation engine (`cfg.rl.engine`), the tokenizer and the search
backend over the world. `collect` gives every actor its share of the step's episodes at once
(task i goes to actor i mod N, so each gets a mix of capabilities), and the actor plays them
concurrently: one thread per episode, each with its own `HFPolicy`, all sharing the engine through a
`BatchingEngine`, so their turns are decoded in batches while tools run in the other threads (as
evaluation does). Each episode is `agent.episode.play_episode` (the runner synthesis and evaluation use): every registered tool (`batch_web_surfer`,
`todo`, `file`, `shell`) in a fresh workspace, within `cfg.agent.budget`, sampling at
`rl.temperature`. Episodes carry the ground-truth success the synthesis stage would assign (exact
answer for deep search, rubric checks for research) as a metric; the training reward is the judge's
and is attached later by the learner.

If an actor dies (`RayActorError`: OOM kill, node loss, a crash in native code) the step still
completes: the actor is replaced by a new one with the current weights and its whole share is re-run
there with the same seeds, batched the same way — never dropped. The re-run episodes are counted.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, Union

from deepresearch.config import PipelineConfig
from deepresearch.errors import DeepResearchError
from deepresearch.generation.engine import EngineOptions

if TYPE_CHECKING:
    from deepresearch.rl.buffer import Episode
    from deepresearch.rl.weights import PublishedWeights
    from deepresearch.synthesis.schema import DeepSearchTask, ResearchTask

    Task = Union[DeepSearchTask, ResearchTask]


class RolloutError(DeepResearchError):
    """A rollout could not complete (an episode kept killing the workers running it)."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a rollout actor needs to build itself; picklable."""

    model_dir: str  # HF checkpoint directory (config, safetensors, tokenizer with chat template)
    world_dir: str  # a world built by `deepresearch world build` (documents + search index)
    cfg: PipelineConfig  # agent (budget, tools), search, rl (engine, temperature, max_new_tokens)
    engine_options: EngineOptions = EngineOptions()
    num_cpus: float = 0.5  # Ray resources per actor: small, so two actors fit on a 2-core machine
    num_gpus: float = 0.0
    torch_threads: int = 1  # intra-op threads per actor (also makes CPU sampling reproducible)


class RolloutWorker:
    """One rollout process: engine + tokenizer + search backend. Used as a Ray actor (see `RolloutPool`)."""

    def __init__(self, spec: WorkerSpec, worker_id: str, exit_on_episode: int | None = None):
        """
        Args:
            spec: model, world and config.
            worker_id: a name reported on every episode.
            exit_on_episode: fault injection for tests — the process exits (`os._exit(1)`, as on an
                OOM kill) when asked to run a batch containing its episode number `exit_on_episode`
                (0-based, counted over the actor's life).
        """
        import torch
        from transformers import AutoTokenizer

        from deepresearch.console import quiet
        from deepresearch.generation.engine import make_engine
        from deepresearch.search.backend import open_backend

        quiet()
        torch.set_num_threads(spec.torch_threads)
        self.spec = spec
        self.worker_id = worker_id
        self.version = 0
        self.episodes_run = 0
        self._exit_on_episode = exit_on_episode
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model_dir)
        self.engine = make_engine(spec.cfg.rl.engine, spec.model_dir, spec.engine_options)
        self.search = open_backend(spec.cfg.search, Path(spec.world_dir))
        if hasattr(self.search, "warmup"):
            self.search.warmup()

    def info(self) -> dict[str, Any]:
        """Who this actor is and which weights it holds."""
        return {"worker": self.worker_id, "pid": os.getpid(), "version": self.version, "episodes": self.episodes_run}

    def load_weights(self, weights: Any, version: int) -> int:
        """Load a state dict (resolved by Ray from the published reference) or a checkpoint path."""
        self.engine.load_weights(weights)
        self.version = version
        return version

    def run_many(self, tasks: Sequence["Task"], seeds: Sequence[str], attempt: int = 0) -> list["Episode"]:
        """Play one episode of each task concurrently, their turns decoded in shared batches.

        Args:
            tasks: this actor's share of the step.
            seeds: one per task (the episode's sampling seed).
            attempt: how many times these episodes were lost with an actor before (reported on them).
        Returns:
            The episodes as RL samples, in task order.
        Raises:
            The first error an episode raised, after every episode has finished.
        """
        from concurrent.futures import ThreadPoolExecutor

        from deepresearch.generation.batching import BatchingEngine

        if len(seeds) != len(tasks):
            raise ValueError(f"{len(tasks)} tasks but {len(seeds)} seeds")
        first = self.episodes_run
        if self._exit_on_episode is not None and first <= self._exit_on_episode < first + len(tasks):
            os._exit(1)
        self.episodes_run += len(tasks)
        if not tasks:
            return []
        batcher = BatchingEngine(self.engine, clients=len(tasks), slice_tokens=self.spec.cfg.rl.slice_tokens)

        def play(i: int) -> "Episode":
            with batcher.client():  # on exit, even by an error, batches stop waiting for this episode
                return self._play(tasks[i], seeds[i], batcher, attempt)

        with ThreadPoolExecutor(max_workers=len(tasks), thread_name_prefix=f"rollout-{self.worker_id}") as threads:
            futures = [threads.submit(play, i) for i in range(len(tasks))]
        return [f.result() for f in futures]

    def _play(self, task: "Task", seed: str, engine: Any, attempt: int) -> "Episode":
        """One episode of `task` with its own policy over `engine`, in a fresh workspace."""
        from deepresearch.agent.episode import play_episode
        from deepresearch.agent.policies.hf import HFPolicy
        from deepresearch.synthesis.run import grade

        cfg = self.spec.cfg
        policy = HFPolicy(self.tokenizer, engine, max_new_tokens=cfg.rl.max_new_tokens, temperature=cfg.rl.temperature)
        traj = play_episode(policy, task, cfg.agent, self.search, seed=seed, trajectory_id=f"{task.task_id}:{seed}")
        episode = policy.to_experience(grade(task, traj), weights_version=self.version, worker=self.worker_id)
        return replace(episode, attempt=attempt)


def ensure_ray(num_cpus: int | None = None) -> None:
    """Connect to Ray once: the cluster at $RAY_ADDRESS if set, else a local instance (no dashboard,
    worker logs not forwarded). An existing connection is reused.

    Locally, workers run this process's interpreter and installed packages. Ray's `uv run`
    integration would instead copy the repository and build a second virtual environment for the
    workers (tens of seconds, and a second copy of the code); it is turned off when Ray has not
    been imported yet (RAY_ENABLE_UV_RUN_RUNTIME_ENV=0, unless the caller set it).
    """
    import sys

    address = os.environ.get("RAY_ADDRESS")
    if not address and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        from deepresearch.console import quiet

        quiet()  # Ray's notices of a new local cluster: token authentication (its default), its start
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)


class RolloutPool:
    """N rollout actors, replaced when they die, all holding the same (versioned) weights."""

    def __init__(self, spec: WorkerSpec, n_workers: int, *, exit_on_episode: dict[int, int] | None = None):
        """
        Args:
            spec: what every actor is built from.
            n_workers: actors to start (`cfg.rl.rollout_workers`).
            exit_on_episode: fault injection for tests, {worker index: episode number at which that
                actor's process exits}. Replacement actors never inject faults.
        """
        import ray

        ensure_ray()
        self.spec = spec
        self.weights: "PublishedWeights | None" = None
        self.replaced: list[str] = []
        self._generation = [0] * n_workers  # replacements per slot, for worker ids
        faults = exit_on_episode or {}
        self.workers = [self._start(f"w{i}", faults.get(i)) for i in range(n_workers)]
        ray.get([w.info.remote() for w in self.workers])  # wait until every actor is built

    def _start(self, worker_id: str, exit_on_episode: int | None = None) -> Any:
        import ray

        actor_cls = ray.remote(RolloutWorker).options(
            num_cpus=self.spec.num_cpus, num_gpus=self.spec.num_gpus, max_restarts=0
        )
        return actor_cls.remote(self.spec, worker_id, exit_on_episode)

    @property
    def weights_version(self) -> int:
        return self.weights.version if self.weights is not None else 0

    def worker_ids(self) -> list[str]:
        import ray

        return [info["worker"] for info in ray.get([w.info.remote() for w in self.workers])]

    def replace(self, slot: int) -> None:
        """Start a new actor in `slot` (the old one is killed if still alive) with the current weights."""
        import ray

        old = self.workers[slot]
        try:
            ray.kill(old, no_restart=True)
        except Exception:  # noqa: BLE001 - it is usually dead already
            pass
        self._generation[slot] += 1
        worker_id = f"w{slot}.r{self._generation[slot]}"
        new = self._start(worker_id)
        if self.weights is not None:
            ray.get(new.load_weights.remote(self.weights.ref, self.weights.version))
        else:
            ray.get(new.info.remote())
        self.workers[slot] = new
        self.replaced.append(worker_id)

    def set_weights(self, weights: "PublishedWeights") -> int:
        """Make `weights` current on every actor (replacing any that die meanwhile); returns the version."""
        import ray
        from ray.exceptions import RayActorError

        self.weights = weights  # replacements started from now on load these
        refs = [w.load_weights.remote(weights.ref, weights.version) for w in self.workers]
        for slot, ref in enumerate(refs):
            try:
                ray.get(ref)
            except RayActorError:
                self.replace(slot)
        return weights.version

    def shutdown(self) -> None:
        """Kill every actor (Ray itself stays up for the caller)."""
        import ray

        for w in self.workers:
            try:
                ray.kill(w, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        self.workers = []

    def __enter__(self) -> "RolloutPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


@dataclass(frozen=True)
class RolloutResult:
    """What `collect` produced."""

    episodes: list["Episode"]  # one per task, in task order
    reruns: int  # episodes re-run because the worker running them died
    replaced_workers: list[str] = field(default_factory=list)  # ids of the actors started as replacements
    seconds: float = 0.0

    @property
    def weights_versions(self) -> set[int]:
        return {e.weights_version for e in self.episodes}


def collect(tasks: Sequence["Task"], pool: RolloutPool, *, seed: str = "0", max_reruns: int = 2) -> RolloutResult:
    """Run one episode per task, each actor playing its share concurrently (see the module docstring).

    Args:
        tasks: deep-search or research tasks.
        pool: the rollout actors; task i goes to actor i mod N.
        seed: episode seeds are f"{seed}:{task_id}:{index}"; a re-run reuses its episodes' seeds and
            batches them together again, so it reproduces what the dead actor would have produced.
        max_reruns: how many times one actor's share may be re-run before the rollout fails.
    Returns:
        RolloutResult with every task's episode, in task order, and the number of re-run episodes.
    Raises:
        RolloutError: one share killed `max_reruns + 1` actors in a row.
    """
    import ray
    from ray.exceptions import RayActorError

    start = time.perf_counter()
    n = len(pool.workers)
    shares = {slot: list(range(slot, len(tasks), n)) for slot in range(n)}  # task indices per actor

    def submit(slot: int, attempt: int) -> Any:
        idx = shares[slot]
        return pool.workers[slot].run_many.remote(
            [tasks[i] for i in idx], [f"{seed}:{tasks[i].task_id}:{i}" for i in idx], attempt
        )

    in_flight = {submit(slot, 0): (slot, 0) for slot in range(n) if shares[slot]}  # ref -> (slot, attempt)
    episodes: list[Any] = [None] * len(tasks)
    reruns = 0
    replaced_before = len(pool.replaced)
    while in_flight:
        done, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in done:
            slot, attempt = in_flight.pop(ref)
            try:
                for i, ep in zip(shares[slot], ray.get(ref)):
                    episodes[i] = ep
            except RayActorError as e:
                if attempt >= max_reruns:
                    lost = ", ".join(repr(tasks[i].task_id) for i in shares[slot])
                    raise RolloutError(
                        f"the episodes of tasks {lost} were lost {attempt + 1} times with their worker "
                        f"(last: {type(e).__name__}); giving up after {max_reruns} re-runs"
                    ) from e
                pool.replace(slot)
                reruns += len(shares[slot])
                in_flight[submit(slot, attempt + 1)] = (slot, attempt + 1)
    return RolloutResult(
        episodes=episodes,
        reruns=reruns,
        replaced_workers=pool.replaced[replaced_before:],
        seconds=time.perf_counter() - start,
    )
