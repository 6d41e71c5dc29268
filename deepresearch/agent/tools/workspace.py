"""Confined access to the episode workspace from the host: no path the agent controls is ever followed out.

The sandboxed shell can change the workspace at any moment, also while the host's file tool is in
the middle of a call (swap a file for a symlink to /etc/shadow, a directory for a link to /root).
Checking a path and then opening it by name loses that race. Here every path is walked one
component at a time from a directory file descriptor, each component opened with O_NOFOLLOW
relative to the directory already held open; a symlink is read and its target walked the same way,
from the workspace root. Whatever is swapped in between two steps, what gets opened lies inside
the tree. (openat2's RESOLVE_BENEATH does this in one call, but refuses every absolute symlink,
and the shell creates absolute ones: /workspace/..., which must resolve inside the workspace.)

Files are read only when regular (a FIFO would block, a device never end), within a size cap and
a deadline; writes go to a temp file in the held directory, then rename.

    with WorkspaceTree(ctx.workspace) as tree:
        data, rel = tree.read_bytes("notes/draft.md", max_bytes=8 << 20, deadline=time.monotonic() + 10)
        tree.write_bytes("notes/draft.md", b"...")
"""

from __future__ import annotations

import os
import posixpath
import secrets
import stat
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from deepresearch.errors import ToolError

SHELL_WORKSPACE = PurePosixPath("/workspace")  # where the sandboxed shell mounts the workspace
MAX_LINKS = 40  # symlinks followed in one path, as the kernel's ELOOP limit
MAX_COMPONENTS = 256  # each directory on the way is held open
_O_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_CHUNK = 1 << 20


class Escape(ToolError):
    """The path (through '..' or a symlink) leaves the workspace."""


@dataclass
class Location:
    """Where a path ends: the directory holding it (an open fd) and its name there (None: that directory)."""

    dir_fd: int
    name: str | None
    st: os.stat_result | None  # of the final entry, not following it; None when it does not exist


def relative_form(path: str) -> str:
    """The agent's path as a workspace-relative POSIX path (`/workspace/x` is accepted as `x`).

    Raises:
        ToolError: an empty path, a NUL byte, or an absolute path outside /workspace.
    """
    raw = path.strip()
    if not raw or "\x00" in raw:
        raise ToolError(f"file: invalid path {path!r}; give a path relative to the workspace, e.g. notes.md")
    p = PurePosixPath(raw)
    if p.is_absolute():
        # The shell sees the workspace as /workspace, so accept that spelling for the same files.
        if p == SHELL_WORKSPACE or SHELL_WORKSPACE in p.parents:
            return p.relative_to(SHELL_WORKSPACE).as_posix()
        raise ToolError(
            f"file: path {path!r} is outside the workspace; use a path relative to the workspace "
            f"(e.g. notes.md or {SHELL_WORKSPACE}/notes.md)"
        )
    return p.as_posix()


def display(rel: str) -> str:
    """How a relative path is named in observations: normalized, "." for the root."""
    norm = posixpath.normpath(rel)
    return "." if norm in ("", ".") else norm


class WorkspaceTree:
    """Open handle on a workspace root; every operation resolves inside it. Use as a context manager."""

    def __init__(self, root: Path):
        self.root = Path(root)
        # The root itself is the caller's, not the agent's: following it is fine. It is opened per
        # call, never cached, because the shell tool mounts a tmpfs over it while a shell runs.
        self.root_fd = os.open(self.root, _O_DIR)
        self._owned: list[int] = []
        self._real_root = os.path.realpath(self.root)
        root_st = os.fstat(self.root_fd)
        # Root creates files in a workspace the sandbox user owns: give them to that user.
        self._chown = (root_st.st_uid, root_st.st_gid) if os.geteuid() == 0 and root_st.st_uid != 0 else None

    def __enter__(self) -> WorkspaceTree:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._owned:
            os.close(fd)
        self._owned.clear()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    def _hold(self, fd: int) -> int:
        self._owned.append(fd)
        return fd

    def _link_parts(self, target: str, path: str) -> tuple[list[str], bool]:
        """A symlink's target as components, and whether it restarts from the root."""
        if not target.startswith("/"):
            return target.split("/"), False
        t = PurePosixPath(posixpath.normpath(target))
        for base in (SHELL_WORKSPACE, PurePosixPath(self._real_root), PurePosixPath(self.root)):
            if t == base or base in t.parents:
                return list(t.relative_to(base).parts), True
        raise Escape(
            f"file: path {path!r} resolves to a location outside the workspace (via a symlink to {target!r}); "
            "use a path inside the workspace"
        )

    def locate(self, path: str, *, follow_last: bool = True, create_dirs: bool = False) -> Location:
        """Walk `path` (workspace-relative) without ever leaving the tree.

        Args:
            follow_last: follow a symlink in the final component (inside the tree) too.
            create_dirs: create missing intermediate directories (for writes).
        Raises:
            Escape: '..' above the root, or a symlink out of the tree.
            ToolError: too many symlinks. FileNotFoundError / NotADirectoryError: as the OS says.
        """
        todo = deque(p for p in relative_form(path).split("/"))
        if len(todo) > MAX_COMPONENTS:
            raise ToolError(f"file: path {path[:100]!r}... has more than {MAX_COMPONENTS} components")
        stack = [self.root_fd]
        links = 0
        while todo:
            comp = todo.popleft()
            if comp in ("", "."):
                continue
            if comp == "..":
                if len(stack) == 1:
                    raise Escape(
                        f"file: path {path!r} resolves to a location outside the workspace (via '..'); "
                        "use a path inside the workspace"
                    )
                stack.pop()
                continue
            last = not any(c not in ("", ".") for c in todo)
            cur = stack[-1]
            try:
                # One atomic step: O_PATH|O_NOFOLLOW opens a symlink as itself, so what we inspect is
                # exactly what is there now, and a directory we descend into is held open.
                fd = os.open(comp, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
            except FileNotFoundError:
                if last:
                    return Location(cur, comp, None)
                if not create_dirs:
                    raise
                self.mkdir(cur, comp)
                fd = os.open(comp, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                if last and not follow_last:
                    os.close(fd)
                    return Location(cur, comp, st)
                target = os.readlink("", dir_fd=fd)
                os.close(fd)
                links += 1
                if links > MAX_LINKS:
                    raise ToolError(f"file: path {path!r} goes through more than {MAX_LINKS} symlinks")
                parts, absolute = self._link_parts(target, path)
                if absolute:
                    del stack[1:]
                todo.extendleft(reversed(parts))
                continue
            if stat.S_ISDIR(st.st_mode) and not last:
                stack.append(self._hold(fd))
                continue
            os.close(fd)
            if last:
                return Location(cur, comp, st)
            raise NotADirectoryError(20, "Not a directory", comp)
        return Location(stack[-1], None, os.fstat(stack[-1]))

    def mkdir(self, dir_fd: int, name: str) -> None:
        os.mkdir(name, 0o755, dir_fd=dir_fd)
        if self._chown:
            os.chown(name, *self._chown, dir_fd=dir_fd, follow_symlinks=False)

    # ------------------------------------------------------------------ operations

    def open_dir(self, path: str) -> int:
        """A readable fd of the directory `path` (owned by this tree)."""
        loc = self.locate(path)
        if loc.st is None:
            raise FileNotFoundError(2, "No such file or directory", path)
        name = "." if loc.name is None else loc.name
        return self._hold(os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=loc.dir_fd))

    def read_bytes(self, path: str, *, max_bytes: int, deadline: float) -> bytes:
        """The content of the regular file `path`.

        Raises:
            FileNotFoundError, IsADirectoryError: as the OS says.
            ToolError: not a regular file (a FIFO, a device), larger than `max_bytes`, or not read
                by `deadline` (time.monotonic()).
        """
        rel = display(relative_form(path))
        for _ in range(3):
            loc = self.locate(path)
            if loc.st is None:
                raise FileNotFoundError(2, "No such file or directory", rel)
            if loc.name is None or stat.S_ISDIR(loc.st.st_mode):
                raise IsADirectoryError(21, "Is a directory", rel)
            try:
                # O_NONBLOCK: if a FIFO was swapped in since, opening it must not wait for a writer
                fd = os.open(loc.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=loc.dir_fd)
            except OSError as e:
                if e.errno == 40:  # ELOOP: the entry became a symlink since the walk; walk again
                    continue
                raise
            try:
                return _read_regular(fd, rel, max_bytes, deadline)
            finally:
                os.close(fd)
        raise ToolError(f"file: {rel} keeps changing between a file and a symlink; try again later")

    def write_bytes(self, path: str, data: bytes) -> bool:
        """Replace (or create) the file `path` atomically; returns whether it was created.

        Keeps the permission bits of an existing file, so a patched script stays executable.
        """
        rel = display(relative_form(path))
        loc = self.locate(path, create_dirs=True)
        if loc.name is None or (loc.st is not None and stat.S_ISDIR(loc.st.st_mode)):
            raise ToolError(f"file: {rel} is a directory; give a file path")
        mode = stat.S_IMODE(loc.st.st_mode) if loc.st is not None and stat.S_ISREG(loc.st.st_mode) else 0o644
        tmp = f".{loc.name[:100]}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=loc.dir_fd)
        try:
            with os.fdopen(fd, "wb", closefd=True) as f:
                f.write(data)
                os.fchmod(f.fileno(), mode)
                if self._chown:
                    os.fchown(f.fileno(), *self._chown)
            # rename never follows the target name: whatever was swapped in there is replaced
            os.rename(tmp, loc.name, src_dir_fd=loc.dir_fd, dst_dir_fd=loc.dir_fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=loc.dir_fd)
            except OSError:
                pass
            raise
        return loc.st is None

    def list_dir(self, path: str) -> list[dict]:
        """Entries of the directory `path`, sorted by name: {name, type, size (files only)}."""
        fd = self.open_dir(path)
        entries = []
        with os.scandir(fd) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    entries.append({"name": e.name, "type": "symlink"})
                elif stat.S_ISDIR(st.st_mode):
                    entries.append({"name": e.name + "/", "type": "dir"})
                elif stat.S_ISREG(st.st_mode):
                    entries.append({"name": e.name, "type": "file", "size": st.st_size})
                else:
                    entries.append({"name": e.name, "type": "other"})
        return sorted(entries, key=lambda x: x["name"].rstrip("/"))


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "not a regular file"


def _read_regular(fd: int, rel: str, max_bytes: int, deadline: float) -> bytes:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise ToolError(f"file: {rel} is {_kind(st.st_mode)}, not a regular file; the file tool reads only regular files")
    if st.st_size > max_bytes:
        raise ToolError(
            f"file: {rel} is {st.st_size:,} bytes, over the file tool's limit of {max_bytes:,}; read parts of it "
            f"with the shell tool (e.g. sed -n '1,200p' {rel})"
        )
    parts, got = [], 0
    while True:
        if time.monotonic() > deadline:
            raise ToolError(f"file: reading {rel} took too long; read parts of it with the shell tool")
        chunk = os.read(fd, min(_CHUNK, max_bytes + 1 - got))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        got += len(chunk)
        if got > max_bytes:  # it grew while being read
            raise ToolError(f"file: {rel} grew past the file tool's limit of {max_bytes:,} bytes while being read")


# --------------------------------------------------------------------------- whole trees

MAX_TREE_DEPTH = 128  # directories nested deeper are not copied (the sandbox can nest thousands)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _copy_file(src: int, dst: int, size: int) -> None:
    """Copy only the data regions (SEEK_DATA/SEEK_HOLE): a 10 GB sparse file must not become 10 GB on disk."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(src, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            break
        end = os.lseek(src, start, os.SEEK_HOLE)
        os.lseek(src, start, os.SEEK_SET)
        os.lseek(dst, start, os.SEEK_SET)
        left = end - start
        while left > 0:
            chunk = os.read(src, min(_CHUNK, left))
            if not chunk:
                break
            os.write(dst, chunk)
            left -= len(chunk)
        pos = end
    os.ftruncate(dst, size)


def copy_tree(src_fd: int, dst_fd: int, *, owner: tuple[int, int] | None = None, deadline: float | None = None) -> None:
    """Copy the contents of directory `src_fd` into directory `dst_fd`: regular files (sparse stays
    sparse), directories and symlinks (as links, never followed); FIFOs, sockets, devices and
    directories nested deeper than MAX_TREE_DEPTH are skipped.

    Args:
        owner: (uid, gid) to give every created entry (when root copies for another user).
        deadline: time.monotonic() by which the copy must end (TimeoutError).
    """
    # iterative: the tree's depth is the sandbox's choice, the host's stack is not
    todo: list[tuple[int, int, int]] = [(os.dup(src_fd), os.dup(dst_fd), 1)]
    try:
        while todo:
            s_dir, d_dir, depth = todo.pop()
            try:
                with os.scandir(s_dir) as it:
                    entries = [(e.name, e.stat(follow_symlinks=False)) for e in it]
                for name, st in entries:
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(f"copying the workspace took too long (at {name!r})")
                    mode = stat.S_IMODE(st.st_mode)
                    if stat.S_ISLNK(st.st_mode):
                        os.symlink(os.readlink(name, dir_fd=s_dir), name, dir_fd=d_dir)
                    elif stat.S_ISDIR(st.st_mode):
                        if depth >= MAX_TREE_DEPTH:
                            continue
                        os.mkdir(name, mode | 0o700, dir_fd=d_dir)
                        todo.append((os.open(name, _DIR_FLAGS, dir_fd=s_dir), os.open(name, _DIR_FLAGS, dir_fd=d_dir),
                                     depth + 1))
                    elif stat.S_ISREG(st.st_mode):
                        s = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=s_dir)
                        try:
                            d = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                        mode, dir_fd=d_dir)
                            try:
                                _copy_file(s, d, st.st_size)
                                os.fchmod(d, mode)
                            finally:
                                os.close(d)
                        finally:
                            os.close(s)
                    else:
                        continue
                    if owner is not None:
                        os.chown(name, *owner, dir_fd=d_dir, follow_symlinks=False)
            finally:
                os.close(s_dir)
                os.close(d_dir)
    finally:
        for s_dir, d_dir, _ in todo:
            os.close(s_dir)
            os.close(d_dir)


def clear_dir(dir_fd: int) -> None:
    """Remove everything inside directory `dir_fd` (never following links), however deep."""
    # a stack of (fd, names still to remove); a directory is removed once it is empty
    stack: list[tuple[int, str | None]] = [(os.dup(dir_fd), None)]
    try:
        while stack:
            fd, _ = stack[-1]
            descended = False
            with os.scandir(fd) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            for name, is_dir in entries:
                if is_dir:
                    stack.append((os.open(name, _DIR_FLAGS, dir_fd=fd), name))
                    descended = True
                    break
                os.unlink(name, dir_fd=fd)
            if descended:
                continue
            fd, name = stack.pop()
            os.close(fd)
            if name is not None:
                os.rmdir(name, dir_fd=stack[-1][0])
    finally:
        for fd, _ in stack:
            os.close(fd)
