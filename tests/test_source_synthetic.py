"""The synthetic market: deterministic bars, realistic calendars, and defects where it says."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from quant_resources.errors import SourceError, UnknownSymbolError
from quant_resources.schema import OHLCV_SCHEMA, SECONDS_PER_DAY, date_to_ts, ts_to_date
from quant_resources.sources.synthetic import (
    DEFECT_KINDS,
    SyntheticSource,
    clear_caches,
)
from quant_resources.symbols import validate_name

HISTORY = (dt.date(2016, 1, 1), dt.date(2025, 12, 31))


@pytest.fixture(scope="module")
def market() -> SyntheticSource:
    return SyntheticSource()


@pytest.fixture(scope="module")
def full_history(market: SyntheticSource) -> dict[str, pl.DataFrame]:
    """Every default symbol's raw bars from before any genesis to the end of 2025."""
    return {
        i.key: market.fetch_bars(i.exchange, i.symbol, dt.date(2009, 1, 1), HISTORY[1])
        for i in market.list_symbols()
    }


def _dates(frame: pl.DataFrame) -> list[dt.date]:
    return [ts_to_date(ts) for ts in frame["timestamp"]]


def _is_clean(market: SyntheticSource, exchange: str, symbol: str) -> bool:
    return not any(market.seeded_defects(exchange, symbol).values())


def test_a_day_is_the_same_bar_whatever_window_asks_for_it() -> None:
    # A seed of its own, and caches cleared between fetches: each window is computed from
    # scratch along a different path (long windows simulate every year, short ones only
    # carry the price level through earlier years).
    market = SyntheticSource(n_symbols=30, seed=4242)
    infos = market.list_symbols()
    picks = [infos[0], infos[1]] + [
        i for i in infos if market.seeded_defects(i.exchange, i.symbol)["level_shift"]
    ][:1]
    assert {i.asset_class for i in picks} == {"crypto", "equity"}
    for info in picks:
        clear_caches()
        decade = market.fetch_bars(info.exchange, info.symbol, *HISTORY)
        assert decade.height > 2000
        for row in (0, 17, decade.height // 2, decade.height - 1):
            day = ts_to_date(decade["timestamp"][row])
            clear_caches()
            one_day = market.fetch_bars(info.exchange, info.symbol, day, day)
            assert one_day.rows() == decade.slice(row, 1).rows(), (info.symbol, day)
        clear_caches()
        quarter = market.fetch_bars(
            info.exchange, info.symbol, dt.date(2021, 2, 3), dt.date(2021, 5, 4)
        )
        in_quarter = decade.filter(
            pl.col("timestamp").is_between(
                date_to_ts(dt.date(2021, 2, 3)), date_to_ts(dt.date(2021, 5, 4))
            )
        )
        assert quarter.height > 60
        assert quarter.equals(in_quarter)


def test_a_larger_universe_extends_a_smaller_one() -> None:
    small, large = SyntheticSource(n_symbols=25), SyntheticSource(n_symbols=1000)
    assert large.list_symbols()[:25] == small.list_symbols()
    info = small.list_symbols()[7]
    window = (dt.date(2020, 1, 1), dt.date(2020, 12, 31))
    assert small.fetch_bars(info.exchange, info.symbol, *window).equals(
        large.fetch_bars(info.exchange, info.symbol, *window)
    )
    assert SyntheticSource(n_symbols=25, seed=8).list_symbols() != small.list_symbols()


def test_universe_mix_names_and_liquidity() -> None:
    infos = SyntheticSource(n_symbols=1000).list_symbols()
    assert len({i.key for i in infos}) == 1000
    crypto = [i for i in infos if i.asset_class == "crypto"]
    equity = [i for i in infos if i.asset_class == "equity"]
    assert len(crypto) == 400 and len(equity) == 600
    assert {i.exchange for i in crypto} == {"SYNCX"} and {i.exchange for i in equity} == {"SYNEQ"}
    for info in infos:
        validate_name(info.symbol)
        validate_name(info.exchange, "exchange")
    liquidity = np.log10([i.median_dollar_volume for i in infos])
    assert liquidity.max() - liquidity.min() > 3  # several orders of magnitude to rank by


def test_listing_dates_are_staggered(market: SyntheticSource) -> None:
    infos = market.list_symbols()
    late = [i for i in infos if i.genesis_date > dt.date(2018, 1, 1)]
    early = [i for i in infos if i.genesis_date < dt.date(2016, 1, 1)]
    assert 0.12 < len(late) / len(infos) < 0.3
    assert len(early) / len(infos) > 0.7
    for info in late[:5]:
        before = market.fetch_bars(
            info.exchange, info.symbol, dt.date(2018, 1, 1), info.genesis_date - dt.timedelta(1)
        )
        assert before.is_empty() and before.schema == pl.Schema(OHLCV_SCHEMA)
        bars = market.fetch_bars(info.exchange, info.symbol, dt.date(2018, 1, 1), HISTORY[1])
        assert _dates(bars)[0] == info.genesis_date


def nyse_sessions(first: dt.date, last: dt.date) -> list[dt.date]:
    """The NYSE sessions in [first, last], straight from exchange-calendars."""
    import exchange_calendars as xc

    calendar = xc.get_calendar("XNYS", start="1990-01-01", end="2040-12-31")
    return [t.date() for t in calendar.sessions_in_range(first, last)]


def test_crypto_trades_every_day_and_equities_on_nyse_sessions(
    market: SyntheticSource, full_history: dict[str, pl.DataFrame]
) -> None:
    for info in market.list_symbols()[:40]:
        if not _is_clean(market, info.exchange, info.symbol):
            continue
        bars = full_history[info.key]
        days = _dates(bars)
        weekdays = {d.weekday() for d in days}
        assert days[0] == info.genesis_date
        assert (bars["timestamp"] % SECONDS_PER_DAY == 0).all()  # 00:00 UTC
        if info.asset_class == "crypto":
            assert weekdays == set(range(7))
            assert len(days) == (days[-1] - days[0]).days + 1  # not a day missing
        else:  # every NYSE session, holidays excluded (calendar changed from Monday-Friday)
            assert weekdays == set(range(5))
            assert days == nyse_sessions(days[0], days[-1])


def test_clean_bars_are_consistent_and_plausibly_volatile(
    market: SyntheticSource, full_history: dict[str, pl.DataFrame]
) -> None:
    vols: dict[str, list[float]] = {"crypto": [], "equity": []}
    for info in market.list_symbols():
        if not _is_clean(market, info.exchange, info.symbol):
            continue
        bars = full_history[info.key]
        assert bars.schema == pl.Schema(OHLCV_SCHEMA)
        o, h, lo, c, v = (bars[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
        assert (lo > 0).all() and (v > 0).all()
        assert (h >= np.maximum(o, c)).all() and (lo <= np.minimum(o, c)).all()
        assert bars["timestamp"].is_sorted() and bars["timestamp"].n_unique() == bars.height
        per_year = 365 if info.asset_class == "crypto" else 252
        vols[info.asset_class].append(float(np.diff(np.log(c)).std() * np.sqrt(per_year)))
        # The listed liquidity is what the bars trade.
        assert 0.67 < np.median(c * v) / info.median_dollar_volume < 1.5
    assert min(vols["crypto"]) > 0.55 and max(vols["crypto"]) < 0.95
    assert min(vols["equity"]) > 0.17 and max(vols["equity"]) < 0.45


def test_returns_share_common_factors(market: SyntheticSource) -> None:
    window = (dt.date(2019, 1, 1), dt.date(2023, 12, 31))
    picks = [
        i
        for i in market.list_symbols()
        if i.asset_class == "equity"
        and i.genesis_date < window[0]
        and _is_clean(market, i.exchange, i.symbol)
    ][:20]
    assert len(picks) == 20
    returns = None
    for info in picks:
        frame = market.fetch_bars(info.exchange, info.symbol, *window).select(
            "timestamp", pl.col("close").log().diff().alias(info.symbol)
        )
        returns = frame if returns is None else returns.join(frame, on="timestamp")
    matrix = returns.drop("timestamp").drop_nulls().to_numpy().T
    assert matrix.shape[1] > 1200
    corr = np.corrcoef(matrix)
    assert corr[np.triu_indices(20, 1)].mean() > 0.1


def test_every_defect_kind_is_seeded_in_the_default_universe(market: SyntheticSource) -> None:
    hit: dict[str, set[str]] = {kind: set() for kind in DEFECT_KINDS}
    for info in market.list_symbols():
        defects = market.seeded_defects(info.exchange, info.symbol)
        assert set(defects) == set(DEFECT_KINDS)
        for kind, where in defects.items():
            if where:
                hit[kind].add(info.key)
        # Placed after max(genesis, 2018-01-01) + 30 days, before 2025-06-30, 15+ days apart.
        days = sorted(
            d
            for kind, where in defects.items()
            for entry in where
            for d in (entry if kind == "gap" else (entry,))
        )
        floor = max(info.genesis_date, dt.date(2018, 1, 1)) + dt.timedelta(30)
        assert all(floor < d < dt.date(2025, 6, 30) for d in days)
        spans = sorted(
            (e if kind == "gap" else (e, e)) for kind, where in defects.items() for e in where
        )
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert (start - end).days > 15, info.key
    for kind, keys in hit.items():
        assert len(keys) >= 8, kind
        assert {key.split("_")[0] for key in keys} == {"SYNCX", "SYNEQ"}, kind


def test_raw_bars_show_each_defect_exactly_where_seeded(
    market: SyntheticSource, full_history: dict[str, pl.DataFrame]
) -> None:
    checked = 0
    for info in market.list_symbols():
        defects = market.seeded_defects(info.exchange, info.symbol)
        if not any(defects.values()):
            continue
        checked += 1
        bars = full_history[info.key]
        days = _dates(bars)
        close = bars["close"].to_numpy()
        row = {d: i for i, d in enumerate(days)}  # the last copy of a duplicated day
        # Counts match exactly: no defect appears anywhere it was not declared.
        counts = bars.group_by("timestamp").len().filter(pl.col("len") > 1)
        assert sorted(ts_to_date(t) for t in counts["timestamp"]) == defects["duplicate"]
        assert (counts["len"] == 2).all()
        assert _dates(bars.filter(pl.col("high") < pl.col("low"))) == defects["high_low"]
        assert _dates(bars.filter(pl.col("close") <= 0)) == defects["nonpositive"]
        for day in defects["toxic"]:
            i = row[day]
            assert close[i] / close[i - 1] > 6
            assert close[i + 1] / close[i] < 0.2  # back to normal the next bar
            assert bars["high"][i] >= close[i]
        for day in defects["level_shift"]:
            i = row[day]
            assert close[i] / close[i - 1] > 6
            # The level persists: it is a redenomination, not a spike.
            assert np.median(close[i : i + 20]) > 6 * np.median(close[i - 20 : i])
        for first, last in defects["gap"]:
            missing = [d for d in days if first <= d <= last]
            assert missing == []
            previous = max(d for d in days if d < first)
            after = min(d for d in days if d > last)
            # The run is the whole gap: sessions right before and after are present.
            if info.asset_class == "crypto":
                sessions = (last - first).days + 1
                assert (first - previous).days == 1 and (after - last).days == 1
            else:  # on NYSE sessions: a holiday next to the gap is no part of it
                around = nyse_sessions(first - dt.timedelta(10), last + dt.timedelta(10))
                sessions = len(nyse_sessions(first, last))
                assert around[around.index(first) - 1] == previous
                assert around[around.index(last) + 1] == after
            assert 8 <= sessions <= 12
        for day in defects["duplicate"]:
            copies = bars.filter(pl.col("timestamp") == date_to_ts(day))
            assert copies.select("open", "high", "low", "close").n_unique() == 1
            assert copies["volume"].n_unique() == 2
    assert checked > 60


def test_seeded_defects_are_restricted_to_the_window(market: SyntheticSource) -> None:
    infos = market.list_symbols()
    with_gap = next(
        i
        for i in infos
        if i.asset_class == "equity" and market.seeded_defects(i.exchange, i.symbol)["gap"]
    )
    (first, last), *_ = market.seeded_defects(with_gap.exchange, with_gap.symbol)["gap"]
    inside = market.seeded_defects(
        with_gap.exchange, with_gap.symbol, first - dt.timedelta(1), last + dt.timedelta(1)
    )
    assert inside["gap"] == [(first, last)]
    assert market.seeded_defects(
        with_gap.exchange, with_gap.symbol, dt.date(2000, 1, 1), dt.date(2017, 12, 31)
    ) == {kind: [] for kind in DEFECT_KINDS}
    # Clipped onto sessions: a window ending mid-gap ends the gap at its own last session.
    clipped = market.seeded_defects(
        with_gap.exchange, with_gap.symbol, None, last - dt.timedelta(2)
    )
    clipped_first, clipped_last = clipped["gap"][0]
    assert clipped_first == first and clipped_last < last and clipped_last.weekday() < 5


def test_unknown_symbols_are_refused_by_name(market: SyntheticSource) -> None:
    with pytest.raises(UnknownSymbolError, match="E999999") as caught:
        market.fetch_bars("SYNEQ", "E999999", *HISTORY)
    assert isinstance(caught.value, SourceError) and caught.value.symbol == "E999999"
    # A listed symbol on the wrong exchange is unknown too.
    with pytest.raises(UnknownSymbolError, match="SYNCX"):
        market.fetch_bars("SYNCX", "E001", *HISTORY)
    with pytest.raises(UnknownSymbolError):
        market.seeded_defects("SYNEQ", "E999999")
    assert market.symbol_info("SYNEQ", "E001") is not None
    assert market.symbol_info("SYNEQ", "E999999") is None
