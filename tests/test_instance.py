"""The Dagster instance on PostgreSQL: the embedded server as every command uses it,
range runs recorded per partition, two processes sharing one server, a quiet terminal,
and the faults a user meets (a wrong URL, an unwritable home, a killed process, a server
killed mid-run, an old sqlite home)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import psutil
import pytest

from quant_resources.instance import (
    MARKER,
    EmbeddedPostgres,
    InstanceError,
    ensure_instance,
    normalise_url,
)

pytestmark = pytest.mark.slow

QUANT = str(Path(sys.executable).parent / "quant")
START = dt.date(2025, 3, 1)


def quant_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUANT_", "DAGSTER_HOME"))}
    env.update(
        {"QUANT_HISTORY_START": START.isoformat(), "QUANT_UNIVERSE": "small", "QUANT_SYNTHETIC_SYMBOLS": "40"}
    )
    env.update(extra)
    return env


def quant(args: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [QUANT, *args], cwd=cwd, env=quant_env(**extra), capture_output=True, text=True, timeout=600
    )


def postmasters(pgdata: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(attrs=("name", "cmdline")):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and str(pgdata) in cmdline:
            found.append(proc)
    return found


@contextlib.contextmanager
def opened(home: Path):
    """The instance of `home`, this process one more user of its server for the block."""
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        ensure_instance(home)
        with dg.DagsterInstance.get() as instance:
            yield instance
    finally:
        EmbeddedPostgres(home).release()
        if previous is not None:
            os.environ["DAGSTER_HOME"] = previous


def wait_until(predicate, timeout: float = 60, what: str = "") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_range_run_records_one_materialisation_per_partition_and_prints_no_events(tmp_path):
    end = START + dt.timedelta(days=9)
    result = quant(["backfill", "--start", START.isoformat(), "--end", end.isoformat()], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    terminal = result.stdout + result.stderr
    # The event stream is in the instance and the log file, not on the terminal.
    assert "DEBUG" not in terminal and "Materialized value" not in terminal and "STEP_START" not in terminal
    assert "ohlcv: done in" in result.stdout  # one line per step off a terminal
    log = (tmp_path / ".dagster" / "logs" / "quant.log").read_text()
    assert "STEP_SUCCESS" in log and "RUN_SUCCESS" in log
    config = (tmp_path / ".dagster" / "dagster.yaml").read_text()
    assert MARKER in config and "postgresql+psycopg2://" in config and "Sqlite" not in config
    assert not postmasters(tmp_path / ".dagster" / "postgres")  # the last user stopped it

    days = {(START + dt.timedelta(days=i)).isoformat() for i in range(10)}
    with opened(tmp_path / ".dagster") as instance:
        for asset in ("candidates", "ohlcv", "tv_technicals_1d"):
            key = dg.AssetKey(asset)
            assert instance.get_materialized_partitions(key) == days, asset
            records = instance.fetch_materializations(key, limit=100).records
            assert sorted(r.partition_key for r in records) == sorted(days), asset  # one per day
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS


def test_verbose_brings_the_event_stream_back(tmp_path):
    result = quant(["data", "--date", START.isoformat(), "--verbose"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "STEP_SUCCESS" in result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_second_command_shares_the_server_of_the_running_ui(tmp_path):
    home = tmp_path / ".dagster"
    pgdata = home / "postgres"
    port = free_port()
    ui = subprocess.Popen(
        [QUANT, "ui", "--port", str(port)], cwd=tmp_path, env=quant_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        def ui_answers() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_until(ui_answers, 120, "the Dagster UI")
        (server,) = postmasters(pgdata)
        result = quant(["data", "--date", START.isoformat()], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert [p.pid for p in postmasters(pgdata)] == [server.pid]  # shared, not a second one
        assert server.is_running()  # the command's exit left it to the UI
    finally:
        os.kill(ui.pid, signal.SIGTERM)  # a plain kill of `quant ui` stops dagster dev
        ui.wait(60)
    # The watcher of `quant ui` stops the server once the UI, its last user, is gone.
    wait_until(lambda: not postmasters(pgdata), 60, "the embedded server to stop")


def test_a_killed_command_leaves_a_server_the_next_command_uses_then_stops(tmp_path):
    pgdata = tmp_path / ".dagster" / "postgres"
    args = ["backfill", "--start", START.isoformat(), "--end", (START + dt.timedelta(days=120)).isoformat()]
    process = subprocess.Popen(
        [QUANT, *args], cwd=tmp_path, env=quant_env(QUANT_SYNTHETIC_SYMBOLS="300", QUANT_UNIVERSE="all"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    log = tmp_path / ".dagster" / "logs" / "quant.log"
    wait_until(lambda: log.exists() and "STEP_START" in log.read_text(), 120, "the run to start")
    process.kill()  # SIGKILL: no exit handler runs; the server and a dead handle stay
    process.wait()
    assert postmasters(pgdata)
    result = quant(["data", "--date", START.isoformat()], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not postmasters(pgdata)  # the dead user was forgotten: the last live one stopped it
    with opened(tmp_path / ".dagster") as instance:
        statuses = sorted(str(r.status) for r in instance.get_runs())
        assert statuses == ["DagsterRunStatus.FAILURE", "DagsterRunStatus.SUCCESS"]  # not running forever


def test_the_server_killed_mid_run_fails_the_run_with_a_message_and_the_next_command_recovers(tmp_path):
    pgdata = tmp_path / ".dagster" / "postgres"
    env = {"QUANT_SYNTHETIC_SYMBOLS": "300", "QUANT_UNIVERSE": "all"}
    args = ["backfill", "--start", START.isoformat(), "--end", (START + dt.timedelta(days=200)).isoformat()]
    process = subprocess.Popen(
        [QUANT, *args], cwd=tmp_path, env=quant_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    log = tmp_path / ".dagster" / "logs" / "quant.log"
    wait_until(lambda: log.exists() and "STEP_START" in log.read_text(), 120, "the run to start")
    for server in postmasters(pgdata):
        server.kill()
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 1
    errors = [line for line in stderr.splitlines() if line.startswith("quant backfill: error:")]
    assert len(errors) == 1 and "database went away" in errors[0], stderr[-3000:]
    assert "Traceback" not in stderr
    rerun = quant(args, tmp_path, **env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    with opened(tmp_path / ".dagster") as instance:
        statuses = sorted(str(r.status) for r in instance.get_runs())
        assert statuses == ["DagsterRunStatus.FAILURE", "DagsterRunStatus.SUCCESS"]


def test_an_unreachable_external_url_is_one_line_without_the_password(tmp_path):
    port = free_port()  # nothing listens there
    result = quant(["data"], tmp_path, QUANT_DAGSTER_PG_URL=f"postgresql://desk:s3cret@127.0.0.1:{port}/dagster")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unreachable" in lines[0] and "QUANT_DAGSTER_PG_URL" in lines[0], result.stderr
    assert "s3cret" not in result.stderr and "***" in lines[0]
    wrong = quant(["data"], tmp_path, QUANT_DAGSTER_PG_URL="mysql://desk@127.0.0.1/dagster")
    assert wrong.returncode == 2 and "is not a PostgreSQL URL" in wrong.stderr


def test_an_external_server_is_used_through_the_url(tmp_path, work):
    """Production: QUANT_DAGSTER_PG_URL; here a second embedded server stands in for it."""
    external_home = tmp_path / "external"
    external_home.mkdir()
    server = EmbeddedPostgres(external_home)
    url = server.url()
    try:
        plain = url.replace("postgresql+psycopg2://", "postgresql://")  # as a user writes it
        result = quant(["data", "--date", START.isoformat()], work, QUANT_DAGSTER_PG_URL=plain)
        assert result.returncode == 0, result.stderr[-3000:]
        config = (tmp_path / "work" / ".dagster" / "dagster.yaml").read_text()
        assert "env: QUANT_DAGSTER_PG_URL" in config  # the URL (and a password) stays out of the file
        assert not (tmp_path / "work" / ".dagster" / "postgres").exists()  # no embedded server started
        os.environ["QUANT_DAGSTER_PG_URL"] = plain
        try:
            home = tmp_path / "work" / ".dagster"
            ensure_instance(home)
            with dg.DagsterInstance.from_config(str(home)) as instance:
                assert [r.status for r in instance.get_runs()] == [dg.DagsterRunStatus.SUCCESS]
        finally:
            del os.environ["QUANT_DAGSTER_PG_URL"]
    finally:
        server.release()


@pytest.fixture
def work(tmp_path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def test_an_unwritable_dagster_home_is_one_line(tmp_path, work):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where DAGSTER_HOME should be")
    result = quant(["data"], work, DAGSTER_HOME=str(blocker))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "DAGSTER_HOME" in lines[0] and "cannot be written" in lines[0], result.stderr
    home = tmp_path / "home"
    home.mkdir()
    if subprocess.run(["chattr", "+i", str(home)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder read-only here (root without chattr +i support)")
    try:
        result = quant(["data"], work, DAGSTER_HOME=str(home))
    finally:
        subprocess.run(["chattr", "-i", str(home)], capture_output=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot be written" in lines[0], result.stderr


def test_an_old_sqlite_home_moves_to_postgres_with_one_message(tmp_path, capsys):
    home = tmp_path / ".dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        f"{MARKER}: telemetry off, sqlite storage in this folder.\n"
        "run_storage:\n  module: dagster._core.storage.runs\n  class: SqliteRunStorage\n"
    )
    (home / "history").mkdir()
    (home / "history" / "runs.db").write_bytes(b"old runs")
    with opened(home) as instance:
        assert instance.get_runs() == []
    message = capsys.readouterr().err
    assert "moved from sqlite to PostgreSQL" in message and str(home) in message
    assert (home / "history" / "runs.db").read_bytes() == b"old runs"  # kept, not deleted
    assert "postgresql+psycopg2://" in (home / "dagster.yaml").read_text()


def test_an_operators_own_dagster_yaml_is_left_alone(tmp_path):
    home = tmp_path / ".dagster"
    home.mkdir()
    own = "telemetry:\n  enabled: false\n"
    (home / "dagster.yaml").write_text(own)
    ensure_instance(home)
    assert (home / "dagster.yaml").read_text() == own
    assert not (home / "postgres").exists()


@pytest.mark.parametrize(
    "url,expected",
    [
        ("postgresql://u:p@h:5432/d", "postgresql+psycopg2://u:p@h:5432/d"),
        ("postgres://u@h/d", "postgresql+psycopg2://u@h/d"),
        ("postgresql+psycopg2://u@h/d", "postgresql+psycopg2://u@h/d"),
    ],
)
def test_urls_are_normalised_to_psycopg2(url, expected):
    assert normalise_url(url) == expected


def test_a_non_postgres_url_is_refused():
    with pytest.raises(InstanceError, match="not a PostgreSQL URL"):
        normalise_url("sqlite:///x.db")


def test_handles_of_dead_processes_are_forgotten(tmp_path):
    home = tmp_path / ".dagster"
    home.mkdir()
    server = EmbeddedPostgres(home)
    server.url()
    handles = home / "postgres" / ".handle_pids.json"
    dead = subprocess.Popen(["true"])
    dead.wait()
    handles.write_text(json.dumps([*json.loads(handles.read_text()), dead.pid]))
    server.release()  # this process was the last live user: it stops the server
    assert not postmasters(home / "postgres")
    assert json.loads(handles.read_text()) == []
