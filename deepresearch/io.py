"""The one way to write an artifact and the one way to name its content.

    with atomic_dir(out_dir) as tmp:                  # build the new version beside out_dir
        (tmp / "data.jsonl").write_text(...)
    # out_dir now holds exactly what was written; on an error nothing changed and tmp is gone

    atomic_write_text(path, text)                     # one file: temp file + rename
    digest = content_digest({"a/x.jsonl": file_sha256(p), ...})   # or dir_digest(out_dir)

Replacing a directory. A directory cannot be renamed over a non-empty one, so `replace_dir` swaps the
two with one `renameat2(RENAME_EXCHANGE)` (Linux ≥ 3.15; ext4, xfs, btrfs, tmpfs, overlayfs) or
`renamex_np(RENAME_SWAP)` (macOS), then deletes the old version from where the new one was staged.
At every instant `out_dir` is either the complete old directory or the complete new one; a crash
at any point leaves one of them in place (and at worst a `.<name>.tmp-*` sibling to delete). On a
filesystem without an atomic exchange (NFS, some FUSE mounts) the old directory is renamed aside
first and put back if the second rename fails; for the microseconds between the two renames
`out_dir` is absent (a crash exactly then leaves the old version in `.<name>.old-*/d`).

Content digest. `content_digest` is sha256 over `sha256sum`-style lines ("<hex>  <path>\\n") of the
files sorted by path, so coreutils reproduce `content_digest(file_hashes(DIR))`:
`cd DIR && find . -type f ! -path ./manifest.json -printf '%P\\n' | LC_ALL=C sort | xargs sha256sum | sha256sum`.
Every digest a manifest, a registry catalog or an MLflow lineage tag records is this one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Mapping

MANIFEST = "manifest.json"  # a directory's manifest: never part of its own content digest


# ---- writing ---------------------------------------------------------------------------------------
def _libc_exchange():
    """The platform's atomic directory exchange as `f(a, b) -> errno` (0 on success), or None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    if hasattr(libc, "renameat2"):  # Linux (glibc ≥ 2.28, musl ≥ 1.2.3)
        fn, at_fdcwd, rename_exchange = libc.renameat2, -100, 2
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]

        def exchange(a: bytes, b: bytes) -> int:
            return 0 if fn(at_fdcwd, a, at_fdcwd, b, rename_exchange) == 0 else ctypes.get_errno()

        return exchange
    if sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        fn, rename_swap = libc.renamex_np, 0x2
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]

        def exchange(a: bytes, b: bytes) -> int:
            return 0 if fn(a, b, rename_swap) == 0 else ctypes.get_errno()

        return exchange
    return None


_EXCHANGE = _libc_exchange()
# errnos meaning "this filesystem (or kernel) cannot exchange": fall back to rename-aside
_NO_EXCHANGE = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}


def exchange_dirs(a: Path, b: Path) -> bool:
    """Atomically swap the paths `a` and `b` (both must exist). False: not supported here; nothing changed.

    Raises:
        OSError: the exchange is supported but failed (a missing path, permissions, ...).
    """
    if _EXCHANGE is None:
        return False
    err = _EXCHANGE(os.fsencode(a), os.fsencode(b))
    if err == 0:
        return True
    if err in _NO_EXCHANGE:
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def replace_dir(src: Path, dest: Path, *, keep_existing: bool = False) -> bool:
    """Move the finished directory `src` to `dest`, replacing any `dest` (see the module docstring).

    Args:
        src: a complete directory on the same filesystem as `dest` (usually made by `atomic_dir`).
        dest: where it goes. If it exists it must be a directory.
        keep_existing: if `dest` exists (or appears meanwhile, from another process), keep it and
            delete `src` instead: publish-once semantics for caches.
    Returns:
        Whether `src` was put in place (False only with `keep_existing`).
    Raises:
        NotADirectoryError: `dest` exists and is not a directory (nothing is changed).
    """
    src, dest = Path(src), Path(dest)
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"cannot replace {dest} by a directory: it exists and is not one; remove it or pick another path")
    if not dest.exists():
        try:
            os.rename(src, dest)  # atomic; refuses a non-empty dest created meanwhile
            return True
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    if keep_existing:
        shutil.rmtree(src, ignore_errors=True)
        return False
    if exchange_dirs(src, dest):
        shutil.rmtree(src, ignore_errors=True)  # src now holds the old version
        return True
    old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
    os.replace(dest, old / "d")
    try:
        os.rename(src, dest)
    except BaseException:
        os.replace(old / "d", dest)  # put the previous version back
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return True


@contextlib.contextmanager
def atomic_dir(out_dir: str | Path, *, keep_existing: bool = False) -> Iterator[Path]:
    """Yield an empty temp directory beside `out_dir`; on success it replaces `out_dir`, on error it is removed.

    Args:
        out_dir: the artifact directory (its parent is created).
        keep_existing: see `replace_dir` (a cache entry another process finished first is kept).
    Raises:
        NotADirectoryError: `out_dir` exists and is not a directory (checked before anything is written).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"output path {out_dir} exists and is not a directory; remove it or pick another")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; an artifact reads like any other directory
        replace_dir(tmp, out_dir, keep_existing=keep_existing)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = False) -> None:
    """Write `data` to a temp file beside `path`, then rename it over `path` (never half-written).

    `fsync=True` also makes the bytes durable before the rename (a pointer file such as `latest`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = False) -> None:
    """`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_lines(path: str | Path, lines: Iterable[str]) -> str:
    """Stream `lines` (each + "\n") to a temp file beside `path`, then rename; returns the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for line in lines:
                b = (line + "\n").encode()
                h.update(b)
                f.write(b)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return h.hexdigest()


# ---- naming content --------------------------------------------------------------------------------
def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_hashes(root: str | Path, *, exclude: tuple[str, ...] = (MANIFEST,)) -> dict[str, str]:
    """sha256 of every file under `root` by POSIX relative path, except top-level files named in `exclude`."""
    root = Path(root)
    return {
        p.relative_to(root).as_posix(): file_sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() not in exclude
    }


def content_digest(hashes: Mapping[str, str]) -> str:
    """The content digest of a set of files: sha256 over "<sha256>  <path>\\n" lines sorted by path."""
    return sha256_bytes("".join(f"{h}  {p}\n" for p, h in sorted(hashes.items())).encode())


def dir_digest(root: str | Path) -> str:
    """The content digest of a directory artifact, as lineage records it.

    The digest its manifest.json records (`digest`) if it has one, else `content_digest` of the files
    its manifest lists (`sha256`), else of every file in it but the manifest.
    """
    root = Path(root)
    manifest = root / MANIFEST
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        if isinstance(data.get("digest"), str):
            return data["digest"]
        if isinstance(data.get("sha256"), dict):
            return content_digest(data["sha256"])
    return content_digest(file_hashes(root))
