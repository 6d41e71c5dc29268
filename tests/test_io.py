"""deepresearch.io: the atomic directory writer never leaves a missing or half-written artifact; the
content digest is the documented sha256sum-style one."""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from deepresearch import io


def _write_version(d: Path, version: int, n_files: int = 5) -> None:
    for i in range(n_files):
        (d / f"f{i}.txt").write_text(f"v{version}\n")


def _read_version(d: Path, n_files: int = 5) -> int:
    """The version every file of `d` holds; raises if the directory is missing or mixes versions."""
    seen = {(d / f"f{i}.txt").read_text() for i in range(n_files)}
    assert len(seen) == 1, f"{d} mixes versions: {seen}"
    return int(seen.pop()[1:])


def test_atomic_dir_creates_then_replaces_without_leftovers(tmp_path):
    out = tmp_path / "artifact"
    with io.atomic_dir(out) as tmp:
        assert tmp.parent == tmp_path and not out.exists()  # built beside the target, invisible until done
        _write_version(tmp, 1)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x").write_text("x")
    assert _read_version(out) == 1 and (out / "sub" / "x").read_text() == "x"
    assert oct(out.stat().st_mode & 0o777) == oct(0o755)  # not mkdtemp's private 0700
    with io.atomic_dir(out) as tmp:
        _write_version(tmp, 2)
    assert _read_version(out) == 2
    assert not (out / "sub").exists()  # replaced as a whole, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]  # no temp or old directory left


def test_an_error_mid_write_keeps_the_old_directory(tmp_path):
    out = tmp_path / "artifact"
    with io.atomic_dir(out) as tmp:
        _write_version(tmp, 1)
    with pytest.raises(RuntimeError, match="disk full"):
        with io.atomic_dir(out) as tmp:
            (tmp / "f0.txt").write_text("v2\n")
            raise RuntimeError("disk full")
    assert _read_version(out) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]


def test_a_killed_writer_leaves_the_old_directory(tmp_path):
    """SIGKILL in the middle of writing the new version (no cleanup runs): the old one is intact."""
    out = tmp_path / "artifact"
    with io.atomic_dir(out) as tmp:
        _write_version(tmp, 1)
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from deepresearch.io import atomic_dir
        with atomic_dir(Path({str(out)!r})) as tmp:
            (tmp / "f0.txt").write_text("v2\\n")
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert _read_version(out) == 1
    # what the crash left behind is only a hidden temp sibling, never the target itself
    assert {p.name for p in tmp_path.iterdir()} - {"artifact"} <= {p.name for p in tmp_path.glob(".artifact.tmp-*")}


def test_replace_keeps_old_or_new_in_place_at_every_instant(tmp_path):
    """A reader polling the directory while it is replaced 200 times never finds it missing or empty.

    (A reader that needs several files of one version opens the directory once and reads relative to
    that descriptor; by path, consecutive reads may straddle a replacement.)"""
    probe = tmp_path / "probe"
    (probe / "a").mkdir(parents=True)
    (probe / "b").mkdir()
    if not io.exchange_dirs(probe / "a", probe / "b"):
        pytest.skip("this filesystem has no atomic directory exchange (rename-aside fallback)")
    out = tmp_path / "out" / "artifact"
    with io.atomic_dir(out) as tmp:
        _write_version(tmp, 0)
    stop = threading.Event()
    problems: list[str] = []
    versions: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                versions.append(int((out / "f4.txt").read_text()[1:]))  # the last file a version writes
            except OSError as e:  # the directory or the file missing
                problems.append(repr(e))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for v in range(1, 201):
            with io.atomic_dir(out) as tmp:
                _write_version(tmp, v)
            time.sleep(0)
    finally:
        stop.set()
        t.join()
    assert problems == []
    assert versions == sorted(versions) and versions  # only ever forwards
    assert _read_version(out) == 200


def test_the_rename_aside_fallback_restores_the_old_directory_when_the_swap_fails(tmp_path, monkeypatch):
    out = tmp_path / "artifact"
    with io.atomic_dir(out) as tmp:
        _write_version(tmp, 1)
    monkeypatch.setattr(io, "exchange_dirs", lambda a, b: False)  # a filesystem without RENAME_EXCHANGE
    with io.atomic_dir(out) as tmp:
        _write_version(tmp, 2)
    assert _read_version(out) == 2 and [p.name for p in tmp_path.iterdir()] == ["artifact"]

    real_rename = os.rename

    def failing_rename(src, dst, *a, **k):
        if Path(dst) == out:
            raise OSError("injected: rename into place failed")
        return real_rename(src, dst, *a, **k)

    monkeypatch.setattr(io.os, "rename", failing_rename)
    with pytest.raises(OSError, match="injected"):
        with io.atomic_dir(out) as tmp:
            _write_version(tmp, 3)
    assert _read_version(out) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]


def test_keep_existing_publishes_once(tmp_path):
    out = tmp_path / "cache-entry"
    with io.atomic_dir(out, keep_existing=True) as tmp:
        _write_version(tmp, 1)
    with io.atomic_dir(out, keep_existing=True) as tmp:  # another process finished first: keep its copy
        _write_version(tmp, 2)
    assert _read_version(out) == 1 and [p.name for p in tmp_path.iterdir()] == ["cache-entry"]


def test_a_file_in_the_way_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "artifact").write_text("not a directory")
    with pytest.raises(NotADirectoryError, match="artifact exists and is not a directory"):
        with io.atomic_dir(tmp_path / "artifact"):
            pytest.fail("the body must not run")
    assert (tmp_path / "artifact").read_text() == "not a directory"


def test_atomic_file_writes(tmp_path):
    p = tmp_path / "sub" / "latest"
    io.atomic_write_text(p, "step_1", fsync=True)
    io.atomic_write_text(p, "step_2")
    assert p.read_text() == "step_2" and oct(p.stat().st_mode & 0o777) == oct(0o644)
    lines = ["a", "b"]
    assert io.atomic_write_lines(tmp_path / "x.jsonl", lines) == hashlib.sha256(b"a\nb\n").hexdigest()
    assert sorted(q.name for q in tmp_path.iterdir()) == ["sub", "x.jsonl"]


def test_content_digest_is_sha256sum_of_sha256sum_lines(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_bytes(b"alpha\n")
    (tmp_path / "b" / "c.txt").write_bytes(b"gamma\n")
    (tmp_path / "manifest.json").write_text("{}")  # not part of the content
    hashes = io.file_hashes(tmp_path)
    assert hashes == {"a.txt": hashlib.sha256(b"alpha\n").hexdigest(), "b/c.txt": hashlib.sha256(b"gamma\n").hexdigest()}
    # what `sha256sum a.txt b/c.txt | sha256sum` prints
    lines = f"{hashes['a.txt']}  a.txt\n{hashes['b/c.txt']}  b/c.txt\n"
    assert io.content_digest(hashes) == hashlib.sha256(lines.encode()).hexdigest()
    assert io.content_digest(dict(reversed(list(hashes.items())))) == io.content_digest(hashes)  # order-free
    assert io.dir_digest(tmp_path) == io.content_digest(hashes)
    (tmp_path / "b" / "c.txt").write_bytes(b"delta\n")
    assert io.dir_digest(tmp_path) != io.content_digest(hashes)


def test_dir_digest_prefers_what_the_manifest_records(tmp_path):
    import json

    (tmp_path / "data.jsonl").write_text("x\n")
    (tmp_path / "manifest.json").write_text(json.dumps({"sha256": {"data.jsonl": "ab" * 32}}))
    assert io.dir_digest(tmp_path) == io.content_digest({"data.jsonl": "ab" * 32})
    (tmp_path / "manifest.json").write_text(json.dumps({"digest": "cd" * 32, "sha256": {}}))
    assert io.dir_digest(tmp_path) == "cd" * 32
