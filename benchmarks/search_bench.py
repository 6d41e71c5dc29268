"""Search benchmark: generate a world of >= N paragraphs, index it, measure query latency.

    uv run python benchmarks/search_bench.py                          # 1,000,000 paragraphs (a few minutes)
    uv run python benchmarks/search_bench.py --paragraphs 100000      # quick check

Reports generation time, indexing throughput (paragraphs/s), index size on disk, and p50/p95/p99
latency of single searches (k=5, after a warm-up) over queries drawn from entity descriptions and
names, plus latency of an 8-query batch (one batch_web_surfer call), how often a description query
finds its entity's reference page, and — when the numba backend serves — the numpy backend's latency
and whether both return the same results. Prints a table and writes benchmarks/results/search.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "search.json"
TARGET_P95_MS = 20.0


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    """p50/p95/p99/mean of latencies given in seconds, in milliseconds."""
    import numpy as np

    a = np.asarray(seconds) * 1000.0
    return {
        "p50": round(float(np.percentile(a, 50)), 3),
        "p95": round(float(np.percentile(a, 95)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
        "mean": round(float(a.mean()), 3),
    }


def time_queries(search, queries: list[str], k: int) -> list[float]:
    """Wall time of one `search(q, k)` per query."""
    out = []
    for q in queries:
        t0 = time.perf_counter()
        search.search(q, k)
        out.append(time.perf_counter() - t0)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--paragraphs", type=int, default=1_000_000, help="minimum number of paragraphs to index")
    p.add_argument("--queries", type=int, default=1000, help="timed queries (>= 500 for the README figures)")
    p.add_argument("--warmup", type=int, default=100, help="untimed queries run first")
    p.add_argument("--k", type=int, default=5, help="results per query (the agent's default search_k)")
    p.add_argument("--seed", type=int, default=0, help="world and query-sampling seed")
    p.add_argument("--backend", choices=("auto", "numpy", "numba"), default="auto")
    p.add_argument("--no-compare", action="store_true", help="skip the numpy-backend comparison")
    p.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the results written to --out."""
    import bm25s
    import numba
    from rich.console import Console
    from rich.table import Table

    from deepresearch.config import SearchConfig, WorldConfig
    from deepresearch.io import atomic_write_text
    from deepresearch.search.embedded import EmbeddedSearch, build_index
    from deepresearch.world.generator import ENTITY_TYPES, generate_world

    args = parse_args(argv)
    console = Console()
    base = WorldConfig(seed=args.seed)
    per_entity = (1 + base.secondary_pages_per_entity) * base.paragraphs_per_page
    n_per_type = max(2, math.ceil(args.paragraphs / (len(ENTITY_TYPES) * per_entity)))
    wcfg = base.model_copy(update={"entities_per_type": n_per_type})
    scfg = SearchConfig()

    with console.status(f"generating a world with {n_per_type:,} entities per type"):
        t0 = time.perf_counter()
        world = generate_world(wcfg)
        gen_s = time.perf_counter() - t0
    counts = world.counts
    console.print(f"generated {counts['paragraphs']:,} paragraphs in {gen_s:.1f} s")

    tmp = Path(tempfile.mkdtemp(prefix="search-bench-"))
    try:
        with console.status("building the BM25 index"):
            t0 = time.perf_counter()
            stats = build_index(world, tmp / "index", scfg)
            index_s = time.perf_counter() - t0
        console.print(f"indexed in {index_s:.1f} s ({stats['bytes'] / 2**20:.0f} MiB)")

        t0 = time.perf_counter()
        search = EmbeddedSearch(scfg, tmp, world=world, backend=args.backend)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        search.warmup()
        compile_s = time.perf_counter() - t0

        rng = random.Random(args.seed)
        entities = list(world.entities.values())
        picked = rng.sample(entities, min(len(entities), args.warmup + args.queries))
        queries = [e.description if i % 2 == 0 else e.name for i, e in enumerate(picked)]
        warm, timed = queries[: args.warmup], queries[args.warmup :]
        time_queries(search, warm, args.k)
        latency = percentiles_ms(time_queries(search, timed, args.k))

        batches = [timed[i : i + 8] for i in range(0, len(timed) - 7, 8)]
        batch_lat = []
        for b in batches:
            t0 = time.perf_counter()
            search.search_batch(b, args.k)
            batch_lat.append(time.perf_counter() - t0)

        # Retrieval sanity: a description query should surface its entity's reference page.
        described = [e for i, e in enumerate(picked[args.warmup :]) if i % 2 == 0]
        top1 = top5 = 0
        for e in described:
            ref = world.primary_doc(e.id).doc_id
            got = [h.doc_id for h in search.search(e.description, args.k)]
            top1 += bool(got) and got[0] == ref
            top5 += ref in got

        comparison = None
        if search.backend == "numba" and not args.no_compare:
            other = EmbeddedSearch(scfg, tmp, world=world, backend="numpy")
            time_queries(other, warm[:20], args.k)
            sample = timed[:200]
            agree = all(
                a == b
                for a, b in zip(other.search_batch(sample, args.k), search.search_batch(sample, args.k))
            )
            comparison = {
                "backend": "numpy",
                "latency_ms": percentiles_ms(time_queries(other, timed, args.k)),
            }
            comparison["same_results_on_200_queries"] = agree
            del other
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    results = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "bm25s": bm25s.__version__,
            "numba": numba.__version__,
        },
        "world": {**counts, "entities_per_type": n_per_type, "seed": args.seed},
        "generation_s": round(gen_s, 2),
        "index": {
            "build_s": round(index_s, 2),
            "paragraphs_per_s": round(counts["paragraphs"] / index_s),
            "bytes": stats["bytes"],
            "vocab_size": stats["vocab_size"],
            "load_s": round(load_s, 2),
            "warmup_s": round(compile_s, 2),
        },
        "search": {
            "backend": search.backend,
            "k": args.k,
            "candidates": args.k * scfg.candidate_multiplier,
            "queries": len(timed),
            "warmup_queries": len(warm),
            "latency_ms": latency,
            "batch8_latency_ms": percentiles_ms(batch_lat) if batch_lat else None,
            "description_top1": round(top1 / max(1, len(described)), 3),
            "description_top5": round(top5 / max(1, len(described)), 3),
            "target_p95_ms": TARGET_P95_MS,
            "meets_target": latency["p95"] <= TARGET_P95_MS,
        },
        "comparison": comparison,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")

    table = Table(title=f"search benchmark ({counts['paragraphs']:,} paragraphs, {os.cpu_count()} CPUs)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("world generation", f"{gen_s:.1f} s")
    table.add_row("index build", f"{index_s:.1f} s ({results['index']['paragraphs_per_s']:,} paragraphs/s)")
    table.add_row("index size on disk", f"{stats['bytes'] / 2**20:.1f} MiB")
    table.add_row("index load / warm-up", f"{load_s:.2f} s / {compile_s:.2f} s")
    table.add_row(
        f"latency ({search.backend}, k={args.k}, {len(timed)} queries)",
        f"p50 {latency['p50']:.2f} ms · p95 {latency['p95']:.2f} ms · p99 {latency['p99']:.2f} ms",
    )
    if batch_lat:
        b8 = results["search"]["batch8_latency_ms"]
        table.add_row("8-query batch latency", f"p50 {b8['p50']:.2f} ms · p95 {b8['p95']:.2f} ms")
    table.add_row(
        "description → reference page",
        f"top-1 {results['search']['description_top1']:.1%} · top-5 {results['search']['description_top5']:.1%}",
    )
    if comparison:
        c = comparison["latency_ms"]
        table.add_row(
            "numpy backend latency",
            f"p50 {c['p50']:.2f} ms · p95 {c['p95']:.2f} ms (same results: {comparison['same_results_on_200_queries']})",
        )
    verdict = "[green]meets[/]" if results["search"]["meets_target"] else "[red]misses[/]"
    table.add_row("p95 target", f"{TARGET_P95_MS:.0f} ms: {verdict}")
    console.print(table)
    console.print(f"results written to {args.out}")
    return results


if __name__ == "__main__":
    main()
