"""Shared fixtures: tiny worlds and configs built from the project's own generator (no downloads).

The expensive ones are built once per session and read by every module that needs them:
`gated_data` (world → synthesis → quality as tracked stages), `trained_chain` (base → mid1 → mid2 → SFT
on it) and `trained_judge` (the judge from that SFT). Each writes its own MLflow store; a test that adds
runs or registers versions works on a copy (`copy_store`), so the shared stores never change after they
are built and no test depends on another's order.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    # checkpoints evaluated one after another in the test's process: spawning a process per checkpoint
    # costs ~10 s of imports, more than these evaluations take (tests/test_evaluation.py covers the processes)
    "evaluation.checkpoint_processes=1",
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


# The training chain's overrides, shared by every module that trains it: two steps of each stage in one
# process on short rows (wiring, not learning: the README's learning table does that).
CHAIN = [
    *(f"training.{s}.{k}" for s in ("mid1", "mid2", "sft")
      for k in ("max_steps=2", "nproc_per_node=1", "seq_len=256")),
    "judge.train.max_steps=2",
    "judge.train.nproc_per_node=1",
    "judge.max_len=256",  # criterion, evidence lines and the report's tail; 128 also fits, 256 reads more
]


def tiny_config(*overrides: str):
    """configs/tiny.yaml with SMALL and then `overrides` applied."""
    from deepresearch.config import load_config

    return load_config("configs/tiny.yaml", [*SMALL, *overrides])


def copy_store(db: Path, dst_dir: Path) -> str:
    """A tracking store of one's own that starts as a copy of the SQLite store `db` (its runs, tags,
    datasets, logged models); returns its URI. What the copy logs goes beside it, not into the artifact
    folder of the original, so the original is left exactly as it was."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / "mlflow.db"
    with closing(sqlite3.connect(db)) as src, closing(sqlite3.connect(dst)) as out:
        src.backup(out)
        # new runs' artifacts under dst_dir; the copied runs keep theirs, which nothing here rewrites
        out.execute("UPDATE experiments SET artifact_location = ?", ((dst_dir / "mlartifacts").as_uri(),))
        out.commit()
    return f"sqlite:///{dst}"


@dataclass(frozen=True)
class GatedData:
    """world → synthesis → quality, each a tracked stage under one parent run in the store `db`."""

    cfg: Any  # PipelineConfig: SMALL, tracked into `db`
    root: Path
    world: Path
    raw: Path
    datasets: Path  # the quality-gated layout the training stages read
    db: Path  # never written after the fixture: copy it (`copy_store`) to add runs
    parent: str  # the parent run of the three stages
    runs: dict  # stage name → deepresearch.stages.StageResult

    def own_config(self, dst_dir: Path, *overrides: str):
        """The data config plus `overrides`, tracked into a copy of the data store under `dst_dir`."""
        return tiny_config(*overrides, f"tracking.uri={copy_store(self.db, dst_dir)}",
                           f"tracking.experiment={self.cfg.tracking.experiment}")


@pytest.fixture(scope="session")
def gated_data(tmp_path_factory) -> GatedData:
    """The data half on a SMALL world, once per session: the datasets every training test reads, and the
    store the lineage tests trace back through."""
    from deepresearch.stages import quality_stage, synthesis_stage, world_stage
    from deepresearch.tracking import finish_run, start_parent_run

    root = tmp_path_factory.mktemp("gated")
    cfg = tiny_config(f"tracking.uri=sqlite:///{root}/mlflow.db", "tracking.experiment=tests")
    parent = start_parent_run(cfg, "data")
    runs = {"world": world_stage(cfg, root / "world", parent)}
    runs["synthesis"] = synthesis_stage(cfg, root / "world", root / "raw", parent)
    runs["quality"] = quality_stage(cfg, root / "raw", root / "datasets", parent)
    finish_run(cfg, parent)
    return GatedData(cfg=cfg, root=root, world=root / "world", raw=root / "raw", datasets=root / "datasets",
                     db=root / "mlflow.db", parent=parent, runs=runs)


@pytest.fixture(scope="session")
def data_dirs(gated_data) -> tuple[Path, Path]:
    """(world_dir, datasets_dir): the shared world and its quality-gated datasets."""
    return gated_data.world, gated_data.datasets


@dataclass(frozen=True)
class TrainedChain:
    """base → mid1 → mid2 → SFT from `gated_data`, tracked into a copy of its store (so lineage reaches the
    data stages)."""

    cfg: Any  # PipelineConfig: SMALL + CHAIN, tracked into `db`
    root: Path
    world: Path
    datasets: Path
    db: Path  # written only by this fixture and `trained_judge`: copy it (`own_config`) to add runs
    parent: str  # the parent run of the training stages (and the judge's)
    base: dict  # build_base's facts (vocab_size, ...)
    runs: dict  # stage → deepresearch.training.stage.StageRun

    def own_config(self, dst_dir: Path, *overrides: str):
        """The chain's config plus `overrides`, tracked into a copy of the chain's store under `dst_dir`:
        for a test that logs runs or registers versions of its own."""
        return tiny_config(*CHAIN, *overrides, f"tracking.uri={copy_store(self.db, dst_dir)}",
                           f"tracking.experiment={self.cfg.tracking.experiment}")


@pytest.fixture(scope="session")
def trained_chain(tmp_path_factory, gated_data) -> TrainedChain:
    """The training half up to SFT on the session's gated data, once per session (minutes on 2 cores)."""
    from deepresearch.modeling.base import build_base
    from deepresearch.tracking import start_parent_run
    from deepresearch.training.stage import run_stage

    root = tmp_path_factory.mktemp("chain")
    cfg = gated_data.own_config(root, *CHAIN)  # the data stages' runs in its store: lineage reaches them
    parent = start_parent_run(cfg, "chain")
    base = build_base(cfg, gated_data.world, gated_data.datasets, root / "base")
    runs, prev = {}, root / "base"
    for stage in ("mid1", "mid2", "sft"):
        runs[stage] = run_stage(cfg, stage, init_model=prev, data=gated_data.datasets, out=root / stage,
                                world=gated_data.world, parent_run_id=parent, progress=False)
        prev = Path(runs[stage].path)
    return TrainedChain(cfg=cfg, root=root, world=gated_data.world, datasets=gated_data.datasets,
                        db=root / "mlflow.db", parent=parent, base=base, runs=runs)


@dataclass(frozen=True)
class TrainedJudge:
    """The rubric judge trained from the chain's SFT checkpoint on a 3-task judge dataset."""

    data: Path  # train.jsonl, heldout.jsonl
    manifest: dict  # build_judge_dataset's manifest
    run: Any  # deepresearch.training.stage.StageRun


@pytest.fixture(scope="session")
def trained_judge(trained_chain) -> TrainedJudge:
    """The judge stage from the chain's SFT checkpoint, once per session; its run is in the chain's store."""
    from deepresearch.judge.data import build_judge_dataset
    from deepresearch.training.stage import run_stage

    root, cfg = trained_chain.root, trained_chain.cfg
    manifest = build_judge_dataset(cfg, trained_chain.world, root / "judge_data", n_tasks=3)
    run = run_stage(cfg, "judge", init_model=trained_chain.runs["sft"].path, data=root / "judge_data",
                    out=root / "judge", parent_run_id=trained_chain.parent, progress=False)
    return TrainedJudge(data=root / "judge_data", manifest=manifest, run=run)
