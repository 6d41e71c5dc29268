"""The red team's attacks on the shell and file tools, as plain functions that return the escapes they found.

Each attack runs the real tools against a real sandbox and returns a list of escapes (empty: the
sandbox held). tests/test_sandbox.py runs them in the test process (as whatever user runs the
tests, root here) and, through `python tests/sandbox_redteam.py`, as an unprivileged user.

    python tests/sandbox_redteam.py WORKDIR [--allow-weak-limits]   # prints {"attack": [escapes]} as JSON
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path

from deepresearch.agent.tools.base import EpisodeContext
from deepresearch.agent.tools.file import File
from deepresearch.agent.tools.shell import Shell
from deepresearch.errors import ToolError

SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "aws-secret-must-not-leak",
    "AWS_ACCESS_KEY_ID": "AKIA-must-not-leak",
    "MLFLOW_TRACKING_URI": "http://mlflow-must-not-leak:5000",
    "OPENAI_API_KEY": "sk-must-not-leak",
}


def sh(ctx: EpisodeContext, command: str, timeout_s: float | None = None) -> dict:
    """Run one shell command; a tool error (timeout) comes back as {"error": message}."""
    args: dict = {"command": command}
    if timeout_s is not None:
        args["timeout_s"] = timeout_s
    try:
        return json.loads(Shell()(args, ctx))
    except ToolError as e:
        return {"error": str(e), "output": "", "exit_code": None}


def _bounded(fn, seconds: float):
    """Run fn in a thread; (finished, result). A host call that blocks forever is an escape, not a hung test."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    return (not t.is_alive()), box


# --------------------------------------------------------------------------- escapes


def attack_capabilities(ctx: EpisodeContext, host_dir: Path) -> list[str]:
    """Remount the read-only system writable, read /etc/shadow, keep capabilities."""
    name = f"redteam-{uuid.uuid4().hex[:8]}"
    escapes = []
    out = sh(
        ctx,
        f"grep CapEff /proc/self/status; mount -o remount,rw,bind /etc && touch /etc/{name}; "
        f"mount -o remount,rw,bind /usr && touch /usr/{name}; head -c 200 /etc/shadow; "
        "unshare -Urm true && echo NESTED-USERNS-OK; true",
    )
    text = out["output"]
    for where in (f"/etc/{name}", f"/usr/{name}"):
        if Path(where).exists():
            escapes.append(f"wrote the host's {where}")
            Path(where).unlink()
    if "CapEff:\t0000000000000000" not in text:
        escapes.append(f"capabilities kept: {text.splitlines()[0] if text else text!r}")
    if "root:" in text:
        escapes.append("read /etc/shadow")
    if "NESTED-USERNS-OK" in text:
        escapes.append("created a nested user namespace")
    # Files the sandbox creates must not be owned by the host's root.
    sh(ctx, f"touch /workspace/{name}")
    made = ctx.workspace / name
    if os.geteuid() == 0 and made.exists() and made.stat().st_uid == 0:
        escapes.append("the sandbox writes files as the host's root")
    return escapes


CTL = "/run/agent-shell"  # where the shell tool's control directory appears inside the sandbox
_CTL_NAMES = " ".join(
    [f"c{i}.sh" for i in range(1, 12)] + [f"{p}{i}" for p in "orsx" for i in range(1, 12)] + ["exited", "ready"]
)


def _plant(ctx: EpisodeContext, make: str) -> list[str]:
    """Replace every control file the sandbox can name (existing or future) by what `make $f` creates."""
    command = f"cd {CTL} 2>/dev/null && for f in $(ls) {_CTL_NAMES}; do rm -f $f; {make} $f; done; true"
    ok, _ = _bounded(lambda: sh(ctx, command), 15)
    return [] if ok else [f"host blocked while the sandbox ran: {make} in the control directory"]


def attack_control_symlinks(ctx: EpisodeContext, host_dir: Path) -> list[str]:
    """Symlinks to host files: the host would write the next command there, and return the secret as output."""
    secret, pwned = host_dir / "secret.txt", host_dir / "pwned.txt"
    secret.write_text("HOST-SECRET-CONTENT\n")
    sh(ctx, "true")
    escapes = _plant(ctx, f'sh -c \'case $0 in c*) ln -s {pwned} $0;; *) ln -s {secret} $0;; esac\'')
    ok, box = _bounded(lambda: sh(ctx, "echo after-symlinks"), 15)
    if not ok:
        escapes.append("host blocked after symlinks were planted")
    elif "HOST-SECRET-CONTENT" in json.dumps(box.get("value")):
        escapes.append("host returned a host file through a planted symlink")
    if pwned.exists():
        escapes.append("host wrote a command into a file the sandbox pointed it to")
    return escapes


def attack_control_fifos(ctx: EpisodeContext, host_dir: Path) -> list[str]:
    """FIFOs block a host that opens them."""
    sh(ctx, "true")
    escapes = _plant(ctx, "mkfifo")
    ok, _ = _bounded(lambda: sh(ctx, "echo after-fifos"), 15)
    return escapes + ([] if ok else ["host blocked on a FIFO planted in the control directory"])


def attack_control_dev_zero(ctx: EpisodeContext, host_dir: Path) -> list[str]:
    """/dev/zero links grow the memory of a host that reads them whole."""
    sh(ctx, "true")
    escapes = _plant(ctx, "ln -s /dev/zero")
    ok, _ = _bounded(lambda: sh(ctx, "echo after-zero"), 15)
    return escapes + ([] if ok else ["host blocked (or ran out of memory) reading a /dev/zero link"])


def attack_forged_results(ctx: EpisodeContext, host_dir: Path) -> list[str]:
    """Pre-written results, and a command forging its own status line: the call must wait for the command."""
    sh(ctx, "true")
    escapes = _plant(ctx, "sh -c 'printf \"0\\n\" > $0'")
    t0 = time.monotonic()
    out = sh(ctx, "sleep 0.4; echo ran-for-real")
    if time.monotonic() - t0 < 0.35 or "ran-for-real" not in out.get("output", ""):
        escapes.append(f"a pre-written result ended the call before the command ran: {out}")
    t0 = time.monotonic()
    out = sh(ctx, f"for f in {CTL}/*; do printf '0\\n' > $f & done 2>/dev/null; sleep 0.4; echo ran-for-real")
    if time.monotonic() - t0 < 0.35 or "ran-for-real" not in out.get("output", ""):
        escapes.append(f"a forged status line ended the call early: {out}")
    return escapes


def attack_environment(ctx: EpisodeContext, host_dir: Path) -> list[str]:
    """Read the host's secrets from the environment of any process in the sandbox."""
    saved = {k: os.environ.get(k) for k in SECRETS}
    os.environ.update(SECRETS)
    try:
        ctx.close()  # a fresh shell, started with the secrets in the host's environment
        ctx.state.pop("shell", None)
        out = sh(ctx, "env; for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ; done 2>/dev/null; true")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return [f"{k} leaked into the sandbox" for k, v in SECRETS.items() if v in out["output"]]


_RACER = r"""
import ctypes, os, sys, time
host_dir, seconds = sys.argv[1], float(sys.argv[2])
renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
AT_FDCWD, RENAME_EXCHANGE = -100, 2
print("racing", flush=True)
deadline, n = time.monotonic() + seconds, 0
while time.monotonic() < deadline and not os.path.exists("stop"):
    for name, alt, target in (("entry.txt", ".alt", host_dir + "/secret.txt"), ("notes", ".altdir", host_dir)):
        # the host's writes replace whichever of the pair was the symlink: plant it again
        if not os.path.islink(name) and not os.path.islink(alt):
            os.rename(alt, ".old-%d" % n) if os.path.lexists(alt) else None
            os.symlink(target, alt)
    for _ in range(100):
        # atomically swap each workspace entry with its symlink to the host, and back
        renameat2(AT_FDCWD, b"entry.txt", AT_FDCWD, b".alt", RENAME_EXCHANGE)
        renameat2(AT_FDCWD, b"notes", AT_FDCWD, b".altdir", RENAME_EXCHANGE)
        n += 1
print("swaps", n)
"""


def attack_file_race(ctx: EpisodeContext, host_dir: Path, iterations: int = 1000) -> list[str]:
    """While a process in the sandbox swaps workspace entries (a file, a directory) with symlinks to a
    host file and a host directory, the file tool reads and writes through them `iterations` times."""
    race_dir = host_dir / "race"
    race_dir.mkdir(exist_ok=True)
    secret = race_dir / "secret.txt"
    secret.write_text("HOST-SECRET-CONTENT\n")
    (race_dir / "inner.txt").write_text("HOST-SECRET-CONTENT\n")
    f = File()
    f({"action": "write", "path": "racer.py", "content": _RACER}, ctx)
    f({"action": "write", "path": "entry.txt", "content": "workspace content\n"}, ctx)
    f({"action": "write", "path": "notes/inner.txt", "content": "workspace content\n"}, ctx)
    seconds = max(ctx.agent.shell.timeout_s - 1, 1)
    raced: dict = {}
    racer = threading.Thread(
        target=lambda: raced.update(sh(ctx, f"python3 racer.py {race_dir} {seconds}")), daemon=True
    )
    racer.start()
    deadline = time.monotonic() + 5
    while not (ctx.workspace / ".altdir").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    leaked = landed = done = 0
    try:
        for i in range(iterations):
            if not racer.is_alive():
                break
            for path in ("entry.txt", "notes/inner.txt"):
                try:
                    leaked += "HOST-SECRET" in f({"action": "read", "path": path}, ctx)
                except ToolError:
                    pass
                try:
                    f({"action": "write", "path": path, "content": f"agent write {i}\n"}, ctx)
                except ToolError:
                    pass
            for p in race_dir.iterdir():
                if p.is_file() and "HOST-SECRET" not in p.read_text():
                    landed += 1
                    p.unlink()
            done += 1
    finally:
        (ctx.workspace / "stop").write_text("")
        racer.join(30)
    escapes = []
    words = raced.get("output", "").split()
    swaps = int(words[words.index("swaps") + 1]) if "swaps" in words else 0
    if done < iterations or swaps < 1000:
        escapes.append(f"the race did not run: {done} of {iterations} iterations, {swaps} swaps ({raced})")
    if leaked:
        escapes.append(f"{leaked} of {2 * done} reads returned a host file")
    if landed:
        escapes.append(f"{landed} of {2 * done} writes landed in the host directory")
    return escapes


# --------------------------------------------------------------------------- limits


def _script(ctx: EpisodeContext, name: str, text: str) -> None:
    """Put a Python script in the workspace through the file tool (as the agent would)."""
    File()({"action": "write", "path": name, "content": text}, ctx)


def attack_memory(ctx: EpisodeContext, host_dir: Path) -> list[str]:
    """Several processes each under the per-process cap, together far over the sandbox's memory."""
    mb = ctx.agent.shell.memory_mb
    each = mb * 3 // 5
    _script(ctx, "alloc.py", f"""
import time
b = bytearray({each} << 20)
for i in range(0, len(b), 4096):
    b[i] = 1
print("alloc-ok", flush=True)
time.sleep(0.8)
""")
    out = sh(ctx, "for i in 1 2 3 4; do python3 alloc.py & done; wait; true", timeout_s=20)
    held = out["output"].count("alloc-ok")
    if held * each > mb:
        return [f"{held} processes held {held * each} MB at once against memory_mb={mb}"]
    return []


def attack_tmpfs(ctx: EpisodeContext, host_dir: Path) -> list[str]:
    """Fill /dev, /dev/shm and /tmp (RAM-backed) past the sandbox's memory."""
    mb = ctx.agent.shell.memory_mb
    escapes = []
    for where in ("/dev/fill", "/dev/shm/fill", "/tmp/fill"):
        out = sh(ctx, f"head -c {mb + 64}M /dev/zero > {where}; stat -c %s {where} 2>/dev/null || echo 0; rm -f {where}",
                 timeout_s=20)
        lines = out["output"].split()
        size = int(lines[-1]) if lines and lines[-1].isdigit() else 0
        if size > mb << 20:
            escapes.append(f"wrote {size >> 20} MiB into {where} against memory_mb={mb}")
    return escapes


def attack_disk(ctx: EpisodeContext, host_dir: Path, quota_mb: int) -> list[str]:
    """Reserve or write more than the workspace quota."""
    escapes = []
    sh(ctx, "fallocate -l 10G /workspace/reserved; true")
    big = ctx.workspace / "reserved"
    if big.exists() and big.stat().st_blocks * 512 > quota_mb << 20:
        escapes.append(f"fallocate reserved {big.stat().st_blocks * 512 >> 20} MiB against a {quota_mb} MiB quota")
    sh(ctx, "rm -f /workspace/reserved; true")
    sh(ctx, f"head -c {quota_mb + 32}M /dev/zero > /workspace/written; true", timeout_s=30)
    written = ctx.workspace / "written"
    if written.exists() and written.stat().st_size > quota_mb << 20:
        escapes.append(f"wrote {written.stat().st_size >> 20} MiB against a {quota_mb} MiB quota")
    sh(ctx, "rm -f /workspace/written; true")
    return escapes


def attack_processes(ctx: EpisodeContext, host_dir: Path, max_processes: int) -> list[str]:
    """Start 1,000 processes, and leave busy background jobs running after the call returns."""
    _script(ctx, "forks.py", """
import os, time
n = 0
try:
    while n < 1000:
        if os.fork() == 0:
            time.sleep(3)
            os._exit(0)
        n += 1
except OSError:
    pass
print("forked", n, flush=True)
""")
    out = sh(ctx, "python3 forks.py", timeout_s=20)
    escapes = []
    words = out["output"].split()
    n = int(words[words.index("forked") + 1]) if "forked" in words else 0
    if n >= max_processes:
        escapes.append(f"started {n} processes against a cap of {max_processes}")
    sh(ctx, "(while :; do :; done) & sleep 300 & disown -a; true")
    time.sleep(0.2)
    out = sh(ctx, "ps -e -o comm= | grep -v -x -e bash -e bwrap -e ps -e grep -e sleep-free; true")
    left = [w for w in out["output"].split() if w]
    if left:
        escapes.append(f"processes outlived their call: {left}")
    return escapes


def attack_file_tool_limits(ctx: EpisodeContext, host_dir: Path) -> list[str]:
    """A 2 GB sparse file, a FIFO, a /dev/zero link and a 120 KB diff against the host-side file tool."""
    escapes = []
    f = File()
    with open(ctx.workspace / "sparse.bin", "wb") as fh:
        fh.truncate(2 << 30)
    (ctx.workspace / "sparse.txt").symlink_to("sparse.bin")
    os.mkfifo(ctx.workspace / "pipe")
    (ctx.workspace / "zero").symlink_to("/dev/zero")
    for path in ("sparse.txt", "pipe", "zero"):
        t0 = time.monotonic()
        ok, box = _bounded(lambda p=path: f({"action": "read", "path": p}, ctx), 10)
        took = time.monotonic() - t0
        if not ok:
            escapes.append(f"file read of {path} blocked the host")
        elif took > 2:
            escapes.append(f"file read of {path} took {took:.1f} s")
        elif "value" in box:
            escapes.append(f"file read of {path} returned content ({len(box['value'])} chars)")
    # a 120 KB diff: 3,000 changed lines in a 6,000-line file
    lines = [f"line {i} of the report\n" for i in range(6000)]
    (ctx.workspace / "big.md").write_text("".join(lines))
    hunks = []
    for i in range(0, 6000, 2):
        hunks.append(f"@@ -{i + 1},1 +{i + 1},1 @@\n-{lines[i]}+changed {i}\n")
    diff = "--- a/big.md\n+++ b/big.md\n" + "".join(hunks)
    t0 = time.monotonic()
    ok, box = _bounded(lambda: f({"action": "patch", "path": "big.md", "patch": diff}, ctx), 30)
    took = time.monotonic() - t0
    if not ok or took > 1.0:
        escapes.append(f"a {len(diff) >> 10} KB diff took {took:.1f} s (finished: {ok})")
    elif "error" in box:
        escapes.append(f"the {len(diff) >> 10} KB diff failed: {box['error']}")
    return escapes


ESCAPES = {
    "capabilities": attack_capabilities,
    "control_symlinks": attack_control_symlinks,
    "control_fifos": attack_control_fifos,
    "control_dev_zero": attack_control_dev_zero,
    "forged_results": attack_forged_results,
    "environment": attack_environment,
    "file_race": attack_file_race,
}


def main() -> None:
    from deepresearch.config import AgentConfig, ShellConfig

    workdir = Path(sys.argv[1])
    extra = {"allow_weak_limits": True} if "--allow-weak-limits" in sys.argv else {}
    results: dict[str, list[str]] = {}
    for name, attack in ESCAPES.items():
        ws = workdir / f"ws-{name}"
        ws.mkdir(parents=True)
        ctx = EpisodeContext(workspace=ws, agent=AgentConfig(shell=ShellConfig(timeout_s=5, memory_mb=256, **extra)))
        try:
            results[name] = attack(ctx, workdir)
        except ToolError as e:
            results[name] = [f"refused: {e}"]
        finally:
            ctx.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
