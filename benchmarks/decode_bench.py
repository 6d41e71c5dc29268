"""Decoding benchmark of the transformers engine: agent turns one at a time vs batched, and a multi-turn
episode with and without the prefix cache.

    uv run python benchmarks/decode_bench.py                    # 9 episodes (the tiny evaluation), contexts 1K and 6K
    uv run python benchmarks/decode_bench.py --rows 16 --contexts 2000,8000 --new-tokens 64

A randomly initialised tiny Qwen2 sized by configs/tiny.yaml's `model` section, one torch thread (as
in the evaluation and the rollout actors). Prompts are random token ids; no stop id is given, so every
request decodes exactly --new-tokens tokens.

1. Turns: for each context length L, --rows requests of L prompt tokens, served one at a time
   (`generate` per request, as the evaluation did before batching) and in one `generate_many` batch
   (what `BatchingEngine` does when every episode waits for a turn). Both include the prefill. Reports
   wall seconds and generated tokens/s, measured side by side in one run.
2. Episode: --turns turns of one conversation, each adding --observation tokens of tool output after
   the previous turn's tokens; with the prefix cache (each turn prefills only its new tokens) and
   without it (each turn prefills the whole context). Reports seconds per episode.

Prints a table and writes benchmarks/results/decode.json (with the machine and its load average).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "decode.json"


def build_engine(prefix_cache: bool):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from deepresearch.config import load_config
    from deepresearch.generation.engine import TransformersEngine

    m = load_config("configs/tiny.yaml").model
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=m.vocab_size, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
                      num_hidden_layers=m.num_hidden_layers, num_attention_heads=m.num_attention_heads,
                      num_key_value_heads=m.num_key_value_heads, max_position_embeddings=m.max_position_embeddings,
                      tie_word_embeddings=True)
    engine = TransformersEngine.from_model(Qwen2ForCausalLM(cfg))
    if not prefix_cache:
        engine.prefix_cache.capacity = 0
    return engine, m.vocab_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=9, help="concurrent episodes (tiny evaluation: 9)")
    ap.add_argument("--contexts", default="1000,6000", help="prompt lengths, comma-separated")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--observation", type=int, default=400, help="tool-output tokens added per turn")
    args = ap.parse_args()

    import torch

    from deepresearch.generation.engine import GenRequest

    torch.set_num_threads(1)
    engine, vocab = build_engine(prefix_cache=False)
    rng = random.Random(0)
    rows = []
    for length in (int(x) for x in args.contexts.split(",")):
        reqs = [GenRequest([rng.randrange(vocab) for _ in range(length)], args.new_tokens, 1.0, (), i)
                for i in range(args.rows)]
        engine.generate_many(reqs[:1])  # warm-up
        t0 = time.perf_counter()
        for r in reqs:
            engine.generate_many([r])
        one = time.perf_counter() - t0
        t0 = time.perf_counter()
        engine.generate_many(reqs)
        batched = time.perf_counter() - t0
        toks = args.rows * args.new_tokens
        rows.append({"context": length, "rows": args.rows, "new_tokens": args.new_tokens,
                     "one_at_a_time_s": round(one, 2), "batched_s": round(batched, 2),
                     "one_at_a_time_tok_s": round(toks / one, 1), "batched_tok_s": round(toks / batched, 1),
                     "speedup": round(one / batched, 2)})
        print(f"context {length:>6}: {args.rows} turns one at a time {one:6.2f} s ({toks / one:6.0f} tok/s) | "
              f"batched {batched:6.2f} s ({toks / batched:6.0f} tok/s) | {one / batched:.1f}x")

    episode = {}
    for cached in (False, True):
        eng, _ = build_engine(prefix_cache=cached)
        ids = [rng.randrange(vocab) for _ in range(1500)]  # system prompt + task
        t0 = time.perf_counter()
        for turn in range(args.turns):
            g = eng.generate(ids, max_new_tokens=args.new_tokens, seed=turn)
            ids = ids + g.token_ids + [rng.randrange(vocab) for _ in range(args.observation)]
        episode["prefix_cache" if cached else "no_prefix_cache"] = round(time.perf_counter() - t0, 2)
    print(f"episode of {args.turns} turns (ends at {len(ids)} tokens): no prefix cache "
          f"{episode['no_prefix_cache']:.2f} s | prefix cache {episode['prefix_cache']:.2f} s | "
          f"{episode['no_prefix_cache'] / episode['prefix_cache']:.1f}x")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    out = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor()
           or platform.machine(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(), "turns": rows,
           "episode": {"turns": args.turns, "observation_tokens": args.observation, **episode}}
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
