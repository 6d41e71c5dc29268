"""The `shell` tool: a persistent bash session per episode, inside a bubblewrap sandbox.

Each episode gets its own tmux server (a private socket) whose single pane runs an interactive
bash under `bwrap`: no network (all namespaces unshared), a read-only system (/usr, /etc), a
private /tmp, and the episode workspace bound read-write at /workspace, its working directory.

What holds against the commands a policy samples (tests/test_sandbox.py attacks each point):

- **No privilege.** bubblewrap runs unprivileged in a new user namespace with every capability
  dropped and no nested user namespaces. Run as root, the tool first drops to an unprivileged
  uid/gid (`agent.shell.sandbox_uid`, setpriv), so the sandbox's files and processes belong to that
  user on the host: it cannot remount the read-only system, read /etc/shadow, or write the host.
- **Nothing the sandbox writes is followed by the host.** Commands reach the shell as files in a
  control directory the sandbox sees read-only (/run/agent-shell); output and the exit status come
  back through FIFOs the host created there and holds open read-write and non-blocking (it never
  waits on them, and reads at most a head and tail of the output). The status line carries a
  random nonce per command, so a result written in advance cannot end a later call.
- **An empty environment.** bubblewrap itself starts from `env -i`, so not even the sandbox's
  pid 1 holds the host's variables (API keys, MLFLOW_TRACKING_URI).
- **Limits for the sandbox as a whole**, where the machine allows (confine.py): a cgroup caps the
  memory of all its processes together (and the RAM-backed files they write), the number of
  processes and the CPU; the workspace is a tmpfs of `workspace_mb` while a shell runs; /tmp and
  /dev/shm are sized tmpfs, /dev is read-only. Every process but the shell is killed after each
  call, so nothing keeps running (or eating CPU) between calls. Each process is also capped at
  `memory_mb` of address space (ulimit -v). Where the machine cannot give the cgroup or the quota
  (not root, no delegated cgroup), the tool refuses to start a shell unless
  `agent.shell.allow_weak_limits` is true; then it warns and relies on per-process ulimits.

Because the session persists, state carries over between calls: `cd`, exported variables,
functions and files. A command is sourced by the pane's shell with stdin from /dev/null. A command
that runs past its timeout has every process but the shell killed, then Ctrl-C; if the shell does
not come back, it is closed and the next call starts a fresh one.

    ctx = EpisodeContext(workspace=Path("ws"), agent=AgentConfig())
    Shell()({"command": "cd notes && export X=1"}, ctx)
    Shell()({"command": "pwd; echo $X"}, ctx)  # {"exit_code": 0, "output": "/workspace/notes\\n1\\n"}
    ctx.close()  # kills the tmux server and the sandbox

Requires Linux ≥ 5.3 (pidfds), the `tmux`, `bwrap` (and, as root, `setpriv`) binaries
(apt-get install tmux bubblewrap util-linux) and the libtmux package.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import select
import shlex
import shutil
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from deepresearch.agent.tools.base import EpisodeContext, Tool, ToolArgs, dumps_observation, register_tool
from deepresearch.agent.tools.confine import (
    MS_BIND,
    Cgroup,
    Support,
    WorkspaceQuota,
    kill_pid,
    mount,
    probe,
    umount,
)
from deepresearch.errors import ToolError

if TYPE_CHECKING:
    from deepresearch.config import ShellConfig

log = logging.getLogger(__name__)

CTL_MOUNT = "/run/agent-shell"  # the control directory as the sandboxed shell sees it
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
START_TIMEOUT_S = 10.0  # for the sandboxed shell to reach its first prompt
INTERRUPT_WAIT_S = 1.5  # for the shell to come back after each Ctrl-C
CLOSE_WAIT_S = 2.0  # for the sandbox's processes to end when the session is closed
MAX_OUTPUT_BYTES = 32 << 20  # a command writing more is interrupted (the host keeps only head and tail)
_STATUS_RE = re.compile(rb"^([0-9a-f]{32}) ([0-9]{1,3})$")
_warned_weak = False


class ShellArgs(ToolArgs):
    command: str = Field(min_length=1, description="bash command line(s)")
    timeout_s: float | None = Field(
        None, gt=0, description="seconds before it is interrupted"
    )


@dataclass
class _Outcome:
    status: Literal["done", "timeout", "overflow", "exited"]
    exit_code: int | None
    output: str  # already truncated to the configured limit
    alive: bool  # the shell is still running, with its state, after this command


def _require_binaries(root: bool) -> dict[str, str]:
    found = {}
    for binary in ("tmux", "bwrap", "env") + (("setpriv",) if root else ()):
        path = shutil.which(binary)
        if path is None:
            raise ToolError(
                f"shell: the {binary!r} binary was not found on PATH; the shell tool needs tmux and "
                "bubblewrap (install them with: apt-get install tmux bubblewrap)"
            )
        found[binary] = path
    return found


def check_support(cfg: ShellConfig) -> Support:
    """What confinement this machine gives; refuses (ToolError) where it is too weak and not allowed."""
    global _warned_weak
    support = probe()
    if support.root and not support.quota:
        raise ToolError(
            "shell: refusing to start: running as root, the shell tool must mount (CAP_SYS_ADMIN) to hand "
            "the sandbox its workspace as an unprivileged user, and this process cannot: "
            + "; ".join(support.missing)
            + ". Run the tool as a normal user, or with CAP_SYS_ADMIN."
        )
    if support.missing:
        if not cfg.allow_weak_limits:
            raise ToolError(
                "shell: refusing to start: this machine cannot confine the sandbox as a whole; missing: "
                + "; ".join(support.missing)
                + ". Run as root (or in a delegated cgroup), or set agent.shell.allow_weak_limits=true to run "
                "with per-process limits only (several processes together can then exceed memory_mb and "
                "max_processes, and the workspace has no quota)."
            )
        if not _warned_weak:
            _warned_weak = True
            log.warning(
                "shell sandbox runs with per-process limits only (agent.shell.allow_weak_limits=true); missing: %s",
                "; ".join(support.missing),
            )
    return support


def truncate_output(text: str, max_chars: int, total: str | None = None) -> str:
    """Cut `text` to at most `max_chars` characters: its head and tail around a note of what was cut.

    The tail is kept because errors usually come last; `total` overrides the size in the note
    (when the text is itself already a head+tail excerpt of a larger output).
    """
    if len(text) <= max_chars and total is None:
        return text
    note = (
        f"\n[... output truncated: {total or f'{len(text)} chars'} in total, showing the start and end ...]\n"
    )
    keep = max(max_chars - len(note), 0)
    head, tail = keep - keep // 2, keep // 2
    return text[:head] + note + (text[-tail:] if tail else "")


class _Sink:
    """A command's output as it streams in: the first and last `window` bytes and the total, nothing more."""

    def __init__(self, window: int):
        self.window = window
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.window - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.window:
                del self.tail[: len(self.tail) - self.window]

    def text(self, max_chars: int) -> str:
        whole = self.total == len(self.head) + len(self.tail)
        if whole:
            return truncate_output((self.head + self.tail).decode("utf-8", errors="replace"), max_chars)
        text = self.head.decode("utf-8", errors="replace") + self.tail.decode("utf-8", errors="replace")
        return truncate_output(text, max_chars, total=f"{self.total} bytes")


def _proc_status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return {}


@dataclass
class _Resources:
    """What a session holds on the host; torn down by `_teardown` (also from a finalizer, so no `self`)."""

    base: Path
    server: Any = None
    pidfd: int = -1
    cgroup: Cgroup | None = None
    bind: Path | None = None  # base/ws when the workspace is bind-mounted there (root)
    quota: WorkspaceQuota | None = None  # owned by the session only when it made it itself
    fds: list[int] = field(default_factory=list)


def _teardown(res: _Resources) -> None:
    with contextlib.suppress(Exception):  # the server may already be gone
        if res.server is not None:
            res.server.kill()
    if res.pidfd >= 0:
        # The pane's process is the outer bwrap; its death takes the sandbox's pid 1, and with it every
        # process in the sandbox's pid namespace.
        with contextlib.suppress(OSError):
            import signal

            signal.pidfd_send_signal(res.pidfd, signal.SIGKILL)
        select.select([res.pidfd], [], [], CLOSE_WAIT_S)
    if res.cgroup is not None and not res.cgroup.remove(time.monotonic() + CLOSE_WAIT_S):
        log.warning("shell: could not remove the sandbox's cgroup %s", res.cgroup.dirs)
    for fd in [*res.fds, res.pidfd]:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
    res.fds.clear()
    res.pidfd = -1
    if res.bind is not None:
        with contextlib.suppress(OSError):
            umount(str(res.bind))
        if os.path.ismount(res.bind):
            # rmtree would descend into the workspace and delete it: leave base/ behind instead
            log.warning("shell: could not unmount %s; leaving %s in place", res.bind, res.base)
            return
        res.bind = None
    if res.quota is not None:
        with contextlib.suppress(Exception):
            res.quota.close()
    shutil.rmtree(res.base, ignore_errors=True)


class ShellSession:
    """One sandboxed bash in its own tmux server; `execute` runs a command and waits for it."""

    def __init__(self, workspace: Path, cfg: ShellConfig, quota: WorkspaceQuota | None = None):
        if not workspace.is_dir():
            raise ToolError(f"shell: the episode workspace {workspace} is not a directory")
        support = check_support(cfg)
        self.bins = _require_binaries(support.root)
        try:
            import libtmux  # only needed once a shell is actually used
        except ImportError:
            raise ToolError("shell: the libtmux package is not installed (run `uv sync`)") from None
        self.cfg = cfg
        self.root = support.root
        self.n = 0  # commands sent; numbers the per-command control files
        self.closed = False
        self.pane_pid: int | None = None
        # base/host/ (mode 0700) holds the tmux socket, its config and the launch script: tmux commands
        # run on the host, so none of it may be reachable from the sandbox. base/ctl/ is what the
        # sandbox sees, read-only. As root, base is 0710 with the sandbox's group, so that bubblewrap,
        # already running as the unprivileged sandbox user, can reach ctl/ and ws/ by path (it resolves
        # its bind sources).
        self.base = Path(tempfile.mkdtemp(prefix="deepresearch-shell-"))
        self._res = _Resources(base=self.base)
        self._finalizer = weakref.finalize(self, _teardown, self._res)
        try:
            self._setup(workspace, cfg, support, quota, libtmux)
        except BaseException:
            self.close()
            raise

    def _setup(self, workspace: Path, cfg: ShellConfig, support: Support, quota, libtmux) -> None:
        host, self.ctl = self.base / "host", self.base / "ctl"
        host.mkdir(mode=0o700)
        self.ctl.mkdir(mode=0o755)
        os.chmod(self.ctl, 0o755)  # regardless of the umask: the sandbox user must read it
        if self.root:
            self.uid, self.gid = cfg.sandbox_uid, cfg.sandbox_gid
            # traversable by the sandbox's group only: other local users must not reach ctl/ or ws/
            os.chown(self.base, 0, self.gid)
            os.chmod(self.base, 0o710)
        else:
            self.uid, self.gid = os.getuid(), os.getgid()
        # The workspace as bubblewrap binds it: as root, the sized tmpfs bind-mounted under base/, since
        # the sandbox user may not be able to reach the caller's path.
        if self.root:
            if quota is None or quota.closed:
                quota = self._res.quota = WorkspaceQuota(workspace, cfg.workspace_mb, self.uid, self.gid)
            ws = self.base / "ws"
            ws.mkdir(mode=0o755)
            mount(f"/proc/self/fd/{quota.top_fd}", str(ws), None, MS_BIND)
            self._res.bind = ws
            self._quota_path: Path | None = quota.path
        else:
            ws = workspace.resolve()
            self._quota_path = None
        if support.cgroup:
            self._res.cgroup = Cgroup.create(cfg.memory_mb << 20, cfg.max_processes, cfg.cpus)
        self.cgroup = self._res.cgroup
        self._pidns: str | None = None

        weak = "" if support.quota else f"ulimit -f {cfg.workspace_mb * 1024}\n"  # per file, in KiB
        self._write_ctl(
            "init.sh",
            "unset HISTFILE\nset +o history\nPS1='$ '\nulimit -c 0\n"
            f"ulimit -v {cfg.memory_mb * 1024}\nulimit -u {cfg.max_processes}\n{weak}"
            f"builtin printf 'ready\\n' >{CTL_MOUNT}/ready\n",
        )
        ready_fd = self._fifo("ready")
        self.argv = self._bwrap_argv(ws)
        joins = "".join(f"echo $$ > {shlex.quote(str(p))} || exit 125\n" for p in (self.cgroup.procs_files if self.cgroup else []))
        # bwrap reports the sandbox's namespaces and, at the end, the shell's exit code on fd 3, a file
        # only the host can reach (the sandbox does not inherit the fd)
        self._status_file = host / "status"
        self._status_file.touch(mode=0o600)
        (host / "launch.sh").write_text(
            "# In the tmux pane, as the tool's user: join the sandbox's cgroup, then start bubblewrap with an\n"
            "# empty environment (as root: as the unprivileged sandbox user, without capabilities).\n"
            f"{self._watchdog()}{joins}exec 3>{shlex.quote(str(self._status_file))}\n"
            f"exec {shlex.join(self._drop_argv() + self.argv)}\n"
        )
        (host / "tmux.conf").write_text(
            # remain-on-exit keeps a failed start's error message readable in the pane
            "set -g remain-on-exit on\nset -g history-limit 200\nset -g status off\n"
            # tmux runs the pane's command with the user's login shell, which may be nologin (nobody's)
            "set -g default-shell /bin/sh\n"
        )
        token = secrets.token_hex(6)
        socket = host / "tmux.sock"
        # A private socket path is removed with base/; a socket name (under /tmp/tmux-UID) is the
        # fallback where the path would exceed the ~107-byte limit of Unix socket addresses.
        where = {"socket_path": str(socket)} if len(str(socket)) < 100 else {"socket_name": f"deepresearch-{token}"}
        self.server = self._res.server = libtmux.Server(config_file=str(host / "tmux.conf"), **where)
        session = self.server.new_session(
            session_name=f"episode-{token}",
            window_command=f"exec /bin/sh {shlex.quote(str(host / 'launch.sh'))}",
            x=200,
            y=50,
        )
        pane = session.active_pane
        assert pane is not None and pane.pane_id is not None and pane.pane_pid is not None
        self.pane_id: str = pane.pane_id
        self.pane_pid = int(pane.pane_pid)
        try:
            self._res.pidfd = os.pidfd_open(self.pane_pid)
        except ProcessLookupError:
            self._res.pidfd = -1  # already gone (and reaped): reported as a failed start below
        self._wait_ready(ready_fd)
        self._release(ready_fd)
        (self.ctl / "ready").unlink()  # a FIFO nobody reads would block whoever opens it
        if self.cgroup is None:
            ns = self._bwrap_status().get("pid-namespace")
            self._pidns = f"pid:[{ns}]" if ns else None

    def _watchdog(self) -> str:
        """Shell code that takes the sandbox down if the tool's process dies without closing it.

        tmux is a daemon: a host killed by SIGKILL (OOM, a task timeout) would leave the tmux server,
        the sandbox and its cgroup and mounts behind. A background loop, started before the pane
        joins the cgroup, polls the host's pid each second; once the host is gone (and the pane is
        still there, so the session was not closed), it kills the pane (bwrap, and with it the
        sandbox's pid namespace) and the tmux server, then removes the cgroup, the mounts and the
        control files. The workspace tmpfs goes too: with the host gone, nobody would copy its files
        back, and it would hold up to `workspace_mb` of RAM for good.
        """
        q = shlex.quote
        cleanup = [f"rmdir {q(str(d))} 2>/dev/null" for d in (self.cgroup.dirs if self.cgroup else [])]
        if self._res.bind is not None:
            cleanup.append(f"umount -l {q(str(self._res.bind))} 2>/dev/null")
            cleanup.append(f"mountpoint -q {q(str(self._res.bind))} || rm -rf {q(str(self.base))}")
        else:
            cleanup.append(f"rm -rf {q(str(self.base))}")
        if self._quota_path is not None:
            cleanup.append(f"umount -l {q(str(self._quota_path))} 2>/dev/null")
        # A pid is only killed if its command line still names this session's files: once the pane or
        # the tmux server is gone, its pid may be reused by an unrelated process.
        ours = f"tr '\\0' ' ' </proc/$1/cmdline 2>/dev/null | grep -qF {q(str(self.base))}"
        return (
            f"ours() {{ {ours}; }}\n"
            f"pane=$$; tmux_server=$PPID; ( while kill -0 {os.getpid()} && kill -0 $pane; do sleep 1; done\n"
            f"  if ! kill -0 {os.getpid()} && ours $pane; then\n"
            f"    kill -9 $pane; ours $tmux_server && kill -9 $tmux_server\n"
            f"    for i in 1 2 3 4 5 6 7 8 9 10; do sleep 0.2; {'; '.join(cleanup)}; done; fi\n"
            ") </dev/null >/dev/null 2>&1 &\n"
        )

    def _drop_argv(self) -> list[str]:
        env = [self.bins["env"], "-i"]
        if not self.root:
            return env
        return env + [
            self.bins["setpriv"], f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
        ]  # fmt: skip

    def _bwrap_argv(self, workspace: Path) -> list[str]:
        tmp = str(self.cfg.tmp_mb << 20)
        return [
            self.bins["bwrap"],
            "--unshare-all", "--unshare-user", "--disable-userns",
            "--die-with-parent",
            "--json-status-fd", "3",
            "--cap-drop", "ALL",
            "--uid", str(self.cfg.sandbox_uid), "--gid", str(self.cfg.sandbox_gid),
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/bin", "/bin",
            "--symlink", "usr/lib", "/lib",
            "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/sbin", "/sbin",
            "--ro-bind", "/etc", "/etc",
            "--bind", str(workspace), "/workspace",
            # a minimal /dev, read-only but for a sized /dev/shm: an unsized RAM-backed /dev is a way around
            # every limit
            "--dev", "/dev",
            "--size", tmp, "--tmpfs", "/dev/shm",
            "--remount-ro", "/dev",
            "--proc", "/proc",
            "--size", tmp, "--tmpfs", "/tmp",
            "--ro-bind", str(self.ctl), CTL_MOUNT,
            "--remount-ro", "/",
            "--chdir", "/workspace",
            "--clearenv",
            "--setenv", "HOME", "/workspace",
            "--setenv", "PATH", SANDBOX_PATH,
            "--setenv", "TERM", "dumb",
            "--setenv", "LANG", "C.UTF-8",
            "bash", "--noprofile", "--rcfile", f"{CTL_MOUNT}/init.sh", "-i",
        ]  # fmt: skip

    # ------------------------------------------------------------------ the control directory

    def _write_ctl(self, name: str, text: str) -> None:
        """A control file, created fresh (O_EXCL, never through a link) in the host-owned directory."""
        fd = os.open(self.ctl / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)

    def _fifo(self, name: str) -> int:
        """A FIFO the sandbox writes to; the host holds it open read-write and non-blocking.

        Holding the write side too means a read never sees end-of-file and poll never reports a
        hang-up: the host only ever reads what is there, and never waits for a writer.
        """
        path = self.ctl / name
        os.mkfifo(path, 0o600)
        if self.root:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        self._res.fds.append(fd)
        return fd

    def _release(self, fd: int) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.close(fd)
            self._res.fds.remove(fd)

    # ------------------------------------------------------------------ low level

    def _type(self, line: str) -> None:
        # One tmux client call types the line and presses Enter (";" separates tmux commands).
        res = self.server.cmd(
            "send-keys", "-t", self.pane_id, "-l", line, ";", "send-keys", "-t", self.pane_id, "Enter"
        )
        if res.stderr:
            raise ToolError(f"shell: could not send the command to the tmux session: {' '.join(res.stderr)}")

    def _pane_alive(self) -> bool:
        if self._res.pidfd < 0:
            return False
        return not select.select([self._res.pidfd], [], [], 0)[0]

    def _screen(self) -> str:
        """The pane's text, for diagnosing a failed start (tmux may lag behind a process that died)."""
        deadline = time.monotonic() + 0.5
        text = ""
        while True:
            with contextlib.suppress(Exception):  # diagnostics only
                text = "\n".join(self.server.cmd("capture-pane", "-p", "-t", self.pane_id).stdout)
            if "Pane is dead" in text or self._pane_alive() or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("Pane is dead")]
        return "\n".join(lines)

    def _diagnose(self) -> str:
        """Run the sandbox once more with `true` instead of bash, to catch bwrap's own error message.

        tmux can drop the last output of a pane whose process dies at once, so the screen may be blank.
        """
        argv = self.argv[: self.argv.index("bash")] + ["true"] if "bash" in self.argv else self.argv
        if "--json-status-fd" in argv:  # fd 3 is the pane's, not ours
            i = argv.index("--json-status-fd")
            argv = argv[:i] + argv[i + 2 :]
        try:
            res = subprocess.run(self._drop_argv() + argv, capture_output=True, text=True, timeout=5, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            return str(e)
        return (res.stderr or res.stdout).strip()

    def _wait_ready(self, ready_fd: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        watch = [ready_fd] + ([self._res.pidfd] if self._res.pidfd >= 0 else [])
        while True:
            left = deadline - time.monotonic()
            readable = select.select(watch, [], [], max(left, 0))[0] if left > 0 and self._res.pidfd >= 0 else []
            if ready_fd in readable:
                with contextlib.suppress(BlockingIOError):
                    if b"ready\n" in os.read(ready_fd, 64):
                        return
                continue
            said = self._screen() or self._diagnose() or "(no output)"
            raise ToolError(f"shell: the sandboxed shell did not start; bwrap/bash said: {said[-1500:]}")

    def _drain(self, fd: int, sink: _Sink, limit: int = MAX_OUTPUT_BYTES) -> None:
        """Move what the FIFO holds now into `sink` (at most `limit` bytes, never waiting)."""
        got = 0
        while got < limit:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                return
            sink.feed(chunk)
            got += len(chunk)

    def _wait(self, nonces: dict[int, str], deadline: float, out_fd: int, sink: _Sink,
              overflow: bool = True) -> tuple[str, int | None]:
        """Wait for a status line carrying the right nonce on one of `nonces`' FIFOs, reading output meanwhile.

        Returns ("done", code) | ("exited", None) | ("timeout", None) | ("overflow", None). Lines
        without the nonce (written by the command itself) are ignored.
        """
        poller = select.poll()
        for fd in (out_fd, *nonces):
            poller.register(fd, select.POLLIN)
        if self._res.pidfd >= 0:
            poller.register(self._res.pidfd, select.POLLIN)
        pending = {fd: b"" for fd in nonces}
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout", None
            for fd, _ in poller.poll(left * 1000):
                if fd == out_fd:
                    self._drain(out_fd, sink, limit=1 << 20)
                    if overflow and sink.total > MAX_OUTPUT_BYTES:
                        return "overflow", None
                elif fd in pending:
                    with contextlib.suppress(BlockingIOError):
                        pending[fd] += os.read(fd, 4096)
                    *lines, pending[fd] = pending[fd].split(b"\n")
                    pending[fd] = pending[fd][-256:]  # a flood of garbage must not grow the host's memory
                    for line in lines:
                        m = _STATUS_RE.match(line)
                        if m and m.group(1).decode() == nonces[fd]:
                            return "done", int(m.group(2))
                elif fd == self._res.pidfd:
                    return "exited", None

    def _bwrap_status(self) -> dict[str, Any]:
        """What bwrap reported on its status fd: namespaces at the start, "exit-code" at the end."""
        out: dict[str, Any] = {}
        with contextlib.suppress(OSError):
            with open(self._status_file, "rb") as f:
                for line in f.read(1 << 14).splitlines():
                    with contextlib.suppress(ValueError):
                        out.update(json.loads(line))
        return out

    def _exit_status(self) -> int | None:
        """The status the shell exited with (bwrap writes it just before it exits)."""
        deadline = time.monotonic() + 0.5
        while True:
            code = self._bwrap_status().get("exit-code")
            if isinstance(code, int) or time.monotonic() > deadline:
                return code if isinstance(code, int) else None
            time.sleep(0.005)

    # ------------------------------------------------------------------ the sandbox's processes

    def _members(self) -> list[int]:
        if self.cgroup is not None:
            return self.cgroup.pids()
        if self._pidns is None:
            return []
        out = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{name}/ns/pid") == self._pidns:
                        out.append(int(name))
        return out

    def _is_stray(self, pid: int) -> bool:
        """A live process of this sandbox other than its pid 1 (bwrap) and 2 (the shell)."""
        st = _proc_status(pid)
        nspid = st.get("NSpid", "").split()
        if len(nspid) < 2 or int(nspid[1]) <= 2 or st.get("State", "").startswith(("Z", "X")):
            return False
        if self.cgroup is not None:
            return self.cgroup.holds(pid)
        with contextlib.suppress(OSError):
            return os.readlink(f"/proc/{pid}/ns/pid") == self._pidns
        return False

    def kill_strays(self, wait_s: float = 1.0) -> bool:
        """Kill every process in the sandbox but the shell (background jobs included); True when none is left."""
        deadline = time.monotonic() + wait_s
        while True:
            strays = [pid for pid in self._members() if self._is_stray(pid)]
            if not strays:
                return True
            for pid in strays:
                kill_pid(pid, self._is_stray)
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)

    def _interrupt(self, n: int, status_fd: int, nonce: str, out_fd: int, sink: _Sink) -> tuple[bool, int | None]:
        """Stop the running command; returns (shell is back at its prompt, exit code seen)."""
        # Killing every process but the shell ends a foreground program even if it ignores SIGINT;
        # the shell then goes on to report the command's status.
        self.kill_strays()
        status, code = self._wait({status_fd: nonce}, time.monotonic() + 0.3, out_fd, sink, overflow=False)
        if status == "done":
            return True, code
        if status == "exited":
            return False, self._exit_status()
        # The shell itself is busy (a builtin loop) or waiting: Ctrl-C; bash may then abandon the rest
        # of the command's line, so ask for a fresh marker.
        sync_fd, sync_nonce = self._fifo(f"x{n}"), secrets.token_hex(16)
        try:
            for _ in range(2):
                self.server.cmd("send-keys", "-t", self.pane_id, "C-c")
                self._type(f"builtin printf '%s %s\\n' {sync_nonce} \"$?\" >{CTL_MOUNT}/x{n}")
                status, code = self._wait(
                    {status_fd: nonce, sync_fd: sync_nonce}, time.monotonic() + INTERRUPT_WAIT_S, out_fd, sink,
                    overflow=False,
                )
                if status == "done":
                    return True, code
                if status == "exited":
                    return False, self._exit_status()
        finally:
            self._release(sync_fd)
        return False, None

    # ------------------------------------------------------------------ public

    def execute(self, command: str, timeout_s: float) -> _Outcome:
        """Run `command` in the persistent shell; wait at most `timeout_s` seconds."""
        self.n += 1
        n = self.n
        nonce = secrets.token_hex(16)  # unguessable, so no status written before this call can match
        sink = _Sink(4 * self.cfg.max_output_chars + 16)  # bytes; UTF-8 is at most 4 bytes per character
        self._write_ctl(f"c{n}.sh", command if command.endswith("\n") else command + "\n")
        out_fd, status_fd = self._fifo(f"o{n}"), self._fifo(f"s{n}")
        try:
            # Sourcing (not `bash file`) runs the command in the session's shell, so cd/export persist.
            # `jobs` first takes the notices of background jobs killed after the last call, which
            # bash would otherwise print into this command's output.
            self._type(
                f"builtin jobs >/dev/null 2>&1; {{ . {CTL_MOUNT}/c{n}.sh; }} </dev/null >{CTL_MOUNT}/o{n} 2>&1; "
                f"builtin printf '%s %s\\n' {nonce} \"$?\" >{CTL_MOUNT}/s{n}"
            )
            status, code = self._wait({status_fd: nonce}, time.monotonic() + timeout_s, out_fd, sink)
            alive = True
            if status == "exited":
                code, alive = self._exit_status(), False
            elif status in ("timeout", "overflow"):
                alive, code = self._interrupt(n, status_fd, nonce, out_fd, sink)
            if alive:
                alive = self.kill_strays()  # nothing a command starts outlives its call
            self._drain(out_fd, sink)
        finally:
            self._release(out_fd)
            self._release(status_fd)
            for name in (f"c{n}.sh", f"o{n}", f"s{n}", f"x{n}"):
                with contextlib.suppress(FileNotFoundError):
                    (self.ctl / name).unlink()
        if not alive:
            self.close()  # exited, or stuck even after Ctrl-C: the next call starts a fresh shell
        return _Outcome(status=status, exit_code=code, output=sink.text(self.cfg.max_output_chars), alive=alive)  # type: ignore[arg-type]

    @property
    def usable(self) -> bool:
        return not self.closed and self._pane_alive()

    def close(self) -> None:
        """Kill the tmux server and every process of the sandbox; remove its cgroup, mounts and files."""
        if self.closed:
            return
        self.closed = True
        self._finalizer()


def _session(ctx: EpisodeContext) -> tuple[ShellSession, bool]:
    """The episode's shell, started on first use or after the previous one ended; (session, died_unseen)."""
    current: ShellSession | None = ctx.state.get("shell")
    if current is not None and current.usable:
        return current, False
    # A shell we closed ourselves was already reported; one that died between calls was not.
    died_unseen = current is not None and not current.closed
    if current is not None:
        current.close()
    cfg = ctx.agent.shell
    support = check_support(cfg)
    quota: WorkspaceQuota | None = ctx.state.get("shell_quota")
    if support.root and (quota is None or quota.closed):
        # One quota per episode, kept across shell restarts; closed (files copied back) after the
        # episode's shells, since closers run last-registered first.
        quota = WorkspaceQuota(ctx.workspace, cfg.workspace_mb, cfg.sandbox_uid, cfg.sandbox_gid)
        ctx.state["shell_quota"] = quota
        ctx.on_close(quota.close)
    session = ShellSession(ctx.workspace, cfg, quota=quota)
    ctx.state["shell"] = session
    ctx.on_close(session.close)
    return session, died_unseen


@register_tool
class Shell(Tool):
    """Run bash commands in a persistent, network-less sandbox whose writable directory is the workspace."""

    name = "shell"
    description = (
        "Run bash in a persistent sandboxed shell (state persists between calls; no network; only "
        "/workspace and /tmp are writable; background processes stop when the command returns). "
        "Returns the exit code and the output."
    )
    Args = ShellArgs

    def run(self, args: ShellArgs, ctx: EpisodeContext) -> str:
        """Run the command; a non-zero exit code is a normal observation, a timeout is a ToolError."""
        cfg = ctx.agent.shell
        if not args.command.strip():
            raise ToolError("shell: the command is empty")
        timeout = min(args.timeout_s or cfg.timeout_s, cfg.timeout_s)
        session, restarted = _session(ctx)
        result = session.execute(args.command, timeout)
        output = result.output
        if restarted:
            output = (
                "[note: the previous shell had exited; this ran in a new shell started in /workspace]\n"
                + output
            )
        if result.status == "timeout":
            state = (
                "the shell session is still usable (working directory and variables kept)"
                if result.alive
                else "the shell did not come back after Ctrl-C and was closed; the next command starts a "
                "new one (working directory and variables are gone; files in /workspace are kept)"
            )
            raise ToolError(
                f"shell: the command timed out after {timeout:g} s and was interrupted; {state}. "
                f"Pass a larger timeout_s (at most {cfg.timeout_s:g}). Output before the interrupt:\n"
                f"{output or '(no output)'}"
            )
        obs: dict[str, Any] = {"exit_code": result.exit_code, "output": output}
        if result.status == "overflow":
            obs["output"] += (
                f"\n[interrupted: the command wrote more than {MAX_OUTPUT_BYTES >> 20} MiB of output]"
            )
        if not result.alive:
            obs["output"] += (
                "\n[the shell exited; the next command starts a new shell in /workspace "
                "with a fresh environment]"
            )
        return dumps_observation(obs)
