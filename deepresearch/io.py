"""Atomic directory writes: build an artifact in a temp directory next to its target, then rename.

    with atomic_dir(out_dir) as tmp:
        (tmp / "data.jsonl").write_text(...)
    # out_dir now holds exactly what was written; on an error nothing changed and tmp is gone
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield a temp directory beside `out_dir`; on success it replaces `out_dir`, on error it is removed."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        yield tmp
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
