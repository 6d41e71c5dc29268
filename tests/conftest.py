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


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A factory of real, minute Qwen2 checkpoints (a BPE tokenizer with the chat template, 1 layer, ~100 KB):
    `tiny_checkpoint(dst, stage="sft", words=(...), judge=False)` writes one to `dst` and returns it. The same
    `words` give the same vocabulary; `stage` goes into the metadata, so each directory has its own digest."""
    from deepresearch.config import ModelConfig

    cache = tmp_path_factory.mktemp("tiny-checkpoints")
    built: dict = {}
    mc = ModelConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=1)

    def make(dst, stage="sft", words=("alpha", "beta", "gamma"), judge=False):
        from deepresearch.modeling.checkpoint import save_checkpoint
        from deepresearch.modeling.model import build_tiny_model
        from deepresearch.modeling.tokenizer import train_tokenizer

        key = tuple(words)
        if key not in built:
            texts = [f"the {a} of {b} is {c}." for a in ("capital", "author") for b in words for c in words] * 4
            tok = train_tokenizer(texts, mc)
            built[key] = (tok, build_tiny_model(mc, tok))
        tok, model = built[key]
        if judge:
            from deepresearch.judge.model import judge_from_backbone

            base = save_checkpoint(model, tok, cache / f"backbone-{len(built)}-{stage}")
            save_checkpoint(judge_from_backbone(base, pad_token_id=tok.pad_token_id), tok, dst,
                            metadata={"stage": stage})
        else:
            save_checkpoint(model, tok, dst, metadata={"stage": stage})
        return dst

    return make
