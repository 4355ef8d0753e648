"""The alpha cycle through Dagster: boundary, snapshot, returns, determinism, offline."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import socket

import dagster as dg
import numpy as np
import polars as pl
import pytest
from helpers import file_hashes, run_data_job

from quant_assets.alpha.returns import build_returns_matrix, panel_calendars
from quant_assets.definitions import ALPHA_JOB, build_definitions
from quant_resources.schema import date_to_ts
from quant_resources.settings import Settings

AS_OF = dt.date(2025, 6, 30)


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory):
    """A small universe with two years of history, as the data cycle leaves it."""
    root = tmp_path_factory.mktemp("alpha")
    settings = Settings(
        data_dir=root / "data", history_start=dt.date(2023, 1, 1), synthetic_symbols=60, universe="small",
        freshness_hours=1e6,
    )
    result = run_data_job(settings, dt.date(2023, 1, 1), AS_OF)
    assert result.success
    return settings


def run_alpha(settings: Settings, day=AS_OF, run_config=None, instance=None):
    defs = build_definitions(settings)
    job = defs.resolve_job_def(ALPHA_JOB)
    return job.execute_in_process(
        instance=instance or dg.DagsterInstance.ephemeral(), partition_key=day.isoformat(),
        run_config=run_config or {}, raise_on_error=False,
    )


def test_alpha_cycle_writes_the_run_folder(lakehouse):
    result = run_alpha(lakehouse)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    run_dir = lakehouse.runs_dir / result.run_id
    for name in ("manifest.json", "returns_matrix.parquet", "selection.json", "weights.parquet", "backtest.json", "equity_curve.png", "weights.png", "audit.jsonl"):
        assert (run_dir / name).exists(), name
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["as_of"] == AS_OF.isoformat() and manifest["run_id"] == result.run_id
    assert isinstance(manifest["feature_store_version"], int)  # the Delta version the run saw
    for name, described in manifest["files"].items():
        assert hashlib.sha256((run_dir / "data" / name).read_bytes()).hexdigest() == described["sha256"]
        assert pl.read_parquet(run_dir / "data" / name).height == described["rows"]
    weights = pl.read_parquet(run_dir / "weights.parquet")
    assert abs(weights["weight"].sum() - 1.0) < 1e-6 and (weights["weight"] >= 0).all()
    assert weights["weight"].max() <= 0.25 + 1e-9
    backtest = json.loads((run_dir / "backtest.json").read_text())
    for metric in ("sharpe", "max_drawdown", "annual_return", "annual_volatility", "sortino", "calmar", "hit_rate"):
        assert metric in backtest["metrics"]
    audit = [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines()]
    stages = [a["stage"] for a in audit]
    assert {"run_snapshot", "returns_matrix", "selected_winners", "portfolio_weights", "backtest"} <= set(stages)
    assert {a["contract"] for a in audit if a["stage"] == "contract"} == {"L1_returns", "L3_selection", "L4_weights"}
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"returns_l1": True, "selection_l3": True, "weights_l4": True}


def test_same_partition_twice_gives_identical_selection_and_weights(lakehouse):
    first, second = run_alpha(lakehouse), run_alpha(lakehouse)
    assert first.success and second.success and first.run_id != second.run_id
    a, b = lakehouse.runs_dir / first.run_id, lakehouse.runs_dir / second.run_id
    for name in ("selection.json", "weights.parquet"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert json.loads((a / "selection.json").read_text())["hash"] == json.loads((b / "selection.json").read_text())["hash"]


def test_alpha_cycle_runs_with_sockets_disabled(lakehouse, monkeypatch):
    attempts = []

    class NoNetworkSocket(socket.socket):
        """Network sockets refuse to exist; local pipes (AF_UNIX) stay allowed."""

        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if fileno is None and family in (-1, socket.AF_INET, socket.AF_INET6):
                attempts.append(family)
                raise OSError("network disabled in this test")
            super().__init__(family, type, proto, fileno)

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "socket", NoNetworkSocket)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    result = run_alpha(lakehouse)
    assert result.success
    assert attempts == []


def test_alpha_job_is_given_no_writer_and_no_source(lakehouse):
    defs = build_definitions(lakehouse)
    required = defs.resolve_job_def(ALPHA_JOB).required_resource_keys
    assert "lakehouse" not in required and "source" not in required


def test_an_alpha_asset_writing_the_lakehouse_is_refused(lakehouse):
    @dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2023-01-01"), io_manager_key="lakehouse_reader", group_name="alpha")
    def rogue() -> pl.DataFrame:
        return pl.DataFrame({"timestamp": [0], "close": [1.0]})

    before = file_hashes(lakehouse.ohlcv_dir)
    catalog = lakehouse.catalog_path.read_bytes()
    defs = build_definitions(lakehouse)
    resources = {"lakehouse_reader": defs.resources["lakehouse_reader"]}
    with pytest.raises(PermissionError, match="asset rogue may not write the lakehouse"):
        dg.materialize([rogue], resources=resources, partition_key=AS_OF.isoformat(), instance=dg.DagsterInstance.ephemeral())
    assert file_hashes(lakehouse.ohlcv_dir) == before and lakehouse.catalog_path.read_bytes() == catalog


def test_snapshot_fails_fast_listing_missing_and_stale(lakehouse, tmp_path):
    import shutil

    settings = lakehouse.replace(data_dir=tmp_path / "data")
    shutil.copytree(lakehouse.data_dir / "lakehouse", settings.data_dir / "lakehouse")
    shutil.copytree(lakehouse.data_dir / "export" / AS_OF.isoformat(), settings.data_dir / "export" / AS_OF.isoformat())
    candidates = json.loads((settings.export_dir / AS_OF.isoformat() / "candidates.json").read_text())["candidates"]
    gone, old = candidates[0], candidates[1]
    (settings.ohlcv_dir / f"{gone['exchange']}_{gone['symbol']}_1d.parquet").unlink()
    catalog = json.loads(settings.catalog_path.read_text())
    catalog["symbols"][f"{old['exchange']}_{old['symbol']}"]["end_date"] = "2025-05-01"
    settings.catalog_path.write_text(json.dumps(catalog))
    result = run_alpha(settings)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(failure.step_failure_data.error.to_string())
    assert f"missing: {gone['exchange']}_{gone['symbol']}" in message
    assert f"stale: {old['exchange']}_{old['symbol']} (ends 2025-05-01" in message
    assert "1 missing and 1 stale" in message
    assert not any((settings.runs_dir / result.run_id).glob("returns_matrix.parquet"))


def _bars(days, closes):
    return pl.DataFrame({"timestamp": [date_to_ts(d) for d in days], "close": closes})


def test_returns_matrix_hand_made_three_assets():
    d = [dt.date(2024, 1, i) for i in range(1, 6)]  # Monday..Friday
    matrix = build_returns_matrix(
        {
            "A": _bars(d, [10.0, 11.0, 12.1, 12.1, 13.31]),
            "B": _bars(d[2:], [50.0, 55.0, 44.0]),  # young: listed on Wednesday
            "C": _bars([d[0], d[1], d[4]], [100.0, 101.0, 99.99]),  # a gap Wed-Thu
        },
        calendars=["business"],  # Monday to Friday: 2024-01-01 is a session here
    )
    assert matrix["date"].to_list() == d  # spans the oldest symbol, not the youngest
    rows = {c: matrix[c].to_list() for c in ("A", "B", "C")}
    nan = float("nan")
    assert rows["A"][1:] == pytest.approx([0.1, 0.1, 0.0, 0.1])
    assert rows["B"][3:] == pytest.approx([0.1, -0.2])
    assert all(x != x for x in rows["B"][:3])  # NaN before genesis and on the first bar
    assert rows["C"][1] == pytest.approx(0.01)
    assert rows["C"][2] != rows["C"][2] and rows["C"][3] != rows["C"][3]  # gap: NaN, no fill
    assert rows["C"][4] == pytest.approx(99.99 / 101.0 - 1)  # the move over the gap lands after it
    del nan


def test_crypto_weekend_compounds_into_monday_on_a_business_panel():
    days = [dt.date(2024, 1, 5) + dt.timedelta(days=i) for i in range(4)]  # Fri, Sat, Sun, Mon
    matrix = build_returns_matrix({"X": _bars(days, [100.0, 110.0, 121.0, 133.1])}, calendars=["XNYS"])
    assert matrix["date"].to_list() == [dt.date(2024, 1, 5), dt.date(2024, 1, 8)]
    assert matrix["X"][1] == pytest.approx(0.331)


def test_an_nyse_panel_has_no_holiday_row_and_crypto_compounds_over_the_holiday():
    # Wed 2024-07-03 .. Fri 07-05; Thursday 07-04 is Independence Day, no NYSE session.
    days = [dt.date(2024, 7, 3), dt.date(2024, 7, 4), dt.date(2024, 7, 5)]
    matrix = build_returns_matrix(
        {
            "SYNCX_C": _bars(days, [100.0, 110.0, 121.0]),
            "SYNEQ_E": _bars([days[0], days[2]], [50.0, 55.0]),
        },
        calendars=panel_calendars(
            [{"symbol": "SYNEQ_E", "asset_class": "equity"}, {"symbol": "SYNCX_C", "asset_class": "crypto"}]
        ),
    )
    assert matrix["date"].to_list() == [days[0], days[2]]
    assert matrix["SYNCX_C"][1] == pytest.approx(0.21)  # 100 -> 121 over the holiday
    assert matrix["SYNEQ_E"][1] == pytest.approx(0.1)  # no NaN row for the holiday


def copy_lakehouse(lakehouse: Settings, tmp_path, features: bool = True) -> Settings:
    import shutil

    settings = lakehouse.replace(data_dir=tmp_path / "data")
    ignore = None if features else shutil.ignore_patterns("features")
    shutil.copytree(lakehouse.data_dir / "lakehouse", settings.data_dir / "lakehouse", ignore=ignore)
    shutil.copytree(lakehouse.data_dir / "export", settings.data_dir / "export")
    return settings


def test_the_graph_shows_the_feature_store_feeding_the_selection(lakehouse):
    graph = build_definitions(lakehouse).resolve_asset_graph()
    parents = graph.get(dg.AssetKey("selected_winners")).parent_keys
    assert dg.AssetKey("tv_technicals_1d") in parents
    job = build_definitions(lakehouse).resolve_job_def(ALPHA_JOB)
    assert "lakehouse" not in job.required_resource_keys  # read through lakehouse_reader only


def test_selection_reads_the_features_of_the_day_at_the_pinned_version_and_reproduces_after_the_table_moved_on(
    lakehouse, tmp_path
):
    from quant_assets.features.store import (
        current_version,
        read_features,
        read_features_as_of,
        write_features,
    )
    from quant_assets.mlops.reproduce import reproduce

    settings = copy_lakehouse(lakehouse, tmp_path)
    table = settings.features_dir / "tv_technicals_1d"
    result = run_alpha(settings)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    run_dir = settings.runs_dir / result.run_id
    manifest = json.loads((run_dir / "manifest.json").read_text())
    selection = json.loads((run_dir / "selection.json").read_text())
    pinned = manifest["feature_store_version"]
    assert pinned == current_version(table)  # nothing committed since: the latest
    symbols = sorted(d["symbol"] for d in manifest["files"].values())
    stored = pl.read_parquet(run_dir / "features.parquet")
    assert stored.equals(read_features_as_of(table, pinned, AS_OF, symbols))
    assert stored["date"].max() == AS_OF and set(stored["symbol"]) <= set(symbols)
    assert selection["parameters"]["feature_weight"] == 0.5
    assert selection["features"]["table"] == "tv_technicals_1d" and selection["features"]["column"] == "rating"
    assert selection["features"]["rows"] == stored.height
    ratings = dict(zip(stored["symbol"], stored["rating"], strict=True))
    for winner in selection["winners"]:
        assert winner["feature"] == pytest.approx(ratings[winner["symbol"]], rel=1e-9)
    # The data cycle moves on: every rating the backtest read rewritten (day D's among
    # them), a later day committed.
    backtest = json.loads((run_dir / "backtest.json").read_text())
    window = (dt.date.fromisoformat(backtest["features"]["start"]), AS_OF)
    day_rows = read_features(table, start=AS_OF, end=AS_OF)
    write_features(table, read_features(table, start=window[0], end=AS_OF).with_columns(-pl.col("rating")), *window)
    assert run_data_job(settings, AS_OF + dt.timedelta(days=1)).success
    assert current_version(table) > pinned + 1
    # A new run of D reads the new version: the features matter, the hash changes ...
    fresh = run_alpha(settings)
    assert fresh.success
    fresh_dir = settings.runs_dir / fresh.run_id
    assert json.loads((fresh_dir / "manifest.json").read_text())["feature_store_version"] == current_version(table)
    assert (fresh_dir / "features.parquet").read_bytes() != (run_dir / "features.parquet").read_bytes()
    assert json.loads((fresh_dir / "selection.json").read_text())["hash"] != selection["hash"]
    fresh_backtest = json.loads((fresh_dir / "backtest.json").read_text())
    assert fresh_backtest["rebalances"] != backtest["rebalances"]  # the backtest reads them too
    # ... while reproducing the first run re-reads its version (time travel): identical.
    again = reproduce(settings, result.run_id, instance=dg.DagsterInstance.ephemeral())
    assert again.identical, [(c.name, c.detail) for c in again.differences]
    assert f"version {pinned}" in again.features_detail and "time travel" in again.features_detail
    assert {"features.parquet", "selection.json", "backtest_features.parquet", "backtest.json"} <= {
        c.name for c in again.comparisons
    }
    # The table rebuilt from scratch: its version numbers restart, and its version
    # `pinned` holds other rows. Reproduce notices and uses the run's features.parquet.
    import shutil

    shutil.rmtree(table)
    write_features(table, day_rows.with_columns(-pl.col("rating")), AS_OF, AS_OF)
    assert current_version(table) == pinned
    from_folder = reproduce(settings, result.run_id, instance=dg.DagsterInstance.ephemeral())
    assert from_folder.identical, [(c.name, c.detail) for c in from_folder.differences]
    assert from_folder.features_detail.startswith("the run's own features.parquet and backtest_features.parquet")
    assert f"version {pinned} holds other rows than the run read" in from_folder.features_detail


def test_the_backtest_selects_with_the_ratings_as_of_each_rebalance_at_the_pinned_version(lakehouse, tmp_path):
    from quant_assets.alpha.policy import Policy
    from quant_assets.alpha.returns import returns_array
    from quant_assets.features.store import read_features, read_features_as_of

    graph = build_definitions(lakehouse).resolve_asset_graph()
    assert dg.AssetKey("tv_technicals_1d") in graph.get(dg.AssetKey("backtest")).parent_keys
    settings = copy_lakehouse(lakehouse, tmp_path)
    table = settings.features_dir / "tv_technicals_1d"
    # Equal weight: the names held at a rebalance are exactly the eligible winners.
    config = {"ops": {"portfolio_weights": {"config": {"objective": "equal_weight"}}}}
    result = run_alpha(settings, run_config=config)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    run_dir = settings.runs_dir / result.run_id
    manifest = json.loads((run_dir / "manifest.json").read_text())
    backtest = json.loads((run_dir / "backtest.json").read_text())
    pinned = manifest["feature_store_version"]
    values, dates, symbols = returns_array(pl.read_parquet(run_dir / "returns_matrix.parquet"))
    source = backtest["features"]
    assert source["table"] == "tv_technicals_1d" and source["column"] == "rating"
    assert source["end"] == AS_OF.isoformat() and source["file"] == "backtest_features.parquet"
    start = dt.date.fromisoformat(source["start"])
    # One read at the pinned version: the snapshot's symbols, the rating only, nothing after D.
    stored = pl.read_parquet(run_dir / "backtest_features.parquet")
    assert stored.columns == ["symbol", "date", "rating"] and stored.height == source["rows"]
    assert stored.equals(read_features(table, pinned, sorted(symbols), start, AS_OF, columns=["rating"]))
    assert stored["date"].max() == AS_OF and stored["date"].min() >= start
    first = dt.date.fromisoformat(backtest["rebalances"][0]["date"])
    assert start <= first - dt.timedelta(days=14)  # the first rebalance's window was read whole
    # Each rebalance holds what the daily selection picks on that day's data: returns up
    # to the day, each symbol's rating as of it by the daily run's own read (Delta, as of).
    policy = Policy.from_dict(json.loads((run_dir / "optimization.json").read_text()))
    assert policy.selection.feature_weight == 0.5
    quality = {d["symbol"]: float(d["data_quality_score"] or 0.0) for d in manifest["files"].values()}
    for record in (backtest["rebalances"][0], backtest["rebalances"][-1]):
        day = dt.date.fromisoformat(record["date"])
        t = int(np.flatnonzero(dates == np.datetime64(day))[0])
        rows = read_features_as_of(table, pinned, day, symbols)
        ratings = dict(zip(rows["symbol"], rows["rating"], strict=True))
        daily = policy.select(values[: t + 1], symbols, quality, features=ratings)
        assert set(record["weights"]) == set(daily.symbols), day


def test_without_a_feature_table_selection_fails_clearly_unless_its_weight_is_zero(lakehouse, tmp_path):
    settings = copy_lakehouse(lakehouse, tmp_path, features=False)
    result = run_alpha(settings)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "selected_winners"
    message = failure.step_failure_data.error.to_string()
    table = settings.features_dir / "tv_technicals_1d"
    assert f"selected_winners for {AS_OF}: the snapshot found no feature table at {table}" in message
    assert f"quant data --date {AS_OF}" in message and "feature_weight: 0" in message
    # Documented way to select without the feature store: feature_weight 0.
    config = {"ops": {"selected_winners": {"config": {"feature_weight": 0.0}}}}
    plain = run_alpha(settings, run_config=config)
    assert plain.success
    run_dir = settings.runs_dir / plain.run_id
    selection = json.loads((run_dir / "selection.json").read_text())
    assert "features" not in selection and not (run_dir / "features.parquet").exists()
    assert "features" not in json.loads((run_dir / "backtest.json").read_text())
    assert not (run_dir / "backtest_features.parquet").exists()  # the backtest read nothing either
    assert all("feature" not in w for w in selection["winners"])
    assert json.loads((run_dir / "manifest.json").read_text())["feature_store_version"] is None
