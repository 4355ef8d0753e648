"""BinanceSource against a fake Binance API on a loopback port: pagination, retries,
rate limits, error messages and the symbol list. No test touches the internet."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest
from fake_binance import MS_PER_DAY, FakeBinance, FakeSymbol, day_ms

from quant_resources.errors import SourceError, UnknownSymbolError
from quant_resources.schema import OHLCV_SCHEMA, date_to_ts
from quant_resources.settings import Settings
from quant_resources.sources import source_from_settings
from quant_resources.sources.binance import BinanceSource

KLINES = "/api/v3/klines"
LISTED = dt.date(2018, 1, 1)
# 30 s into a calendar minute: the weight window resets 30 s later.
T0 = 1_700_000_070.0


class FakeClock:
    """Records sleeps and advances time by them, so waits cost nothing."""

    def __init__(self, start: float = T0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds

    def now(self) -> float:
        return self.t


@pytest.fixture
def fake():
    symbols = [
        FakeSymbol("BTCUSDT", "BTC", listed=LISTED, base_price=4000.0, quote_volume=2.5e9),
        FakeSymbol("ETHUSDT", "ETH", listed=dt.date(2019, 6, 1), quote_volume=1.2e9),
        FakeSymbol("ETHBTC", "ETH", quote_asset="BTC", listed=dt.date(2017, 7, 14)),
        FakeSymbol("LUNAUSDT", "LUNA", status="BREAK", listed=dt.date(2020, 1, 1)),
        FakeSymbol("BAD..USDT", "BAD", listed=dt.date(2021, 1, 1)),
    ]
    with FakeBinance(symbols, today=dt.date(2026, 1, 1)) as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_source(fake: FakeBinance, clock: FakeClock, **config) -> BinanceSource:
    config.setdefault("timeout_s", 5.0)
    return BinanceSource(base_url=fake.base_url, **config).use_clock(clock.sleep, clock.now)


def test_long_window_is_paginated_into_1000_day_pages(fake, clock):
    end = LISTED + dt.timedelta(days=2499)
    bars = make_source(fake, clock).fetch_bars("BINANCE", "BTCUSDT", LISTED, end)

    calls = fake.requests_to(KLINES)
    assert len(calls) == 3
    assert [c.params["limit"] for c in calls] == ["1000"] * 3
    end_ms = day_ms(end) + MS_PER_DAY - 1
    assert {c.params["endTime"] for c in calls} == {str(end_ms)}
    # Each page starts just past the last open time of the previous one.
    assert [int(c.params["startTime"]) for c in calls] == [
        day_ms(LISTED),
        day_ms(LISTED + dt.timedelta(days=999)) + 1,
        day_ms(LISTED + dt.timedelta(days=1999)) + 1,
    ]

    assert bars.schema == pl.Schema(OHLCV_SCHEMA)
    assert bars.height == 2500
    assert bars["timestamp"].n_unique() == 2500
    assert bars["timestamp"].is_sorted()
    # Seconds, not milliseconds, at 00:00 UTC of each day.
    assert bars["timestamp"][0] == date_to_ts(LISTED) == 1_514_764_800
    assert bars["timestamp"][-1] == date_to_ts(end)
    # Day n after listing: open 4000+n, high open+2, low open-1, close open+0.5, vol 1000+n.
    by_day = {row["timestamp"]: row for row in bars.iter_rows(named=True)}
    for n in (0, 999, 1000, 2499):
        day = by_day[date_to_ts(LISTED + dt.timedelta(days=n))]
        assert (day["open"], day["high"], day["low"], day["close"], day["volume"]) == (
            4000.0 + n,
            4002.0 + n,
            3999.0 + n,
            4000.5 + n,
            1000.0 + n,
        )
    assert clock.sleeps == []  # well within the weight budget: no pauses


def test_window_before_listing_is_empty_not_an_error(fake, clock):
    bars = make_source(fake, clock).fetch_bars(
        "BINANCE", "BTCUSDT", dt.date(2017, 1, 1), dt.date(2017, 12, 31)
    )
    assert bars.is_empty()
    assert bars.schema == pl.Schema(OHLCV_SCHEMA)


def test_window_straddling_listing_starts_at_listing_day(fake, clock):
    bars = make_source(fake, clock).fetch_bars(
        "BINANCE", "BTCUSDT", dt.date(2017, 12, 30), dt.date(2018, 1, 2)
    )
    assert bars["timestamp"].to_list() == [
        date_to_ts(dt.date(2018, 1, 1)),
        date_to_ts(dt.date(2018, 1, 2)),
    ]


def test_429_waits_retry_after_then_returns_the_data(fake, clock):
    fake.rate_limit(times=1, retry_after=7)
    bars = make_source(fake, clock).fetch_bars(
        "BINANCE", "BTCUSDT", dt.date(2020, 1, 1), dt.date(2020, 1, 10)
    )
    assert clock.sleeps == [7.0]
    assert [c.status for c in fake.requests_to(KLINES)] == [429, 200]
    assert bars.height == 10


def test_ip_ban_longer_than_the_wait_cap_fails_fast_with_advice(fake, clock):
    fake.rate_limit(times=1, retry_after=3600, status=418)
    source = make_source(fake, clock, max_total_wait_s=600)
    with pytest.raises(SourceError) as raised:
        source.fetch_bars("BINANCE", "BTCUSDT", dt.date(2020, 1, 1), dt.date(2020, 1, 10))
    message = str(raised.value)
    assert "BTCUSDT" in message and "418" in message and "3600" in message
    assert "max_total_wait_s" in message
    assert clock.sleeps == []  # it did not sit out an hour-long ban


def test_ip_ban_within_the_cap_is_waited_out(fake, clock):
    fake.rate_limit(times=1, retry_after=120, status=418)
    bars = make_source(fake, clock).fetch_bars(
        "BINANCE", "BTCUSDT", dt.date(2020, 1, 1), dt.date(2020, 1, 3)
    )
    assert clock.sleeps == [120.0]
    assert bars.height == 3


def test_500_is_retried_with_backoff_then_succeeds(fake, clock):
    fake.server_error(times=2, status=502)
    bars = make_source(fake, clock, backoff_base_s=0.5).fetch_bars(
        "BINANCE", "BTCUSDT", dt.date(2020, 1, 1), dt.date(2020, 1, 5)
    )
    assert clock.sleeps == [0.5, 1.0]  # exponential
    assert bars.height == 5


def test_persistent_500_gives_up_naming_symbol_window_and_url(fake, clock):
    fake.server_error(times=10)
    source = make_source(fake, clock, max_retries=3, backoff_base_s=0.5)
    with pytest.raises(SourceError) as raised:
        source.fetch_bars("BINANCE", "BTCUSDT", dt.date(2020, 1, 1), dt.date(2020, 1, 5))
    message = str(raised.value)
    assert "BTCUSDT" in message
    assert "HTTP 500" in message
    assert "2020-01-01..2020-01-05" in message
    assert fake.base_url + KLINES in message
    assert "3 retries" in message
    assert clock.sleeps == [0.5, 1.0, 2.0]
    assert len(fake.requests_to(KLINES)) == 4


def test_timeout_is_retried(fake, clock):
    fake.stall(seconds=2.0, times=1)
    source = make_source(fake, clock, timeout_s=0.2, backoff_base_s=0.01)
    bars = source.fetch_bars("BINANCE", "BTCUSDT", dt.date(2020, 1, 1), dt.date(2020, 1, 3))
    assert bars.height == 3
    assert clock.sleeps == [0.01]


def test_unknown_symbol_raises_naming_the_symbol_and_url(fake, clock):
    with pytest.raises(UnknownSymbolError) as raised:
        make_source(fake, clock).fetch_bars(
            "BINANCE", "NOPEUSDT", dt.date(2020, 1, 1), dt.date(2020, 1, 5)
        )
    message = str(raised.value)
    assert "NOPEUSDT" in message
    assert "-1121" in message
    assert fake.base_url + KLINES in message
    assert clock.sleeps == []  # a client error is not retried


def test_another_exchange_is_refused(fake, clock):
    with pytest.raises(UnknownSymbolError, match="serves exchange 'BINANCE', not 'NYSE'"):
        make_source(fake, clock).fetch_bars(
            "NYSE", "BTCUSDT", dt.date(2020, 1, 1), dt.date(2020, 1, 2)
        )


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ("<html>502 Bad Gateway</html>", "is not JSON"),
        (json.dumps({"rows": []}), "expected a JSON array"),
        (json.dumps([[1577836800000, "1.0", "2.0", "0.5"]]), "at least 6 fields"),
        (
            json.dumps(
                [[1577836800000, "1.0", "2.0", "0.5", "oops", "10.0", 0, "0", 1, "0", "0", "0"]]
            ),
            "close='oops', not a number",
        ),
    ],
)
def test_malformed_body_is_a_clear_source_error(fake, clock, body, complaint):
    fake.malformed(body, path=KLINES)
    with pytest.raises(SourceError) as raised:
        make_source(fake, clock).fetch_bars(
            "BINANCE", "BTCUSDT", dt.date(2020, 1, 1), dt.date(2020, 1, 5)
        )
    message = str(raised.value)
    assert complaint in message
    assert "BTCUSDT" in message
    assert fake.base_url + KLINES in message


def test_weight_budget_pauses_until_the_minute_resets(fake, clock):
    # The server reports the IP has used 5999 of its weight this minute.
    fake.used_weight_header = 5999
    source = make_source(fake, clock, weight_budget_per_minute=6000)
    bars = source.fetch_bars("BINANCE", "BTCUSDT", LISTED, LISTED + dt.timedelta(days=1499))

    assert bars.height == 1500
    assert len(fake.requests_to(KLINES)) == 2
    # One pause before the second page: the 30 s left in the minute, plus a safety margin.
    assert len(clock.sleeps) == 1
    assert 30.0 <= clock.sleeps[0] <= 32.0
    assert int(clock.now() // 60) == int(T0 // 60) + 1


def test_weight_budget_counts_locally_without_the_header(fake, clock):
    fake.send_weight_header = False
    # Budget 3: the first klines request (weight 2) fits, the second must wait.
    source = make_source(fake, clock, weight_budget_per_minute=3)
    source.fetch_bars("BINANCE", "BTCUSDT", LISTED, LISTED + dt.timedelta(days=1499))
    assert len(clock.sleeps) == 1
    assert 30.0 <= clock.sleeps[0] <= 32.0


def test_list_symbols_keeps_trading_pairs_of_the_quote_asset(fake, clock):
    source = make_source(fake, clock)
    infos = source.list_symbols()

    by_symbol = {i.symbol: i for i in infos}
    # ETHBTC: other quote asset; LUNAUSDT: not TRADING; BAD..USDT: not a safe file name.
    assert sorted(by_symbol) == ["BTCUSDT", "ETHUSDT"]
    btc = by_symbol["BTCUSDT"]
    assert (btc.exchange, btc.asset_class, btc.calendar) == ("BINANCE", "crypto", "24/7")
    assert btc.genesis_date == LISTED
    assert by_symbol["ETHUSDT"].genesis_date == dt.date(2019, 6, 1)
    assert btc.median_dollar_volume == 2.5e9
    assert by_symbol["ETHUSDT"].median_dollar_volume == 1.2e9

    # Genesis comes from each pair's first kline, asked for once and then cached.
    first_klines = fake.requests_to(KLINES)
    assert sorted(c.params["symbol"] for c in first_klines) == ["BTCUSDT", "ETHUSDT"]
    assert all(c.params["startTime"] == "0" and c.params["limit"] == "1" for c in first_klines)
    source.list_symbols()
    assert len(fake.requests_to(KLINES)) == 2


def test_list_symbols_with_default_genesis_skips_the_per_symbol_requests(fake, clock):
    source = make_source(
        fake, clock, genesis_from_first_kline=False, default_genesis_date="2017-07-14"
    )
    infos = source.list_symbols()
    assert {i.genesis_date for i in infos} == {dt.date(2017, 7, 14)}
    assert fake.requests_to(KLINES) == []


def test_list_symbols_honours_another_quote_asset(fake, clock):
    infos = make_source(fake, clock, quote_asset="BTC").list_symbols()
    assert [i.symbol for i in infos] == ["ETHBTC"]


def test_symbol_info_asks_only_about_that_symbol(fake, clock):
    source = make_source(fake, clock)
    info = source.symbol_info("BINANCE", "ETHUSDT")
    assert info is not None
    assert (info.symbol, info.genesis_date, info.median_dollar_volume) == (
        "ETHUSDT",
        dt.date(2019, 6, 1),
        1.2e9,
    )
    assert all(r.params.get("symbol") == "ETHUSDT" for r in fake.requests)
    assert source.symbol_info("BINANCE", "NOPEUSDT") is None
    assert source.symbol_info("BINANCE", "LUNAUSDT") is None  # listed but not trading


def test_settings_select_the_binance_source(fake):
    source = source_from_settings(Settings(source="binance", binance_base_url=fake.base_url))
    assert isinstance(source, BinanceSource)
    assert source.base_url == fake.base_url
    bars = source.fetch_bars("BINANCE", "BTCUSDT", dt.date(2020, 1, 1), dt.date(2020, 1, 2))
    assert bars.height == 2
