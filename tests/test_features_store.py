"""The Delta feature table on a temp dir: idempotent day writes, incremental == rebuild, time travel."""

from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import pandera.errors
import polars as pl
import pytest

from quant_assets.features.indicators import FEATURE_COLUMNS, WARMUP_BARS, compute_indicators
from quant_assets.features.store import (
    FeatureStoreError,
    FeatureTableNotFoundError,
    as_of_matrix,
    current_version,
    read_features,
    read_features_as_of,
    update_features,
    warmup_start,
    write_features,
)
from quant_resources.schema import date_to_ts

DAY = 86_400


def walk(symbol: str, days: list[dt.date], seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(days)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
    return pl.DataFrame(
        {
            "symbol": symbol,
            "timestamp": np.array([date_to_ts(d) for d in days], dtype=np.int64),
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": rng.uniform(1e3, 1e4, n),
        }
    )


def calendar_days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def business_days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [d for d in calendar_days(first, last) if d.weekday() < 5]


LAST_DAY = dt.date(2024, 3, 29)  # a Friday


@pytest.fixture(scope="module")
def universe() -> pl.DataFrame:
    """A 24/7 coin, a business-day stock with 3+ years of history, and a recent listing."""
    return pl.concat(
        [
            walk("COIN", calendar_days(dt.date(2021, 6, 1), LAST_DAY), seed=1),
            walk("STOCK", business_days(dt.date(2020, 1, 1), LAST_DAY), seed=2),
            walk("NEW", business_days(dt.date(2023, 11, 1), LAST_DAY), seed=3),
        ]
    )


@pytest.fixture(scope="module")
def full_features(universe: pl.DataFrame) -> pl.DataFrame:
    return compute_indicators(universe)


def all_dates(features: pl.DataFrame) -> tuple[dt.date, dt.date]:
    return features["date"].min(), features["date"].max()


def assert_frames_close(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert got.select("symbol", "date").equals(want.select("symbol", "date"))
    for column in FEATURE_COLUMNS[2:]:
        g, w = got[column], want[column]
        assert g.is_null().equals(w.is_null()), column
        worst = (g - w).abs().max()
        assert worst is None or worst <= 1e-9 * max(1.0, w.abs().max()), (column, worst)


def test_table_is_created_on_first_write_and_reads_back(tmp_path, full_features):
    table = tmp_path / "tv_technicals_1d"
    assert current_version(table) is None
    start, end = all_dates(full_features)

    version = write_features(table, full_features, start, end)

    assert version == current_version(table)
    stored = read_features(table)
    assert stored.columns == list(FEATURE_COLUMNS)
    assert stored.equals(full_features)  # lossless, including warm-up nulls
    # Partitioned by month: one folder per month present in the data.
    months = {p.name for p in table.iterdir() if p.name.startswith("month=")}
    assert "month=2024-03" in months and "month=2020-01" in months


def test_rerunning_a_day_replaces_its_rows_never_duplicates(tmp_path, full_features):
    table = tmp_path / "t"
    start, end = all_dates(full_features)
    write_features(table, full_features, start, end)
    rows_before = read_features(table).height
    day = dt.date(2024, 3, 15)
    first = current_version(table)

    second = write_features(table, full_features, day, day)
    third = write_features(table, full_features, day, day)

    assert (second, third) == (first + 1, first + 2)  # every commit is a version
    assert read_features(table).height == rows_before
    assert read_features(table, start=day, end=day).height == 3


def test_predicate_overwrite_touches_only_its_dates(tmp_path, full_features):
    table = tmp_path / "t"
    start, end = all_dates(full_features)
    write_features(table, full_features, start, end)
    before = read_features(table)
    day = dt.date(2024, 3, 14)
    # A frame that differs on every date, and lacks NEW altogether.
    changed = full_features.filter(pl.col("symbol") != "NEW").with_columns(pl.col("close") * 2.0)

    write_features(table, changed, day, day)

    after = read_features(table)
    on_day, off_day = pl.col("date") == day, pl.col("date") != day
    assert after.filter(off_day).equals(before.filter(off_day))
    assert after.filter(on_day)["symbol"].to_list() == ["COIN", "STOCK"]  # NEW's row gone
    assert (
        after.filter(on_day)["close"].to_list()
        == (before.filter(on_day & (pl.col("symbol") != "NEW"))["close"] * 2.0).to_list()
    )


def test_time_travel_returns_the_rows_of_an_older_version(tmp_path, full_features):
    table = tmp_path / "t"
    day = dt.date(2024, 3, 14)
    old_version = write_features(table, full_features, day, day)
    write_features(table, full_features.with_columns(pl.col("close") + 1.0), day, day)

    old = read_features(table, version=old_version)
    new = read_features(table)

    want = full_features.filter(pl.col("date") == day)
    assert old["close"].to_list() == want["close"].to_list()
    assert new["close"].to_list() == (want["close"] + 1.0).to_list()
    assert read_features(table, version=0).height == 0  # version 0: the empty table


def test_incremental_update_equals_a_full_rebuild(tmp_path, universe, full_features):
    start, end = dt.date(2024, 3, 11), dt.date(2024, 3, 22)
    # What the asset loads: bars from warmup_start(start) to end (plus later bars it
    # did not need to drop).
    window = universe.filter(pl.col("timestamp") >= date_to_ts(warmup_start(start)))

    result = update_features(tmp_path / "t", window, start, end)

    stored = read_features(tmp_path / "t")
    rebuilt = full_features.filter(pl.col("date").is_between(start, end))
    assert result.rows_written == stored.height == rebuilt.height
    assert result.symbols == 3 and (result.start, result.end) == (start, end)
    assert result.version == current_version(tmp_path / "t")
    assert_frames_close(stored, rebuilt)
    # The stock's EMAs really did start inside the window: the check is not vacuous.
    stock_bars_before = window.filter(
        (pl.col("symbol") == "STOCK") & (pl.col("timestamp") < date_to_ts(start))
    ).height
    assert WARMUP_BARS <= stock_bars_before < universe.filter(pl.col("symbol") == "STOCK").height


def test_incremental_result_does_not_depend_on_how_much_history_is_passed(tmp_path, universe):
    day = dt.date(2024, 3, 20)
    window = universe.filter(pl.col("timestamp") >= date_to_ts(warmup_start(day)))
    update_features(tmp_path / "a", window, day, day)
    update_features(tmp_path / "b", universe.lazy(), day, day)
    assert read_features(tmp_path / "a").equals(read_features(tmp_path / "b"))


def test_daily_updates_after_a_backfill_extend_the_table(tmp_path, universe, full_features):
    table = tmp_path / "t"
    backfill_end = dt.date(2024, 3, 25)
    first_day = full_features["date"].min()
    update_features(table, universe, first_day, backfill_end)
    for day in (dt.date(2024, 3, 26), dt.date(2024, 3, 27), dt.date(2024, 3, 26)):
        update_features(table, universe, day, day)
    want = full_features.filter(pl.col("date") <= dt.date(2024, 3, 27))
    assert_frames_close(read_features(table), want)


def test_a_contract_violation_is_refused_before_anything_is_committed(tmp_path, full_features):
    table = tmp_path / "t"
    day = dt.date(2024, 3, 14)
    version = write_features(table, full_features, day, day)
    broken = full_features.with_columns(
        rsi_14=pl.when(pl.col("date") == day).then(101.0).otherwise(pl.col("rsi_14"))
    )
    with pytest.raises(pandera.errors.SchemaError, match="rsi_14"):
        write_features(table, broken, day, day)
    assert current_version(table) == version


def test_read_filters_by_symbol_and_inclusive_dates(tmp_path, full_features):
    table = tmp_path / "t"
    write_features(table, full_features, *all_dates(full_features))
    rows = read_features(
        table, symbols=["STOCK", "NEW"], start=dt.date(2024, 2, 28), end=dt.date(2024, 3, 4)
    )
    # Business days 28, 29 Feb and 1, 4 Mar, for both stocks.
    assert rows.select("symbol", "date").rows() == [
        (symbol, day)
        for symbol in ("NEW", "STOCK")
        for day in (
            dt.date(2024, 2, 28),
            dt.date(2024, 2, 29),
            dt.date(2024, 3, 1),
            dt.date(2024, 3, 4),
        )
    ]


def test_reading_a_missing_table_says_so(tmp_path):
    with pytest.raises(FeatureTableNotFoundError, match="no feature table"):
        read_features(tmp_path / "absent")


def test_concurrent_writers_neither_lose_nor_duplicate_rows(tmp_path, full_features):
    table = tmp_path / "t"
    days = [dt.date(2024, 3, d) for d in range(11, 16)]
    versions: list[int] = []
    errors: list[BaseException] = []

    def write(day: dt.date) -> None:
        try:
            versions.append(write_features(table, full_features, day, day))
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    # Every day written twice at once: overlapping and disjoint commits race.
    threads = [threading.Thread(target=write, args=(day,)) for day in days + days]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(set(versions)) == len(threads)  # each writer got its own commit
    stored = read_features(table)
    want = full_features.filter(pl.col("date").is_in(days))
    assert stored.equals(want)


def test_features_read_as_of_a_day_are_identical_after_the_table_moves_on(tmp_path, full_features):
    """Point in time: what the selection reads for day D at the pinned version stays
    byte-identical after later commits rewrite D's rows, change and delete the rows after
    D, and add new days; at the latest version rows after D are never read either."""
    import io

    table = tmp_path / "tv_technicals_1d"
    day = dt.date(2024, 3, 16)  # a Saturday: the stock's latest row is Friday's
    history = full_features.filter(pl.col("date") <= dt.date(2024, 3, 22))
    pinned = write_features(table, history, *all_dates(history))

    def as_of(version):
        buffer = io.BytesIO()
        read_features_as_of(table, version, day, ["COIN", "STOCK", "NEW", "GONE"]).write_parquet(buffer)
        return buffer.getvalue()

    seen = read_features_as_of(table, pinned, day, ["COIN", "STOCK", "NEW", "GONE"])
    assert seen["symbol"].to_list() == ["COIN", "NEW", "STOCK"]  # GONE has no row: absent
    assert dict(zip(seen["symbol"], seen["date"], strict=True)) == {
        "COIN": day, "NEW": dt.date(2024, 3, 15), "STOCK": dt.date(2024, 3, 15)
    }
    expected = full_features.filter(pl.col("symbol") == "COIN", pl.col("date") == day)
    assert seen.filter(pl.col("symbol") == "COIN").equals(expected)
    before = as_of(pinned)

    # Rows after D change (rating flipped), then some are deleted: D's read must not move.
    later = history.filter(pl.col("date") > day).with_columns(-pl.col("rating"))
    write_features(table, later, day + dt.timedelta(days=1), dt.date(2024, 3, 22))
    write_features(table, later.filter(pl.col("symbol") != "COIN"), dt.date(2024, 3, 20), dt.date(2024, 3, 22))
    assert as_of(current_version(table)) == before
    # New days, then D's own rows rewritten: the pinned version still reads what it read.
    write_features(table, full_features, dt.date(2024, 3, 23), LAST_DAY)
    rewritten = full_features.filter(pl.col("date") == day).with_columns(-pl.col("rating"))
    latest = write_features(table, rewritten, day, day)
    assert latest > pinned + 3
    assert as_of(latest) != before  # the table did move on for D
    assert as_of(pinned) == before


# ---------------------------------------------------------------------------------------
# As-of lookups for many days at once (the backtest's ratings per rebalance)
# ---------------------------------------------------------------------------------------


def test_as_of_matrix_takes_each_symbols_latest_row_within_the_window_hand_made():
    d = dt.date
    rows = pl.DataFrame(
        {
            "symbol": ["A", "A", "A", "B", "B"],
            "date": [d(2024, 1, 1), d(2024, 1, 10), d(2024, 1, 20), d(2024, 1, 5), d(2024, 1, 8)],
            "rating": [0.1, 0.2, None, -0.5, 0.7],
        }
    )
    days = [d(2023, 12, 31), d(2024, 1, 1), d(2024, 1, 9), d(2024, 1, 15), d(2024, 1, 22), d(2024, 1, 24), d(2024, 2, 1)]
    got = as_of_matrix(rows, np.array(days, dtype="datetime64[D]"), ["A", "B", "C"], "rating", window_days=14)
    nan = np.nan
    want = np.array(
        [
            [nan, nan, nan],  # before any row
            [0.1, nan, nan],  # the row of the day itself
            [0.1, 0.7, nan],  # A's 01-01 row is 8 days old; B's latest is 01-08
            [0.2, 0.7, nan],
            [nan, 0.7, nan],  # A's latest row (01-20) has a null rating: no value, not 0.2
            [nan, nan, nan],  # B's 01-08 row is 16 days old: outside [day - 14, day]
            [nan, nan, nan],  # A's 01-20 row is 12 days old but null
        ]
    )
    np.testing.assert_array_equal(got, want)  # C has no row at all: NaN throughout
    # Exactly window_days old is inside; one day more is out.
    edge = as_of_matrix(rows.filter(pl.col("symbol") == "B"), [d(2024, 1, 22), d(2024, 1, 23)], ["B"], "rating", 14)
    np.testing.assert_array_equal(edge, [[0.7], [nan]])
    with pytest.raises(FeatureStoreError, match="repeat"):
        as_of_matrix(pl.concat([rows, rows.head(1)]), days, ["A"], "rating")


def test_as_of_matrix_on_one_read_equals_the_daily_runs_read_on_each_day(tmp_path, full_features):
    """The backtest's rule (one read, then a lookup per day) and the daily run's
    (`read_features_as_of`, one Delta read per day) give the same rating for every day."""
    table = tmp_path / "tv_technicals_1d"
    version = write_features(table, full_features, *all_dates(full_features))
    symbols = ["COIN", "GONE", "NEW", "STOCK"]
    start, end = dt.date(2023, 12, 1), dt.date(2024, 3, 29)
    rows = read_features(table, version, symbols, start - dt.timedelta(days=14), end, columns=["rating"])
    assert rows.columns == ["symbol", "date", "rating"]  # the rating only, not every indicator
    days = calendar_days(start, end)
    matrix = as_of_matrix(rows, days, symbols, "rating")
    for i, day in enumerate(days):
        daily = read_features_as_of(table, version, day, symbols)
        want = {s: r for s, r in zip(daily["symbol"], daily["rating"], strict=True)}
        for j, symbol in enumerate(symbols):
            value = want.get(symbol)
            if value is None:
                assert np.isnan(matrix[i, j]), (symbol, day)
            else:
                assert matrix[i, j] == value, (symbol, day)
    with pytest.raises(FeatureStoreError, match="no column"):
        read_features(table, version, columns=["rating", "nope"])
