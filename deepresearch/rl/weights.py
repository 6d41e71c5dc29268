"""Weight sync from the learner to the rollout actors.

    version = push_weights(pool, policy.state_dict())     # after each PPO update
    # every episode collected afterwards reports `weights_version == version`

The state dict is copied to CPU and put in Ray's object store once (`ray.put`); each actor gets
the same object reference and loads it into its engine, so N actors cost one serialization, not N.
The pool keeps the reference of the current weights so a replacement actor (after a crash) starts
from them too. Versions count up from 0 (the checkpoint the actors were built from).

At cluster scale with vLLM on GPUs the same interface would broadcast over NCCL instead of the
object store; the version bookkeeping stays the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    import torch

    from deepresearch.rl.rollout import RolloutPool


@dataclass(frozen=True)
class PublishedWeights:
    """Weights in Ray's object store, with the version the actors will report."""

    version: int
    ref: Any  # ray.ObjectRef of a dict[str, torch.Tensor] on CPU
    num_tensors: int
    num_bytes: int


def cpu_state_dict(state_dict: Mapping[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """Detached, contiguous CPU copies (a DeepSpeed/DDP `module.` prefix is stripped)."""
    out = {}
    for name, tensor in state_dict.items():
        key = name[len("module."):] if name.startswith("module.") else name
        out[key] = tensor.detach().to("cpu").contiguous()
    return out


def publish_weights(state_dict: Mapping[str, "torch.Tensor"], version: int) -> PublishedWeights:
    """Put a state dict in the object store once; returns its reference and version."""
    import ray

    cpu = cpu_state_dict(state_dict)
    return PublishedWeights(
        version=version,
        ref=ray.put(cpu),
        num_tensors=len(cpu),
        num_bytes=sum(t.numel() * t.element_size() for t in cpu.values()),
    )


def load_into_workers(workers: Sequence[Any], weights: PublishedWeights) -> list[int]:
    """Have each actor load `weights`; returns the version each one reports (raises if any actor dies)."""
    import ray

    return list(ray.get([w.load_weights.remote(weights.ref, weights.version) for w in workers]))


def push_weights(pool: "RolloutPool", state_dict: Mapping[str, "torch.Tensor"], *, version: int | None = None) -> int:
    """Publish new policy weights to every rollout actor of `pool`.

    Args:
        pool: the rollout workers.
        state_dict: the policy's parameters with HF names (e.g. `model.state_dict()`).
        version: default: the pool's current version + 1.
    Returns:
        The version every actor now reports. An actor that dies while loading is replaced; the
        replacement loads the same weights.
    """
    return pool.set_weights(publish_weights(state_dict, pool.weights_version + 1 if version is None else version))
