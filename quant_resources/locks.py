"""Locks that hold across threads, processes and hosts sharing one lakehouse folder.

`HostLock(path)` is an exclusive lock on a lock file, taken in two layers:

1. a `threading.Lock` per lock file in this process: POSIX record locks belong to a
   process, not a thread (a second thread of the holder would be granted the same lock),
   and closing *any* descriptor of the file drops them, so only one thread of a process
   may hold the file open at a time;
2. the file lock itself, by mode:
   - `posix`: `fcntl.lockf`, a POSIX byte-range lock. On NFS it goes to the server (NLM
     on NFSv3, the protocol's own locks on NFSv4 and EFS), so it holds across hosts;
     the kernel (or the NFS server, when the client's lease lapses) drops it when the
     holder dies.
   - `flock`: `fcntl.flock`, a whole-file BSD lock: between processes of one host only
     on NFSv3 (and on some FUSE file systems); the Linux NFSv4 client maps it onto a
     POSIX lock.
   - `auto` (the default): `posix`, after checking that the lock folder's file system is
     not one known to break locks or atomic renames across hosts (`check_filesystem`).

The holder writes `pid`, `host` and `since` into the lock file once it holds the lock,
so a waiter that times out names who holds it. The file itself is never deleted: a
waiter may already have it open.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from quant_resources.errors import ConfigError, QuantError

MODES = ("auto", "posix", "flock")
DOCS = "docs/deployment.md, 'Shared lakehouse'"


class LockTimeout(QuantError):
    """A lock not obtained in time; the message names the lock file and its holder."""


class UnsafeFilesystem(QuantError):
    """The lock folder is on a file system whose locks or renames do not hold across hosts."""


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"QUANT_LOCKS={mode!r}: choose one of {', '.join(MODES)}")
    return mode


# -- the file systems ---------------------------------------------------------------------
@dataclass(frozen=True)
class Mount:
    point: str
    fstype: str  # "ext4", "nfs4", "fuse.s3fs", ...
    options: frozenset[str]  # per-mount and per-superblock options, e.g. "vers=3", "nolock"

    def option(self, key: str) -> str | None:
        for option in self.options:
            name, _, value = option.partition("=")
            if name == key:
                return value
        return None


# FUSE mounts of object stores (and sshfs): no lock reaches another host, and a rename is
# a copy and a delete, not atomic.
UNSAFE_FUSE = ("s3fs", "goofys", "rclone", "gcsfuse", "mountpoint-s3", "blobfuse", "blobfuse2", "sshfs")


def unsafe_reason(mount: Mount) -> str | None:
    """Why a lakehouse shared from this mount would not be safe, else None."""
    fstype = mount.fstype
    if fstype.startswith("fuse."):
        kind = fstype.split(".", 1)[1]
        if kind in UNSAFE_FUSE:
            return f"{kind} (FUSE) does not carry locks to other hosts and its rename is not atomic"
        return None
    if fstype in ("cifs", "smb3", "smbfs"):
        return "SMB/CIFS gives byte-range locks Windows semantics and caches under oplocks"
    if fstype in ("nfs", "nfs4"):
        if "nolock" in mount.options:
            return "mounted with `nolock`: fcntl locks stay on this host"
        local = mount.option("local_lock")
        if local in ("posix", "all"):
            return f"mounted with `local_lock={local}`: fcntl locks stay on this host"
        if "nocto" in mount.options:
            return "mounted with `nocto`: a reader may not see a file another host renamed into place"
    return None


def mount_of(path: Path, mountinfo: str | None = None) -> Mount | None:
    """The mount holding `path` (the longest mount point above it), from /proc/self/mountinfo."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    target = os.path.realpath(path)
    best: Mount | None = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if len(fields) < dash + 3 or len(fields) < 6:
            continue
        point = fields[4].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.point)):
            options = set(fields[5].split(",")) | set(fields[dash + 3].split(",") if len(fields) > dash + 3 else ())
            best = Mount(point, fields[dash + 1], frozenset(options))
    return best


_CHECKED: dict[str, None] = {}
_CHECKED_LOCK = threading.Lock()


def check_filesystem(folder: Path, mountinfo: str | None = None) -> Mount | None:
    """Raise UnsafeFilesystem when `folder` sits on a file system that is not safe for a
    shared lakehouse (`unsafe_reason`); checked once per folder and process."""
    key = str(folder)
    if mountinfo is None and key in _CHECKED:
        return None
    mount = mount_of(folder, mountinfo)
    reason = unsafe_reason(mount) if mount is not None else None
    if reason:
        raise UnsafeFilesystem(
            f"{folder} is on {mount.fstype} at {mount.point}: {reason}. Keep the lakehouse on a "
            f"local disk, NFSv4 or EFS (see {DOCS}); QUANT_LOCKS=posix or flock skips this check."
        )
    if mountinfo is None:
        with _CHECKED_LOCK:
            _CHECKED[key] = None
    return mount


# -- the lock -------------------------------------------------------------------------------
_THREAD_LOCKS: dict[str, threading.Lock] = {}
_HELD_BY: dict[str, int] = {}  # lock file -> the thread of this process holding it
_THREAD_LOCKS_GUARD = threading.Lock()


def _thread_lock(key: str) -> threading.Lock:
    with _THREAD_LOCKS_GUARD:
        lock = _THREAD_LOCKS.get(key)
        if lock is None:
            lock = _THREAD_LOCKS[key] = threading.Lock()
        return lock


class HostLock:
    """An exclusive lock on `path`, across threads, processes and (mode `posix`) hosts.

    Not re-entrant: taking it again in the thread that holds it raises instead of waiting
    on itself. `timeout` None waits forever.
    """

    def __init__(self, path: Path | str, timeout: float | None = 600.0, mode: str = "auto", poll_s: float = 0.05):
        self.path = Path(path)
        self.timeout = timeout
        self.mode = check_mode(mode)
        self.poll_s = poll_s
        self._fd: int | None = None
        self._key = str(self.path.absolute())
        self._thread = _thread_lock(self._key)

    @property
    def kind(self) -> str:
        return "flock" if self.mode == "flock" else "posix"

    def acquire(self) -> None:
        import fcntl

        if _HELD_BY.get(self._key) == threading.get_ident():
            raise QuantError(f"lock {self.path} is already held by this thread (locks are not re-entrant)")
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        if self.mode == "auto":
            check_filesystem(self.path.parent)
        if not self._thread.acquire(timeout=-1 if deadline is None else max(0.0, deadline - time.monotonic())):
            raise LockTimeout(
                f"timed out after {self.timeout:g}s waiting for the lock {self.path}: another thread of "
                f"this process (pid {os.getpid()} on {socket.gethostname()}) holds it"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                self._lock_fd(fcntl, fd, deadline)
                _write_holder(fd)
            except BaseException:
                os.close(fd)  # holds nothing: closing drops nothing of ours
                raise
        except BaseException:
            self._thread.release()
            raise
        self._fd = fd
        _HELD_BY[self._key] = threading.get_ident()

    def _lock_fd(self, fcntl, fd: int, deadline: float | None) -> None:
        lock = fcntl.flock if self.mode == "flock" else fcntl.lockf
        pause = 0.001
        while True:
            try:
                lock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except (BlockingIOError, PermissionError):  # EAGAIN, or EACCES from some NFS servers
                pass
            if deadline is not None and time.monotonic() >= deadline:
                raise LockTimeout(
                    f"timed out after {self.timeout:g}s waiting for the lock {self.path} ({self.kind} "
                    f"lock): {_read_holder(fd)}. A process that died releases it by itself (on NFS "
                    "when the server's lease for its host lapses, about 90 s); a live one is still working."
                )
            time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 2, self.poll_s)

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        fd, self._fd = self._fd, None
        _HELD_BY.pop(self._key, None)
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # no holder any more
            (fcntl.flock if self.mode == "flock" else fcntl.lockf)(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
            self._thread.release()

    def __enter__(self) -> HostLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _write_holder(fd: int) -> None:
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    data = json.dumps(holder).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _read_holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it (read through our own descriptor)."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"null")
    except (OSError, ValueError):
        holder = None
    if not isinstance(holder, dict):
        return "held by a process that has not written its name yet"
    return f"held by pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('since')}"
