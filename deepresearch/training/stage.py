"""One training stage end to end: data → model → the shared DeepSpeed loop → HF checkpoint.

    res = run_stage(cfg, "sft", init_model=Path("out/mid2"), data=Path("out/datasets"),
                    out=Path("out/runs/sft"), world=Path("out/world"), parent_run_id=parent)

Stages (the recipe's order): "mid1" (world documents and final reports as plain text, no tools),
"mid2" (whole tool-call trajectories at a longer context), "sft" (loss on assistant tokens only,
Deep Search : Deep Research mix from config), "judge" (a sequence classifier over (report, rubric
item) pairs, initialised from `init_model`'s backbone). Every rank calls it with the same arguments;
rank 0 alone tracks the MLflow child run (with its machine's system metrics) and writes the final
checkpoint, which it logs as the run's MLflow model (`tracking.models`: "text-generation", or
"text-classification" for the judge).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel

from deepresearch.config import PipelineConfig, TrainStageConfig
from deepresearch.errors import DeepResearchError
from deepresearch.io import dir_digest

LM_STAGES = ("mid1", "mid2", "sft")
RUN_FILE = "mlflow_run.json"  # in the run directory: the stage's MLflow run, continued on resume
UNLOGGED_FILE = "unlogged_tracking.jsonl"  # metrics/tags the store did not take by the stage's end
STAGES = (*LM_STAGES, "judge")


class StageRun(BaseModel):
    """What a training stage produced."""

    stage: str
    path: str  # the final Hugging Face checkpoint directory
    run_id: str
    steps: int
    final_loss: float
    first_loss: float
    tokens: int
    tokens_per_s: float
    seconds: float
    metrics: dict[str, float] = {}
    model_id: str = ""  # the checkpoint's MLflow LoggedModel ("" when tracking is off or could not log it)


def stage_config(cfg: PipelineConfig, stage: str) -> TrainStageConfig:
    if stage not in STAGES:
        raise DeepResearchError(f"unknown training stage {stage!r}; valid: {', '.join(STAGES)}")
    return cfg.judge.train if stage == "judge" else getattr(cfg.training, stage)


class _JudgeSteps:
    """Judge examples as a StepDataset: micro-batch `index` of a rank is a pure function of its position."""

    def __init__(self, encodings: list, pad_id: int, micro_batch_size: int, seed: int):
        import random

        self.enc, self.pad_id, self.mbs, self.seed = encodings, pad_id, micro_batch_size, seed
        self._orders: dict[int, list[int]] = {}
        self._random = random

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(len(self.enc)))
            self._random.Random(f"judge:{self.seed}:{epoch}").shuffle(order)
            self._orders[epoch] = order
        return self._orders[epoch]

    def batch_at(self, index: int, rank: int, world_size: int):
        from deepresearch.judge.model import collate_judge

        start = (index * world_size + rank) * self.mbs
        rows = []
        for pos in range(start, start + self.mbs):
            epoch, i = divmod(pos, len(self.enc))
            rows.append(self.enc[self._order(epoch)[i]])
        return collate_judge(rows, self.pad_id)


def _lm_dataset(cfg: PipelineConfig, stage: str, tokenizer, data: Path, world: Path | None, scfg: TrainStageConfig):
    from deepresearch.training import data as D

    if stage == "mid1":
        if world is None:
            raise DeepResearchError("stage mid1 trains on the world's documents: pass world=WORLD_DIR")
        from deepresearch.synthesis.split import entity_split
        from deepresearch.world.schema import World

        split = entity_split(World.load(world), fraction=cfg.synthesis.heldout_fraction, seed=cfg.synthesis.split_seed)
        samples = D.midtrain1_samples(world, data, tokenizer, ask_about=set(split.train))
    elif stage == "mid2":
        samples = D.midtrain2_samples(data, tokenizer, observation_loss=cfg.training.observation_loss("mid2"))
    else:
        samples = D.sft_samples(data, tokenizer, deep_search_ratio=cfg.training.sft_deep_search_ratio, seed=scfg.seed)
    # the capability datasets' configured shares, on top of the stage's own data (training/mixes.py)
    from deepresearch.training.mixes import capability_samples

    extra, counts = capability_samples(cfg, stage, data, tokenizer, n_base=len(samples), seed=scfg.seed)
    dataset = D.PackedDataset.from_samples(
        samples + extra, seq_len=scfg.seq_len, pad_id=tokenizer.pad_token_id, seed=scfg.seed,
        micro_batch_size=scfg.micro_batch_size, pack_documents=scfg.pack_documents,
    )
    dataset.mix_counts = {"base": len(samples), **counts}  # samples per source, logged as <stage>/mix/<source>
    # the datasets the mix draws rows from, each logged as a run input
    dataset.sources = [*D.own_datasets(stage, cfg.training.sft_deep_search_ratio),
                       *(name for name, k in counts.items() if k > 0)]
    return dataset


def log_inputs(run, stage: str, *, data: Path, init_model: Path, world: Path | None = None,
               sources: Sequence[str] = (), init_digest: str | None = None,
               world_digest: str | None = None) -> None:
    """What a training stage reads, as its MLflow run's inputs: each dataset its mix draws from (`sources`,
    of the quality-gated `data`; the judge's train and held-out pairs), each with its own digest, row
    count and schema; the world (mid1); and the checkpoint it starts from, a model input when a run logged
    it as a LoggedModel, else its files under its digest (a registry base model)."""
    from deepresearch.judge.data import JUDGE_FILES
    from deepresearch.tracking.datasets import log_files, log_parts, log_world

    if stage == "judge":
        log_files(run, data, JUDGE_FILES, context="input")
    else:
        log_parts(run, data, sources, context="input")
    if world is not None:
        log_world(run, world, digest=world_digest)
    run.log_model_input(init_model, name="init_model", digest=init_digest or dir_digest(init_model))


def run_stage(
    cfg: PipelineConfig,
    stage: str,
    *,
    init_model: Path,
    data: Path,
    out: Path,
    world: Path | None = None,
    parent_run_id: str = "",
    execution_id: str = "local",
    progress: bool = True,
) -> StageRun:
    """Train `stage` from the checkpoint `init_model` on `data`; returns where the HF checkpoint is.

    Args:
        init_model: HF checkpoint directory to start from (the base model for mid1).
        data: the quality-gated datasets (LM stages) or a judge dataset directory (judge).
        out: run directory (checkpoints/ for resume, hf/ for the result, mlflow_run.json for the
            stage's MLflow run); a rerun resumes from it, continuing the same run.
        world: the world directory (needed by mid1).
    """
    from deepresearch.modeling.checkpoint import load_checkpoint, save_checkpoint
    from deepresearch.tracking import (
        BufferedTracker,
        NoopTracker,
        log_trained_model,
        output_tags,
        preflight,
        stage_params,
        stage_run,
    )
    from deepresearch.training.distributed import cpu_threads_per_process, init_distributed, on_gpu
    from deepresearch.training.loop import train

    scfg = stage_config(cfg, stage)
    preflight(cfg)  # seconds, before loading models and data, not minutes of MLflow retries after
    env = init_distributed()
    if not on_gpu():
        import torch

        torch.set_num_threads(cpu_threads_per_process())  # not an OMP_NUM_THREADS=1 left by an earlier launch
    t0 = time.perf_counter()
    out = Path(out)

    if stage == "judge":
        from deepresearch.judge.data import read_examples
        from deepresearch.judge.model import encode_judge_example, judge_from_backbone, judge_loss_fn

        _, tokenizer = load_checkpoint(init_model)
        model = judge_from_backbone(init_model, pad_token_id=tokenizer.pad_token_id, seed=scfg.seed)
        train_ex = read_examples(Path(data) / "train.jsonl")
        reads = {"evidence_lines": cfg.judge.evidence_lines, "mark_matches": cfg.judge.mark_matches}
        enc = [encode_judge_example(tokenizer, ex, cfg.judge.max_len, **reads) for ex in train_ex]
        dataset: Any = _JudgeSteps(enc, tokenizer.pad_token_id, scfg.micro_batch_size, scfg.seed)
        loss_fn = judge_loss_fn
    else:
        model, tokenizer = load_checkpoint(init_model)
        dataset = _lm_dataset(cfg, stage, tokenizer, Path(data), world, scfg)
        loss_fn = None

    # what the model card states: filled in on rank 0 (the rank that saves) once the run and inputs are known
    card = {"stage": stage, "config_hash": cfg.hash, "steps": scfg.max_steps}

    def save(m, directory: Path) -> None:
        if stage == "judge":
            from deepresearch.judge.model import Judge

            Judge(m, tokenizer, max_len=cfg.judge.max_len, evidence_lines=cfg.judge.evidence_lines,
                  mark_matches=cfg.judge.mark_matches).save(directory, metadata=card)
        else:
            save_checkpoint(m, tokenizer, directory, metadata=card, card=True)

    ctx = (
        # the run id is kept in the run directory, so a resumed stage continues the killed attempt's run
        stage_run(cfg, parent_run_id, stage, flyte_execution_id=execution_id, resume_file=out / RUN_FILE,
                  system_metrics=True)
        if env.rank == 0
        else contextlib.nullcontext(NoopTracker())
    )
    with ctx as run, BufferedTracker(run, spill=out / UNLOGGED_FILE) as tracked:
        if env.rank == 0:
            digests = {f"{stage}_data": dir_digest(Path(data)), "init_model": dir_digest(Path(init_model))}
            if world is not None:
                digests["world"] = dir_digest(Path(world))
            card.update(data=digests, **({"mlflow_run_id": run.run_id} if getattr(run, "run_id", None) else {}))
            log_inputs(run, stage, data=Path(data), init_model=Path(init_model), world=world,
                       sources=getattr(dataset, "sources", []), init_digest=digests["init_model"],
                       world_digest=digests.get("world"))
            if getattr(dataset, "mix_counts", None):
                tracked.log_metrics({f"{stage}/mix/{k}": v for k, v in dataset.mix_counts.items()})
        kwargs = {"loss_fn": loss_fn} if loss_fn is not None else {}
        # metrics and tags go through a buffer: a tracking outage during training is retried in the
        # background, never a stall or the reason the stage dies
        result = train(model, dataset, scfg, out, tracker=tracked if env.rank == 0 else None, stage=stage,
                       save_fn=save, progress=progress and env.rank == 0, **kwargs)
        metrics, model_id = {}, None
        if env.rank == 0:
            digest = dir_digest(result.hf_dir)
            model_id = log_trained_model(run, result.hf_dir, stage=stage, digest=digest,
                                         params=stage_params(cfg, stage))
            if stage == "judge":
                metrics = _evaluate_judge(cfg, result.hf_dir, Path(data), tracked, model_id=model_id)
            tracked.log_metrics({f"{stage}/first_loss": result.losses[0], f"{stage}/final_loss": result.final_loss,
                                 f"{stage}/tokens_per_s": result.tokens_per_s}, model_id=model_id)
            tracked.set_tags({**output_tags(result.hf_dir), "model.digest": digest})
        return StageRun(
            stage=stage, path=str(result.hf_dir), run_id=getattr(run, "run_id", None) or "", steps=result.steps,
            final_loss=result.final_loss, first_loss=result.losses[0], tokens=result.tokens,
            tokens_per_s=result.tokens_per_s, seconds=time.perf_counter() - t0, metrics=metrics,
            model_id=model_id or "",
        )


def _evaluate_judge(cfg: PipelineConfig, hf_dir: Path, data: Path, run, *, model_id: str | None = None) -> dict[str, float]:
    """Macro-F1 and the per-class confusion of the trained judge on the held-out pairs."""
    from deepresearch.judge.data import read_examples
    from deepresearch.judge.model import Judge, confusion, macro_f1

    judge = Judge.load(hf_dir)
    held = read_examples(Path(data) / "heldout.jsonl")
    pred = judge.label_pairs([(ex.report, ex.criterion) for ex in held])
    truth = [ex.label for ex in held]
    f1 = macro_f1(truth, pred)
    conf = confusion(truth, pred)
    run.log_dict({"labels": ["satisfied", "partially", "not"], "confusion": conf}, "judge_confusion.json")
    accuracy = sum(a == b for a, b in zip(truth, pred)) / max(1, len(truth))
    metrics = {"judge/heldout_macro_f1": f1, "judge/heldout_accuracy": accuracy, "judge/heldout_pairs": len(held)}
    run.log_metrics(metrics, model_id=model_id)
    return metrics

