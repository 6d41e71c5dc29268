"""What the host adds around the shell's bubblewrap sandbox so that limits hold for the sandbox as a whole.

- `Cgroup`: one cgroup per shell session for memory (processes plus the RAM-backed files they write),
  the number of processes, and CPU time; also the list of the sandbox's processes, so that what
  a command leaves running can be killed after it. cgroup v1 (per-controller hierarchies) and v2
  (a delegated subtree) are supported.
- `WorkspaceQuota`: while a shell runs, the episode workspace is a tmpfs of `workspace_mb` (mounted
  over the workspace directory, its files copied in and, at the end, back), so writes and
  `fallocate` past the quota fail with ENOSPC.
- `probe()`: which of these this machine and user can provide. Both need root (or a delegated
  cgroup); elsewhere the shell tool refuses to start unless `agent.shell.allow_weak_limits` is set.

Nothing here runs at import time.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import secrets
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from deepresearch.agent.tools.workspace import clear_dir, copy_tree
from deepresearch.errors import ToolError

MS_NOSUID, MS_NODEV, MS_BIND, MS_REC = 0x2, 0x4, 0x1000, 0x4000
MNT_DETACH = 0x2
CGROUP_PREFIX = "deepresearch-shell-"
log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    libc = _libc()
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    rc = libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                    data.encode() if data else None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def umount(target: str) -> None:
    """Detach the mount at `target` (lazily: it goes once nothing uses it)."""
    libc = _libc()
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    if libc.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {target}: {os.strerror(err)}")


# --------------------------------------------------------------------------- cgroups


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount point, root inside the hierarchy, fs type, super options) of every cgroup mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fields, rest = pre.split(), post.split()
            if len(rest) >= 3 and rest[0] in ("cgroup", "cgroup2"):
                out.append((fields[4], fields[3], rest[0], set(rest[2].split(","))))
    return out


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path per v1 controller, and under "" its v2 path."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                out[c] = path
    return out


def _join(mountpoint: str, mount_root: str, path: str) -> Path:
    if mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
        path = path[len(mount_root):]
    return Path(mountpoint) / path.lstrip("/")


@dataclass
class Cgroup:
    """The cgroup(s) of one sandbox: `procs_files` are where its first process writes its pid to join."""

    name: str
    dirs: list[Path]
    procs_files: list[Path]
    version: int

    @classmethod
    def create(cls, memory_bytes: int, max_pids: int, cpus: float) -> Cgroup:
        """A new cgroup below this process's own, with the three limits set.

        Raises:
            ToolError: no usable hierarchy (the message says what is missing).
        """
        v1, why = _v1_parents()
        if v1 is not None:
            return cls._create_v1(v1, memory_bytes, max_pids, cpus)
        v2, why2 = _v2_parent()
        if v2 is not None:
            return cls._create_v2(v2, memory_bytes, max_pids, cpus)
        raise ToolError(f"no cgroup for the sandbox: {why}; {why2}")

    @classmethod
    def _create_v1(cls, parents: dict[str, Path], memory_bytes: int, max_pids: int, cpus: float) -> Cgroup:
        name = CGROUP_PREFIX + secrets.token_hex(6)
        made: list[Path] = []
        try:
            for controller, parent in parents.items():
                d = parent / name
                d.mkdir()
                made.append(d)
                if controller == "memory":
                    (d / "memory.limit_in_bytes").write_text(str(memory_bytes))
                    # with swap accounting, memory+swap too: otherwise the sandbox could swap past its limit
                    with contextlib.suppress(OSError):
                        (d / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
                elif controller == "pids":
                    (d / "pids.max").write_text(str(max_pids))
                elif controller == "cpu":
                    (d / "cpu.cfs_period_us").write_text("100000")
                    (d / "cpu.cfs_quota_us").write_text(str(max(1000, int(cpus * 100000))))
        except OSError as e:
            for d in made:
                with contextlib.suppress(OSError):
                    d.rmdir()
            raise ToolError(f"could not set up the sandbox's cgroup ({e})") from None
        return cls(name=name, dirs=made, procs_files=[d / "cgroup.procs" for d in made], version=1)

    @classmethod
    def _create_v2(cls, parent: Path, memory_bytes: int, max_pids: int, cpus: float) -> Cgroup:
        d = parent / (CGROUP_PREFIX + secrets.token_hex(6))
        try:
            d.mkdir()
            (d / "memory.max").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):
                (d / "memory.swap.max").write_text("0")
            (d / "pids.max").write_text(str(max_pids))
            with contextlib.suppress(OSError):  # cpu may not be delegated; memory and pids are what must hold
                (d / "cpu.max").write_text(f"{max(1000, int(cpus * 100000))} 100000")
        except OSError as e:
            with contextlib.suppress(OSError):
                d.rmdir()
            raise ToolError(f"could not set up the sandbox's cgroup ({e})") from None
        return cls(name=d.name, dirs=[d], procs_files=[d / "cgroup.procs"], version=2)

    def pids(self) -> list[int]:
        """Every process in the sandbox (one hierarchy lists them all: the sandbox joins each at once)."""
        try:
            return [int(x) for x in self.procs_files[0].read_text().split()]
        except OSError:
            return []

    def holds(self, pid: int) -> bool:
        """Whether `pid` is (still) in this cgroup."""
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                return f"/{self.name}" in f.read()
        except OSError:
            return False

    def remove(self, deadline: float) -> bool:
        """Kill every process left and remove the cgroup; False if it could not be removed by `deadline`."""
        while True:
            for pid in self.pids():
                kill_pid(pid, self.holds)
            left = []
            for d in self.dirs:
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    left.append(d)
            self.dirs = left
            if not left:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)


def _v1_parents() -> tuple[dict[str, Path] | None, str]:
    own = _own_cgroups()
    parents: dict[str, Path] = {}
    for mountpoint, root, fstype, opts in _mounts():
        if fstype != "cgroup":
            continue
        for controller in ("memory", "pids", "cpu"):
            if controller in opts and controller in own and controller not in parents:
                parents[controller] = _join(mountpoint, root, own[controller])
    missing = [c for c in ("memory", "pids") if c not in parents]
    if missing:
        return None, f"cgroup v1: no {' or '.join(missing)} hierarchy"
    unwritable = [str(p) for p in parents.values() if not os.access(p, os.W_OK)]
    if unwritable:
        return None, f"cgroup v1: cannot create cgroups in {', '.join(unwritable)} (not root, no delegation)"
    return parents, ""


def _v2_parent() -> tuple[Path | None, str]:
    own = _own_cgroups().get("")
    unified = next(((m, r) for m, r, t, _ in _mounts() if t == "cgroup2"), None)
    if own is None or unified is None:
        return None, "cgroup v2: not mounted"
    parent = _join(unified[0], unified[1], own)
    try:
        enabled = set((parent / "cgroup.subtree_control").read_text().split())
        if not {"memory", "pids"} <= enabled:
            # Works where this process's cgroup may delegate (e.g. the root cgroup); a cgroup that
            # holds processes itself cannot enable domain controllers below it (EBUSY).
            (parent / "cgroup.subtree_control").write_text("+memory +pids")
    except OSError as e:
        return None, (
            f"cgroup v2: cannot enable the memory and pids controllers below {parent} ({e.strerror or e}); "
            "run under a delegated cgroup (e.g. systemd-run --scope -p Delegate=yes)"
        )
    if not os.access(parent, os.W_OK):
        return None, f"cgroup v2: {parent} is not writable"
    return parent, ""


def kill_pid(pid: int, is_ours) -> bool:
    """SIGKILL `pid` if `is_ours(pid)`, without the risk of killing a recycled pid; True if signalled.

    The pidfd pins the process: checked after opening it, the pid cannot be reused for another
    process before the signal (sending to a pidfd of a process that died fails instead).
    """
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if not is_ours(pid):
            return False
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        return True
    except OSError:
        return False
    finally:
        os.close(pidfd)


# --------------------------------------------------------------------------- workspace quota


class WorkspaceQuota:
    """Mount a tmpfs of `size_mb` over `workspace` (its contents copied in, owned by uid/gid) until `close`.

    The host keeps using the workspace by its path; the sandbox gets the same mount. `close` copies
    the contents back into the directory underneath (after the sandbox's processes are gone, so
    nothing changes while it copies) and detaches the tmpfs.
    """

    def __init__(self, workspace: Path, size_mb: int, uid: int, gid: int):
        self.path = Path(workspace).resolve()
        self.size_mb = size_mb
        self.closed = False
        self.under_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # stays reachable
        target = os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            # nr_inodes bounds the kernel memory of many small files as size bounds their bytes
            opts = f"size={size_mb}m,nr_inodes={max(1024, size_mb * 64)},mode=0755,uid={uid},gid={gid}"
            mount("tmpfs", f"/proc/self/fd/{target}", "tmpfs", MS_NOSUID | MS_NODEV, opts)
        except OSError:
            os.close(self.under_fd)
            raise
        finally:
            os.close(target)
        self.top_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            copy_tree(self.under_fd, self.top_fd, owner=(uid, gid))
        except OSError as e:
            self._detach()
            if e.errno == 28:  # ENOSPC
                raise ToolError(
                    f"shell: the workspace holds more than agent.shell.workspace_mb={size_mb} MB; "
                    "remove files or raise the quota"
                ) from None
            raise

    def _detach(self) -> None:
        with contextlib.suppress(OSError):
            umount(f"/proc/self/fd/{self.top_fd}")
        for fd in (self.top_fd, self.under_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.closed = True

    def close(self) -> None:
        """Copy the workspace back into the directory underneath and remove the tmpfs."""
        if self.closed:
            return
        try:
            clear_dir(self.under_fd)
            copy_tree(self.top_fd, self.under_fd, deadline=time.monotonic() + 60)
        except Exception as e:
            # episode contexts swallow closer errors: say here that files may be missing
            log.warning("shell: copying the workspace back to %s failed (%s: %s); files may be missing",
                        self.path, type(e).__name__, e)
            raise
        finally:
            self._detach()


# --------------------------------------------------------------------------- what this machine offers


@dataclass(frozen=True)
class Support:
    """Which whole-sandbox mechanisms this process can use; `missing` says why not, one line each."""

    root: bool
    cgroup: bool
    quota: bool
    missing: list[str] = field(default_factory=list)


@functools.lru_cache(maxsize=1)
def probe() -> Support:
    """Try each mechanism once (create and remove a cgroup; mount and unmount a tmpfs)."""
    root = os.geteuid() == 0
    missing = []
    try:
        Cgroup.create(16 << 20, 8, 1.0).remove(time.monotonic() + 2)
        cgroup = True
    except ToolError as e:
        cgroup = False
        missing.append(f"memory and process limits for the whole sandbox ({e})")
    quota = False
    if not root:
        missing.append("a workspace quota (mounting a sized tmpfs needs root)")
    else:
        d = tempfile.mkdtemp(prefix="deepresearch-probe-")
        try:
            mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m")
            umount(d)
            quota = True
        except OSError as e:
            missing.append(f"a workspace quota (cannot mount a tmpfs: {e.strerror})")
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(d)
    return Support(root=root, cgroup=cgroup, quota=quota, missing=missing)
