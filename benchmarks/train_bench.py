"""Training benchmark: tokens/s and MFU of the project's DeepSpeed loop on this machine's CPU.

    uv run python benchmarks/train_bench.py                          # tiny + larger models, 1 and 2 processes
    uv run python benchmarks/train_bench.py --steps 5 --no-ddp       # quick check

1. Peak: the best fp32 `torch.matmul` GFLOP/s on large square matrices, with torch's default
   threads and with one thread, measured before and after the training runs (the best counts:
   on a shared machine a neighbour can only make a measurement slower).
2. Training: the tiny Qwen2 of `configs/tiny.yaml` (`model` section) and larger variants (`SIZES`),
   trained by `deepresearch.training.loop.train` (ZeRO stage of `training.mid1`) on packed rows of
   random token ids (one document per row, no padding: every token is a target). Step times are the
   loop's own (it reports tokens/dt of each step to its tracker); the first `--warmup` steps are
   left out.
3. MFU = achieved model FLOP/s / the matmul peak of the cores the run uses, with model FLOPs per
   token 6·N + 12·L·H·T (`flops_per_token`).
4. Layouts, back to back for each size so they see the same neighbours: 1 process x 1 thread,
   1 process x torch's default threads, and 2 processes x 1 thread under torchrun (`launch_local`,
   the layout of the pipeline's Elastic training task).

Prints a table and writes benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "train.json"
WORKER = "benchmarks.train_bench:worker"  # importable from the repo root (launch_local puts it on PYTHONPATH)
MATMUL_SIZES = (1024, 2048)
FLOPS_FORMULA = (
    "model FLOPs/token = 6*N + 12*L*H*T  (forward+backward; N = parameters used in a matmul per token: all, "
    "the tied embedding counted once as the LM head, an untied input embedding left out as a lookup; "
    "L = layers, H = hidden size, T = seq_len; 12*L*H*T = QK^T and AV for full, not causal, attention)"
)

# Model sizes beyond the config's: same head_dim (32) and FFN ratio (352/128 = 2.75) as the tiny model.
SIZES: dict[str, dict[str, int]] = {
    "tiny": {},  # configs/tiny.yaml as is
    "h256-l8": {
        "hidden_size": 256,
        "intermediate_size": 704,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
    },
    "h512-l8": {
        "hidden_size": 512,
        "intermediate_size": 1408,
        "num_hidden_layers": 8,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
    },
}


# ---- FLOPs and peak ------------------------------------------------------------------------------
def flops_per_token(n_params: int, n_layers: int, hidden: int, seq_len: int) -> int:
    """Training FLOPs per token (forward + backward) of a decoder-only transformer.

    The standard estimate (Kaplan et al. 2020 §2.1; PaLM, Chowdhery et al. 2022, App. B; nanoGPT's
    `estimate_mfu`): 2 FLOPs per parameter per token forward, twice that backward, hence 6·N; plus
    attention scores and their weighted sum, 2·2·T·H forward per layer (x3 with backward), hence
    12·L·H·T. Causal masking is not discounted (the CPU kernel computes the masked half anyway).

    Args:
        n_params: parameters that take part in a matmul for every token (see FLOPS_FORMULA).
        n_layers: transformer layers L.
        hidden: hidden size H (= heads x head_dim).
        seq_len: tokens per sequence T.
    Returns:
        FLOPs per trained token.
    """
    return 6 * n_params + 12 * n_layers * hidden * seq_len


def matmul_gflops(n: int, threads: int | None, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of an (n, n) @ (n, n) torch.matmul over `repeats` (after one warm-up).

    Args:
        n: matrix size.
        threads: torch intra-op threads for the measurement (None: leave as is); restored afterwards.
        repeats: timed repetitions; the fastest counts (noise on a shared machine only slows down).
    """
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=g)  # (n, n)
        b = torch.randn(n, n, generator=g)  # (n, n)
        torch.matmul(a, b)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    return 2 * n**3 / best / 1e9


def measure_peak(threads_default: int, repeats: int) -> dict[str, dict[str, float]]:
    """GFLOP/s per matrix size, with the default threads and with one thread."""
    return {
        "default_threads": {
            str(n): round(matmul_gflops(n, threads_default, repeats), 1) for n in MATMUL_SIZES
        },
        "1_thread": {str(n): round(matmul_gflops(n, 1, repeats), 1) for n in MATMUL_SIZES},
    }


# ---- one training run ----------------------------------------------------------------------------
class _VocabOnly:
    """What `build_tiny_model` reads from a tokenizer: its length and the id of <|endoftext|>.

    Random token ids need no trained BPE; only the vocabulary size shapes the model.
    """

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def __len__(self) -> int:
        return self.vocab_size

    def convert_tokens_to_ids(self, token: str) -> int:
        return self.vocab_size - 1


class _StepRecorder:
    """A tracker that keeps the loop's per-step `{stage}/tokens_per_s` (rank 0 gets it)."""

    run_id = None

    def __init__(self) -> None:
        self.tokens_per_s: list[float] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for k, v in metrics.items():
            if k.endswith("/tokens_per_s"):
                self.tokens_per_s.append(float(v))

    def log_params(self, params: dict[str, Any]) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_dataset(self, path: Path, **kwargs: Any) -> None: ...
    def log_dict(self, data: dict, artifact_file: str) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...


@dataclass(frozen=True)
class RunResult:
    """Steady-state throughput of one training run."""

    world_size: int
    threads_per_process: int
    tokens_per_step: int  # over all ranks: world_size * micro_batch_size * grad_accum_steps * seq_len
    step_seconds: list[float]  # (steps,) the timed steps, warm-up left out
    tokens_per_s: float  # timed tokens / timed seconds
    tokens_per_s_median: float  # tokens_per_step / median step time (robust to a noisy neighbour)
    train_call_s: float  # the whole `train` call: engine setup, every step, final checkpoint
    local_peak_gflops: float  # matmul GFLOP/s of all ranks at once, in this layout, just before/after (best)


def random_dataset(vocab_size: int, seq_len: int, rows: int, micro_batch_size: int, seed: int):
    """A PackedDataset of `rows` random-token documents of exactly `seq_len` tokens (no padding)."""
    import torch

    from deepresearch.modeling.chat import EncodedSample
    from deepresearch.training.data import PackedDataset

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (rows, seq_len), generator=g)  # (rows, T)
    samples = [EncodedSample(row.tolist(), [1] * seq_len) for row in ids]
    return PackedDataset.from_samples(
        samples, seq_len=seq_len, pad_id=vocab_size - 1, seed=seed, micro_batch_size=micro_batch_size
    )


def layout_peak(repeats: int = 3) -> float:
    """fp32 matmul GFLOP/s of every rank at once with its current threads, summed over ranks.

    Taken right next to a training run, it is the peak of that very layout under that moment's load.
    """
    import torch
    import torch.distributed as dist

    from deepresearch.training.distributed import barrier, init_distributed

    init_distributed()  # idempotent; the training loop joins the same group
    barrier()  # the ranks multiply at the same time, as they train
    total = torch.tensor([matmul_gflops(MATMUL_SIZES[-1], None, repeats)], dtype=torch.float64)  # (1,)
    dist.all_reduce(total)
    return float(total.item())


def train_once(model_cfg, stage_cfg, out_dir: Path, warmup: int) -> RunResult | None:
    """Train a fresh model with the project loop; rank 0 returns the steady-state figures, others None."""
    import torch
    import torch.distributed as dist

    from deepresearch.modeling.model import build_tiny_model
    from deepresearch.training.loop import train

    peak_before = layout_peak()

    model = build_tiny_model(model_cfg, _VocabOnly(model_cfg.vocab_size))
    rows = max(64, 2 * stage_cfg.micro_batch_size * stage_cfg.nproc_per_node)
    data = random_dataset(model_cfg.vocab_size, stage_cfg.seq_len, rows, stage_cfg.micro_batch_size, seed=0)
    recorder = _StepRecorder()
    result = train(model, data, stage_cfg, out_dir, tracker=recorder, resume=False, stage="bench",
          save_fn=lambda m, p: None, keep_checkpoints=1, progress=False)  # fmt: skip
    local_peak = max(peak_before, layout_peak())
    world_size = dist.get_world_size()
    if dist.get_rank() != 0:
        return None
    tokens = world_size * stage_cfg.micro_batch_size * stage_cfg.grad_accum_steps * stage_cfg.seq_len
    seconds = [tokens / tps for tps in recorder.tokens_per_s[warmup:]]
    return RunResult(
        world_size=world_size,
        threads_per_process=torch.get_num_threads(),
        tokens_per_step=tokens,
        step_seconds=[round(s, 4) for s in seconds],
        tokens_per_s=round(tokens * len(seconds) / sum(seconds), 1),
        tokens_per_s_median=round(tokens / statistics.median(seconds), 1),
        train_call_s=round(result.seconds, 1),
        local_peak_gflops=round(local_peak, 1),
    )


def worker(argv: list[str]) -> None:
    """torchrun entry (`launch_local(WORKER, ...)`): every rank trains each model in turn; rank 0 writes
    {"startup_s": launch to worker entry, "worker_s": time in the worker, "runs": {name: RunResult}} as JSON."""
    entered = time.time()
    from deepresearch.config import ModelConfig, TrainStageConfig
    from deepresearch.io import atomic_write_text

    p = argparse.ArgumentParser()
    p.add_argument("--models", required=True, help="JSON {name: ModelConfig}")
    p.add_argument("--stage", required=True, help="TrainStageConfig as JSON")
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--warmup", type=int, required=True)
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("--launched-at", type=float, required=True, help="time.time() when the launcher started")
    a = p.parse_args(argv)
    stage_cfg = TrainStageConfig.model_validate_json(a.stage)
    runs = {}
    for name, model in json.loads(a.models).items():
        res = train_once(ModelConfig.model_validate(model), stage_cfg, a.run_dir / name, a.warmup)
        runs[name] = None if res is None else asdict(res)
    if runs and all(r is not None for r in runs.values()):  # rank 0
        out = {
            "startup_s": round(entered - a.launched_at, 1),
            "worker_s": round(time.time() - entered, 1),
            "runs": runs,
        }
        atomic_write_text(a.result, json.dumps(out) + "\n")


def train_two_processes(model_cfgs: dict, stage_cfg, tmp: Path, warmup: int, timeout_s: float) -> dict:
    """Every model of `model_cfgs` trained in one torchrun launch of 2 processes x 1 thread (torchrun's
    default), so the start-up (imports, rendezvous) is paid once.

    Returns:
        {"startup_s", "worker_s", "wall_s", "runs": {name: RunResult as dict}}, or {"error": ...} on failure
        or timeout.
    """
    import subprocess

    from deepresearch.training.distributed import DistributedError, launch_local

    result = tmp / "ddp_result.json"
    models = json.dumps({name: m.model_dump(mode="json") for name, m in model_cfgs.items()})
    args = ["--models", models, "--stage", stage_cfg.model_dump_json(), "--run-dir", str(tmp / "ddp"),
            "--warmup", str(warmup), "--result", str(result), "--launched-at", str(time.time())]  # fmt: skip
    t0 = time.perf_counter()
    try:
        launch_local(WORKER, args, nproc=2, env={"OMP_NUM_THREADS": "1"}, timeout_s=timeout_s)
    except (DistributedError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)[-2000:]}
    out = json.loads(result.read_text())
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


# ---- the benchmark -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """How a run uses the machine's cores."""

    name: str
    nproc: int  # processes (data-parallel ranks)
    threads: int  # torch intra-op threads per process

    @property
    def cores(self) -> int:
        return self.nproc * self.threads


def peak_for(cores: int, peak_1t: float, peak_multi: float, multi_threads: int) -> float:
    """The matmul peak of `cores` cores: cores x the 1-thread peak, or the multi-thread measurement if higher.

    The per-core figure times the cores is the robust bound: a multi-threaded matmul on a shared
    machine loses its cores to neighbours and would understate the peak (and overstate MFU).
    """
    best = cores * peak_1t
    return max(best, peak_multi) if cores == multi_threads else best


def run_in_process(threads: int, model_cfg, stage_cfg, out_dir: Path, warmup: int) -> dict:
    """One training run in this process (a world of one) with `threads` torch threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return asdict(train_once(model_cfg, stage_cfg, out_dir, warmup))
    finally:
        torch.set_num_threads(before)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--config", default="configs/tiny.yaml", help="model section and training.mid1 come from it"
    )
    p.add_argument("--steps", type=int, default=6, help="timed optimizer steps per run")
    p.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    p.add_argument(
        "--seq-len", type=int, default=None, help="packed row length (default: training.mid1.seq_len)"
    )
    p.add_argument("--sizes", default="tiny,h256-l8,h512-l8",
                   help=f"run with 1 process x 1 thread; comma-separated, of {', '.join(SIZES)}")  # fmt: skip
    p.add_argument("--thread-sizes", default="tiny",
                   help="sizes also run with 1 process x torch's default threads")  # fmt: skip
    p.add_argument(
        "--ddp-sizes", default="tiny,h256-l8,h512-l8", help="sizes also run with 2 processes x 1 thread"
    )
    p.add_argument("--no-ddp", action="store_true", help="skip the 2-process runs")
    p.add_argument(
        "--ddp-timeout", type=float, default=420.0, help="seconds before a 2-process run is abandoned"
    )
    p.add_argument("--matmul-repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON results")
    return p.parse_args(argv)


def _machine() -> dict[str, Any]:
    import deepspeed
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "torch_threads_default": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "deepspeed": deepspeed.__version__,
    }


def _size_entry(name: str, model_cfg, seq_len: int) -> dict[str, Any]:
    """Parameter counts and FLOPs per token of one model size."""
    from deepresearch.modeling.model import build_tiny_model

    probe = build_tiny_model(model_cfg, _VocabOnly(model_cfg.vocab_size))
    n_total = sum(p.numel() for p in probe.parameters())
    # an untied input embedding is a lookup, not a matmul; tied, the same matrix is the LM head
    n_matmul = n_total - (0 if model_cfg.tie_word_embeddings else probe.get_input_embeddings().weight.numel())
    fpt = flops_per_token(n_matmul, model_cfg.num_hidden_layers, model_cfg.hidden_size, seq_len)
    fields = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "tie_word_embeddings")  # fmt: skip
    return {
        "name": name,
        "model": {k: getattr(model_cfg, k) for k in fields},
        "params_total": n_total,
        "params_matmul": n_matmul,
        "flops_per_token": fpt,
        "flops_6N": 6 * n_matmul,
        "flops_attention": fpt - 6 * n_matmul,
        "runs": {},
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the results written to --out."""
    import logging

    import torch
    from rich.console import Console
    from rich.table import Table

    from deepresearch.config import load_config
    from deepresearch.io import atomic_write_text

    args = parse_args(argv)
    sizes = args.sizes.split(",")
    thread_sizes = [s for s in args.thread_sizes.split(",") if s]
    ddp_sizes = [] if args.no_ddp else [s for s in args.ddp_sizes.split(",") if s]
    unknown = sorted({s for s in sizes + thread_sizes + ddp_sizes if s not in SIZES})
    if unknown:
        raise SystemExit(f"unknown size(s) {unknown}; choose from {', '.join(SIZES)}")
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)  # its per-engine banner, not our figures
    console = Console()
    console.width = max(console.width, 150)  # the table's nine columns; a pipe or narrow terminal wraps them
    cfg = load_config(args.config)
    stage_cfg = cfg.training.mid1.model_copy(
        update={
            "max_steps": args.warmup + args.steps,
            "save_every": 10**6,  # only the loop's final checkpoint, after the timed steps
            "seq_len": args.seq_len or cfg.training.mid1.seq_len,
            "nproc_per_node": 1,
        }
    )
    T = stage_cfg.seq_len
    threads = torch.get_num_threads()
    layouts = {
        "1p1t": Layout("1 proc x 1 thread", 1, 1),
        "1pNt": Layout(f"1 proc x {threads} threads", 1, threads),
        "2p1t": Layout("2 procs x 1 thread", 2, 1),
    }
    t_start = time.perf_counter()
    load_before = os.getloadavg()

    with console.status("measuring the fp32 matmul peak"):
        peak_before = measure_peak(threads, args.matmul_repeats)
    console.print(f"matmul GFLOP/s: {peak_before}")

    tmp = Path(tempfile.mkdtemp(prefix="train-bench-"))
    entries: dict[str, dict[str, Any]] = {}
    model_cfgs = {
        name: cfg.model.model_copy(update=SIZES[name])
        for name in dict.fromkeys(sizes + thread_sizes + ddp_sizes)
    }
    ddp_info: dict[str, Any] = {}

    def record(name: str, key: str, run: dict) -> None:
        layout = layouts[key]
        if name not in entries:
            entries[name] = _size_entry(name, model_cfgs[name], T)
        entries[name]["runs"][key] = {**run, "layout": layout.name, "cores": layout.cores}
        console.print(f"{name}: {layout.name}: {run['tokens_per_s']:,.0f} tokens/s")

    try:
        # one size's in-process layouts back to back, so they see the same neighbours
        for name in dict.fromkeys(sizes + thread_sizes):
            keys = (["1p1t"] if name in sizes else []) + (
                ["1pNt"] if name in thread_sizes and threads > 1 else []
            )
            for key in keys:
                with console.status(f"{name}: {layouts[key].name}, {stage_cfg.max_steps} steps"):
                    run = run_in_process(
                        layouts[key].threads, model_cfgs[name], stage_cfg, tmp / f"{name}-{key}", args.warmup
                    )
                record(name, key, run)
        if ddp_sizes:
            with console.status(f"{', '.join(ddp_sizes)}: 2 procs x 1 thread (one torchrun launch)"):
                ddp = train_two_processes(
                    {n: model_cfgs[n] for n in ddp_sizes}, stage_cfg, tmp, args.warmup, args.ddp_timeout
                )
            if "error" in ddp:
                console.print(f"[red]2-process runs failed:[/red] {ddp['error'][-500:]}")
                ddp_info = {"error": ddp["error"]}
            else:
                ddp_info = {k: ddp[k] for k in ("startup_s", "worker_s", "wall_s")}
                ddp_info["exit_s"] = round(ddp["wall_s"] - ddp["startup_s"] - ddp["worker_s"], 1)
                ddp_info["train_calls_s"] = round(sum(r["train_call_s"] for r in ddp["runs"].values()), 1)
                for name, run in ddp["runs"].items():
                    record(name, "2p1t", run)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    configs = list(entries.values())

    with console.status("measuring the fp32 matmul peak again"):
        peak_after = measure_peak(threads, args.matmul_repeats)
    best = {k: {n: max(peak_before[k][n], peak_after[k][n]) for n in peak_before[k]} for k in peak_before}
    peak_multi = max(best["default_threads"].values())
    peak_1t = max(best["1_thread"].values())
    for entry in configs:
        for run in entry["runs"].values():
            peak = peak_for(run["cores"], peak_1t, peak_multi, threads)
            run["peak_gflops"] = round(peak, 1)
            for key, suffix in (("tokens_per_s", ""), ("tokens_per_s_median", "_median")):
                gflops = run[key] * entry["flops_per_token"] / 1e9
                run[f"model_gflops{suffix}"] = round(gflops, 2)
                run[f"mfu{suffix}"] = round(gflops / peak, 4)
            run["mfu_local"] = round(run["model_gflops"] / run["local_peak_gflops"], 4)

    results = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": _machine(),
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "flops_formula": FLOPS_FORMULA,
        "mfu_definition": "mfu: model FLOP/s (flops_per_token x tokens/s) / peak_gflops of the cores the run "
        "uses (cores x best 1-thread matmul GFLOP/s of the whole benchmark, or the multi-thread measurement "
        "when higher); mfu_local: the same over local_peak_gflops, a 2048^2 matmul in the run's own layout "
        "(all ranks at once) just before and after it, i.e. corrected for the load of that moment",
        "peak": {
            "matmul_sizes": list(MATMUL_SIZES),
            "before": peak_before,
            "after": peak_after,
            "peak_gflops_default_threads": peak_multi,
            "peak_gflops_1_thread": peak_1t,
            "peak_gflops_machine": round(
                peak_for(os.cpu_count() or threads, peak_1t, peak_multi, threads), 1
            ),
        },
        "settings": {
            "config": args.config,
            "steps_timed": args.steps,
            "warmup_steps": args.warmup,
            "seq_len": T,
            "micro_batch_size": stage_cfg.micro_batch_size,
            "grad_accum_steps": stage_cfg.grad_accum_steps,
            "zero_stage": stage_cfg.zero_stage,
            "data": "random token ids, one document of seq_len tokens per packed row (every token a target)",
            "layouts": "1 proc: in-process world of one; 2 procs: torchrun via launch_local, gloo, global batch "
            "twice the 1-process one",
        },
        "ddp_launch": ddp_info,
        "configs": configs,
        "total_s": round(time.perf_counter() - t_start, 1),
    }
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")

    table = Table(title=f"training throughput: seq_len {T}, micro-batch {stage_cfg.micro_batch_size}/process, "
                        f"ZeRO-{stage_cfg.zero_stage}, {args.steps} timed steps after {args.warmup}")  # fmt: skip
    for col in ("model", "params", "MFLOP/token\n6N + attn", "layout", "tokens/s", "median\ntokens/s",
                "model\nGFLOP/s", "peak\nGFLOP/s", "MFU", "local\npeak", "MFU vs\nlocal"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("model", "layout") else "right")
    for entry in configs:
        flops = f"{entry['flops_6N'] / 1e6:.1f} + {entry['flops_attention'] / 1e6:.1f}"
        for run in entry["runs"].values():
            cells = [entry["name"], f"{entry['params_total'] / 1e6:.2f}M", flops, run["layout"]]
            table.add_row(*cells, f"{run['tokens_per_s']:,.0f}", f"{run['tokens_per_s_median']:,.0f}",
                          f"{run['model_gflops']:.1f}", f"{run['peak_gflops']:.0f}", f"{100 * run['mfu']:.1f} %",
                          f"{run['local_peak_gflops']:.0f}", f"{100 * run['mfu_local']:.1f} %")  # fmt: skip
    console.print(table)
    console.print(
        f"fp32 matmul peak: {peak_1t:.1f} GFLOP/s on 1 thread, {peak_multi:.1f} GFLOP/s on {threads} threads "
        f"(best of before/after; load average {load_before[0]:.1f} → {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    if "startup_s" in ddp_info:
        console.print(
            f"2-process launch: {ddp_info['wall_s']:.0f} s in all = {ddp_info['startup_s']:.0f} s torchrun to the "
            f"workers' entry + {ddp_info['worker_s']:.0f} s in the workers ({ddp_info['train_calls_s']:.0f} s of them "
            f"in `train`, the rest imports and set-up) + {ddp_info['exit_s']:.0f} s to exit"
        )
    elif ddp_info:
        console.print("[red]2-process runs failed (see ddp_launch.error in the JSON)[/red]")
    console.print(f"{FLOPS_FORMULA}\nwrote {args.out} in {results['total_s']:.0f} s")
    return results


if __name__ == "__main__":
    main()
