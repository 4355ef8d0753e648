"""Locks of a lakehouse that several hosts share (quant_resources/locks.py).

Real processes contend for the same lock file: the waiter times out with a message
naming the file and its holder, a killed holder releases the lock, the lock is a POSIX
record lock (the kind NFS carries to the server), threads of one process are exclusive
too, and two processes merging bars into one symbol's file lose no row. Which file
systems are refused is checked on mount tables written here: this machine has no NFS.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from quant_resources.errors import ConfigError, QuantError
from quant_resources.lakehouse import Lakehouse
from quant_resources.locks import (
    HostLock,
    LockTimeout,
    UnsafeFilesystem,
    check_filesystem,
    mount_of,
    unsafe_reason,
)
from quant_resources.schema import OHLCV_COLUMNS
from quant_resources.settings import PROJECT_ROOT, Settings

HOLDER = textwrap.dedent(
    """
    import sys
    from quant_resources.lakehouse import Lakehouse
    lakehouse = Lakehouse(data_dir=sys.argv[1], locks=sys.argv[2])
    with lakehouse.lock(sys.argv[3]):
        print("held", flush=True)
        sys.stdin.readline()  # hold until told (or killed)
    print("released", flush=True)
    """
)


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}


class Holder:
    """Another process holding the lakehouse lock `name` until told to let go or killed."""

    def __init__(self, data_dir: Path, name: str, mode: str = "auto"):
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(data_dir), mode, name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env(),
        )
        assert self.process.stdout.readline().strip() == "held"

    @property
    def pid(self) -> int:
        return self.process.pid

    def release(self) -> None:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "released"
        self.process.wait(timeout=10)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()


@pytest.fixture
def lakehouse(tmp_path) -> Lakehouse:
    return Lakehouse(data_dir=str(tmp_path / "data"))


@pytest.fixture
def holders():
    started: list[Holder] = []
    yield lambda *args, **kw: started.append(Holder(*args, **kw)) or started[-1]
    for holder in started:
        holder.close()


def posix_locks_of(pid: int) -> list[str]:
    """The lines of /proc/locks held by `pid`: `1: POSIX  ADVISORY  WRITE 1234 ...`."""
    return [line for line in Path("/proc/locks").read_text().splitlines() if line.split()[4:5] == [str(pid)]]


def test_a_second_process_times_out_naming_the_lock_file_and_its_holder(lakehouse, holders):
    holder = holders(lakehouse.data_dir, "BINANCE_BTCUSDT")
    path = lakehouse.layout.lock_path("BINANCE_BTCUSDT")
    started = time.monotonic()
    with pytest.raises(LockTimeout) as caught:
        HostLock(path, timeout=0.5).acquire()
    assert 0.5 <= time.monotonic() - started < 3
    message = str(caught.value)
    assert str(path) in message and "posix lock" in message
    assert f"held by pid {holder.pid} on host {socket.gethostname()}" in message
    # The holder's lock is a POSIX record lock: the kind an NFS client sends to the server.
    assert any(line.split()[1:4] == ["POSIX", "ADVISORY", "WRITE"] for line in posix_locks_of(holder.pid))


def test_a_waiter_gets_the_lock_when_the_holder_lets_go(lakehouse, holders):
    holder = holders(lakehouse.data_dir, "catalog")
    threading.Timer(0.5, holder.release).start()
    started = time.monotonic()
    with lakehouse.lock("catalog"):
        waited = time.monotonic() - started
    assert 0.4 <= waited < 5


def test_a_killed_holder_releases_the_lock(lakehouse, holders):
    holder = holders(lakehouse.data_dir, "symbols")
    holder.kill()  # SIGKILL: no release, no cleanup; the kernel drops the lock with the process
    started = time.monotonic()
    with lakehouse.lock("symbols"):
        assert time.monotonic() - started < 1
    assert lakehouse.layout.lock_path("symbols").exists()  # lock files stay: a waiter may hold one open


def test_flock_mode_excludes_other_processes_too(tmp_path, holders):
    lakehouse = Lakehouse(data_dir=str(tmp_path / "data"), locks="flock")
    holder = holders(lakehouse.data_dir, "catalog", mode="flock")
    with pytest.raises(LockTimeout, match="flock lock"):
        HostLock(lakehouse.layout.lock_path("catalog"), timeout=0.3, mode="flock").acquire()
    holder.release()
    with lakehouse.lock("catalog"):
        pass


def test_threads_of_one_process_are_exclusive(lakehouse):
    """POSIX locks belong to the process: without the per-file thread lock, every thread of
    the holder would be granted the same lock (and one thread's close would drop it)."""
    inside, most, rounds = [0], [0], []
    guard = threading.Lock()

    def work() -> None:
        for _ in range(20):
            with lakehouse.lock("catalog"):
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.001)
                with guard:
                    inside[0] -= 1
                rounds.append(1)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1 and len(rounds) == 120


def test_a_thread_waiting_on_another_thread_times_out_with_a_message(lakehouse):
    path = lakehouse.layout.lock_path("catalog")
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with HostLock(path):
            held.set()
            done.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    try:
        with pytest.raises(LockTimeout, match=f"another thread of this process \\(pid {os.getpid()}"):
            HostLock(path, timeout=0.2).acquire()
    finally:
        done.set()
        thread.join()


def test_taking_a_lock_again_in_the_same_thread_raises_instead_of_waiting(lakehouse):
    with lakehouse.lock("catalog"), pytest.raises(QuantError, match="already held by this thread"), lakehouse.lock("catalog"):
        pass
    with lakehouse.lock("catalog"):  # and it was released
        pass


MERGER = textwrap.dedent(
    """
    import sys, datetime as dt, polars as pl
    from quant_resources.lakehouse import Lakehouse
    from quant_resources.schema import date_to_ts
    lakehouse = Lakehouse(data_dir=sys.argv[1])
    offset = int(sys.argv[2])
    for i in range(15):
        day = dt.date(2024, 1, 1) + dt.timedelta(days=2 * i + offset)
        bar = {"timestamp": [date_to_ts(day)], "open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0], "volume": [1.0]}
        lakehouse.merge_bars("BINANCE", "BTCUSDT", pl.DataFrame(bar), known=lakehouse.read_ohlcv_versioned("BINANCE", "BTCUSDT"))
    """
)


def test_two_processes_merging_into_one_file_lose_no_row(lakehouse):
    """Each process reads the file, then merges under the symbol's lock: the lock (and the
    version check under it) keeps a merge from overwriting the other's rows."""
    processes = [
        subprocess.Popen([sys.executable, "-c", MERGER, str(lakehouse.data_dir), str(offset)], env=child_env())
        for offset in (0, 1)
    ]
    assert [p.wait(timeout=120) for p in processes] == [0, 0]
    frame = pl.read_parquet(lakehouse.ohlcv_path("BINANCE", "BTCUSDT"))
    assert frame.columns == list(OHLCV_COLUMNS) and frame.height == 30 and frame["timestamp"].is_unique().all()


# -- which file systems are safe -------------------------------------------------------------
def mountinfo(*mounts: tuple[str, str, str]) -> str:
    """/proc/self/mountinfo lines for (mount point, fstype, super options)."""
    return "\n".join(
        f"{20 + i} 1 0:{30 + i} / {point} rw,relatime shared:{i} - {fstype} server:/export {options}"
        for i, (point, fstype, options) in enumerate([("/", "ext4", "rw"), *mounts])
    )


@pytest.mark.parametrize(
    ("fstype", "options", "safe"),
    [
        ("ext4", "rw", True),
        ("xfs", "rw,attr2", True),
        ("nfs4", "rw,vers=4.2,hard,proto=tcp,local_lock=none", True),
        ("nfs4", "rw,vers=4.1,rsize=1048576,hard,noresvport,local_lock=none", True),  # EFS
        ("nfs", "rw,vers=3,hard,proto=tcp,local_lock=none", True),  # NFSv3 with lockd
        ("nfs", "rw,vers=3,nolock,proto=tcp,local_lock=all", False),
        ("nfs4", "rw,vers=4.2,local_lock=posix", False),
        ("nfs4", "rw,vers=4.2,nocto,local_lock=none", False),
        ("cifs", "rw,vers=3.1.1,cache=strict", False),
        ("fuse.s3fs", "rw,user_id=0", False),
        ("fuse.goofys", "rw,user_id=0", False),
        ("fuse.mountpoint-s3", "rw", False),
    ],
)
def test_the_filesystem_check(tmp_path, fstype, options, safe):
    table = mountinfo(("/mnt/lake", fstype, options), ("/mnt/lake/other", "ext4", "rw"))
    mount = mount_of(Path("/mnt/lake/data/lakehouse/.locks"), table)
    assert (mount.point, mount.fstype) == ("/mnt/lake", fstype)
    assert (unsafe_reason(mount) is None) == safe
    if not safe:
        with pytest.raises(UnsafeFilesystem, match=f"is on {fstype} at /mnt/lake: .*QUANT_LOCKS=posix or flock skips"):
            check_filesystem(Path("/mnt/lake/data/lakehouse/.locks"), table)


def test_auto_mode_checks_the_filesystem_and_explicit_modes_do_not(lakehouse, monkeypatch):
    import quant_resources.locks as locks

    table = mountinfo(("/", "fuse.s3fs", "rw"))
    monkeypatch.setattr(locks, "mount_of", lambda path, info=None: mount_of(path, table))
    monkeypatch.setattr(locks, "_CHECKED", {})
    with pytest.raises(UnsafeFilesystem, match="s3fs"), lakehouse.lock("catalog"):
        pass
    with Lakehouse(data_dir=lakehouse.data_dir, locks="posix").lock("catalog"):
        pass


def test_lock_mode_setting(monkeypatch):
    assert Settings().locks == "auto"
    monkeypatch.setenv("QUANT_LOCKS", "posix")
    assert Settings.from_env().locks == "posix"
    monkeypatch.setenv("QUANT_LOCKS", "nfs")
    with pytest.raises(ConfigError, match="QUANT_LOCKS='nfs': choose one of auto, posix, flock"):
        Settings.from_env()


def test_the_temp_file_cleanup_leaves_other_hosts_writes_alone(lakehouse):
    """On a shared lakehouse a pid means nothing on another host: a temp file of a writer
    elsewhere is in progress as far as this host knows, and is never removed here."""
    from quant_resources.atomic import host_name, temp_path, temp_writer

    lakehouse.ohlcv_dir.mkdir(parents=True)
    target = lakehouse.ohlcv_path("BINANCE", "BTCUSDT")
    mine = temp_path(target)
    assert temp_writer(mine.name) == (os.getpid(), host_name())
    dead = 2**22 + 12345  # above pid_max's default: no such process
    files = {
        "dead here": target.with_name(f".{target.name}.tmp-{dead}@{host_name()}-0123abcd"),
        "dead, before hosts were recorded": target.with_name(f".{target.name}.tmp-{dead}-0123abcd"),
        "alive here": mine,
        "elsewhere": target.with_name(f".{target.name}.tmp-{dead}@other-host.example-0123abcd"),
    }
    for path in files.values():
        path.write_bytes(b"partial")
    removed = set(lakehouse.remove_stale_temp_files())
    assert removed == {files["dead here"], files["dead, before hosts were recorded"]}
    assert files["alive here"].exists() and files["elsewhere"].exists()
