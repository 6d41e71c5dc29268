"""ImageSpec definitions per step family: data (CPU), train (CUDA + DeepSpeed), rollout (vLLM + Ray),
eval (judge and evaluation).

Every image installs exactly the versions pinned in `uv.lock` (`uv sync --locked`), copies the
project's files (all but what .gitignore excludes), and is tagged by ImageSpec's content hash — so a change in
dependencies, code or image definition gives a new tag, and an unchanged one is never rebuilt.

    make images                                  # build and push all four (needs Docker)
    DEEPRESEARCH_IMAGE_REGISTRY=ghcr.io/acme make images

Nothing here runs at import time beyond building the (cheap) spec objects; local Flyte executions
ignore images entirely.
"""

from __future__ import annotations

import os
from pathlib import Path

from flytekit import ImageSpec
from flytekit.constants import CopyFileDetection

ROOT = Path(__file__).resolve().parents[1]
REGISTRY_ENV = "DEEPRESEARCH_IMAGE_REGISTRY"
DEFAULT_REGISTRY = "localhost:30000"  # the flyte-sandbox / local registry
CUDA_BASE = "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04"
# The agent's shell tool needs tmux and bubblewrap wherever episodes run.
AGENT_APT = ["tmux", "bubblewrap", "git"]


def registry() -> str:
    return os.environ.get(REGISTRY_ENV, DEFAULT_REGISTRY)


def _spec(family: str, *, gpu: bool, extras: list[str] = (), apt: list[str] = ()) -> ImageSpec:
    return ImageSpec(
        name=f"deepresearch-{family}",
        registry=registry(),
        python_version="3.11",
        base_image=CUDA_BASE if gpu else None,
        requirements=str(ROOT / "uv.lock"),  # every version pinned by the lock
        pip_extra_args=" ".join(f"--extra {e}" for e in extras) or None,
        apt_packages=list(apt) or None,
        # The whole repository minus what .gitignore excludes goes to /root, and its digest is part of
        # the tag: any code change gives a new image version. (ALL, not flytekit's default of the
        # modules loaded at the time, so the tag does not depend on what the caller imported.)
        source_root=str(ROOT),
        source_copy_mode=CopyFileDetection.ALL,
        env={"PYTHONPATH": "/root", "GX_ANALYTICS_ENABLED": "false", "TOKENIZERS_PARALLELISM": "false"},
        platform="linux/amd64",
    )


def data_image() -> ImageSpec:
    """World building, synthesis (runs agent episodes with the sandboxed shell), quality gates."""
    return _spec("data", gpu=False, apt=AGENT_APT)


def train_image() -> ImageSpec:
    """Mid-training, SFT and judge training on DeepSpeed (CUDA, NCCL)."""
    return _spec("train", gpu=True, apt=["git", "build-essential"])


def rollout_image() -> ImageSpec:
    """PPO: Ray rollout actors with vLLM engines running the agent with its tools."""
    return _spec("rollout", gpu=True, extras=["gpu"], apt=AGENT_APT + ["build-essential"])


def eval_image() -> ImageSpec:
    """Judge inference and evaluation (reports, plots)."""
    return _spec("eval", gpu=True, apt=AGENT_APT)


DATA_IMAGE = data_image()
TRAIN_IMAGE = train_image()
ROLLOUT_IMAGE = rollout_image()
EVAL_IMAGE = eval_image()
IMAGES = {"data": DATA_IMAGE, "train": TRAIN_IMAGE, "rollout": ROLLOUT_IMAGE, "eval": EVAL_IMAGE}


def build_all() -> dict[str, str]:
    """Build and push every image with flytekit's ImageBuildEngine (skips tags that already exist)."""
    from flytekit.image_spec.image_spec import ImageBuildEngine

    out = {}
    for family, spec in IMAGES.items():
        ImageBuildEngine.build(spec)
        out[family] = spec.image_name()
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(build_all(), indent=2))
