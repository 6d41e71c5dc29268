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
too); absolute paths, `..` escapes and symlinks resolving outside the workspace are refused, at
the moment of opening, so a link the sandboxed shell swaps in mid-call cannot redirect the host
(see workspace.py). Only regular files are read, up to `agent.file.max_bytes` and within
`agent.file.timeout_s`. Writes go to a temp file in the same directory and are renamed into
place, so a failed call never leaves a half-written file.

`store_long_output(ctx, tool_name, text)` is used by the agent loop for every tool: an output
longer than `agent.max_observation_chars` is saved to `outputs/NNN_<tool>.txt` and only a head
excerpt plus a pointer enters the context; the agent reads the rest with this tool.
"""

from __future__ import annotations

import bisect
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from deepresearch.agent.tools.base import EpisodeContext, Tool, ToolArgs, dumps_observation, register_tool
from deepresearch.agent.tools.workspace import WorkspaceTree, display, relative_form
from deepresearch.errors import ToolError

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


# --------------------------------------------------------------------------- reads and writes


def _decode(data: bytes, rel: str) -> str:
    if b"\x00" in data[:8192]:
        raise ToolError(f"file: {rel} is a binary file ({len(data)} bytes); inspect it with the shell tool")
    return data.decode("utf-8", errors="replace")


def _read_text(ctx: EpisodeContext, tree: WorkspaceTree, path: str) -> str:
    """The text of the regular file `path`, within the file tool's size and time limits."""
    rel = display(relative_form(path))
    cfg = ctx.agent.file
    try:
        data = tree.read_bytes(path, max_bytes=cfg.max_bytes, deadline=time.monotonic() + cfg.timeout_s)
    except FileNotFoundError:
        raise ToolError(f"file: {rel} does not exist; use action=list to see the workspace") from None
    except IsADirectoryError:
        raise ToolError(f"file: {rel} is a directory; use action=list") from None
    return _decode(data, rel)


def _exists(tree: WorkspaceTree, path: str) -> bool:
    try:
        return tree.locate(path).st is not None
    except FileNotFoundError:
        return False


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


class _LineIndex:
    """Where each line occurs in a file, so a hunk is found in time linear in the file, not quadratic."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        self._exact: dict[str, list[int]] | None = None
        self._stripped: dict[str, list[int]] | None = None

    def _index(self, strip: bool) -> dict[str, list[int]]:
        attr = "_stripped" if strip else "_exact"
        if getattr(self, attr) is None:
            index: dict[str, list[int]] = {}
            for i, line in enumerate(self.lines):
                index.setdefault(line.rstrip() if strip else line, []).append(i)
            setattr(self, attr, index)
        return getattr(self, attr)

    def locate(self, block: list[str], lo: int, expected: int) -> int | None:
        """Index ≥ lo where `block` occurs, nearest to `expected` (ties: the earlier).

        An exact match wins; failing that, one that ignores trailing whitespace (models often drop it).
        Candidates come from the block's rarest line, visited outwards from `expected`; the first
        that matches whole is the nearest.
        """
        n = len(block)
        for strip in (False, True):
            index = self._index(strip)
            want = [s.rstrip() for s in block] if strip else block
            anchor = min(range(n), key=lambda k: len(index.get(want[k], ())))
            occurrences = index.get(want[anchor])
            if not occurrences:
                continue
            # a block starts `anchor` lines before an occurrence; keep starts in [lo, len - n]
            first = bisect.bisect_left(occurrences, lo + anchor)
            end = bisect.bisect_right(occurrences, len(self.lines) - n + anchor)
            right = max(bisect.bisect_left(occurrences, expected + anchor), first)
            left = right - 1
            while left >= first or right < end:
                dl = expected - (occurrences[left] - anchor) if left >= first else None
                dr = occurrences[right] - anchor - expected if right < end else None
                if dr is None or (dl is not None and dl <= dr):
                    i, left = occurrences[left] - anchor, left - 1
                else:
                    i, right = occurrences[right] - anchor, right + 1
                seg = self.lines[i : i + n]
                if (seg if not strip else [s.rstrip() for s in seg]) == want:
                    return i
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
    index = _LineIndex(src.lines)
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
            found = index.locate(old, pos, expected)
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
        with WorkspaceTree(ctx.workspace) as tree:
            tree.write_bytes(rel, body.encode("utf-8", errors="replace"))
    except (OSError, ToolError) as e:
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
            with WorkspaceTree(ctx.workspace) as tree:
                if args.action == "list":
                    return self._list(ctx, tree, args.path or ".")
                if args.path is None:
                    raise ToolError(f'file action {args.action!r} needs "path"')
                rel = display(relative_form(args.path))
                if args.action == "read":
                    return self._read(ctx, tree, args.path, rel, args.offset or 0, args.limit)
                if args.action == "patch":
                    return self._patch(ctx, tree, args.path, rel, args.patch)
                return self._write(ctx, tree, args.path, rel, args.content, append=args.action == "append")
        except OSError as e:  # e.g. a path component that is a file, or a full disk
            raise ToolError(f"file {args.action} {args.path or '.'!r} failed: {e.strerror or e}") from None

    @staticmethod
    def _write(ctx: EpisodeContext, tree: WorkspaceTree, path: str, rel: str, content: str | None, append: bool) -> str:
        action = "append" if append else "write"
        if content is None:
            raise ToolError(f'file action {action!r} needs "content"')
        existed = _exists(tree, path)
        new = (_read_text(ctx, tree, path) if existed and append else "") + content
        data = new.encode("utf-8", errors="replace")
        created = tree.write_bytes(path, data)
        return dumps_observation(
            {"action": action, "path": rel, "created": created, "bytes": len(data), "lines": _count_lines(new)}
        )

    @staticmethod
    def _patch(ctx: EpisodeContext, tree: WorkspaceTree, path: str, rel: str, patch: str | None) -> str:
        if patch is None or not patch.strip():
            raise ToolError('file action "patch" needs "patch": a unified diff or SEARCH/REPLACE blocks')
        if _exists(tree, path):
            text = _read_text(ctx, tree, path)
        elif _only_adds(patch):  # e.g. a "--- /dev/null" diff creating the file
            text = ""
        else:
            raise ToolError(f"file: {rel} does not exist; use action=write to create it")
        new, fmt, n = apply_patch(text, patch, rel)
        tree.write_bytes(path, new.encode("utf-8", errors="replace"))
        return dumps_observation(
            {"action": "patch", "path": rel, "format": fmt, "applied": n, "lines": _count_lines(new)}
        )

    @staticmethod
    def _read(ctx: EpisodeContext, tree: WorkspaceTree, path: str, rel: str, offset: int, limit: int | None) -> str:
        lines = _split_lines(_read_text(ctx, tree, path))
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
    def _list(ctx: EpisodeContext, tree: WorkspaceTree, path: str) -> str:
        rel = display(relative_form(path))
        try:
            children = tree.list_dir(path)
        except FileNotFoundError:
            raise ToolError(f"file: {rel} does not exist") from None
        except NotADirectoryError:
            raise ToolError(f"file: {rel} is a file, not a directory; use action=read") from None
        entries: list[dict[str, Any]] = []
        budget = ctx.agent.max_observation_chars - 120
        used = 0
        for entry in children:
            cost = len(dumps_observation(entry)) + 1
            if used + cost > budget:
                break
            entries.append(entry)
            used += cost
        obs: dict[str, Any] = {"path": rel, "entries": entries}
        if len(entries) < len(children):
            obs["more"] = len(children) - len(entries)
        return dumps_observation(obs)
