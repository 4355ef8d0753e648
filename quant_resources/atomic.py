"""Atomic file writes: a temp file in the same folder, fsync, then `os.replace`
(`atomic_write_many`: the same for many files with one sync for all).

A reader sees the old file or the new one, never a torn one; a crash or an exception
before the rename leaves the previous file untouched and removes the temp file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import polars as pl

TMP_MARKER = ".tmp-"


@functools.cache
def host_name() -> str:
    """This host's name as it may appear in a file name."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:63] or "host"


def temp_path(path: Path) -> Path:
    """`.{name}.tmp-{pid}@{host}-{random}` beside `path`: the pid and host of the writer, so
    that a cleanup on a shared lakehouse removes only the temp files of dead writers of
    its own host (`Lakehouse.remove_stale_temp_files`)."""
    return path.with_name(f".{path.name}{TMP_MARKER}{os.getpid()}@{host_name()}-{uuid.uuid4().hex[:8]}")


def temp_writer(name: str) -> tuple[int, str | None] | None:
    """(pid, host) of a temp file's writer from its name; host None for names of before
    hosts were recorded; None when `name` is no temp file."""
    if TMP_MARKER not in name:
        return None
    rest = name.split(TMP_MARKER, 1)[1]
    pid, at, tail = rest.partition("@")
    if not at:
        pid, host = rest.split("-", 1)[0], None
    else:
        host = tail.rsplit("-", 1)[0]
    try:
        return int(pid), host
    except ValueError:
        return None


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on clean exit it replaces `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _sync_file_system(folder: Path) -> None:
    """Flush the file system holding `folder` (syncfs), or every one (sync) without it."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = os.open(folder, os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    os.sync()


def atomic_write_many(items: Iterable[tuple[Path, bytes]]) -> int:
    """Write many files, each whole or not at all, with two file-system syncs in all
    instead of two fsyncs per file (a 20-year backfill writes 7305 candidates files).

    Every temp file is written first, then one sync makes them durable, then each is
    renamed into place, then a second sync makes the renames durable: a crash leaves
    each file old or new, never torn, as `atomic_path` does one file at a time.
    Returns the number of files written.
    """
    pending: list[tuple[Path, Path]] = []
    try:
        for path, data in items:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_path(path)
            pending.append((tmp, path))
            tmp.write_bytes(data)
        if not pending:
            return 0
        _sync_file_system(pending[0][1].parent)
        for tmp, path in pending:
            os.replace(tmp, path)
        written = len(pending)
        pending.clear()
        _sync_file_system(path.parent)
        return written
    finally:
        for tmp, _ in pending:  # an error before the renames: no temp file stays behind
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def atomic_write_json(path: Path, obj: Any, *, indent: int | None = 2) -> None:
    separators = (",", ":") if indent is None else None
    text = json.dumps(obj, indent=indent, separators=separators, sort_keys=True, allow_nan=False, default=str)
    atomic_write_text(path, text + "\n")


def atomic_write_parquet(path: Path, frame: pl.DataFrame) -> None:
    """Snappy Parquet, written whole or not at all."""
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp, compression="snappy", statistics=True)


def atomic_copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
