"""GPU training benchmark: bf16 tokens/s and MFU of the project's DeepSpeed loop on a Qwen2.5-0.5B-shaped model.

    python benchmarks/gpu_bench.py --out benchmarks/results/gpu.json       # needs one CUDA GPU

The model is built from Qwen2.5-0.5B's published shape (no weights exist on the machine, and none are
downloaded): hidden 896, 24 layers, 14 query / 2 key-value heads, FFN 4864, vocabulary 151,936, tied
embeddings. It trains through `deepresearch.training.loop.train` exactly as a pipeline stage does
(DeepSpeed, `torch_adam`, bf16 on GPU), on packed rows of random token ids (one document per row, so
attention takes sdpa's causal kernel), for `--warmup` untimed and `--steps` timed steps.

MFU = achieved model FLOP/s / peak, with FLOPs per token 6·N + 12·L·H·T (`train_bench.flops_per_token`,
full T²; causal kernels skip half of the attention term, so this is the usual, slightly generous count),
against both the datasheet dense bf16 peak (`--peak-tflops`, H200/H100 SXM: 989.4) and a measured bf16
matmul peak (8192³, best of 10), so the figure can be read either way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

QWEN25_05B = {
    "vocab_size": 151_936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32_768,
    "rope_theta": 1_000_000.0,
    "tie_word_embeddings": True,
}


def matmul_tflops_bf16(n: int = 8192, repeats: int = 10) -> float:
    """Best bf16 (n, n) @ (n, n) TFLOP/s on the current GPU (CUDA events, after 3 warm-ups)."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return 2 * n**3 / best / 1e12


def main(argv: list[str] | None = None) -> None:
    import torch

    from benchmarks.train_bench import _StepRecorder, _VocabOnly, flops_per_token, random_dataset
    from deepresearch.config import ModelConfig, TrainStageConfig
    from deepresearch.modeling.model import build_tiny_model
    from deepresearch.training.loop import train

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--peak-tflops", type=float, default=989.4)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu.json"))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("gpu_bench needs a CUDA GPU")

    measured_peak = matmul_tflops_bf16()
    model_cfg = ModelConfig(**QWEN25_05B)
    stage = TrainStageConfig(seq_len=args.seq_len, micro_batch_size=args.micro_batch,
                             max_steps=args.warmup + args.steps, lr=1e-5, warmup_steps=0,
                             save_every=10**6, zero_stage=0, bf16=True, nproc_per_node=1)
    model = build_tiny_model(model_cfg, _VocabOnly(model_cfg.vocab_size))
    n_params = sum(p.numel() for p in model.parameters())  # tied: the embedding counts once, as the LM head
    data = random_dataset(model_cfg.vocab_size, args.seq_len, 4 * args.micro_batch, args.micro_batch, seed=0)
    recorder = _StepRecorder()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        train(model, data, stage, Path(run_dir), tracker=recorder, resume=False, stage="bench",
              save_fn=lambda m, d: None, keep_checkpoints=1, progress=False)
    wall = time.perf_counter() - t0
    timed = recorder.tokens_per_s[args.warmup:]
    tokens_per_step = args.micro_batch * args.seq_len
    tps = tokens_per_step * len(timed) / sum(tokens_per_step / t for t in timed)
    fpt = flops_per_token(n_params, model_cfg.num_hidden_layers, model_cfg.hidden_size, args.seq_len)
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "model": "Qwen2.5-0.5B shape (random init)",
        "parameters": n_params,
        "seq_len": args.seq_len,
        "micro_batch": args.micro_batch,
        "timed_steps": len(timed),
        "tokens_per_s": round(tps),
        "tokens_per_s_median": round(statistics.median(timed)),
        "flops_per_token": fpt,
        "model_tflops": round(tps * fpt / 1e12, 1),
        "measured_bf16_matmul_tflops": round(measured_peak, 1),
        "mfu_vs_datasheet": round(tps * fpt / (args.peak_tflops * 1e12), 4),
        "mfu_vs_measured_matmul": round(tps * fpt / (measured_peak * 1e12), 4),
        "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1),
        "train_call_s": round(wall, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
