"""The red team's attacks on the shell sandbox and the file tool: each must find 0 escapes.

The attacks live in tests/sandbox_redteam.py. They run here as the test process's user (root on
this machine, as the pipeline runs in most containers) and, when that is root, once more from a
process that switched to an unprivileged user (setpriv) with `allow_weak_limits`, since a normal
user gets neither a cgroup nor a workspace quota. Limit tests need those whole-sandbox mechanisms
and are skipped, with the reason, where the machine lacks them; the tool then refuses to start
unless allowed to run with weak limits, which is tested too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest
import sandbox_redteam as R

from deepresearch.agent.tools import shell as shell_module
from deepresearch.agent.tools.base import EpisodeContext
from deepresearch.agent.tools.confine import Support, probe
from deepresearch.agent.tools.file import File
from deepresearch.agent.tools.shell import Shell
from deepresearch.config import AgentConfig, ShellConfig
from deepresearch.errors import ToolError

REPO = Path(__file__).resolve().parents[1]
HAVE_SANDBOX = shutil.which("tmux") is not None and shutil.which("bwrap") is not None
needs_sandbox = pytest.mark.skipif(not HAVE_SANDBOX, reason="the shell tool needs tmux and bubblewrap (make system-deps)")
QUOTA_MB, MAX_PROCESSES = 64, 32


def _whole_sandbox_limits() -> tuple[bool, str]:
    if not HAVE_SANDBOX:
        return False, "no tmux/bubblewrap"
    support = probe()
    return not support.missing, "; ".join(support.missing)


def needs_limits(fn):
    ok, why = _whole_sandbox_limits()
    return pytest.mark.skipif(not ok, reason=f"this machine cannot confine the sandbox as a whole: {why}")(fn)


@pytest.fixture
def attack_ctx(tmp_path: Path):
    ws = tmp_path / "ws"
    ws.mkdir()
    cfg = ShellConfig(timeout_s=5, memory_mb=256, workspace_mb=QUOTA_MB, tmp_mb=32, max_processes=MAX_PROCESSES,
                      allow_weak_limits=not _whole_sandbox_limits()[0])
    ctx = EpisodeContext(workspace=ws, agent=AgentConfig(shell=cfg))
    yield ctx
    ctx.close()


# --------------------------------------------------------------------------- escapes


@needs_sandbox
@pytest.mark.parametrize("attack", sorted(R.ESCAPES))
def test_escape_attack_finds_nothing(attack, attack_ctx, tmp_path):
    assert R.ESCAPES[attack](attack_ctx, tmp_path) == []


def _unprivileged(home: Path) -> tuple[list[str], dict[str, str]] | None:
    """(command prefix running a Python that can import the project as uid 65534, its environment)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": f"{REPO}:{sysconfig.get_paths()['purelib']}"}
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    # this environment's interpreter may live under a directory only root can enter; the system one
    # of the same minor version reads the same site-packages
    for exe in (sys.executable, f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"):
        probe_cmd = [*drop, exe, "-c", "import deepresearch.agent.tools.shell, libtmux"]
        if os.path.exists(exe) and subprocess.run(probe_cmd, env=env, capture_output=True, timeout=60).returncode == 0:
            return [*drop, exe], env
    return None


@needs_sandbox
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="switching to another user needs root and setpriv")
def test_escape_attacks_as_an_unprivileged_user():
    work = Path(tempfile.mkdtemp(prefix="deepresearch-redteam-"))
    try:
        os.chmod(work, 0o777)
        runner = _unprivileged(work)
        if runner is None:
            pytest.skip("no Python interpreter that uid 65534 can run with this environment's packages")
        prefix, env = runner
        # A normal user has no cgroup and no quota: the tool refuses by default...
        refusal = subprocess.run(
            [*prefix, "-c", "import sys, tempfile, pathlib; sys.path.insert(0, 'tests'); "
             "from deepresearch.agent.tools.base import EpisodeContext; from deepresearch.agent.tools.shell import Shell; "
             "from deepresearch.config import AgentConfig; from deepresearch.errors import ToolError\n"
             "ws = pathlib.Path(tempfile.mkdtemp(dir=sys.argv[1]))\n"
             "try: Shell()({'command': 'true'}, EpisodeContext(workspace=ws, agent=AgentConfig()))\n"
             "except ToolError as e: print(e)", str(work)],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
        )
        assert "refusing to start" in refusal.stdout and "allow_weak_limits" in refusal.stdout, refusal
        # ... and, allowed to run with weak limits, still lets nothing escape.
        res = subprocess.run([*prefix, "tests/sandbox_redteam.py", str(work / "run"), "--allow-weak-limits"],
                             env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
        assert res.returncode == 0, res.stderr[-2000:]
        found = json.loads(res.stdout.strip().splitlines()[-1])
        assert set(found) == set(R.ESCAPES)
        assert found == {name: [] for name in R.ESCAPES}
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- limits


@needs_limits
def test_memory_is_capped_for_the_whole_sandbox(attack_ctx, tmp_path):
    assert R.attack_memory(attack_ctx, tmp_path) == []


@needs_limits
def test_ram_backed_directories_are_capped(attack_ctx, tmp_path):
    assert R.attack_tmpfs(attack_ctx, tmp_path) == []


@needs_limits
def test_workspace_quota_holds_against_fallocate_and_big_writes(attack_ctx, tmp_path):
    assert R.attack_disk(attack_ctx, tmp_path, QUOTA_MB) == []
    # the quota is reported as a full disk, and the shell stays usable
    out = R.sh(attack_ctx, f"head -c {QUOTA_MB + 1}M /dev/zero > /workspace/x; echo rc=$?; rm -f /workspace/x")
    assert "No space left on device" in out["output"] and "rc=1" in out["output"]


@needs_limits
def test_processes_are_capped_and_none_outlives_its_call(attack_ctx, tmp_path):
    assert R.attack_processes(attack_ctx, tmp_path, MAX_PROCESSES) == []


@needs_sandbox
def test_refuses_without_whole_sandbox_limits_unless_allowed(tmp_path, monkeypatch):
    real = probe()
    if real.root and not real.quota:
        pytest.skip("as root without mount, the tool cannot start a sandbox at all")
    weak = Support(root=real.root, cgroup=False, quota=real.quota,
                   missing=real.missing or ["memory and process limits for the whole sandbox (no cgroup, for this test)"])
    monkeypatch.setattr(shell_module, "probe", lambda: weak)
    ws = tmp_path / "ws"
    ws.mkdir()
    strict = EpisodeContext(workspace=ws, agent=AgentConfig())
    with pytest.raises(ToolError, match="refusing to start.*allow_weak_limits=true"):
        Shell()({"command": "true"}, strict)
    strict.close()
    allowed = EpisodeContext(workspace=ws, agent=AgentConfig(shell=ShellConfig(allow_weak_limits=True)))
    try:
        # without a cgroup, the sandbox's processes are found through its pid namespace: still killed
        assert R.sh(allowed, "sleep 300 & (while :; do :; done) & echo started")["output"] == "started\n"
        left = R.sh(allowed, "ps -e -o comm= | grep -v -x -e bash -e bwrap -e ps -e grep; true")["output"]
        assert left == ""
    finally:
        allowed.close()


@needs_sandbox
def test_workspace_is_shared_writable_and_kept_after_the_episode(attack_ctx):
    f, ws = File(), attack_ctx.workspace
    f({"action": "write", "path": "notes.md", "content": "from the file tool\n"}, attack_ctx)
    assert R.sh(attack_ctx, "echo from the shell >> notes.md && mkdir -p d && echo x > d/y; cat notes.md")["output"] == (
        "from the file tool\nfrom the shell\n"
    )
    f({"action": "append", "path": "d/y", "content": "appended\n"}, attack_ctx)
    assert R.sh(attack_ctx, "cat d/y && echo z >> d/y")["exit_code"] == 0  # the host's new files stay writable
    attack_ctx.close()
    assert not os.path.ismount(ws)
    assert (ws / "notes.md").read_text() == "from the file tool\nfrom the shell\n"
    assert (ws / "d/y").read_text() == "x\nappended\nz\n"


@needs_sandbox
def test_a_killed_host_takes_its_sandbox_down(tmp_path):
    """tmux outlives a host killed with SIGKILL; the session's watchdog must not let the sandbox do so."""
    import signal
    import time

    ws = tmp_path / "ws"
    ws.mkdir()
    allow = not _whole_sandbox_limits()[0]
    script = (
        "import json, sys, time, pathlib\n"
        "from deepresearch.agent.tools.base import EpisodeContext\n"
        "from deepresearch.agent.tools.shell import Shell\n"
        "from deepresearch.config import AgentConfig, ShellConfig\n"
        f"ctx = EpisodeContext(workspace=pathlib.Path({str(ws)!r}), agent=AgentConfig(shell=ShellConfig(allow_weak_limits={allow})))\n"
        "Shell()({'command': 'true'}, ctx)\n"
        "s = ctx.state['shell']\n"
        "tmux = int(open(f'/proc/{s.pane_pid}/status').read().split('PPid:')[1].split()[0])\n"
        "print(json.dumps({'pane': s.pane_pid, 'tmux': tmux, 'base': str(s.base), 'cgroup': [str(d) for d in (s.cgroup.dirs if s.cgroup else [])]}), flush=True)\n"
        "time.sleep(60)\n"
    )
    host = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(host.stdout.readline())
    finally:
        host.send_signal(signal.SIGKILL)
        host.wait()
    def alive(pid: int) -> bool:  # a zombie waiting for pid 1 to reap it is dead
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 6
    while time.monotonic() < deadline and (alive(info["pane"]) or alive(info["tmux"]) or os.path.exists(info["base"])
                                           or any(os.path.exists(d) for d in info["cgroup"]) or os.path.ismount(ws)):
        time.sleep(0.1)
    assert not alive(info["pane"]), "the sandbox outlived its host"
    assert not alive(info["tmux"]), "the tmux server outlived the host"
    assert not os.path.exists(info["base"]) and not any(os.path.exists(d) for d in info["cgroup"])
    assert not os.path.ismount(ws)  # the workspace tmpfs does not hold RAM for good
