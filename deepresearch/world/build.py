"""Build a world directory: generate (or load Wikidata5m), save, index for search.

    from deepresearch.config import load_config
    manifest = build_world(load_config("configs/tiny.yaml"), Path("out/world"))

Produces out/{manifest.json, entities.jsonl, triples.jsonl, documents.jsonl, index/}; manifest.json
gets an "index" section with the search index stats and is rewritten atomically last, so a
directory with an index section in its manifest is complete.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from deepresearch.io import atomic_write_text
from deepresearch.world.schema import World

if TYPE_CHECKING:
    from deepresearch.config import PipelineConfig


def make_world(cfg: PipelineConfig) -> World:
    """The world the config describes: seeded synthetic generation or a Wikidata5m dump."""
    from deepresearch.config import resolve_repo_path

    if cfg.world.source in ("wikidata5m", "cndbpedia"):
        import logging

        from deepresearch.world.cndbpedia import load_cndbpedia
        from deepresearch.world.wikidata5m import LoadReport, load_wikidata5m

        # malformed lines are skipped and counted, not fatal: say what was skipped
        report = LoadReport(cfg.world.source)
        if cfg.world.source == "wikidata5m":
            world = load_wikidata5m(resolve_repo_path(cfg.world.wikidata5m_dir or ""), report=report)
        else:
            world = load_cndbpedia(resolve_repo_path(cfg.world.cndbpedia_path or ""), report=report)
        if report.malformed or report.dropped_triples:
            logging.getLogger(__name__).warning("%s", report.summary())
        return world
    from deepresearch.world.generator import generate_world

    return generate_world(cfg.world)


def build_world(cfg: PipelineConfig, out: Path, *, show_progress: bool = True) -> dict:
    """Generate or load the world, save it to `out`, and build its search index in `out/index`.

    Args:
        cfg: the pipeline config (world + search sections are used).
        out: world directory to (re)write.
        show_progress: spinner per step and a summary table on stderr.
    Returns:
        The manifest as written to out/manifest.json (World.save's manifest plus "index" stats).
    """
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from deepresearch.search.embedded import build_index

    out = Path(out)
    console = Console(stderr=True, quiet=not show_progress)
    timings: dict[str, float] = {}
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:

        def step(name: str, fn):
            task = progress.add_task(name, total=1)
            t0 = time.perf_counter()
            result = fn()
            timings[name] = time.perf_counter() - t0
            progress.update(task, completed=1)
            return result

        source = cfg.world.source
        world = step(
            f"{'generate' if source == 'synthetic' else 'load'} world ({source})", lambda: make_world(cfg)
        )
        manifest = step("save world", lambda: world.save(out))
        stats = step("build search index", lambda: build_index(world, out / "index", cfg.search))

    manifest["index"] = stats
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    table = Table(title=f"world built in {out}", show_header=False)
    for key, value in manifest["counts"].items():
        table.add_row(key, f"{value:,}")
    table.add_row("index vocabulary", f"{stats['vocab_size']:,}")
    table.add_row("index size", f"{stats['bytes'] / 2**20:.1f} MiB")
    for name, seconds in timings.items():
        table.add_row(name, f"{seconds:.1f} s")
    console.print(table)
    return manifest
