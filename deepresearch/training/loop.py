"""The one training loop of every stage (mid-training 1/2, SFT, judge): setup → train → save → cleanup.

    result = train(model, dataset, cfg.training.sft, Path("out/sft"), tracker=run, stage="sft")
    result.hf_dir        # out/sft/hf: the trained model as a Hugging Face directory (rank 0 writes it)

What one optimizer step does (G = grad_accum_steps micro-batches on each of W ranks):
1. lr = `schedule.lr_at(step)`, set on the optimizer (no DeepSpeed scheduler).
2. Fetch the step's G micro-batches: `dataset.batch_at(index, rank, world_size)` with
   index = data_position + m, data_position = step * G. Batches are a pure function of
   (index, rank, world_size), so the data order survives a restart.
3. Count the step's loss targets on every rank up front (`count_fn`) and all-reduce: N.
4. For each micro-batch: (loss_sum, n) = `loss_fn(engine, batch)`; backward of loss_sum * W * G / N.
   DeepSpeed divides by G (accumulation) and averages over W (data parallel), so the gradient is
   exactly that of Σ loss_sum / N, the mean over every target token of the step, however the tokens
   fall into micro-batches and ranks. Clipping then sees the true gradient norm.
5. Every `save_every` steps and at the last one: a DeepSpeed checkpoint in
   out_dir/checkpoints/step_N with client state {step, data_position, losses, rng states, ...};
   then the `latest` pointer is replaced atomically (temp file + rename), so a kill during a save
   leaves `latest` on the previous, complete checkpoint.

`resume=True` continues from `latest`: same weights, optimizer state, RNG, data position and loss
history, so the run ends exactly as an uninterrupted one would (no step repeated or skipped).

Batches are the caller's types. The default loss is the causal LM loss over PackedBatch
(labels aligned with input_ids, HF convention: the logits at t predict labels[t + 1]; -100 = no loss;
a target in another segment than its context is never predicted). A custom
`loss_fn(model, batch) -> (loss_sum, n)` (e.g. the judge's sequence classification) reuses the loop;
`count_fn(batch)` must then give the same n from the batch alone (checked at every micro-step);
the default `count_targets` covers both (B, T) LM labels and (B,) class labels.

Only rank 0 logs metrics, shows progress and writes the HF directory; every rank writes its own
ZeRO shard of each checkpoint. The process group outlives `train` (DeepSpeed keeps it per process).
"""

from __future__ import annotations

import gc
import json
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from deepresearch.config import TrainStageConfig
from deepresearch.io import atomic_dir, atomic_write_text
from deepresearch.training.distributed import TrainingError, barrier
from deepresearch.training.engine import init_engine, set_lr
from deepresearch.training.schedule import lr_at

if TYPE_CHECKING:
    import torch
    from deepspeed import DeepSpeedEngine

    from deepresearch.tracking import Tracker

IGNORE_INDEX = -100
CHECKPOINTS = "checkpoints"
LATEST = "latest"
HF_DIR = "hf"


# ---- the interfaces the loop trains against ------------------------------------------------------
class TrainBatch(Protocol):
    """What the loop reads from a batch itself (the loss function reads the rest)."""

    input_ids: torch.Tensor  # (B, T) token ids; B*T counts as processed tokens
    labels: torch.Tensor  # (B, T) causal-LM targets with -100 = no loss, or (B,) class ids (< 0 = none)

    def to(self, device: Any) -> TrainBatch:
        """The same batch with every tensor on `device`."""
        ...


class StepDataset(Protocol):
    """Micro-batches as a pure function of their position, so the data order survives restarts."""

    def batch_at(self, index: int, rank: int, world_size: int) -> TrainBatch:
        """The micro-batch `index` (0, 1, 2, ... over the whole run) of `rank` out of `world_size`."""
        ...


LossFn = Callable[
    [Any, Any], "tuple[torch.Tensor, int]"
]  # (model, batch) -> (loss_sum fp32 scalar, n targets)
CountFn = Callable[[Any], int]  # batch -> n targets, without a forward pass
SaveFn = Callable[[Any, Path], Any]  # (model with full weights, directory) -> anything


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced. Loss history and tokens cover the whole run, resumed or not."""

    stage: str
    steps: int  # optimizer steps of the whole run (== cfg.max_steps)
    resumed_from: int  # the step the run went on from (0: a fresh start)
    final_loss: float  # mean token loss of the last step
    losses: tuple[float, ...]  # (steps,) mean token loss of each step
    grad_norms: tuple[float, ...]  # (steps,) gradient norm before clipping
    tokens: int  # input tokens processed over all ranks and steps
    seconds: float  # wall time of this invocation (setup and saving included)
    tokens_per_s: float  # tokens of this invocation / its training time
    out_dir: Path
    hf_dir: Path  # the final model (Hugging Face directory)


# ---- losses --------------------------------------------------------------------------------------
def lm_target_mask(batch: TrainBatch) -> torch.Tensor:
    """Which next-token targets count: (B, T-1) bool, True where labels[:, 1:] is a target.

    A target also needs to be in the same segment as the token before it (`segment_ids`, when the
    batch has them): packed documents never predict each other's first token.
    """
    mask = batch.labels[:, 1:] != IGNORE_INDEX  # (B, T-1)
    segment_ids = getattr(batch, "segment_ids", None)
    if segment_ids is not None:
        mask = mask & (segment_ids[:, 1:] == segment_ids[:, :-1])
    return mask


def count_targets(batch: TrainBatch) -> int:
    """Loss targets of a batch: next-token targets for (B, T) labels, class ids >= 0 for (B,) labels."""
    if batch.labels.dim() == 1:  # sequence classification (the judge): one label per row, negative = none
        return int((batch.labels >= 0).sum())
    return int(lm_target_mask(batch).sum())


def lm_loss_sum(logits: torch.Tensor, batch: TrainBatch) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the targets of `lm_target_mask`.

    Args:
        logits: (B, T, V) from a forward pass over batch.input_ids.
        batch: labels (B, T) aligned with input_ids (optionally segment_ids (B, T)).
    Returns:
        (loss_sum: fp32 scalar, n: number of targets).
    """
    import torch.nn.functional as F

    mask = lm_target_mask(batch)  # (B, T-1)
    picked = logits[:, :-1][mask].float()  # (N, V): only target positions are upcast
    targets = batch.labels[:, 1:][mask]  # (N,)
    return F.cross_entropy(picked, targets, reduction="sum"), int(mask.sum())


def causal_lm_loss(model: Any, batch: Any) -> tuple[torch.Tensor, int]:
    """The default loss: causal LM over a PackedBatch, forward with the block-diagonal packed mask."""
    from deepresearch.training.packing import forward_packed

    return lm_loss_sum(forward_packed(model, batch), batch)


# ---- saving --------------------------------------------------------------------------------------
def save_pretrained_atomic(model: Any, path: Path) -> Path:
    """The default `save_fn`: `model.save_pretrained` (safetensors) into a temp dir that replaces `path`."""
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp)
    return path


def _step_tag(step: int) -> str:
    return f"step_{step}"


def read_latest(out_dir: Path) -> str | None:
    """The tag of the latest complete checkpoint under out_dir/checkpoints (None: there is none)."""
    p = Path(out_dir) / CHECKPOINTS / LATEST
    return p.read_text().strip() if p.is_file() else None


# ---- the run -------------------------------------------------------------------------------------
@dataclass
class _State:
    """What a checkpoint carries besides weights and optimizer (mutable inside one run only)."""

    step: int = 0  # optimizer steps done
    data_position: int = 0  # index of the next micro-batch
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    tokens: int = 0


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _layout(cfg: TrainStageConfig, world_size: int) -> dict[str, int]:
    """What must not change between a checkpoint and its resumption for the data order to hold."""
    return {
        "world_size": world_size,
        "micro_batch_size": cfg.micro_batch_size,
        "grad_accum_steps": cfg.grad_accum_steps,
    }


def _all_gather_objects(obj: Any, world_size: int) -> list[Any]:
    import torch.distributed as dist

    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


def _save_checkpoint(engine: DeepSpeedEngine, state: _State, cfg: TrainStageConfig, out_dir: Path) -> None:
    """A DeepSpeed checkpoint of step `state.step` on every rank, then (rank 0) the `latest` pointer."""
    import torch.distributed as dist

    ckpt_root = out_dir / CHECKPOINTS
    world_size = dist.get_world_size()
    tag_dir = ckpt_root / _step_tag(state.step)
    if dist.get_rank() == 0 and tag_dir.exists() and read_latest(out_dir) != tag_dir.name:
        shutil.rmtree(tag_dir)  # left by a save that was cut short: never mix its files with this one
    barrier()
    rngs = _all_gather_objects(
        _rng_state(), world_size
    )  # rank 0 writes the client state: it holds every rank's
    client_state = {
        "step": state.step,
        "data_position": state.data_position,
        "losses": list(state.losses),
        "grad_norms": list(state.grad_norms),
        "tokens": state.tokens,
        "layout": _layout(cfg, world_size),
        "rng": rngs,
    }
    engine.save_checkpoint(
        str(ckpt_root), tag=_step_tag(state.step), client_state=client_state, save_latest=False
    )
    barrier()  # every rank's shard is on disk before `latest` moves
    if dist.get_rank() == 0:
        atomic_write_text(ckpt_root / LATEST, _step_tag(state.step), fsync=True)
    barrier()


def _prune_checkpoints(out_dir: Path, keep: int) -> None:
    """Rank 0: delete all but the newest `keep` step_N directories (never the one `latest` names)."""
    ckpt_root = out_dir / CHECKPOINTS
    latest = read_latest(out_dir)
    steps = sorted(
        (int(p.name.split("_", 1)[1]), p)
        for p in ckpt_root.glob("step_*")
        if p.is_dir() and p.name.split("_", 1)[1].isdigit()
    )
    for _, p in steps[:-keep] if keep > 0 else []:
        if p.name != latest:
            shutil.rmtree(p, ignore_errors=True)


def _load_checkpoint(
    engine: DeepSpeedEngine, cfg: TrainStageConfig, out_dir: Path, world_size: int, rank: int
) -> _State:
    """Restore weights, optimizer, RNG and loop state from `latest`; a fresh _State when there is none."""
    tag = read_latest(out_dir)
    if tag is None:
        return _State()
    ckpt_root = out_dir / CHECKPOINTS
    if not (ckpt_root / tag).is_dir():
        raise TrainingError(
            f"{ckpt_root / LATEST} names checkpoint {tag!r} but {ckpt_root / tag} does not exist "
            "(delete the pointer to start over, or restore the directory)"
        )
    load_path, client = engine.load_checkpoint(str(ckpt_root), tag=tag, load_lr_scheduler_states=False)
    if load_path is None or client is None:
        raise TrainingError(f"DeepSpeed could not load checkpoint {ckpt_root / tag} (see the log above)")
    want = _layout(cfg, world_size)
    if client.get("layout") != want:
        raise TrainingError(
            f"checkpoint {ckpt_root / tag} was written with {client.get('layout')}, this run has {want}: the data "
            "order would change. Resume with the same layout, or train with resume=False into a new out_dir"
        )
    _set_rng_state(client["rng"][rank])
    return _State(
        step=int(client["step"]),
        data_position=int(client["data_position"]),
        losses=[float(x) for x in client["losses"]],
        grad_norms=[float(x) for x in client["grad_norms"]],
        tokens=int(client["tokens"]),
    )


def _save_final(
    engine: DeepSpeedEngine, cfg: TrainStageConfig, path: Path, save_fn: SaveFn, rank: int
) -> None:
    """Rank 0 writes the model through `save_fn`; under ZeRO-3 every rank first gathers the full weights."""
    import deepspeed

    barrier()
    module = engine.module
    if cfg.zero_stage == 3:
        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            if rank == 0:
                save_fn(module, path)
    elif rank == 0:
        save_fn(module, path)
    barrier()


def _progress(enabled: bool, stage: str, total: int, start: int):
    """A live bar on a terminal; on a log (a pipe, a Flyte task's output) a plain line every tenth of the run."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if enabled and not Console().is_terminal:
        return _LogProgress(stage, total, start), None
    progress = Progress(
        TextColumn(f"[bold]{stage}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
        disable=not enabled,
    )
    task = progress.add_task(stage, total=total, completed=start, loss="-")
    return progress, task


class _LogProgress:
    """`rich.progress.Progress`'s part the loop uses, printing `stage: step i/n, loss x, s elapsed` lines."""

    def __init__(self, stage: str, total: int, start: int = 0):
        self.stage, self.total, self.every = stage, total, max(1, total // 10)
        self.step, self.t0 = start, time.perf_counter()

    def __enter__(self) -> "_LogProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, task: Any, advance: int = 1, loss: str = "-") -> None:
        self.step += advance
        if self.step % self.every == 0 or self.step == self.total:
            print(f"{self.stage}: step {self.step}/{self.total}, loss {loss}, {time.perf_counter() - self.t0:.0f} s",
                  flush=True)


def train(
    model: torch.nn.Module,
    dataset: StepDataset,
    cfg: TrainStageConfig,
    out_dir: Path,
    *,
    loss_fn: LossFn = causal_lm_loss,
    count_fn: CountFn = count_targets,
    tracker: Tracker | None = None,
    resume: bool = True,
    stage: str = "sft",
    save_fn: SaveFn | None = None,
    keep_checkpoints: int = 2,
    progress: bool = True,
) -> TrainResult:
    """Train `model` for `cfg.max_steps` optimizer steps with DeepSpeed; save it as a HF directory.

    Runs in one process or under torchrun (every rank calls `train` with the same arguments).

    Args:
        model: the module to train (in place under ZeRO 0-2; under ZeRO-3 its parameters stay partitioned
            afterwards, so read the result from `hf_dir`); a transformers model for the default `save_fn`.
        dataset: micro-batches by position (`StepDataset`), each of `cfg.micro_batch_size` rows.
        cfg: the stage config (steps, lr schedule, batch layout, ZeRO stage, checkpoint interval).
        out_dir: run directory: checkpoints/ (resumable state) and hf/ (the final model).
        loss_fn: `(engine, batch) -> (loss_sum, n)`: summed loss and the number of targets it sums over.
        count_fn: `batch -> n` without a forward pass; must match `loss_fn`'s n.
        tracker: metrics `{stage}/loss`, `{stage}/lr`, `{stage}/tokens_per_s`, `{stage}/grad_norm` per step
            (rank 0 only; None: no tracking).
        resume: go on from out_dir/checkpoints/latest when there is one.
        stage: metric prefix and progress label.
        save_fn: `(model, directory)` writer of the final model (default `save_pretrained_atomic`).
        keep_checkpoints: step checkpoints kept on disk (older ones are deleted after a newer is complete).
        progress: show a progress bar and the end summary (rank 0).
    Returns:
        The TrainResult (identical on every rank).
    Raises:
        TrainingError: a checkpoint of another batch layout, a step without any target, or a `count_fn`
            that disagrees with `loss_fn`.
    """
    import torch
    import torch.distributed as dist

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    save_fn = save_fn or save_pretrained_atomic

    # ---- setup
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    engine = init_engine(model, cfg)
    try:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        main = rank == 0
        tracker = tracker if main else None
        if main:
            (out_dir / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        barrier()
        state = _load_checkpoint(engine, cfg, out_dir, world_size, rank) if resume else _State()
        resumed_from = state.step
        engine.train()

        # ---- train
        bar, bar_task = _progress(progress and main, stage, cfg.max_steps, state.step)
        run_tokens, train_seconds = 0, 0.0
        with bar:
            while state.step < cfg.max_steps:
                t0 = time.perf_counter()
                lr = lr_at(state.step, cfg)
                set_lr(engine, lr)
                loss, grad_norm, tokens = _optimizer_step(
                    engine, dataset, cfg, state, loss_fn, count_fn, stage
                )
                state.step += 1
                state.data_position += cfg.grad_accum_steps
                state.losses.append(loss)
                state.grad_norms.append(grad_norm)
                state.tokens += tokens
                dt = time.perf_counter() - t0
                run_tokens += tokens
                train_seconds += dt
                if tracker is not None:
                    tracker.log_metrics(
                        {
                            f"{stage}/loss": loss,
                            f"{stage}/lr": lr,
                            f"{stage}/tokens_per_s": tokens / dt,
                            f"{stage}/grad_norm": grad_norm,
                        },
                        step=state.step,
                    )
                bar.update(bar_task, advance=1, loss=f"{loss:.4f}")
                if state.step % cfg.save_every == 0 or state.step == cfg.max_steps:
                    _save_checkpoint(engine, state, cfg, out_dir)
                    if main:
                        _prune_checkpoints(out_dir, keep_checkpoints)

        # ---- save
        hf_dir = out_dir / HF_DIR
        _save_final(engine, cfg, hf_dir, save_fn, rank)
    finally:
        # ---- cleanup (the process group stays: DeepSpeed keeps it for the life of the process)
        engine.destroy()
        del engine
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    result = TrainResult(
        stage=stage,
        steps=state.step,
        resumed_from=resumed_from,
        final_loss=state.losses[-1] if state.losses else float("nan"),
        losses=tuple(state.losses),
        grad_norms=tuple(state.grad_norms),
        tokens=state.tokens,
        seconds=time.perf_counter() - t_start,
        tokens_per_s=run_tokens / train_seconds if train_seconds > 0 else 0.0,
        out_dir=out_dir,
        hf_dir=hf_dir,
    )
    if main and progress:
        _print_summary(result)
    return result


def _optimizer_step(
    engine: DeepSpeedEngine,
    dataset: StepDataset,
    cfg: TrainStageConfig,
    state: _State,
    loss_fn: LossFn,
    count_fn: CountFn,
    stage: str,
) -> tuple[float, float, int]:
    """One optimizer step over this rank's G micro-batches (see the module docstring, steps 2-4).

    Returns:
        (mean loss per target over all ranks, gradient norm before clipping, input tokens over all ranks).
    """
    import torch
    import torch.distributed as dist

    rank, world_size, G = dist.get_rank(), dist.get_world_size(), cfg.grad_accum_steps
    first = state.data_position
    batches = [dataset.batch_at(first + m, rank, world_size).to(engine.device) for m in range(G)]
    counts = [count_fn(b) for b in batches]
    totals = torch.tensor(
        [sum(counts), sum(b.input_ids.numel() for b in batches)], dtype=torch.float64, device=engine.device
    )  # (2,) [targets, input tokens] of this rank, then of all ranks
    dist.all_reduce(totals)
    n_step, tokens = int(totals[0].item()), int(totals[1].item())
    if n_step == 0:
        raise TrainingError(
            f"{stage}: step {state.step} (micro-batches {first}..{first + G - 1}) has no loss targets on any "
            "rank; check the dataset's label masks"
        )
    # DeepSpeed divides by G and averages over ranks: this scale makes the gradient that of Σ loss_sum / N
    scale = world_size * G / n_step
    loss_acc = torch.zeros((), dtype=torch.float64, device=engine.device)
    for m, (batch, count) in enumerate(zip(batches, counts)):
        loss_sum, n = loss_fn(engine, batch)
        if int(n) != count:
            raise TrainingError(
                f"{stage}: count_fn says {count} targets but loss_fn summed over {int(n)} (micro-batch "
                f"{first + m}, rank {rank}); pass a count_fn that matches loss_fn"
            )
        engine.backward(loss_sum * scale)
        engine.step()  # DeepSpeed updates the weights only at the accumulation boundary
        loss_acc += loss_sum.detach().to(torch.float64)
    dist.all_reduce(loss_acc)
    grad_norm = engine.get_global_grad_norm()
    return float(loss_acc.item()) / n_step, float("nan") if grad_norm is None else float(grad_norm), tokens


def _print_summary(result: TrainResult) -> None:
    from rich.console import Console

    resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from else ""
    Console().print(
        f"[bold]{result.stage}[/bold]: {result.steps} steps{resumed}, loss {result.losses[0]:.4f} → "
        f"{result.final_loss:.4f}, {result.tokens:,} tokens, {result.tokens_per_s:,.0f} tokens/s, "
        f"{result.seconds:.1f} s\n  model: {result.hf_dir}\n  checkpoints: {result.out_dir / CHECKPOINTS}"
    )


def result_json(result: TrainResult) -> str:
    """The TrainResult as JSON (paths as strings), e.g. for a stage manifest."""
    from dataclasses import asdict

    data = asdict(result)
    data["out_dir"], data["hf_dir"] = str(result.out_dir), str(result.hf_dir)
    return json.dumps(data, sort_keys=True)
