"""The `file` tool over the episode workspace, and summary-aware storage of long tool outputs.

Actions: read (a window of lines), write (create/overwrite), append, list (a directory with
sizes) and patch. A patch is either a unified diff

    --- a/notes.md
    +++ b/notes.md
    @@ -3,2 +3,3 @@
     context
    -old line
    +new line

or one or more search/replace blocks (each SEARCH text must occur exactly once):

    <<<<<<< SEARCH
    old text
    =======
    new text
    >>>>>>> REPLACE

Every path is relative to the workspace (`/workspace/...`, the name the shell uses, is accepted
too); absolute paths, `..` escapes and symlinks resolving outside the workspace are refused.
Writes go to a temp file in the same directory and are renamed into place, so a failed call
never leaves a half-written file.

`store_long_output(ctx, tool_name, text)` is used by the agent loop for every tool: an output
longer than `agent.max_observation_chars` is saved to `outputs/NNN_<tool>.txt` and only a head
excerpt plus a pointer enters the context; the agent reads the rest with this tool.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import Field

from deepresearch.agent.tools.base import EpisodeContext, Tool, ToolArgs, dumps_observation, register_tool
from deepresearch.errors import ToolError

SHELL_WORKSPACE = PurePosixPath("/workspace")  # where the sandboxed shell mounts the workspace
OUTPUTS_DIR = "outputs"
_MAX_SHOWN_LINES = 20  # lines of expected/actual text quoted in a failed-hunk error

# The arguments each action takes besides `action`; others are refused (see todo.py for why).
_ALLOWED: dict[str, set[str]] = {
    "read": {"path", "offset", "limit"},
    "write": {"path", "content"},
    "append": {"path", "content"},
    "list": {"path"},
    "patch": {"path", "patch"},
}


class FileArgs(ToolArgs):
    action: Literal["read", "write", "append", "list", "patch"] = Field(
        description="what to do"
    )
    path: str | None = Field(
        None, description="relative to the workspace"
    )
    content: str | None = Field(None, description="for write/append")
    offset: int | None = Field(None, ge=0, description="read: lines to skip")
    limit: int | None = Field(None, ge=1, description="read: at most this many lines")
    patch: str | None = Field(
        None,
        description="a unified diff, or '<<<<<<< SEARCH', old, '=======', new, '>>>>>>> REPLACE'",
    )


# --------------------------------------------------------------------------- paths and writes


def resolve_path(ctx: EpisodeContext, path: str) -> Path:
    """Resolve `path` inside the workspace, following symlinks; refuse anything that ends up outside.

    Raises:
        ToolError: empty path, absolute path (other than under /workspace), or a path whose
            resolved location (through `..` or symlinks) is outside the workspace.
    """
    root = ctx.workspace.resolve()
    raw = path.strip()
    if not raw or "\x00" in raw:
        raise ToolError(f"file: invalid path {path!r}; give a path relative to the workspace, e.g. notes.md")
    p = PurePosixPath(raw)
    if p.is_absolute():
        # The shell sees the workspace as /workspace, so accept that spelling for the same files.
        if p == SHELL_WORKSPACE or SHELL_WORKSPACE in p.parents:
            p = p.relative_to(SHELL_WORKSPACE)
        else:
            raise ToolError(
                f"file: path {path!r} is outside the workspace; use a path relative to the workspace "
                f"(e.g. notes.md or {SHELL_WORKSPACE}/notes.md)"
            )
    target = (root / p).resolve()
    if not target.is_relative_to(root):
        raise ToolError(
            f"file: path {path!r} resolves to a location outside the workspace (via '..' or a symlink); "
            "use a path inside the workspace"
        )
    return target


def _rel(ctx: EpisodeContext, target: Path) -> str:
    rel = target.relative_to(ctx.workspace.resolve()).as_posix()
    return rel or "."


def atomic_write_text(target: Path, text: str) -> None:
    """Write `text` (UTF-8, newlines untouched) to `target` via a temp file and rename.

    Keeps the permission bits of an existing file, so a patched script stays executable.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_text(target: Path, rel: str) -> str:
    if not target.exists():
        raise ToolError(f"file: {rel} does not exist; use action=list to see the workspace")
    if target.is_dir():
        raise ToolError(f"file: {rel} is a directory; use action=list")
    data = target.read_bytes()
    if b"\x00" in data[:8192]:
        raise ToolError(f"file: {rel} is a binary file ({len(data)} bytes); inspect it with the shell tool")
    return data.decode("utf-8", errors="replace")


def _split_lines(text: str) -> list[str]:
    """Lines with their "\n" kept; only "\n" breaks lines (unlike str.splitlines), as in diffs."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _count_lines(text: str) -> int:
    return len(_split_lines(text))


# --------------------------------------------------------------------------- line model


@dataclass
class _Lines:
    """A text as lines without their endings, plus the line ending and final-newline flag."""

    lines: list[str]
    eol: str = "\n"
    final_newline: bool = True

    @classmethod
    def parse(cls, text: str) -> _Lines:
        # CRLF only when every newline is CRLF; mixed files are edited as LF (the \r stays in the text).
        eol = "\r\n" if "\r\n" in text and text.count("\r\n") == text.count("\n") else "\n"
        if not text:
            return cls([], eol, True)
        lines = text.split(eol)
        final = lines[-1] == ""
        if final:
            lines.pop()
        return cls(lines, eol, final)

    def render(self) -> str:
        if not self.lines:
            return ""
        return self.eol.join(self.lines) + (self.eol if self.final_newline else "")


def _quote(lines: list[str]) -> str:
    shown = lines[:_MAX_SHOWN_LINES]
    body = "\n".join(f"  |{line}" for line in shown) if shown else "  (nothing: end of file)"
    if len(lines) > len(shown):
        body += f"\n  ... ({len(lines) - len(shown)} more lines)"
    return body


# --------------------------------------------------------------------------- unified diff

_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass
class _Hunk:
    header: str
    old_start: int  # 1-based; for a pure insertion (old length 0), the line it goes after
    old_len: int | None
    body: list[tuple[str, str, bool]] = field(default_factory=list)  # (tag " -+", text, was empty line)
    old_no_newline: bool = False
    new_no_newline: bool = False

    @property
    def old(self) -> list[str]:
        return [t for tag, t, _ in self.body if tag in " -"]


def _parse_unified(diff: str) -> list[_Hunk]:
    lines = [ln.removesuffix("\r") for ln in diff.split("\n")]
    hunks: list[_Hunk] = []
    cur: _Hunk | None = None
    files = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        m = _HUNK_RE.match(line)
        if m:
            old_len = int(m.group(2)) if m.group(2) is not None else None
            cur = _Hunk(header=m.group(0), old_start=int(m.group(1)), old_len=old_len)
            hunks.append(cur)
            continue
        # A "--- x" line followed by "+++ y" starts a file header, not a removed "-- x" line.
        if line.startswith("--- ") and i < len(lines) and lines[i].startswith("+++ "):
            files += 1
            cur = None
            i += 1
            continue
        if cur is None:
            continue  # preamble: "diff --git", "index ...", commentary before the first hunk
        tag = line[:1]
        if tag in (" ", "-", "+"):
            cur.body.append((tag, line[1:], False))
        elif tag == "\\":  # "\ No newline at end of file" applies to the line before it
            if not cur.body:
                raise ToolError(f"patch: hunk {len(hunks)} ({cur.header}) starts with {line!r}")
            last = cur.body[-1][0]
            cur.old_no_newline |= last in (" ", "-")
            cur.new_no_newline |= last in (" ", "+")
        elif line == "":
            cur.body.append((" ", "", True))  # a blank context line whose leading space was lost
        else:
            raise ToolError(
                f"patch: hunk {len(hunks)} ({cur.header}) has a line that does not start with "
                f"' ', '+' or '-': {line!r}"
            )
    if files > 1:
        raise ToolError(
            f"patch: the diff touches {files} files; send one patch per file, with path set to it"
        )
    if not hunks:
        raise ToolError("patch: no '@@ -a,b +c,d @@' hunk found in the unified diff")
    for h in hunks:
        # Trailing blank context carries no change; dropping it tolerates stray blank lines.
        while h.body and h.body[-1][2]:
            h.body.pop()
    return hunks


def _locate(lines: list[str], block: list[str], lo: int, expected: int) -> int | None:
    """Index ≥ lo where `block` occurs, nearest to `expected`.

    An exact match wins; failing that, one that ignores trailing whitespace (models often drop it).
    """
    n = len(block)
    for norm in (lambda s: s, lambda s: s.rstrip()):
        want = [norm(s) for s in block]
        hits = [i for i in range(lo, len(lines) - n + 1) if [norm(s) for s in lines[i : i + n]] == want]
        if hits:
            return min(hits, key=lambda i: (abs(i - expected), i))
    return None


def apply_unified_diff(text: str, diff: str, rel: str = "file") -> tuple[str, int]:
    """Apply a unified diff to `text`; returns (new text, number of hunks).

    Hunks are applied in order; each one's context and removed lines must match the file (an exact
    match nearest the header's line number, else one ignoring trailing whitespace). Line counts in
    the headers are not trusted, since models often get them wrong.

    Raises:
        ToolError: malformed diff, or a hunk that does not match (names the hunk and shows the
            expected lines next to the file's lines at that position).
    """
    hunks = _parse_unified(diff)
    src = _Lines.parse(text)
    out: list[str] = []
    pos = 0  # lines of src before this index are already copied to out
    drift = 0  # how far matched hunks were from their header line numbers
    final_newline = src.final_newline
    for k, h in enumerate(hunks, 1):
        old = h.old
        # "-N,0" is an insertion after line N; otherwise the block starts at line N.
        expected = (h.old_start if not old else max(h.old_start - 1, 0)) + drift
        if not old:
            at = min(max(expected, pos), len(src.lines))
        else:
            found = _locate(src.lines, old, pos, expected)
            if found is None:
                start = min(max(expected, pos), len(src.lines))
                raise ToolError(
                    f"patch: hunk {k} of {len(hunks)} ({h.header}) does not match {rel}; "
                    f"expected these lines at line {start + 1}:\n{_quote(old)}\n"
                    f"but {rel} has there:\n{_quote(src.lines[start : start + len(old)])}\n"
                    "Read the file again and resend the patch (or use SEARCH/REPLACE blocks)."
                )
            at = found
        drift = at - (expected - drift)
        out.extend(src.lines[pos:at])
        j = at
        for tag, line, _ in h.body:
            if tag == "+":
                out.append(line)
            else:  # context keeps the file's own text (it may differ in trailing whitespace)
                if tag == " ":
                    out.append(src.lines[j])
                j += 1
        pos = at + len(old)
        if pos >= len(src.lines):  # this hunk reaches the end of the file
            if h.new_no_newline:
                final_newline = False
            elif h.old_no_newline:
                final_newline = True
    out.extend(src.lines[pos:])
    return _Lines(out, src.eol, final_newline).render(), len(hunks)


# --------------------------------------------------------------------------- search/replace

_SEARCH, _DIVIDER, _REPLACE = "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE"


def _parse_search_replace(patch: str) -> list[tuple[list[str], list[str]]]:
    blocks: list[tuple[list[str], list[str]]] = []
    state: str | None = None
    search: list[str] = []
    replace: list[str] = []
    for raw in patch.split("\n"):
        line = raw.rstrip("\r")
        marker = line.rstrip()
        if state is None:
            if marker == _SEARCH:
                state, search = "search", []
            # anything else between blocks (a file name, commentary) is ignored
        elif state == "search":
            if marker == _DIVIDER:
                state, replace = "replace", []
            elif marker in (_SEARCH, _REPLACE):
                raise ToolError(
                    f"patch: search/replace block {len(blocks) + 1} has {marker!r} before '======='"
                )
            else:
                search.append(line)
        else:
            if marker == _REPLACE:
                blocks.append((search, replace))
                state = None
            elif marker == _SEARCH:
                raise ToolError(f"patch: search/replace block {len(blocks) + 1} is missing '{_REPLACE}'")
            else:
                replace.append(line)
    if state is not None:
        missing = _DIVIDER if state == "search" else _REPLACE
        raise ToolError(f"patch: search/replace block {len(blocks) + 1} is not closed (missing {missing!r})")
    return blocks


def _find_all(haystack: str, needle: str) -> list[int]:
    hits, i = [], haystack.find(needle)
    while i != -1:
        hits.append(i)
        i = haystack.find(needle, i + 1)
    return hits


def apply_search_replace(text: str, patch: str, rel: str = "file") -> tuple[str, int]:
    """Apply SEARCH/REPLACE blocks to `text` in order; returns (new text, number of blocks).

    A SEARCH text is matched as whole lines first, then as a plain substring (to allow editing a
    phrase inside a long paragraph); either way it must occur exactly once. An empty REPLACE
    deletes the matched lines.

    Raises:
        ToolError: malformed blocks, an empty SEARCH, or a SEARCH text found 0 or several times.
    """
    blocks = _parse_search_replace(patch)
    if not blocks:
        raise ToolError("patch: no search/replace block found")
    crlf = "\r\n" in text and text.count("\r\n") == text.count("\n")
    body = text.replace("\r\n", "\n") if crlf else text
    for k, (search_lines, replace_lines) in enumerate(blocks, 1):
        search = "\n".join(search_lines)
        if not search.strip():
            raise ToolError(
                f"patch: search/replace block {k} of {len(blocks)} has an empty SEARCH; "
                "use action=write or append to add text without replacing"
            )
        replace = "\n".join(replace_lines)
        padded = "\n" + body + ("" if body.endswith("\n") else "\n")
        hits = _find_all(padded, "\n" + search + "\n")  # index p in padded = start p in body
        whole_lines = bool(hits)
        if not hits:
            hits = _find_all(body, search)
        if len(hits) != 1:
            hint = (
                "copy the lines exactly from the file, including indentation (read it first)"
                if not hits
                else "include more surrounding lines so that it is unique"
            )
            raise ToolError(
                f"patch: search/replace block {k} of {len(blocks)}: the SEARCH text occurs {len(hits)} times "
                f"in {rel} (it must occur exactly once); {hint}. SEARCH was:\n{search[:800]}"
            )
        start, end = hits[0], hits[0] + len(search)
        if whole_lines and not replace_lines and body[end : end + 1] == "\n":
            end += 1  # deleting whole lines removes their line breaks too
        body = body[:start] + replace + body[end:]
    return (body.replace("\n", "\r\n") if crlf else body), len(blocks)


def _only_adds(patch: str) -> bool:
    """True for a unified diff whose hunks remove nothing and need no context."""
    if any(line.rstrip() == _SEARCH for line in patch.splitlines()):
        return False
    if not any(_HUNK_RE.match(line) for line in patch.splitlines()):
        return False
    return not any(h.old for h in _parse_unified(patch))


def apply_patch(text: str, patch: str, rel: str = "file") -> tuple[str, str, int]:
    """Detect the patch format and apply it; returns (new text, format name, hunks or blocks applied)."""
    if any(line.rstrip() == _SEARCH for line in patch.splitlines()):
        new, n = apply_search_replace(text, patch, rel)
        return new, "search_replace", n
    if any(_HUNK_RE.match(line) for line in patch.splitlines()):
        new, n = apply_unified_diff(text, patch, rel)
        return new, "unified_diff", n
    raise ToolError(
        "patch: not a unified diff (no '@@ -a,b +c,d @@' hunk) and no search/replace block "
        f"('{_SEARCH}' / '{_DIVIDER}' / '{_REPLACE}' lines); send one of the two formats"
    )


# --------------------------------------------------------------------------- long outputs


def store_long_output(ctx: EpisodeContext, tool_name: str, text: str) -> str:
    """Keep long tool outputs out of the context: save them to the workspace, return an excerpt.

    Output of at most `ctx.agent.max_observation_chars` characters is returned unchanged. A longer
    one is written to `outputs/{n:03d}_{tool_name}.txt` (n counts saved outputs in this episode,
    so names are deterministic) and the observation becomes a head excerpt of about a third of
    the limit plus a line saying where the full text is. One-line JSON is saved pretty-printed,
    so the line-based file tool can page through it.
    """
    limit = ctx.agent.max_observation_chars
    if len(text) <= limit:
        return text
    body = text
    if "\n" not in text.strip():
        try:
            body = json.dumps(json.loads(text), ensure_ascii=False, indent=1)
        except ValueError:
            pass
    n = ctx.state.get("stored_outputs", 0) + 1
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", tool_name).strip("._") or "tool"
    rel = f"{OUTPUTS_DIR}/{n:03d}_{safe_name}.txt"
    head = body[: limit // 3]
    cut = head.rfind("\n")
    if cut >= len(head) // 2:  # end the excerpt on a line break when one is near
        head = head[:cut]
    try:
        atomic_write_text(ctx.workspace / rel, body)
    except OSError as e:
        return f"{head}\n...\n[output truncated: {len(text)} chars; the full output could not be saved: {e}]"
    ctx.state["stored_outputs"] = n
    return f"{head}\n...\n[full output: {len(body)} chars, saved to {rel}; read it with the file tool]"


# --------------------------------------------------------------------------- the tool


@register_tool
class File(Tool):
    """Read, write, append, list and patch files in the episode workspace."""

    name = "file"
    description = (
        "Files in your workspace (the shell's /workspace). read (path, offset, limit), write or append "
        "(path, content), list (path), patch (path, patch: a unified diff or SEARCH/REPLACE blocks)."
    )
    Args = FileArgs

    def run(self, args: FileArgs, ctx: EpisodeContext) -> str:
        """Dispatch one file action; every result is a JSON observation naming the path."""
        given = {k for k in ("path", "content", "offset", "limit", "patch") if getattr(args, k) is not None}
        extra = given - _ALLOWED[args.action]
        if extra:
            raise ToolError(
                f"file action {args.action!r} does not take {', '.join(sorted(extra))} "
                f"(it takes: {', '.join(sorted(_ALLOWED[args.action]))})"
            )
        try:
            if args.action == "list":
                return self._list(ctx, args.path or ".")
            if args.path is None:
                raise ToolError(f'file action {args.action!r} needs "path"')
            target = resolve_path(ctx, args.path)
            rel = _rel(ctx, target)
            if args.action == "read":
                return self._read(ctx, target, rel, args.offset or 0, args.limit)
            if args.action == "patch":
                return self._patch(target, rel, args.patch)
            return self._write(target, rel, args.content, append=args.action == "append")
        except OSError as e:  # e.g. a path component that is a file, or a full disk
            raise ToolError(f"file {args.action} {args.path or '.'!r} failed: {e.strerror or e}") from None

    @staticmethod
    def _write(target: Path, rel: str, content: str | None, append: bool) -> str:
        action = "append" if append else "write"
        if content is None:
            raise ToolError(f'file action {action!r} needs "content"')
        if target.is_dir():
            raise ToolError(f"file: {rel} is a directory; give a file path")
        existed = target.exists()
        new = (_read_text(target, rel) if existed and append else "") + content
        atomic_write_text(target, new)
        return dumps_observation(
            {
                "action": action,
                "path": rel,
                "created": not existed,
                "bytes": len(new.encode("utf-8")),
                "lines": _count_lines(new),
            }
        )

    @staticmethod
    def _patch(target: Path, rel: str, patch: str | None) -> str:
        if patch is None or not patch.strip():
            raise ToolError('file action "patch" needs "patch": a unified diff or SEARCH/REPLACE blocks')
        if target.exists():
            text = _read_text(target, rel)
        elif _only_adds(patch):  # e.g. a "--- /dev/null" diff creating the file
            text = ""
        else:
            raise ToolError(f"file: {rel} does not exist; use action=write to create it")
        new, fmt, n = apply_patch(text, patch, rel)
        atomic_write_text(target, new)
        return dumps_observation(
            {"action": "patch", "path": rel, "format": fmt, "applied": n, "lines": _count_lines(new)}
        )

    @staticmethod
    def _read(ctx: EpisodeContext, target: Path, rel: str, offset: int, limit: int | None) -> str:
        lines = _split_lines(_read_text(target, rel))
        total = len(lines)
        if offset and offset >= total:
            raise ToolError(f"file: offset {offset} is past the end of {rel} ({total} lines)")
        end = total if limit is None else min(total, offset + limit)
        # Page so that the observation itself stays under the context limit (otherwise the loop
        # would save it to outputs/ and the agent could never read it whole).
        base: dict[str, Any] = {
            "path": rel,
            "content": "",
            "first_line": offset + 1,
            "last_line": total,
            "total_lines": total,
            "next_offset": total,
        }
        budget = ctx.agent.max_observation_chars - len(dumps_observation(base)) - 16
        parts: list[str] = []
        used = 0
        i = offset
        while i < end:
            cost = len(json.dumps(lines[i], ensure_ascii=False)) - 2
            if used + cost > budget:
                if not parts:  # a single line longer than the whole budget: show its start
                    keep = max(budget // 2, 1)
                    parts.append(
                        lines[i][:keep] + f"…[line {i + 1} cut: {len(lines[i])} chars; "
                        "see it whole with the shell tool, e.g. fold]\n"
                    )
                    i += 1
                break
            parts.append(lines[i])
            used += cost
            i += 1
        obs: dict[str, Any] = {
            "path": rel,
            "content": "".join(parts),
            "first_line": offset + 1,
            "last_line": i,
            "total_lines": total,
        }
        if i < total:
            obs["next_offset"] = i
        return dumps_observation(obs)

    @staticmethod
    def _list(ctx: EpisodeContext, path: str) -> str:
        target = resolve_path(ctx, path)
        rel = _rel(ctx, target)
        if not target.exists():
            raise ToolError(f"file: {rel} does not exist")
        if not target.is_dir():
            raise ToolError(f"file: {rel} is a file, not a directory; use action=read")
        entries: list[dict[str, Any]] = []
        budget = ctx.agent.max_observation_chars - 120
        used = 0
        children = sorted(target.iterdir(), key=lambda p: p.name)
        for child in children:
            if child.is_symlink():
                entry: dict[str, Any] = {"name": child.name, "type": "symlink"}
            elif child.is_dir():
                entry = {"name": child.name + "/", "type": "dir"}
            else:
                entry = {"name": child.name, "type": "file", "size": child.stat().st_size}
            cost = len(dumps_observation(entry)) + 1
            if used + cost > budget:
                break
            entries.append(entry)
            used += cost
        obs: dict[str, Any] = {"path": rel, "entries": entries}
        if len(entries) < len(children):
            obs["more"] = len(children) - len(entries)
        return dumps_observation(obs)
