"""Point in time: the candidates and the quality inputs of day D depend only on what was
known at the close of D. Pure scanner rules against hand-computed medians, then the real
data job on a small synthetic lakehouse whose every bar, catalog entry and registry row
after D is changed or deleted."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil

import polars as pl
import pytest
from helpers import run_data_job

from quant_assets.alpha.snapshot import plan_snapshot, read_snapshot_files
from quant_assets.data.scanners import (
    UniverseConfig,
    bar_history,
    load_universe,
    scan_many,
    universe_pool,
)
from quant_assets.defs.data.candidates import write_candidates
from quant_resources.atomic import atomic_write_json, atomic_write_parquet
from quant_resources.io_managers import LakehouseView
from quant_resources.lakehouse import Lakehouse
from quant_resources.schema import SECONDS_PER_DAY, SymbolInfo, date_to_ts
from quant_resources.settings import Settings
from quant_resources.sources.synthetic import SyntheticSource

MON = dt.date(2024, 1, 1)  # a Monday


def bars(rows: list[tuple[str, dt.date, float]]) -> pl.DataFrame:
    """Bars with close 1 and volume = the dollar volume wanted."""
    return pl.DataFrame(
        {
            "symbol": [r[0] for r in rows],
            "timestamp": [date_to_ts(r[1]) for r in rows],
            "close": [1.0] * len(rows),
            "volume": [float(r[2]) for r in rows],
        }
    )


def universe(**scanner) -> UniverseConfig:
    return UniverseConfig.model_validate({"universe": "t", "scanners": [{"name": "s", **scanner}]})


def info(key: str, asset_class: str = "crypto", delisting: dt.date | None = None) -> SymbolInfo:
    exchange, symbol = key.split("_", 1)
    return SymbolInfo(exchange, symbol, asset_class, MON, 0.0, delisting_date=delisting)


def listed_on(documents: dict, day: dt.date) -> list[str]:
    return [f"{c['exchange']}_{c['symbol']}" for c in documents[day]["candidates"]]


def test_ranking_by_trailing_median_dollar_volume_over_the_window():
    """X_A's dollar volumes 10, 30, 20, 50, 40 have 3-bar trailing medians 10, 20, 20, 30,
    40; X_B's are 25 every day. Top 1 with two sessions of history: nobody on day 1, X_B on
    days 2-3 (25 > 20), X_A on days 4-5 (30, 40 > 25), the source's own figure ignored."""
    days = [MON + dt.timedelta(days=i) for i in range(5)]
    history = bar_history(
        bars([("X_A", d, v) for d, v in zip(days, [10, 30, 20, 50, 40], strict=True)] + [("X_B", d, 25.0) for d in days]),
        [3],
    )
    symbols = {"X_A": info("X_A"), "X_B": info("X_B")}
    documents = scan_many(universe(top_n=1, min_history_sessions=2, liquidity_window_sessions=3), symbols, history, days)
    assert [listed_on(documents, d) for d in days] == [[], ["X_B"], ["X_B"], ["X_A"], ["X_A"]]
    assert [documents[d]["candidates"][0]["median_dollar_volume"] for d in days[1:]] == [25.0, 25.0, 30.0, 40.0]
    assert [documents[d]["candidates"][0]["history_sessions"] for d in days[1:]] == [2, 3, 4, 5]
    # A liquidity floor of 26: X_B never passes, X_A only once its median reaches 30.
    floor = scan_many(universe(top_n=5, min_median_dollar_volume=26.0, liquidity_window_sessions=3), symbols, history, days)
    assert [listed_on(floor, d) for d in days] == [[], [], [], ["X_A"], ["X_A"]]


def test_history_counts_sessions_of_the_symbols_calendar():
    """An equity with bars Monday to Friday: on the weekend it has 5 sessions and Friday's
    median; the 6-session rule admits it on the next Monday, not on Saturday (6 days)."""
    week = [MON + dt.timedelta(days=i) for i in range(8)]  # Mon .. next Mon
    sessions = [d for d in week if d.weekday() < 5]
    history = bar_history(bars([("N_E", d, 100.0 + i) for i, d in enumerate(sessions)]), [63])
    symbols = {"N_E": info("N_E", "equity")}
    documents = scan_many(universe(min_history_sessions=1), symbols, history, week)
    assert [documents[d]["candidates"][0]["history_sessions"] for d in week] == [1, 2, 3, 4, 5, 5, 5, 6]
    # Median of 100..104 on Friday and the weekend; of 100..105 on Monday.
    assert [documents[d]["candidates"][0]["median_dollar_volume"] for d in week[4:]] == [102.0, 102.0, 102.0, 102.5]
    six = scan_many(universe(min_history_sessions=6), symbols, history, week)
    assert [bool(listed_on(six, d)) for d in week] == [False] * 7 + [True]


def test_a_delisted_symbol_is_a_candidate_up_to_its_last_session_only():
    """X_D is the most liquid and delists on day 3: first on days 1-3, gone on days 4-5
    (its bars still in the history), and the next symbol moves up to rank 1."""
    days = [MON + dt.timedelta(days=i) for i in range(5)]
    history = bar_history(
        bars([("X_D", d, 1000.0) for d in days[:3]] + [("X_L", d, 10.0) for d in days]), [63]
    )
    symbols = {"X_D": info("X_D", delisting=days[2]), "X_L": info("X_L")}
    documents = scan_many(universe(top_n=1), symbols, history, days)
    assert [listed_on(documents, d) for d in days] == [["X_D"]] * 3 + [["X_L"]] * 2
    # The ingestion pool keeps it for a window that starts on or before its last session.
    pool = universe_pool(universe(), list(symbols.values()), days[2], days[4])
    assert [i.key for i in pool] == ["X_D", "X_L"]
    assert [i.key for i in universe_pool(universe(), list(symbols.values()), days[3], days[4])] == ["X_L"]


# -- the real data job on a synthetic lakehouse -----------------------------------------

DELISTED = "SYNEQ_E024"  # the 40-symbol synthetic market's delisting: last session 2021-09-22
START, END, D = dt.date(2021, 9, 13), dt.date(2021, 9, 30), dt.date(2021, 9, 20)


@pytest.fixture(scope="module")
def lakehouse_after_range(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("pit") / "data"
    settings = Settings(data_dir=data_dir, history_start=dt.date(2021, 1, 4), synthetic_symbols=40)
    source = SyntheticSource(n_symbols=40)
    delisting = {i.key: i.delisting_date for i in source.list_symbols()}[DELISTED]
    assert START < delisting < END and delisting > D
    assert run_data_job(settings, START, END).success
    return settings, Lakehouse(data_dir=str(data_dir)), delisting


def change_everything_after(lakehouse: Lakehouse, day: dt.date) -> None:
    """Bars after `day`: deleted in half the files, volumes x1000 and closes x3 in the
    others; catalog entries' scores, ends, gaps, drops and level shifts changed after it;
    the registry says a trading symbol delists the day after; later candidates deleted."""
    after = date_to_ts(day + dt.timedelta(days=1))
    for n, path in enumerate(lakehouse.ohlcv_files()):
        frame = pl.read_parquet(path)
        later = pl.col("timestamp") >= after
        if n % 2:
            frame = frame.filter(~later)
        else:
            frame = frame.with_columns(
                pl.when(later).then(pl.col(c) * 3).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close")
            ).with_columns(pl.when(later).then(pl.col("volume") * 1000).otherwise(pl.col("volume")).alias("volume"))
        atomic_write_parquet(path, frame)
    catalog = lakehouse.read_catalog()
    later_day = (day + dt.timedelta(days=3)).isoformat()
    for entry in catalog["symbols"].values():
        entry["data_quality_score"] = 0.01
        entry["end_date"] = later_day
        entry["gaps"] = [{"start": later_day, "end": later_day, "missing_sessions": 9}]
        entry.setdefault("dropped", {}).setdefault("toxic", {})[later_day] = 7
        entry["level_shifts"] = [*entry.get("level_shifts", []), later_day]
    atomic_write_json(lakehouse.catalog_path, catalog)
    registry = lakehouse.read_symbols()
    registry = registry.with_columns(
        pl.when(pl.col("delisting_date").is_null() & (pl.col("symbol") == "C001USDT"))
        .then(pl.lit(day + dt.timedelta(days=1)))
        .otherwise(pl.col("delisting_date"))
        .alias("delisting_date")
    )
    atomic_write_parquet(lakehouse.symbols_path, registry)
    for later in range(1, (END - day).days + 1):
        lakehouse.layout.candidates_path(day + dt.timedelta(days=later)).unlink()


def snapshot_quality(settings: Settings, day: dt.date) -> tuple[bytes, dict]:
    plan = plan_snapshot(LakehouseView(settings.data_dir, day), day, stale_tolerance_days=5)
    _, described, _ = read_snapshot_files(plan)
    inputs = {d["symbol"]: d["data_quality_score"] for d in described.values()}
    return json.dumps({"inputs": inputs, "excluded": plan.excluded}, sort_keys=True).encode(), inputs


def test_candidates_and_quality_inputs_of_a_day_ignore_everything_after_it(lakehouse_after_range, tmp_path):
    built, _, _ = lakehouse_after_range
    shutil.copytree(built.data_dir, tmp_path / "data")  # the module's lakehouse stays as built
    settings = dataclasses.replace(built, data_dir=tmp_path / "data")
    lakehouse = Lakehouse(data_dir=str(settings.data_dir))
    path = lakehouse.layout.candidates_path(D)
    written = path.read_bytes()
    quality_bytes, quality = snapshot_quality(settings, D)
    assert json.loads(written)["candidates"] and quality
    catalog_scores = {k: e["data_quality_score"] for k, e in lakehouse.read_catalog()["symbols"].items()}
    assert any(quality[k] != catalog_scores[k] for k in quality)  # not the catalog's current score

    change_everything_after(lakehouse, D)
    path.unlink()
    assert run_data_job(settings, D).success  # the data job re-derives the day
    assert path.read_bytes() == written
    assert snapshot_quality(settings, D)[0] == quality_bytes
    # The asset's writer alone, for the day alone, gives the same bytes again.
    path.unlink()
    write_candidates(lakehouse, load_universe(None, settings.universe), [D])
    assert path.read_bytes() == written


def test_a_delisted_symbol_stays_in_the_lakehouse_and_in_its_past_candidate_lists(lakehouse_after_range):
    settings, lakehouse, delisting = lakehouse_after_range
    exchange, symbol = DELISTED.split("_", 1)
    held = lakehouse.read_ohlcv(exchange, symbol)
    assert held is not None and held["timestamp"].max() == date_to_ts(delisting)
    entry = lakehouse.read_catalog()["symbols"][DELISTED]
    assert entry["delisting_date"] == delisting.isoformat()
    registry = lakehouse.read_symbols().filter(pl.col("symbol") == symbol)
    assert registry["delisting_date"].to_list() == [delisting]

    def listed(day: dt.date) -> bool:
        document = json.loads(lakehouse.layout.candidates_path(day).read_text())
        return any(f"{c['exchange']}_{c['symbol']}" == DELISTED for c in document["candidates"])

    assert listed(delisting) and listed(delisting - dt.timedelta(days=1))
    assert not listed(delisting + dt.timedelta(days=1)) and not listed(END)
    assert held["timestamp"].max() // SECONDS_PER_DAY == (delisting - dt.date(1970, 1, 1)).days


def test_a_config_with_the_old_history_rule_names_the_rename(tmp_path):
    from quant_resources.errors import ConfigError

    folder = tmp_path / "scanners"
    folder.mkdir()
    (folder / "u.yaml").write_text("universe: u\nscanners:\n  - name: a\n    min_history_days: 90\n")
    with pytest.raises(ConfigError, match=r"u\.yaml is invalid: scanners\.0: .*renamed min_history_sessions"):
        load_universe(tmp_path, "u")
