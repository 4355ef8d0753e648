"""Backfills through the Dagster instance, the way the UI launches them.

A backfill is submitted to the instance of a temp DAGSTER_HOME (the project's dagster.yaml:
PostgreSQL, embedded; queued run coordinator), and the daemons that `dagster dev` runs, the backfill
daemon and the run queue, are iterated in this process against the project's
workspace.yaml. Runs are launched as a user's would be: in a subprocess of the code server.

Dagster 1.13 has no public API to drive the daemons, so this uses the same internal
entry points as Dagster's own daemon tests (`execute_backfill_iteration`,
`QueuedRunCoordinatorDaemon.run_iteration`, `PartitionBackfill.from_asset_partitions`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.storage.tags import BACKFILL_ID_TAG
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.utils import make_new_backfill_id
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._daemon.backfill import execute_backfill_iteration
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from fake_binance import FakeBinance
from helpers import run_data_job

from quant_assets.data.calendar import (
    first_session_on_or_after,
    is_session,
    last_session_on_or_before,
)
from quant_assets.features.store import read_features
from quant_resources.instance import EmbeddedPostgres
from quant_resources.run_tags import RANGE_END, RANGE_START
from quant_resources.runtime import ensure_dagster_home
from quant_resources.schema import date_to_ts, ts_to_date
from quant_resources.settings import Settings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DATA = ("candidates", "ohlcv", "tv_technicals_1d")
ALPHA = ("run_snapshot", "returns_matrix", "selected_winners", "portfolio_weights", "backtest")
# The code location's executor runs the steps of a run in one process; no run config needed.
IN_PROCESS: dict = {}
LOG = logging.getLogger("test_backfills")


@contextmanager
def daemon_workspace(monkeypatch, **quant_env: str) -> Iterator[tuple[dg.DagsterInstance, object]]:
    """The instance of this test's DAGSTER_HOME and the project's workspace, loaded as the
    daemon loads it (a code-server subprocess that inherits these QUANT_* variables)."""
    for key, value in quant_env.items():
        monkeypatch.setenv(key, value)
    home = ensure_dagster_home()  # the project's dagster.yaml, the embedded server started
    try:
        with dg.DagsterInstance.get() as instance:
            target = WorkspaceFileTarget(paths=[str(ROOT / "workspace.yaml")])
            with create_test_daemon_workspace_context(target, instance) as context:
                yield instance, context
    finally:
        _wait_for_code_servers(home)
        EmbeddedPostgres(home).release()  # this test was its only user: it stops


def _wait_for_code_servers(home, timeout: float = 30.0) -> None:
    """The code servers the workspace started finish their last runs' bookkeeping in the
    instance before they exit: stopping its database first would leave them hanging."""
    import psutil

    def ours() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(attrs=("cmdline",)):
            try:
                if "grpc" in (proc.info["cmdline"] or []) and proc.environ().get("DAGSTER_HOME") == str(home):
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    _, alive = psutil.wait_procs(ours(), timeout=timeout)
    for proc in alive:  # a server that did not stop in time: do not leave it behind
        proc.kill()


def submit_backfill(instance, context, assets: tuple[str, ...], days: list[str]) -> str:
    """What the UI's "Materialize" -> "Backfill" does: an asset backfill over these days."""
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(),
        asset_graph=context.create_request_context().asset_graph,
        partition_names=days,
        asset_selection=[dg.AssetKey(a) for a in assets],
        backfill_timestamp=time.time(),
        tags={},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=None,
        description=None,
        run_config=IN_PROCESS,
    )
    instance.add_backfill(backfill)
    return backfill.backfill_id


def run_daemons_until_done(
    instance, context, backfill_id: str, timeout: float = 240.0
) -> PartitionBackfill:
    queue = QueuedRunCoordinatorDaemon(interval_seconds=1)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            list(execute_backfill_iteration(context, LOG))
            list(queue.run_iteration(context))
            backfill = instance.get_backfill(backfill_id)
            if backfill.status not in (
                BulkActionStatus.REQUESTED,
                BulkActionStatus.CANCELING,
                BulkActionStatus.FAILING,
            ):
                return backfill
            time.sleep(0.5)
    finally:
        queue.__exit__(None, None, None)
    runs = [(r.run_id, r.status.value) for r in backfill_runs(instance, backfill_id)]
    pytest.fail(f"backfill {backfill_id} still {backfill.status} after {timeout:.0f}s; runs {runs}")


def backfill_runs(instance, backfill_id: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id})))


def materialized_in(instance, run_id: str) -> set[str]:
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    return {e.dagster_event.asset_key.to_user_string() for e in events}


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def days_between(start: dt.date, end: dt.date) -> list[str]:
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def test_history_backfill_of_the_data_cycle_is_one_run_with_complete_files(tmp_path, monkeypatch):
    today = dt.datetime.now(dt.UTC).date()
    start, end = today - dt.timedelta(days=14), today - dt.timedelta(days=1)
    data_dir = tmp_path / "data"
    days = days_between(start, end)
    with daemon_workspace(
        monkeypatch,
        QUANT_DATA_DIR=str(data_dir),
        QUANT_HISTORY_START=start.isoformat(),
        QUANT_UNIVERSE="small",
        QUANT_SYNTHETIC_SYMBOLS="30",
    ) as (instance, context):
        backfill_id = submit_backfill(instance, context, DATA, days)
        backfill = run_daemons_until_done(instance, context, backfill_id)

        assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS
        (run,) = backfill_runs(instance, backfill_id)  # BackfillPolicy.single_run: one run
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert (run.tags[RANGE_START], run.tags[RANGE_END]) == (start.isoformat(), end.isoformat())
        assert materialized_in(instance, run.run_id) == set(DATA)
        for asset in DATA:
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(days), asset
        evaluations = {
            e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data.passed
            for e in instance.all_logs(
                run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            )
        }
        assert set(evaluations) == {
            "ohlcv_schema",
            "ohlcv_toxic_free",
            "ohlcv_gaps",
            "ohlcv_freshness",
            "ohlcv_skipped_files",
            "features_l2",
        }
        assert evaluations["ohlcv_skipped_files"]  # the synthetic source skips no file
        assert (
            evaluations["ohlcv_schema"]
            and evaluations["ohlcv_toxic_free"]
            and evaluations["features_l2"]
        )

    # Complete files: a candidates list per day, and per symbol every session of the window
    # in its Parquet file and in the feature store, except what the catalog accounts for.
    for day in days:
        assert json.loads((data_dir / "export" / day / "candidates.json").read_text())[
            "candidates"
        ], day
    catalog = json.loads((data_dir / "lakehouse" / "catalog.json").read_text())
    assert catalog["symbols"] and not catalog.get("errors")
    features = read_features(
        data_dir / "lakehouse" / "features" / "tv_technicals_1d", start=start, end=end
    )
    for key, entry in catalog["symbols"].items():
        bars = pl.read_parquet(data_dir / "lakehouse" / entry["file"])
        held = {ts_to_date(ts) for ts in bars["timestamp"]}
        first = first_session_on_or_after(
            max(start, dt.date.fromisoformat(entry["genesis_date"])), entry["calendar"]
        )
        last = last_session_on_or_before(end, entry["calendar"])
        expected = {
            first + dt.timedelta(days=i)
            for i in range((last - first).days + 1)
            if is_session(first + dt.timedelta(days=i), entry["calendar"])  # XNYS: no holidays
        }
        explained = {
            dt.date.fromisoformat(d) for kind in entry.get("dropped", {}).values() for d in kind
        }
        for gap in entry.get("gaps", []):
            g0, g1 = dt.date.fromisoformat(gap["start"]), dt.date.fromisoformat(gap["end"])
            explained |= {g0 + dt.timedelta(days=i) for i in range((g1 - g0).days + 1)}
        assert expected - explained <= held, (
            f"{key}: sessions missing {sorted(expected - explained - held)}"
        )
        assert bars.height == entry["rows"] and bars["timestamp"].is_sorted()
        assert bars.filter(pl.col("timestamp") >= date_to_ts(start)).height == len(held & expected)
        feature_days = set(features.filter(pl.col("symbol") == key)["date"].to_list())
        assert feature_days == held & expected, key


def test_alpha_backfill_is_one_run_per_day_and_fetches_nothing(tmp_path, monkeypatch):
    today = dt.datetime.now(dt.UTC).date()
    start, end = today - dt.timedelta(days=400), today - dt.timedelta(days=1)
    settings = Settings(
        data_dir=tmp_path / "data",
        history_start=start,
        synthetic_symbols=30,
        universe="small",
        freshness_hours=1e6,
    )
    days = days_between(end - dt.timedelta(days=2), end)
    # Any fetch would go to this loopback trap: the alpha side must never call it.
    with (
        FakeBinance([], today=end) as trap,
        daemon_workspace(
            monkeypatch,
            QUANT_DATA_DIR=str(settings.data_dir),
            QUANT_HISTORY_START=start.isoformat(),
            QUANT_UNIVERSE="small",
            QUANT_SOURCE="binance",
            QUANT_BINANCE_BASE_URL=trap.base_url,
        ) as (instance, context),
    ):
        # The lakehouse as the data cycle leaves it (on an in-memory instance: 400 days of
        # partition events cost a minute in sqlite and prove nothing here).
        assert run_data_job(settings, start, end).success
        lakehouse_before = file_hashes(settings.data_dir / "lakehouse")

        backfill_id = submit_backfill(instance, context, ALPHA, days)
        backfill = run_daemons_until_done(instance, context, backfill_id)

        assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS
        runs = backfill_runs(instance, backfill_id)
        assert sorted(r.tags.get("dagster/partition") for r in runs) == days  # one run per day
        for run in runs:
            assert run.status == dg.DagsterRunStatus.SUCCESS, run.run_id
            assert RANGE_START not in run.tags
            assert materialized_in(instance, run.run_id) == set(ALPHA)  # nothing of the data cycle
            manifest = json.loads((settings.runs_dir / run.run_id / "manifest.json").read_text())
            assert manifest["as_of"] == run.tags["dagster/partition"]
            assert (settings.runs_dir / run.run_id / "weights.parquet").exists()
        assert all(not instance.get_materialized_partitions(dg.AssetKey(a)) for a in DATA)
    assert trap.requests == []  # no source was touched
    assert file_hashes(settings.data_dir / "lakehouse") == lakehouse_before  # read-only, really
