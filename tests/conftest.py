"""Shared fixtures: tiny worlds and configs built from the project's own generator (no downloads)."""

import os
import shutil

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def _have_sandbox() -> bool:
    return shutil.which("tmux") is not None and shutil.which("bwrap") is not None


requires_sandbox = pytest.mark.skipif(not _have_sandbox(), reason="tmux and bubblewrap are needed (make system-deps)")

# Small enough for seconds, big enough for every code path (conflicts, multi-hop chains).
SMALL = [
    "world.entities_per_type=12",
    "synthesis.n_deep_search=6",
    "synthesis.n_deep_research=4",
    "judge.n_tasks=4",  # the tiny config's 120 need the full-size world
    "quality.expectations.min_rows=2",
    # the capability datasets: a few each (every code path, seconds)
    "capabilities.planning.n=3",
    "capabilities.deep_search_subgraph.n=3",
    "capabilities.wiki_walk.n=3",
    "capabilities.verification.n=3",
    "capabilities.query_report.n=6",
    "capabilities.url_qa.n=3",
    "capabilities.long_summary.n=3",
    # where the machine cannot confine the shell's sandbox as a whole (not root), run it with per-process
    # limits instead of refusing: these tests are about the pipeline; tests/test_sandbox.py covers refusal
    "agent.shell.allow_weak_limits=true",
]


@pytest.fixture(scope="session")
def small_cfg():
    from deepresearch.config import load_config

    return load_config("configs/tiny.yaml", SMALL + ["tracking.enabled=false"])


@pytest.fixture(scope="session")
def small_world_dir(tmp_path_factory, small_cfg):
    """A tiny world with its search index, built once per test session."""
    from deepresearch.world.build import build_world

    out = tmp_path_factory.mktemp("world") / "world"
    build_world(small_cfg, out)
    return out
