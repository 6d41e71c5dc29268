"""Behaviour of the todo, file and shell tools (and long-output storage), on a tmp workspace.

Shell tests start a real sandbox (tmux + bubblewrap) and are skipped, with the reason, only
where those binaries are missing.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from deepresearch.agent.tools.base import EpisodeContext
from deepresearch.agent.tools.file import File, apply_unified_diff, store_long_output
from deepresearch.agent.tools.shell import Shell, truncate_output
from deepresearch.agent.tools.todo import Todo
from deepresearch.config import AgentConfig, ShellConfig
from deepresearch.errors import ToolError


@pytest.fixture
def ctx(tmp_path: Path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    c = EpisodeContext(workspace=workspace, agent=AgentConfig())
    yield c
    c.close()


def call(tool, ctx: EpisodeContext, **arguments) -> dict:
    return json.loads(tool(arguments, ctx))


# --------------------------------------------------------------------------- todo


def test_todo_add_update_list_remove(ctx):
    todo = Todo()
    assert todo({"action": "add", "steps": ["find the founder", "verify on a second source"]}, ctx) == (
        "added steps 1-2; 0/2 done, next: 1"
    )
    assert ctx.state["todo"]["steps"] == [
        {"id": 1, "text": "find the founder", "status": "pending", "note": None},
        {"id": 2, "text": "verify on a second source", "status": "pending", "note": None},
    ]
    out = todo({"action": "update", "id": 1, "status": "done", "note": "Ada Lovelace, per D0000042"}, ctx)
    assert out == "step 1: done (Ada Lovelace, per D0000042); 1/2 done, next: 2"
    assert todo({"action": "update", "id": 2, "status": "in_progress"}, ctx) == "step 2: in_progress; 1/2 done, next: 2"
    assert todo({"action": "list"}, ctx) == (
        "1 [done] find the founder (Ada Lovelace, per D0000042)\n2 [in_progress] verify on a second source"
    )
    assert todo({"action": "remove", "id": 1}, ctx) == "removed step 1; 0/1 done, next: 2"
    # ids are never reused, so a stale id cannot point at a different step
    assert todo({"action": "add", "steps": ["write the report"]}, ctx) == "added step 3; 0/2 done, next: 2"
    assert [s["id"] for s in ctx.state["todo"]["steps"]] == [2, 3]
    todo({"action": "update", "id": 2, "status": "done"}, ctx)
    assert todo({"action": "update", "id": 3, "status": "done"}, ctx) == "step 3: done; 2/2 done"
    todo({"action": "remove", "id": 2}, ctx)
    todo({"action": "remove", "id": 3}, ctx)
    assert todo({"action": "list"}, ctx) == "the plan is empty"


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"action": "add"}, 'needs "steps"'),
        ({"action": "add", "steps": []}, 'needs "steps"'),
        ({"action": "update", "id": 1}, 'needs "status"'),
        ({"action": "update", "id": 99, "status": "done"}, "no step with id 99"),
        ({"action": "remove", "id": 7}, "no step with id 7"),
        ({"action": "list", "steps": ["x"]}, "does not take steps"),
        ({"action": "finish"}, "invalid arguments for todo"),
        ({"action": "update", "id": 1, "status": "finished"}, "invalid arguments for todo"),
        ({"action": "list", "priority": 1}, "invalid arguments for todo"),
    ],
)
def test_todo_errors(ctx, arguments, message):
    todo = Todo()
    todo({"action": "add", "steps": ["only step"]}, ctx)
    with pytest.raises(ToolError, match=message):
        todo(arguments, ctx)


# --------------------------------------------------------------------------- file


def test_file_write_read_append_list(ctx):
    f = File()
    out = call(f, ctx, action="write", path="notes/draft.md", content="line 1\nline 2\n")
    assert out == {"action": "write", "path": "notes/draft.md", "created": True, "bytes": 14, "lines": 2}
    assert (ctx.workspace / "notes/draft.md").read_text() == "line 1\nline 2\n"
    out = call(f, ctx, action="append", path="notes/draft.md", content="line 3\n")
    assert out["created"] is False and out["lines"] == 3

    read = call(f, ctx, action="read", path="notes/draft.md")
    assert read == {
        "path": "notes/draft.md",
        "content": "line 1\nline 2\nline 3\n",
        "first_line": 1,
        "last_line": 3,
        "total_lines": 3,
    }
    window = call(f, ctx, action="read", path="notes/draft.md", offset=1, limit=1)
    assert window["content"] == "line 2\n" and window["next_offset"] == 2
    # /workspace/... is the shell's name for the same file
    assert call(f, ctx, action="read", path="/workspace/notes/draft.md")["total_lines"] == 3

    call(f, ctx, action="write", path="a.txt", content="x")
    listing = call(f, ctx, action="list")
    assert listing == {
        "path": ".",
        "entries": [{"name": "a.txt", "type": "file", "size": 1}, {"name": "notes/", "type": "dir"}],
    }
    assert call(f, ctx, action="list", path="notes")["entries"] == [
        {"name": "draft.md", "type": "file", "size": 21}
    ]
    assert not [p for p in ctx.workspace.rglob("*.tmp")], "atomic writes must not leave temp files"


def test_file_read_pages_long_files_under_the_observation_limit(ctx):
    f = File()
    (ctx.workspace / "big.txt").write_text("".join(f"row {i:04d} " + "x" * 40 + "\n" for i in range(500)))
    seen, offset, pages = [], 0, 0
    while True:
        raw = f({"action": "read", "path": "big.txt", "offset": offset}, ctx)
        assert len(raw) <= ctx.agent.max_observation_chars
        page = json.loads(raw)
        seen.append(page["content"])
        pages += 1
        if "next_offset" not in page:
            break
        offset = page["next_offset"]
    assert pages > 1
    assert "".join(seen) == (ctx.workspace / "big.txt").read_text()


def test_file_errors(ctx):
    f = File()
    with pytest.raises(ToolError, match="does not exist"):
        f({"action": "read", "path": "missing.md"}, ctx)
    with pytest.raises(ToolError, match='needs "content"'):
        f({"action": "write", "path": "x.md"}, ctx)
    with pytest.raises(ToolError, match="does not take content"):
        f({"action": "read", "path": "x.md", "content": "y"}, ctx)
    with pytest.raises(ToolError, match="invalid arguments for file"):
        f({"action": "delete", "path": "x.md"}, ctx)
    # OS-level failures become tool errors too (here: a path component that is a file)
    (ctx.workspace / "plain.txt").write_text("x")
    with pytest.raises(ToolError, match="file write 'plain.txt/child.md' failed"):
        f({"action": "write", "path": "plain.txt/child.md", "content": "y"}, ctx)


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../outside.txt", "notes/../../outside.txt", "/workspace/../x"]
)
def test_file_refuses_paths_outside_the_workspace(ctx, path):
    f = File()
    with pytest.raises(ToolError, match="outside the workspace"):
        f({"action": "write", "path": path, "content": "pwned"}, ctx)
    with pytest.raises(ToolError, match="outside the workspace"):
        f({"action": "read", "path": path}, ctx)
    assert not (ctx.workspace.parent / "outside.txt").exists()


def test_file_refuses_symlinks_leading_outside(ctx, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    (ctx.workspace / "link.txt").symlink_to(secret)
    (ctx.workspace / "linkdir").symlink_to(tmp_path)
    f = File()
    for arguments in (
        {"action": "read", "path": "link.txt"},
        {"action": "write", "path": "link.txt", "content": "overwritten"},
        {"action": "write", "path": "linkdir/new.txt", "content": "x"},
        {"action": "list", "path": "linkdir"},
    ):
        with pytest.raises(ToolError, match="outside the workspace"):
            f(arguments, ctx)
    assert secret.read_text() == "host secret"
    assert not (tmp_path / "new.txt").exists()
    # a symlink that stays inside the workspace is fine
    (ctx.workspace / "real.txt").write_text("inside\n")
    (ctx.workspace / "alias.txt").symlink_to(ctx.workspace / "real.txt")
    assert call(f, ctx, action="read", path="alias.txt")["content"] == "inside\n"


def test_file_follows_links_only_inside_the_workspace(ctx):
    f = File()
    (ctx.workspace / "notes").mkdir()
    (ctx.workspace / "notes/real.md").write_text("inside\n")
    # links the sandboxed shell makes: relative, and absolute to /workspace (its name for the workspace)
    (ctx.workspace / "rel.md").symlink_to("notes/real.md")
    (ctx.workspace / "abs.md").symlink_to("/workspace/notes/real.md")
    (ctx.workspace / "up").symlink_to("notes/../..")
    assert call(f, ctx, action="read", path="rel.md")["content"] == "inside\n"
    assert call(f, ctx, action="read", path="abs.md")["content"] == "inside\n"
    call(f, ctx, action="append", path="abs.md", content="more\n")
    assert (ctx.workspace / "notes/real.md").read_text() == "inside\nmore\n"
    assert (ctx.workspace / "abs.md").is_symlink()  # written through the link, not replacing it
    with pytest.raises(ToolError, match="outside the workspace"):
        f({"action": "list", "path": "up"}, ctx)
    (ctx.workspace / "loop").symlink_to("loop")
    with pytest.raises(ToolError, match="more than 40 symlinks"):
        f({"action": "read", "path": "loop"}, ctx)


def test_file_reads_only_regular_files_within_limits(ctx):
    import os
    import time

    f = File()
    with open(ctx.workspace / "sparse.bin", "wb") as fh:
        fh.truncate(2 << 30)  # 2 GiB, no blocks on disk
    os.mkfifo(ctx.workspace / "pipe")  # opened without O_NONBLOCK, a read would wait for a writer forever
    (ctx.workspace / "zero").symlink_to("/dev/zero")
    t0 = time.monotonic()
    with pytest.raises(ToolError, match="2,147,483,648 bytes, over the file tool's limit.*sed -n"):
        f({"action": "read", "path": "sparse.bin"}, ctx)
    with pytest.raises(ToolError, match="pipe is a FIFO, not a regular file"):
        f({"action": "read", "path": "pipe"}, ctx)
    with pytest.raises(ToolError, match="pipe is a FIFO"):
        f({"action": "append", "path": "pipe", "content": "x"}, ctx)
    with pytest.raises(ToolError, match="outside the workspace"):
        f({"action": "read", "path": "zero"}, ctx)
    assert time.monotonic() - t0 < 1.0
    listing = {e["name"]: e["type"] for e in call(f, ctx, action="list")["entries"]}
    assert listing == {"pipe": "other", "sparse.bin": "file", "zero": "symlink"}


def test_patch_of_a_120_kb_diff_is_linear():
    """A diff 10× larger takes about 10× longer, not 100× (the old matcher scanned the whole file per hunk:
    1.9 s on the large one). Measured side by side, as a ratio, so a loaded machine does not fail it."""
    import time

    def timed(n_lines: int) -> tuple[float, str]:
        lines = [f"line {i} of the report\n" for i in range(n_lines)]
        diff = "--- a/r.md\n+++ b/r.md\n" + "".join(
            f"@@ -{i + 1},1 +{i + 1},1 @@\n-{lines[i]}+changed {i}\n" for i in range(0, n_lines, 2)
        )
        t0 = time.perf_counter()
        new, n = apply_unified_diff("".join(lines), diff)
        dt = time.perf_counter() - t0
        assert n == n_lines // 2 and new.splitlines()[:3] == ["changed 0", "line 1 of the report", "changed 2"]
        return dt, diff

    small, _ = min(timed(600) for _ in range(3))
    big, diff = min(timed(6000) for _ in range(3))
    assert len(diff) > 120_000
    assert big < 30 * small + 0.05, f"{big:.3f} s for 6,000 lines vs {small:.4f} s for 600"

    # repeated lines: each hunk still lands on the occurrence nearest its header, in linear time too
    def repeated(n: int) -> float:
        text = "x\n" * n
        diff = "".join(f"@@ -{i},1 +{i},1 @@\n-x\n+y{i}\n" for i in range(1, n, 5))
        t0 = time.perf_counter()
        new, _ = apply_unified_diff(text, diff)
        dt = time.perf_counter() - t0
        assert new.splitlines()[0] == "y1" and new.splitlines()[5] == "y6"
        return dt

    assert min(repeated(5000) for _ in range(3)) < 30 * min(repeated(500) for _ in range(3)) + 0.05


REPORT = "".join(f"line {i}\n" for i in range(1, 21))


def test_patch_unified_diff_multi_hunk(ctx):
    (ctx.workspace / "r.md").write_text(REPORT)
    diff = (
        "--- a/r.md\n+++ b/r.md\n"
        "@@ -2,3 +2,3 @@\n line 2\n-line 3\n+line three\n line 4\n"
        "@@ -10,2 +10,4 @@\n line 10\n+inserted a\n+inserted b\n line 11\n"
        "@@ -19,2 +21,3 @@\n line 19\n line 20\n+line 21 (appended)\n"
    )
    out = call(File(), ctx, action="patch", path="r.md", patch=diff)
    assert out == {"action": "patch", "path": "r.md", "format": "unified_diff", "applied": 3, "lines": 23}
    expected = (
        REPORT.replace("line 3\n", "line three\n").replace("line 10\n", "line 10\ninserted a\ninserted b\n")
        + "line 21 (appended)\n"
    )
    assert (ctx.workspace / "r.md").read_text() == expected


def test_patch_unified_diff_tolerates_wrong_line_numbers_and_handles_no_newline():
    # header line numbers off by 5: the hunk is still found by its context
    assert apply_unified_diff("a\nb\nc\n", "@@ -7,2 +7,2 @@\n b\n-c\n+C\n")[0] == "a\nb\nC\n"
    # appending to a file without a final newline, and keeping the new end without one
    diff = "@@ -1,2 +1,3 @@\n a\n-b\n\\ No newline at end of file\n+b\n+c\n\\ No newline at end of file\n"
    assert apply_unified_diff("a\nb", diff)[0] == "a\nb\nc"
    # the marker on the old side only: the patch adds the final newline
    assert apply_unified_diff("a\nb", "@@ -2 +2 @@\n-b\n\\ No newline at end of file\n+b\n")[0] == "a\nb\n"
    # context matched while ignoring trailing spaces keeps the file's own text
    assert apply_unified_diff("a\nb  \nc\n", "@@ -1,3 +1,3 @@\n a\n b\n-c\n+C\n")[0] == "a\nb  \nC\n"
    # CRLF files stay CRLF
    assert apply_unified_diff("a\r\nb\r\n", "@@ -2 +2 @@\n-b\n+B\n")[0] == "a\r\nB\r\n"
    # creating content in an empty file
    assert apply_unified_diff("", "--- /dev/null\n+++ b/new.md\n@@ -0,0 +1,2 @@\n+x\n+y\n")[0] == "x\ny\n"


def test_patch_unified_diff_creates_a_new_file(ctx):
    call(
        File(),
        ctx,
        action="patch",
        path="new.md",
        patch="--- /dev/null\n+++ b/new.md\n@@ -0,0 +1 @@\n+hello\n",
    )
    assert (ctx.workspace / "new.md").read_text() == "hello\n"


def test_patch_failing_hunk_names_the_hunk_and_shows_expected_lines(ctx):
    (ctx.workspace / "r.md").write_text(REPORT)
    diff = "@@ -2,2 +2,2 @@\n line 2\n-line 3\n+line three\n@@ -8,2 +8,2 @@\n line 8\n-line 99\n+line 9\n"
    with pytest.raises(ToolError) as err:
        File()({"action": "patch", "path": "r.md", "patch": diff}, ctx)
    message = str(err.value)
    assert "hunk 2 of 2 (@@ -8,2 +8,2 @@)" in message
    assert "  |line 99" in message and "  |line 9" in message  # expected vs what the file has
    assert (ctx.workspace / "r.md").read_text() == REPORT, "a failed patch must leave the file untouched"


def test_patch_search_replace(ctx):
    (ctx.workspace / "r.md").write_text("# Title\n\nThe value is 10.\nThe value is 100.\nEnd\n")
    patch = (
        "<<<<<<< SEARCH\nThe value is 10.\n=======\nThe value is 12 \\cite{D1}.\n>>>>>>> REPLACE\n"
        "<<<<<<< SEARCH\nEnd\n=======\n>>>>>>> REPLACE\n"
        "<<<<<<< SEARCH\n# Title\n=======\n# Report\n>>>>>>> REPLACE\n"
    )
    out = call(File(), ctx, action="patch", path="r.md", patch=patch)
    assert out["format"] == "search_replace" and out["applied"] == 3
    # whole-line matching keeps "10." from also matching inside "100."; an empty REPLACE deletes the line
    assert (
        ctx.workspace / "r.md"
    ).read_text() == "# Report\n\nThe value is 12 \\cite{D1}.\nThe value is 100.\n"
    # a phrase inside a line is matched as a substring when no whole line matches
    call(
        File(),
        ctx,
        action="patch",
        path="r.md",
        patch="<<<<<<< SEARCH\nis 100\n=======\nis 101\n>>>>>>> REPLACE",
    )
    assert "The value is 101.\n" in (ctx.workspace / "r.md").read_text()


@pytest.mark.parametrize("search, count", [("missing text", 0), ("value", 2)])
def test_patch_search_replace_needs_exactly_one_match(ctx, search, count):
    original = "a value\nanother value\n"
    (ctx.workspace / "r.md").write_text(original)
    with pytest.raises(ToolError, match=f"occurs {count} times"):
        File()(
            {
                "action": "patch",
                "path": "r.md",
                "patch": f"<<<<<<< SEARCH\n{search}\n=======\nnew\n>>>>>>> REPLACE\n",
            },
            ctx,
        )
    assert (ctx.workspace / "r.md").read_text() == original


def test_patch_without_a_known_format_is_refused(ctx):
    (ctx.workspace / "r.md").write_text("x\n")
    with pytest.raises(ToolError, match="not a unified diff"):
        File()({"action": "patch", "path": "r.md", "patch": "replace x with y"}, ctx)


# --------------------------------------------------------------------------- long outputs


def test_store_long_output_saves_the_full_text_and_returns_a_summary(ctx):
    limit = ctx.agent.max_observation_chars
    short = "s" * limit
    assert store_long_output(ctx, "shell", short) == short
    assert not (ctx.workspace / "outputs").exists()

    text = "".join(f"result line {i}\n" for i in range(1000))
    obs = store_long_output(ctx, "shell", text)
    assert (ctx.workspace / "outputs/001_shell.txt").read_text() == text
    assert obs.startswith("result line 0\n")
    assert (
        f"[full output: {len(text)} chars, saved to outputs/001_shell.txt; read it with the file tool]" in obs
    )
    assert len(obs) < limit // 3 + 200
    # the counter makes names deterministic and distinct
    store_long_output(ctx, "batch_web_surfer", text)
    assert (ctx.workspace / "outputs/002_batch_web_surfer.txt").exists()
    # and the file tool can read the saved output back
    assert call(File(), ctx, action="read", path="outputs/001_shell.txt")["content"].startswith(
        "result line 0\n"
    )


def test_store_long_output_pretty_prints_one_line_json(ctx):
    payload = {"results": [{"doc_id": f"D{i:07d}", "paragraph": "p" * 50} for i in range(100)]}
    store_long_output(ctx, "batch_web_surfer", json.dumps(payload))
    saved = (ctx.workspace / "outputs/001_batch_web_surfer.txt").read_text()
    assert json.loads(saved) == payload and saved.count("\n") > 100


def test_truncate_output_keeps_head_and_tail_within_the_limit():
    text = "".join(f"{i}\n" for i in range(10_000))
    cut = truncate_output(text, 500)
    assert len(cut) <= 500 and cut.startswith("0\n1\n") and cut.endswith("9999\n")
    assert f"{len(text)} chars in total" in cut
    assert truncate_output("short", 500) == "short"


# --------------------------------------------------------------------------- shell

needs_sandbox = pytest.mark.skipif(
    shutil.which("tmux") is None or shutil.which("bwrap") is None,
    reason="the shell tool needs tmux and bubblewrap (apt-get install tmux bubblewrap)",
)


@pytest.fixture
def shell_ctx(tmp_path: Path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    # allow_weak_limits: on a machine without cgroups/quota (not root) these behaviour tests still run;
    # tests/test_sandbox.py covers the limits and the refusal
    agent = AgentConfig(shell=ShellConfig(timeout_s=5.0, memory_mb=256, max_output_chars=400, allow_weak_limits=True))
    c = EpisodeContext(workspace=workspace, agent=agent)
    yield c
    c.close()


@needs_sandbox
def test_shell_state_persists_between_calls(shell_ctx):
    sh = Shell()
    assert call(sh, shell_ctx, command="mkdir -p work && cd work && export TOPIC=fusion") == {
        "exit_code": 0,
        "output": "",
    }
    out = call(sh, shell_ctx, command="pwd; echo $TOPIC; echo note > n.txt")
    assert out == {"exit_code": 0, "output": "/workspace/work\nfusion\n"}
    assert (
        shell_ctx.workspace / "work/n.txt"
    ).read_text() == "note\n"  # the workspace is shared with the host


@needs_sandbox
def test_shell_exit_codes_and_exact_output(shell_ctx):
    sh = Shell()
    assert call(sh, shell_ctx, command="echo out; echo err >&2; (exit 3)") == {
        "exit_code": 3,
        "output": "out\nerr\n",
    }
    assert call(sh, shell_ctx, command="printf 'a \"quoted\" $HOME'") == {
        "exit_code": 0,
        "output": 'a "quoted" $HOME',
    }
    assert call(sh, shell_ctx, command="false")["exit_code"] == 1
    assert call(sh, shell_ctx, command="echo 'unterminated")["exit_code"] == 2  # syntax error, not a hang
    # `exit` ends the shell; the next call gets a fresh one
    out = call(sh, shell_ctx, command="exit 7")
    assert out["exit_code"] == 7 and "the shell exited" in out["output"]
    assert call(sh, shell_ctx, command="pwd") == {"exit_code": 0, "output": "/workspace\n"}


@needs_sandbox
def test_shell_cannot_write_outside_the_workspace(shell_ctx):
    name = f"deepresearch-sandbox-probe-{uuid.uuid4().hex}"
    for target in (f"/etc/{name}", f"/usr/{name}", f"/{name}"):
        out = call(Shell(), shell_ctx, command=f"echo pwned > {target}")
        assert out["exit_code"] != 0 and "Read-only file system" in out["output"]
        assert not Path(target).exists()
    # /tmp is the sandbox's own scratch space, not the host's
    assert call(Shell(), shell_ctx, command=f"echo x > /tmp/{name} && cat /tmp/{name}")["output"] == "x\n"
    assert not Path(f"/tmp/{name}").exists()


@needs_sandbox
def test_shell_has_no_network_and_no_host_environment(shell_ctx, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leak")
    code = "import socket; socket.create_connection(('1.1.1.1', 80), timeout=3)"
    out = call(Shell(), shell_ctx, command=f'python3 -c "{code}"')
    assert out["exit_code"] != 0 and "Network is unreachable" in out["output"]
    assert "sk-must-not-leak" not in call(Shell(), shell_ctx, command="env")["output"]
    # the tmux socket (commands through it run on the host) is not reachable from the sandbox
    assert "sock" not in call(Shell(), shell_ctx, command="ls -a /run/agent-shell /run /tmp")["output"]


@needs_sandbox
def test_shell_timeout_interrupts_and_keeps_the_session(shell_ctx):
    sh = Shell()
    call(sh, shell_ctx, command="export KEPT=yes")
    with pytest.raises(ToolError, match=r"timed out after 0\.5 s") as err:
        sh({"command": "echo started; sleep 5", "timeout_s": 0.5}, shell_ctx)
    assert "started" in str(err.value) and "still usable" in str(err.value)
    assert call(sh, shell_ctx, command="echo $KEPT") == {"exit_code": 0, "output": "yes\n"}


@needs_sandbox
def test_shell_memory_limit(shell_ctx):
    # 256 MB address-space limit (shell_ctx); a 512 MiB allocation must fail inside the sandbox
    out = call(Shell(), shell_ctx, command="python3 -c 'x = bytearray(512 * 1024 * 1024)'")
    assert out["exit_code"] != 0 and "MemoryError" in out["output"]
    assert call(
        Shell(), shell_ctx, command="python3 -c 'x = bytearray(16 * 1024 * 1024); print(len(x))'"
    ) == {"exit_code": 0, "output": f"{16 * 1024 * 1024}\n"}


@needs_sandbox
def test_shell_output_is_truncated(shell_ctx):
    out = call(Shell(), shell_ctx, command="seq 1 5000")
    assert len(out["output"]) <= 400
    assert out["output"].startswith("1\n2\n") and out["output"].endswith("4999\n5000\n")
    assert "output truncated" in out["output"]


@needs_sandbox
def test_shell_invalid_arguments(shell_ctx):
    with pytest.raises(ToolError, match="invalid arguments for shell"):
        Shell()({"command": "ls", "cwd": "/"}, shell_ctx)
    with pytest.raises(ToolError, match="invalid arguments for shell"):
        Shell()({"command": "ls", "timeout_s": -1}, shell_ctx)
    with pytest.raises(ToolError, match="invalid arguments for shell"):
        Shell()({}, shell_ctx)


@needs_sandbox
def test_shell_close_kills_the_session(tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    c = EpisodeContext(workspace=workspace, agent=AgentConfig(shell=ShellConfig(allow_weak_limits=True)))
    call(Shell(), c, command="true")
    session = c.state["shell"]
    assert session.usable
    c.close()
    assert not session.usable and not session.base.exists()
    assert not session._pane_alive()


def test_shell_names_a_missing_binary(shell_ctx, monkeypatch):
    from deepresearch.agent.tools import shell as shell_module

    monkeypatch.setattr(
        shell_module.shutil, "which", lambda name: None if name == "bwrap" else "/usr/bin/" + name
    )
    with pytest.raises(ToolError, match=r"'bwrap' binary was not found.*apt-get install tmux bubblewrap"):
        Shell()({"command": "true"}, shell_ctx)


@needs_sandbox
def test_shell_reports_why_the_sandbox_did_not_start(shell_ctx, monkeypatch):
    from deepresearch.agent.tools.shell import ShellSession

    monkeypatch.setattr(
        ShellSession, "_bwrap_argv", lambda self, ws: ["bwrap", "--bind", "/nonexistent-dr", "/x", "bash"]
    )
    with pytest.raises(ToolError, match="did not start.*Can't find source path /nonexistent-dr"):
        Shell()({"command": "true"}, shell_ctx)
