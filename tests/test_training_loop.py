"""The shared DeepSpeed training loop on CPU: schedule, loss, accumulation, resume, two processes.

Everything runs a 2-layer, 64-wide Qwen2 (vocab 256) on synthetic arithmetic sequences, with a plain
causal forward (no packing), so these tests depend only on the loop itself.

The module doubles as the worker of the subprocess tests:
    python -m deepresearch.training.distributed tests.test_training_loop:worker --out DIR [...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from deepresearch.errors import ConfigError

# DeepSpeed still calls the collectives torch 2.13 renamed; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:`torch.distributed.*` is deprecated:FutureWarning")

REPO_ROOT = Path(__file__).resolve().parents[1]
VOCAB, SEQ = 256, 16


# ---- a tiny model, a synthetic dataset, a plain loss ---------------------------------------------
def tiny_model(seed: int = 0):
    """A 2-layer, 64-wide Qwen2ForCausalLM with a fixed random init."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True,
    )  # fmt: skip
    return Qwen2ForCausalLM(config)


@dataclass(frozen=True)
class ToyBatch:
    input_ids: "torch.Tensor"  # noqa: F821 (B, T)
    labels: "torch.Tensor"  # noqa: F821 (B, T), -100 on a random-length prefix

    def to(self, device) -> "ToyBatch":
        return ToyBatch(self.input_ids.to(device), self.labels.to(device))


class ToyDataset:
    """Arithmetic sequences x_t = (a + b t) mod V; sample s depends only on (seed, s mod n_samples).

    Micro-batch `index` of `rank` holds the global samples (index * W + rank) * M ... + M - 1, so
    W ranks × M rows cover the same samples as 1 rank × W·M rows, and G micro-batches of M rows the
    same as one of G·M. Every access is recorded as (index, rank), in memory and in `log_path`.
    """

    def __init__(self, micro_batch_size: int, *, n_samples: int = 64, seed: int = 0, log_path: Path | None = None,
                 fail_at: int | None = None, block_at: int | None = None, marker: Path | None = None):  # fmt: skip
        self.M, self.n_samples, self.seed = micro_batch_size, n_samples, seed
        self.log_path, self.fail_at, self.block_at, self.marker = log_path, fail_at, block_at, marker
        self.seen: list[tuple[int, int]] = []

    def sample(self, s: int):
        import torch

        g = torch.Generator().manual_seed(self.seed * 1_000_003 + s % self.n_samples)
        a, b = torch.randint(0, VOCAB, (1,), generator=g), torch.randint(1, 8, (1,), generator=g)
        ids = (a + b * torch.arange(SEQ)) % VOCAB  # (T,)
        labels = ids.clone()
        labels[: int(torch.randint(0, SEQ // 2, (1,), generator=g))] = -100  # a varying number of targets
        return ids, labels

    def batch_at(self, index: int, rank: int, world_size: int) -> ToyBatch:
        import torch

        if index == self.fail_at:
            raise RuntimeError(f"injected failure at micro-batch {index}")
        if index == self.block_at:  # the SIGKILL test: say where we are, then hang until killed
            self.marker.write_text(str(index))
            time.sleep(3600)
        self.seen.append((index, rank))
        if self.log_path is not None:
            with open(self.log_path, "a") as f:
                f.write(json.dumps([index, rank]) + "\n")
        base = (index * world_size + rank) * self.M
        rows = [self.sample(base + i) for i in range(self.M)]
        return ToyBatch(torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows]))  # (M, T) each


def plain_lm_loss(model, batch):
    """Causal LM loss with an ordinary causal forward (one sequence per row)."""
    from deepresearch.training.loop import lm_loss_sum

    return lm_loss_sum(model(input_ids=batch.input_ids).logits, batch)


def stage_cfg(**overrides):
    from deepresearch.config import TrainStageConfig

    base = dict(seq_len=SEQ, micro_batch_size=2, grad_accum_steps=2, max_steps=6, lr=3e-3, min_lr_ratio=0.1,
                warmup_steps=2, weight_decay=0.01, grad_clip=1.0, save_every=2, zero_stage=2, seed=0)  # fmt: skip
    return TrainStageConfig(**{**base, **overrides})


def run(out_dir: Path, cfg, dataset: ToyDataset, **kwargs):
    """One in-process training run of a fresh tiny model; returns (result, model)."""
    from deepresearch.training.loop import train

    model = tiny_model()
    kwargs.setdefault("loss_fn", plain_lm_loss)
    result = train(model, dataset, cfg, out_dir, progress=False, **kwargs)
    return result, model


def assert_same_weights(a, b, atol: float = 0.0) -> None:
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=atol, msg=lambda m, k=k: f"{k}: {m}")


class FileTracker:
    """A tracker that appends metrics to a JSON-lines file (to see which ranks log)."""

    run_id = None

    def __init__(self, path: Path):
        self.path = path

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")


# ---- the subprocess worker ------------------------------------------------------------------------
def worker(argv: list[str]) -> None:
    """Train the tiny model from the command line (one process, or one rank under torchrun)."""
    import torch.distributed as dist

    from deepresearch.training.loop import save_pretrained_atomic, train

    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cfg", default="{}", help="TrainStageConfig overrides as JSON")
    p.add_argument("--block-at", type=int, default=None)
    args = p.parse_args(argv)
    cfg = stage_cfg(**json.loads(args.cfg))
    rank = int(os.environ.get("RANK", "0"))
    dataset = ToyDataset(
        cfg.micro_batch_size, log_path=args.out / f"data_rank{rank}.jsonl",
        block_at=args.block_at, marker=args.out / "blocked",
    )  # fmt: skip

    def save_fn(model, path):
        (args.out / f"saved_by_rank{dist.get_rank()}").touch()
        return save_pretrained_atomic(model, path)

    result = train(
        tiny_model(), dataset, cfg, args.out, loss_fn=plain_lm_loss, save_fn=save_fn,
        tracker=FileTracker(args.out / f"metrics_rank{rank}.jsonl"), progress=False,
    )  # fmt: skip
    if rank == 0:
        (args.out / "result.json").write_text(json.dumps({"losses": result.losses, "steps": result.steps}))


def _worker_cmd(out: Path, cfg: dict, *extra: str) -> list[str]:
    return [sys.executable, "-m", "deepresearch.training.distributed", "tests.test_training_loop:worker",
            "--out", str(out), "--cfg", json.dumps(cfg), *extra]  # fmt: skip


def _worker_env() -> dict[str, str]:
    import torch

    from deepresearch.training.distributed import child_env

    # the same intra-op threads as this process, so the two runs are bit-for-bit comparable
    return child_env({"OMP_NUM_THREADS": str(torch.get_num_threads())})


# ---- schedule and config (pure) -------------------------------------------------------------------
def test_lr_schedule_by_hand():
    from deepresearch.training.schedule import lr_at

    cfg = stage_cfg(lr=1e-3, warmup_steps=4, max_steps=14, min_lr_ratio=0.1)
    # warmup: lr * (step + 1) / 4
    assert lr_at(0, cfg) == pytest.approx(2.5e-4)
    assert lr_at(1, cfg) == pytest.approx(5.0e-4)
    assert lr_at(3, cfg) == pytest.approx(1.0e-3)
    # cosine over steps 4..14 (10 steps) from 1e-3 down to 1e-4
    assert lr_at(4, cfg) == pytest.approx(1.0e-3)  # progress 0
    assert lr_at(9, cfg) == pytest.approx(1e-4 + 9e-4 * 0.5)  # progress 0.5: cos = 0 → 5.5e-4
    assert lr_at(6, cfg) == pytest.approx(1e-4 + 9e-4 * 0.5 * (1 + math.cos(math.pi * 0.2)))  # ≈ 9.28e-4
    assert lr_at(13, cfg) == pytest.approx(1e-4 + 9e-4 * 0.5 * (1 + math.cos(math.pi * 0.9)))  # ≈ 1.22e-4
    assert lr_at(14, cfg) == pytest.approx(1.0e-4)  # at max_steps: the floor
    assert lr_at(100, cfg) == pytest.approx(1.0e-4)  # and after it
    no_warmup = stage_cfg(lr=2e-3, warmup_steps=0, max_steps=4, min_lr_ratio=0.0)
    assert [lr_at(s, no_warmup) for s in range(5)] == pytest.approx(
        [2e-3, 1.7071e-3, 1e-3, 2.929e-4, 0.0], abs=1e-7
    )
    with pytest.raises(ValueError, match="step must be >= 0"):
        lr_at(-1, cfg)


def test_deepspeed_config():
    from deepresearch.training.engine import make_deepspeed_config

    cfg = stage_cfg(
        micro_batch_size=3, grad_accum_steps=4, zero_stage=2, bf16=True, weight_decay=0.1, grad_clip=0.5
    )
    cpu = make_deepspeed_config(cfg, world_size=2, on_gpu=False)
    assert cpu["train_micro_batch_size_per_gpu"] == 3 and cpu["gradient_accumulation_steps"] == 4
    assert cpu["train_batch_size"] == 3 * 4 * 2
    assert cpu["gradient_clipping"] == 0.5
    assert cpu["zero_optimization"]["stage"] == 2
    assert cpu["bf16"]["enabled"] is False  # fp32 on CPU whatever the config says
    assert cpu["optimizer"]["type"] == "AdamW" and cpu["optimizer"]["params"]["weight_decay"] == 0.1
    assert cpu["optimizer"]["params"]["torch_adam"] is True
    assert "scheduler" not in cpu  # the loop sets the lr of every step
    gpu = make_deepspeed_config(cfg.model_copy(update={"zero_stage": 3}), world_size=8, on_gpu=True)
    assert gpu["bf16"]["enabled"] is True and gpu["zero_optimization"]["stage"] == 3


def test_lm_loss_by_hand():
    import torch

    from deepresearch.training.loop import count_targets, lm_loss_sum

    # vocab 2, uniform logits except one position: CE = log 2 everywhere, -log softmax([2, 0])[1] at t=1
    logits = torch.zeros(1, 4, 2)  # (B, T, V)
    logits[0, 1] = torch.tensor([2.0, 0.0])
    labels = torch.tensor([[-100, 0, 1, 1]])  # targets at t = 1, 2, 3, predicted from t = 0, 1, 2
    loss, n = lm_loss_sum(logits, ToyBatch(torch.zeros(1, 4, dtype=torch.long), labels))
    expected = math.log(2) + (math.log(1 + math.exp(2.0))) + math.log(2)  # t=0→0, t=1→1 (logit 0 vs 2), t=2→1
    assert n == 3 and loss.item() == pytest.approx(expected, rel=1e-6)

    # segments: the first token of segment 1 (t = 2) is not a target of segment 0's last token
    @dataclass(frozen=True)
    class Packed:
        input_ids: torch.Tensor
        labels: torch.Tensor
        segment_ids: torch.Tensor

    packed = Packed(
        torch.zeros(1, 4, dtype=torch.long), torch.tensor([[0, 1, 1, 0]]), torch.tensor([[0, 0, 1, 1]])
    )
    loss, n = lm_loss_sum(torch.zeros(1, 4, 2), packed)
    assert n == 2 and count_targets(packed) == 2 and loss.item() == pytest.approx(2 * math.log(2))
    # classification labels (the judge): one target per row
    assert count_targets(ToyBatch(torch.zeros(3, 5, dtype=torch.long), torch.tensor([0, 2, 1]))) == 3


# ---- in-process DeepSpeed (world of one) ---------------------------------------------------------
def test_training_reduces_loss_and_writes_hf(tmp_path):
    import torch
    from transformers import Qwen2ForCausalLM

    cfg = stage_cfg(
        micro_batch_size=4, grad_accum_steps=1, max_steps=30, save_every=30, warmup_steps=3, lr=5e-3
    )
    tracker = FileTracker(tmp_path / "metrics.jsonl")
    result, model = run(tmp_path / "run", cfg, ToyDataset(4, n_samples=8), tracker=tracker)
    assert result.steps == 30 and len(result.losses) == 30 and result.resumed_from == 0
    assert result.final_loss < 0.5 * result.losses[0], result.losses
    assert result.tokens == 30 * 4 * SEQ and result.tokens_per_s > 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert set(rows[0]) == {"step", "sft/loss", "sft/lr", "sft/tokens_per_s", "sft/grad_norm"}
    assert rows[-1]["sft/loss"] == pytest.approx(result.final_loss)
    # the HF export loads and holds the trained weights
    hf = Qwen2ForCausalLM.from_pretrained(result.hf_dir)
    assert (result.hf_dir / "model.safetensors").is_file()
    assert_same_weights(hf, model)
    assert not list(result.out_dir.glob(".hf.tmp-*"))
    assert (result.out_dir / "checkpoints" / "latest").read_text() == "step_30"
    with torch.no_grad():  # and predicts the arithmetic sequences better than chance
        batch = ToyDataset(4, n_samples=8).batch_at(0, 0, 1)
        loss, n = plain_lm_loss(hf, batch)
    assert loss.item() / n < math.log(VOCAB) / 2


def test_default_loss_trains_packed_batches(tmp_path):
    """The default causal_lm_loss over PackedDataset rows (block-causal mask, per-document positions)."""
    from deepresearch.modeling.chat import EncodedSample
    from deepresearch.training.data import PackedDataset
    from deepresearch.training.loop import train

    samples = []
    for i in range(24):  # documents of 5..12 tokens; the first half of each is context only
        n = 5 + i % 8
        ids = [(3 * i + 2 * t) % VOCAB for t in range(n)]
        samples.append(EncodedSample(ids, [0] * (n // 2) + [1] * (n - n // 2)))
    dataset = PackedDataset.from_samples(samples, seq_len=SEQ * 2, pad_id=0, seed=0, micro_batch_size=2)
    cfg = stage_cfg(seq_len=SEQ * 2, max_steps=8, save_every=8, lr=5e-3)
    result = train(tiny_model(), dataset, cfg, tmp_path, progress=False)  # loss_fn=causal_lm_loss
    assert result.final_loss < result.losses[0]


def test_grad_accumulation_equivalence(tmp_path):
    """2 micro-batches of 2 per step == 1 of 4: the same loss, gradient norm and update."""
    import torch

    from deepresearch.training.loop import lm_loss_sum

    steps = dict(max_steps=3, save_every=3, zero_stage=1)
    acc, model_acc = run(
        tmp_path / "acc", stage_cfg(micro_batch_size=2, grad_accum_steps=2, **steps), ToyDataset(2)
    )
    one, model_one = run(
        tmp_path / "one", stage_cfg(micro_batch_size=4, grad_accum_steps=1, **steps), ToyDataset(4)
    )
    assert acc.losses == pytest.approx(one.losses, rel=1e-6)
    assert acc.grad_norms == pytest.approx(one.grad_norms, rel=1e-5)
    # fp32 summation order differs; Adam's m / sqrt(v) amplifies that noise where gradients are ~0
    assert_same_weights(model_acc, model_one, atol=2e-5)

    # the first step's loss and gradient norm are those of the mean over all target tokens of the step
    model = tiny_model()
    batch = ToyDataset(4).batch_at(0, 0, 1)
    loss_sum, n = lm_loss_sum(model(input_ids=batch.input_ids).logits, batch)
    (loss_sum / n).backward()
    norm = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters())).item()
    assert acc.losses[0] == pytest.approx(loss_sum.item() / n, rel=1e-6)
    assert acc.grad_norms[0] == pytest.approx(norm, rel=1e-5)


def test_resume_after_crash_matches_uninterrupted(tmp_path):
    """A failure mid-accumulation of step 4 (after the step-2 checkpoint), then resume: the same run."""
    cfg = stage_cfg()  # 6 steps, 2 micro-batches per step, a checkpoint every 2 steps
    ref, ref_model = run(tmp_path / "ref", cfg, ref_data := ToyDataset(2))

    calls = 0

    # fails in the 8th forward: micro-batch 2 of step 4, after micro-batch 1's backward
    def failing_loss(model, batch):
        nonlocal calls
        calls += 1
        if calls == 8:
            raise RuntimeError("injected failure in the forward of micro-batch 7")
        return plain_lm_loss(model, batch)

    out = tmp_path / "crash"
    with pytest.raises(RuntimeError, match="injected failure in the forward of micro-batch 7"):
        run(out, cfg, crashed := ToyDataset(2), loss_fn=failing_loss)
    assert (out / "checkpoints" / "latest").read_text() == "step_2"
    (out / "checkpoints" / "step_4").mkdir()  # a save that was cut short: must be ignored, then replaced
    (out / "checkpoints" / "step_4" / "junk").write_text("partial")

    res, model = run(out, cfg, resumed := ToyDataset(2))
    assert res.resumed_from == 2 and res.steps == 6
    assert resumed.seen[0] == (4, 0)  # the first micro-batch after the checkpoint's data position
    assert crashed.seen[:4] + resumed.seen == ref_data.seen  # no micro-batch skipped or repeated
    assert res.losses == ref.losses
    assert_same_weights(model, ref_model)
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == ["step_4", "step_6"]  # keep 2
    assert not (out / "checkpoints" / "step_4" / "junk").exists()  # the stale partial save was cleared

    again, _ = run(out, cfg, untouched := ToyDataset(2))  # resuming a finished run trains nothing
    assert again.resumed_from == 6 and again.losses == ref.losses and untouched.seen == []


def test_zero3_trains_and_exports_full_weights(tmp_path):
    """ZeRO-3 (parameters partitioned) gives the ZeRO-2 run, and the HF export gathers whole weights."""
    from transformers import Qwen2ForCausalLM

    z3, _ = run(tmp_path / "z3", stage_cfg(zero_stage=3, max_steps=3), ToyDataset(2))
    z2, model_z2 = run(tmp_path / "z2", stage_cfg(zero_stage=2, max_steps=3), ToyDataset(2))
    assert z3.losses == pytest.approx(z2.losses, rel=1e-6)
    assert_same_weights(Qwen2ForCausalLM.from_pretrained(z3.hf_dir), model_z2, atol=2e-5)


def test_resume_refuses_another_layout(tmp_path):
    from deepresearch.training.distributed import TrainingError

    run(tmp_path, stage_cfg(max_steps=2), ToyDataset(2))
    with pytest.raises(TrainingError, match="data order would change"):
        run(tmp_path, stage_cfg(max_steps=4, grad_accum_steps=1), ToyDataset(2))


# ---- subprocesses ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(tmp_path):
    """SIGKILL a training process in step 5 (after the step-4 checkpoint), resume it: the same run."""
    cfg = stage_cfg()
    out = tmp_path / "killed"
    out.mkdir()
    proc = subprocess.Popen(
        _worker_cmd(out, {}, "--block-at", "9"),
        env=_worker_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 300
        while not (out / "blocked").exists():
            if proc.poll() is not None:
                pytest.fail(
                    f"worker exited with {proc.returncode} before blocking:\n{proc.stdout.read().decode()[-4000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail("worker did not reach micro-batch 9 within 300 s")
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert (out / "checkpoints" / "latest").read_text() == "step_4"
    assert not (out / "hf").exists()
    killed_seen = [tuple(json.loads(line)) for line in (out / "data_rank0.jsonl").read_text().splitlines()]
    assert killed_seen == [(i, 0) for i in range(9)]  # micro-batch 8 of step 5 done, 9 never returned

    res, model = run(out, cfg, resumed := ToyDataset(2))
    ref, ref_model = run(tmp_path / "ref", cfg, ref_data := ToyDataset(2))
    assert res.resumed_from == 4
    assert killed_seen[:8] + resumed.seen == ref_data.seen  # step 5 is redone from its first micro-batch
    assert res.losses == ref.losses  # bit for bit: same process layout, same CPU kernels
    assert_same_weights(model, ref_model)


@pytest.mark.slow
def test_two_processes_zero2_match_one_and_rank0_writes(tmp_path):
    """torchrun, 2 CPU processes, gloo, ZeRO-2, micro-batch 2 == one process with micro-batch 4."""
    from transformers import Qwen2ForCausalLM

    from deepresearch.training.distributed import launch_local

    two = dict(micro_batch_size=2, grad_accum_steps=1, max_steps=4, save_every=2, zero_stage=2)
    out = tmp_path / "two"
    out.mkdir()
    launch_local(
        "tests.test_training_loop:worker",
        ["--out", str(out), "--cfg", json.dumps(two)],
        nproc=2,
        timeout_s=600,
    )
    assert sorted(p.name for p in out.glob("saved_by_rank*")) == ["saved_by_rank0"]
    assert sorted(p.name for p in out.glob("metrics_rank*")) == ["metrics_rank0.jsonl"]
    assert (out / "hf" / "config.json").is_file() and (out / "hf" / "model.safetensors").is_file()
    assert sorted(p.name for p in (out / "checkpoints" / "step_4").iterdir() if "optim" in p.name) == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    ]  # ZeRO-2: each rank saved its own optimizer partition
    for r in (0, 1):
        seen = [tuple(json.loads(line)) for line in (out / f"data_rank{r}.jsonl").read_text().splitlines()]
        assert seen == [(i, r) for i in range(4)]

    one, one_model = run(tmp_path / "one", stage_cfg(**{**two, "micro_batch_size": 4}), ToyDataset(4))
    losses = json.loads((out / "result.json").read_text())["losses"]
    assert losses == pytest.approx(list(one.losses), rel=1e-5)
    assert_same_weights(Qwen2ForCausalLM.from_pretrained(out / "hf"), one_model, atol=1e-5)


# ---- the Flyte task (structure only: running it needs deepresearch.training.stage) -----------------
def test_train_task_variants_follow_the_stage_shape():
    from flytekit.core.python_auto_container import default_task_resolver
    from flytekitplugins.kfpytorch.task import PytorchElasticFunctionTask

    import tasks.train as T

    assert isinstance(T.train_stage, PytorchElasticFunctionTask)
    assert (T.train_stage.task_config.nnodes, T.train_stage.task_config.nproc_per_node) == (1, 2)
    assert T.train_task_for(stage_cfg(nnodes=1, nproc_per_node=2)) is T.train_stage
    big = T.train_task_for(stage_cfg(nnodes=8, nproc_per_node=8))
    assert big.name == "tasks.train.train_stage_8x8"
    assert big.task_type == "pytorch"  # nnodes > 1: a PyTorchJob (training-operator)
    assert (big.task_config.nnodes, big.task_config.nproc_per_node) == (8, 8)
    assert T.train_stage_8x8 is big  # declared in the module: the name is how the pod's task resolver finds it
    assert big.python_interface.inputs == T.train_stage.python_interface.inputs
    loader_args = ["task-module", "tasks.train", "task-name", "train_stage_8x8"]
    assert default_task_resolver.load_task(loader_args) is big
    with pytest.raises(ConfigError, match="declared: 1x1, 1x2, 2x8, 4x8, 8x8"):
        T.train_task_for(stage_cfg(nnodes=3, nproc_per_node=5))


def test_every_shape_of_every_config_has_a_declared_train_task():
    import tasks.train as T
    from deepresearch.config import load_config

    for path in sorted((REPO_ROOT / "configs").glob("*.yaml")):
        cfg = load_config(path)
        for stage in (cfg.training.mid1, cfg.training.mid2, cfg.training.sft, cfg.judge.train):
            t = T.train_task_for(stage)
            assert (t.task_config.nnodes, t.task_config.nproc_per_node) == (stage.nnodes, stage.nproc_per_node)


def test_cpu_threads_are_the_cores_shared_among_the_local_processes(monkeypatch):
    """A one-process stage gets every core it may run on, whatever OMP_NUM_THREADS an earlier multi-process
    launch left in the environment; k local processes share them."""
    import os

    from deepresearch.training.distributed import cpu_threads_per_process

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert cpu_threads_per_process() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert cpu_threads_per_process() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert cpu_threads_per_process() == 1
