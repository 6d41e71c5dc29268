"""Flyte's local cache, checked for stale entries before a local execution relies on it.

A local `pyflyte run` caches each stage task's outputs in ~/.flyte/local-cache: the path of the
directory it wrote and the id of its MLflow run. Either can vanish while the entry stays: the
temp directory is cleaned up, or the MLflow store is reset (`make clean`, a second clone, another
`tracking.uri`). A cache hit would then hand later stages a directory that does not exist (flytekit's
72-line "Expected a directory" traceback) or a run id the store has never seen. So the workflow's
`start_tracking` task, before any stage, calls `evict_stale`: each stale entry is removed (one log line
naming it and why), and its stage runs again in this execution, producing a live directory and a run of
the current store. The tracking store stays out of every cache key: an entry whose runs are all in the
store is reused whatever `tracking.*` says.

    make clean-cache                      # = python -m tasks.cache clear: all of this project's entries
    python -m tasks.cache check           # list stale entries (exit 1 if any)
    python -m tasks.cache clear --stale   # remove only the stale ones

Only entries of this project's tasks (names under tasks. and workflows.) are read or removed; the
cache key itself (what a hit depends on) belongs to the stage tasks.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from deepresearch.config import PipelineConfig, load_config
from deepresearch.errors import StaleCacheError

log = logging.getLogger(__name__)

PROJECT_PREFIXES = ("tasks.", "workflows.")
CLEAR_COMMAND = "make clean-cache"


@dataclass
class StaleEntry:
    key: str  # "<task name>-<cache version>-<hash of the inputs>"
    reasons: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.key} ({'; '.join(self.reasons)})"


def cache_dir() -> Path:
    """Where flytekit keeps its local cache (tests point flytekit elsewhere; this follows)."""
    import flytekit.core.local_cache as lc

    return Path(lc.CACHE_LOCATION).expanduser()


def _entries(prefixes: tuple[str, ...]) -> Iterator[tuple[str, object, object]]:
    """(key, decoded LiteralMap, the open cache) of every entry whose task name has one of `prefixes`."""
    if not cache_dir().is_dir():
        return
    from diskcache import Cache
    from flyteidl.core.literals_pb2 import LiteralMap

    with Cache(str(cache_dir())) as cache:
        for key in list(cache.iterkeys()):
            if not isinstance(key, str) or not key.startswith(prefixes):
                continue
            raw = cache.get(key)
            if isinstance(raw, bytes):
                outputs = LiteralMap()
                outputs.ParseFromString(raw)
            else:  # older flytekit stored the model object
                outputs = raw.to_flyte_idl()
            yield key, outputs, cache


def _walk(name: str, literal) -> Iterator[tuple[str, object]]:
    """(output name, scalar literal) of every scalar inside `literal` (collections and maps flattened)."""
    if literal.HasField("collection"):
        for i, item in enumerate(literal.collection.literals):
            yield from _walk(f"{name}[{i}]", item)
    elif literal.HasField("map"):
        for k, item in literal.map.literals.items():
            yield from _walk(f"{name}.{k}", item)
    elif literal.HasField("scalar"):
        yield name, literal.scalar


def _is_local(uri: str) -> bool:
    return urlparse(uri).scheme in ("", "file")


def stale_entries(cfg: PipelineConfig, prefixes: tuple[str, ...] = PROJECT_PREFIXES) -> list[StaleEntry]:
    """Entries whose output directories are gone, or whose MLflow runs the configured store lacks."""
    client = None
    if cfg.tracking.enabled:
        from mlflow import MlflowClient

        from deepresearch.tracking import quiet_mlflow, tracking_uri

        quiet_mlflow()  # this may be the first use of a fresh store: no "Creating initial MLflow database tables"
        client = MlflowClient(tracking_uri=tracking_uri(cfg.tracking))
    out = []
    for key, outputs, _ in _entries(prefixes):
        entry = StaleEntry(key)
        for name, literal in outputs.literals.items():
            for where, scalar in _walk(name, literal):
                uri = scalar.blob.uri if scalar.HasField("blob") else ""
                if uri and _is_local(uri) and not Path(urlparse(uri).path).exists():
                    entry.reasons.append(f"{where}: {uri} no longer exists")
                run_id = scalar.primitive.string_value if scalar.HasField("primitive") else ""
                if client is not None and where.split(".")[-1] == "run_id" and run_id:
                    try:
                        client.get_run(run_id)
                    except Exception:  # noqa: BLE001 - MlflowException: no such run in this store
                        entry.reasons.append(f"{where}: MLflow run {run_id} is not in the store {client.tracking_uri}")
        if entry.reasons:
            out.append(entry)
    return out


def check_local_cache(cfg: PipelineConfig, prefixes: tuple[str, ...] = PROJECT_PREFIXES) -> None:
    """Raise StaleCacheError (one line) if any of this project's cache entries is stale."""
    stale = stale_entries(cfg, prefixes)
    if stale:
        listed = "; ".join(str(e) for e in stale[:5]) + (f"; and {len(stale) - 5} more" if len(stale) > 5 else "")
        raise StaleCacheError(
            f"Flyte's local cache {cache_dir()} holds {len(stale)} stale entr{'y' if len(stale) == 1 else 'ies'} of this "
            f"project, which a cache hit would hand to later stages: {listed}. Clear them with `{CLEAR_COMMAND}` "
            "and run again."
        )


def evict_stale(cfg: PipelineConfig, prefixes: tuple[str, ...] = PROJECT_PREFIXES) -> list[StaleEntry]:
    """Remove this project's stale entries, so that their stages run again; returns them (one warning each)."""
    stale = stale_entries(cfg, prefixes)
    if stale:
        from diskcache import Cache

        with Cache(str(cache_dir())) as cache:
            for e in stale:
                cache.delete(e.key)
                log.warning("Flyte's local cache: evicted %s; that stage runs again", e)
    return stale


def clear(cfg: PipelineConfig | None = None, *, stale_only: bool = False,
          prefixes: tuple[str, ...] = PROJECT_PREFIXES) -> list[str]:
    """Remove this project's entries (or only the stale ones, which needs `cfg`); returns their keys."""
    if stale_only:
        keys = {e.key for e in stale_entries(cfg or load_config(), prefixes)}
    else:
        keys = {key for key, _, _ in _entries(prefixes)}
    if keys:
        from diskcache import Cache

        with Cache(str(cache_dir())) as cache:
            for key in keys:
                cache.delete(key)
    return sorted(keys)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tasks.cache", description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["check", "clear"])
    p.add_argument("--stale", action="store_true", help="clear: only the stale entries")
    p.add_argument("--config", default=None, help="config whose tracking store run ids are checked against")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    if args.action == "check":
        stale = stale_entries(cfg)
        for e in stale:
            print(f"stale: {e}")
        print(f"{len(stale)} stale entries in {cache_dir()}")
        return 1 if stale else 0
    removed = clear(cfg, stale_only=args.stale)
    print(f"removed {len(removed)} entries of this project from {cache_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
