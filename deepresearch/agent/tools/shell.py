"""The `shell` tool: a persistent bash session per episode, inside a bubblewrap sandbox.

Each episode gets its own tmux server (a private socket) whose single pane runs an interactive
bash under `bwrap`: no network (all namespaces unshared), a read-only system (/usr, /etc), a
private /tmp, and the episode workspace bound read-write at /workspace, its working directory.
Memory is capped with `ulimit -v` (`agent.shell.memory_mb`), each command with a timeout
(`agent.shell.timeout_s`), and the output with `agent.shell.max_output_chars`.

Because the session persists, state carries over between calls: `cd`, exported variables,
functions and files. Each command is written to a file in a private control directory (bound
at /run/agent-shell) and sourced by the pane's shell with stdin from /dev/null and its output
redirected to a file there; the exit status is then written to a third file. The host polls
for that file, so output is exact (no screen scraping) and completion detection is cheap.
A command that runs past its timeout gets Ctrl-C; if the shell does not come back, it is
closed and the next call starts a fresh one. Output of background jobs a command leaves
running is not collected.

    ctx = EpisodeContext(workspace=Path("ws"), agent=AgentConfig())
    Shell()({"command": "cd notes && export X=1"}, ctx)
    Shell()({"command": "pwd; echo $X"}, ctx)  # {"exit_code": 0, "output": "/workspace/notes\\n1\\n"}
    ctx.close()  # kills the tmux server and the sandbox

Requires the `tmux` and `bwrap` binaries (apt-get install tmux bubblewrap) and the libtmux package.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from deepresearch.agent.tools.base import EpisodeContext, Tool, ToolArgs, dumps_observation, register_tool
from deepresearch.errors import ToolError

if TYPE_CHECKING:
    from deepresearch.config import ShellConfig

CTL_MOUNT = "/run/agent-shell"  # the control directory as the sandboxed shell sees it
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
START_TIMEOUT_S = 10.0  # for the sandboxed shell to reach its first prompt
INTERRUPT_WAIT_S = 1.5  # for the shell to come back after each Ctrl-C
CLOSE_WAIT_S = 2.0  # for the sandbox's processes to end after the tmux server is killed
MAX_OUTPUT_BYTES = 32 << 20  # a command writing more is interrupted, to protect the host's disk
_POLL_MIN_S, _POLL_MAX_S = 0.001, 0.015
_LIVENESS_EVERY_S = 0.2


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


def _require_binaries() -> None:
    for binary in ("tmux", "bwrap"):
        if shutil.which(binary) is None:
            raise ToolError(
                f"shell: the {binary!r} binary was not found on PATH; the shell tool needs tmux and "
                "bubblewrap (install them with: apt-get install tmux bubblewrap)"
            )


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


def _read_output(path: Path, max_chars: int) -> str:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return ""
    window = 4 * max_chars + 16  # bytes; UTF-8 is at most 4 bytes per character
    with path.open("rb") as f:
        if size <= 8 * window:
            return truncate_output(f.read().decode("utf-8", errors="replace"), max_chars)
        head = f.read(window).decode("utf-8", errors="replace")
        f.seek(size - window)
        tail = f.read(window).decode("utf-8", errors="replace")
    return truncate_output(head + tail, max_chars, total=f"{size} bytes")


class ShellSession:
    """One sandboxed bash in its own tmux server; `execute` runs a command and waits for it."""

    def __init__(self, workspace: Path, cfg: ShellConfig):
        _require_binaries()
        if not workspace.is_dir():
            raise ToolError(f"shell: the episode workspace {workspace} is not a directory")
        try:
            import libtmux  # only needed once a shell is actually used
        except ImportError:
            raise ToolError("shell: the libtmux package is not installed (run `uv sync`)") from None
        self.cfg = cfg
        self.n = 0  # commands sent; numbers the per-command control files
        self.closed = False
        # base/ (host only, mode 0700) holds the tmux socket and config; base/ctl/ is what the
        # sandbox sees. The socket must stay out of the sandbox: tmux commands run on the host.
        self.base = Path(tempfile.mkdtemp(prefix="deepresearch-shell-"))
        self.ctl = self.base / "ctl"
        self.ctl.mkdir()
        token = uuid.uuid4().hex[:12]
        (self.base / "tmux.conf").write_text(
            # remain-on-exit keeps a failed start's error message readable in the pane
            "set -g remain-on-exit on\nset -g history-limit 200\nset -g status off\n"
        )
        (self.ctl / "init.sh").write_text(
            "unset HISTFILE\n"
            "set +o history\n"
            "PS1='$ '\n"
            "ulimit -c 0\n"
            f"ulimit -v {cfg.memory_mb * 1024}\n"
            f'trap \'printf "%s\\n" "$?" > {CTL_MOUNT}/exited\' EXIT\n'
            f": > {CTL_MOUNT}/ready\n"
        )
        socket = self.base / "tmux.sock"
        # A private socket path is removed with base/; a socket name (under /tmp/tmux-UID) is the
        # fallback where the path would exceed the ~107-byte limit of Unix socket addresses.
        where = (
            {"socket_path": str(socket)}
            if len(str(socket)) < 100
            else {"socket_name": f"deepresearch-{token}"}
        )
        self.server = libtmux.Server(config_file=str(self.base / "tmux.conf"), **where)
        # A session whose episode is never closed (a crashed caller) is still killed when it is
        # garbage-collected or at interpreter exit; the finalizer must not hold `self`.
        self._finalizer = weakref.finalize(self, _kill_server, self.server, self.base)
        self.argv = self._bwrap_argv(workspace.resolve())
        try:
            session = self.server.new_session(
                session_name=f"episode-{token}",
                window_command=shlex.join(self.argv),
                x=200,
                y=50,
            )
            pane = session.active_pane
            assert pane is not None and pane.pane_id is not None and pane.pane_pid is not None
            self.pane_id: str = pane.pane_id
            self.pane_pid = int(pane.pane_pid)
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _bwrap_argv(self, workspace: Path) -> list[str]:
        return [
            "bwrap",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/bin", "/bin",
            "--symlink", "usr/lib", "/lib",
            "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/sbin", "/sbin",
            "--ro-bind", "/etc", "/etc",
            "--bind", str(workspace), "/workspace",
            "--dev", "/dev",
            "--proc", "/proc",
            # /tmp is RAM-backed, so it counts against the same budget as the process memory
            "--size", str(self.cfg.memory_mb << 20), "--tmpfs", "/tmp",
            "--bind", str(self.ctl), CTL_MOUNT,
            "--remount-ro", "/",
            "--unshare-all",
            "--die-with-parent",
            "--chdir", "/workspace",
            # the host's environment (API keys included) must not leak into the sandbox
            "--clearenv",
            "--setenv", "HOME", "/workspace",
            "--setenv", "PATH", SANDBOX_PATH,
            "--setenv", "TERM", "dumb",
            "--setenv", "LANG", "C.UTF-8",
            "bash", "--noprofile", "--rcfile", f"{CTL_MOUNT}/init.sh", "-i",
        ]  # fmt: skip

    # ------------------------------------------------------------------ low level

    def _type(self, line: str) -> None:
        # One tmux client call types the line and presses Enter (";" separates tmux commands).
        res = self.server.cmd(
            "send-keys", "-t", self.pane_id, "-l", line, ";", "send-keys", "-t", self.pane_id, "Enter"
        )
        if res.stderr:
            raise ToolError(f"shell: could not send the command to the tmux session: {' '.join(res.stderr)}")

    def _pane_alive(self) -> bool:
        try:
            stat = Path(f"/proc/{self.pane_pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return False
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie is dead, just not reaped yet

    def _exited(self) -> bool:
        return (self.ctl / "exited").exists() or not self._pane_alive()

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
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            return str(e)
        return (res.stderr or res.stdout).strip()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (self.ctl / "ready").exists():
            if not self._pane_alive() or time.monotonic() > deadline:
                said = self._screen() or self._diagnose() or "(no output)"
                raise ToolError(f"shell: the sandboxed shell did not start; bwrap/bash said: {said[-1500:]}")
            time.sleep(0.005)

    def _wait(self, done_file: Path, deadline: float, watch: Path | None = None) -> str:
        """Poll until `done_file` holds a full line; 'done' | 'timeout' | 'overflow' | 'exited'."""
        delay = _POLL_MIN_S
        next_liveness = time.monotonic() + _LIVENESS_EVERY_S
        while True:
            try:
                if done_file.read_bytes().endswith(b"\n"):  # written with printf, so a partial read lacks it
                    return "done"
            except FileNotFoundError:
                pass
            now = time.monotonic()
            if (self.ctl / "exited").exists():
                return "exited"
            if now >= next_liveness:
                if not self._pane_alive():
                    return "exited"
                next_liveness = now + _LIVENESS_EVERY_S
            if watch is not None:
                try:
                    if watch.stat().st_size > MAX_OUTPUT_BYTES:
                        return "overflow"
                except FileNotFoundError:
                    pass
            if now >= deadline:
                return "timeout"
            time.sleep(min(delay, max(deadline - now, 0.0)))
            delay = min(delay * 2, _POLL_MAX_S)

    @staticmethod
    def _read_code(path: Path) -> int | None:
        try:
            return int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _exit_status(self) -> int | None:
        """The status the shell's EXIT trap recorded; it may still be writing it when we notice."""
        path = self.ctl / "exited"
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and self._pane_alive():
            with contextlib.suppress(FileNotFoundError):
                if path.read_bytes().endswith(b"\n"):
                    break
            time.sleep(0.002)
        return self._read_code(path)

    def _interrupt(self, n: int) -> tuple[bool, int | None]:
        """Ctrl-C the running command; returns (shell is back at its prompt, exit code seen)."""
        sync = self.ctl / f"s{n}"
        for _ in range(2):
            self.server.cmd("send-keys", "-t", self.pane_id, "C-c")
            # Bash may abandon the rest of the interrupted line, so ask for a fresh marker.
            self._type(f"printf '%s\\n' \"$?\" >{CTL_MOUNT}/s{n}")
            status = self._wait(sync, time.monotonic() + INTERRUPT_WAIT_S)
            if status == "done":
                code = self._read_code(self.ctl / f"r{n}")
                return True, code if code is not None else self._read_code(sync)
            if status == "exited":
                return False, self._exit_status()
        return False, None

    # ------------------------------------------------------------------ public

    def execute(self, command: str, timeout_s: float) -> _Outcome:
        """Run `command` in the persistent shell; wait at most `timeout_s` seconds."""
        self.n += 1
        n = self.n
        cmd_file, out_file, rc_file = self.ctl / f"c{n}.sh", self.ctl / f"o{n}", self.ctl / f"r{n}"
        cmd_file.write_text(command if command.endswith("\n") else command + "\n")
        # Sourcing (not `bash file`) runs the command in the session's shell, so cd/export persist.
        self._type(
            f"{{ . {CTL_MOUNT}/c{n}.sh; }} </dev/null >{CTL_MOUNT}/o{n} 2>&1; "
            f"printf '%s\\n' \"$?\" >{CTL_MOUNT}/r{n}"
        )
        status = self._wait(rc_file, time.monotonic() + timeout_s, watch=out_file)
        alive = True
        if status == "done":
            code = self._read_code(rc_file)
        elif status == "exited":
            code, alive = self._exit_status(), False
        else:  # timeout or overflow
            alive, code = self._interrupt(n)
        output = _read_output(out_file, self.cfg.max_output_chars)
        for name in (f"c{n}.sh", f"o{n}", f"r{n}", f"s{n}"):
            (self.ctl / name).unlink(missing_ok=True)
        if not alive:
            self.close()  # exited, or stuck even after Ctrl-C: the next call starts a fresh shell
        return _Outcome(status=status, exit_code=code, output=output, alive=alive)  # type: ignore[arg-type]

    @property
    def usable(self) -> bool:
        return not self.closed and not self._exited()

    def close(self) -> None:
        """Kill the tmux server (and with it the sandbox) and remove the control directory."""
        if self.closed:
            return
        self.closed = True
        self._finalizer()
        # kill-server returns before the pane's processes are gone; wait a little so that a closed
        # episode really has no sandbox left (bwrap --die-with-parent takes the rest with it).
        deadline = time.monotonic() + CLOSE_WAIT_S
        while getattr(self, "pane_pid", None) and self._pane_alive() and time.monotonic() < deadline:
            time.sleep(0.005)


def _kill_server(server: Any, base: Path) -> None:
    with contextlib.suppress(Exception):  # the server may already be gone
        server.kill()
    shutil.rmtree(base, ignore_errors=True)


def _session(ctx: EpisodeContext) -> tuple[ShellSession, bool]:
    """The episode's shell, started on first use or after the previous one ended; (session, died_unseen)."""
    current: ShellSession | None = ctx.state.get("shell")
    if current is not None and current.usable:
        return current, False
    # A shell we closed ourselves was already reported; one that died between calls was not.
    died_unseen = current is not None and not current.closed
    if current is not None:
        current.close()
    session = ShellSession(ctx.workspace, ctx.agent.shell)
    ctx.state["shell"] = session
    ctx.on_close(session.close)
    return session, died_unseen


@register_tool
class Shell(Tool):
    """Run bash commands in a persistent, network-less sandbox whose writable directory is the workspace."""

    name = "shell"
    description = (
        "Run bash in a persistent sandboxed shell (state persists between calls; no network; only "
        "/workspace and /tmp are writable). Returns the exit code and the output."
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
                "new one (working directory, variables and background jobs are gone; files in /workspace "
                "are kept)"
            )
            raise ToolError(
                f"shell: the command timed out after {timeout:g} s and was interrupted with Ctrl-C; {state}. "
                f"Pass a larger timeout_s (at most {cfg.timeout_s:g}) or run long jobs in the background "
                f"with output to a file. Output before the interrupt:\n{output or '(no output)'}"
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
