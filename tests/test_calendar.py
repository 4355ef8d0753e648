"""Trading calendars per symbol, against hand counts of the 2024 NYSE calendar.

NYSE holidays on weekdays in 2024 (10): Jan 1, Jan 15 (Martin Luther King Jr.), Feb 19
(Washington's Birthday), Mar 29 (Good Friday), May 27 (Memorial Day), Jun 19
(Juneteenth), Jul 4, Sep 2 (Labor Day), Nov 28 (Thanksgiving), Dec 25. Plus the national
day of mourning for President Carter, Thursday 2025-01-09.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import run_data_job

from quant_assets.data.calendar import (
    calendar_for,
    entry_calendar,
    first_session_on_or_after,
    is_session,
    last_session_on_or_before,
    missing_sessions,
    sessions_between,
)
from quant_assets.data.gaps import detect_gaps
from quant_assets.data.quality import quality_score
from quant_resources.calendars import (
    CalendarRangeError,
    UnknownCalendarError,
    library_coverage,
    resolve,
)
from quant_resources.schema import SymbolInfo, date_to_ts, ts_to_date
from quant_resources.settings import Settings
from quant_resources.sources.synthetic import SyntheticSource

D = dt.date
NYSE_HOLIDAYS_2024 = [
    D(2024, 1, 1), D(2024, 1, 15), D(2024, 2, 19), D(2024, 3, 29), D(2024, 5, 27),
    D(2024, 6, 19), D(2024, 7, 4), D(2024, 9, 2), D(2024, 11, 28), D(2024, 12, 25),
]


def ts(*days: dt.date) -> np.ndarray:
    return np.array([date_to_ts(d) for d in days])


def weekdays(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(i) for i in range((last - first).days + 1) if (first + dt.timedelta(i)).weekday() < 5]


# --------------------------------------------------------------------- which calendar


def test_a_symbols_calendar_comes_from_its_exchange():
    for exchange in ("NYSE", "NASDAQ", "SYNEQ", "XNYS", "AMEX", "nyse"):
        assert calendar_for(exchange, "equity") == "XNYS", exchange
    assert calendar_for("LSE", "equity") == "XLON"
    assert calendar_for("XETRA", "equity") == "XETR"
    # Crypto trades 24/7 whatever the exchange; an unknown equity exchange has weekdays.
    assert calendar_for("SYNCX", "crypto") == calendar_for("NYSE", "crypto") == "24/7"
    assert calendar_for("NOWHERE", "equity") == "business"
    info = SymbolInfo("NASDAQ", "AAPL", "equity", D(1990, 1, 2), 1e9)
    assert info.calendar == "XNYS"
    with pytest.raises(UnknownCalendarError, match="NOWHERE"):
        resolve("NOWHERE")


def test_a_catalog_entry_follows_its_exchange_even_when_written_as_business():
    # A catalog written before exchange calendars recorded "business" for every equity.
    old = {"exchange": "SYNEQ", "asset_class": "equity", "calendar": "business"}
    assert entry_calendar(old) == "XNYS"
    assert entry_calendar({"exchange": "SYNCX", "asset_class": "crypto"}) == "24/7"
    assert entry_calendar({"calendar": "business"}) == "business"
    assert entry_calendar({}) == "24/7"


# --------------------------------------------------------------------- session counts


def test_nyse_sessions_across_thanksgiving_week():
    # Mon 2024-11-25 .. Fri 11-29: Thanksgiving Thursday is closed -> 4 sessions.
    assert sessions_between(D(2024, 11, 25), D(2024, 11, 29), "XNYS") == 4
    assert sessions_between(D(2024, 11, 25), D(2024, 11, 29), "NYSE") == 4  # an exchange code
    assert sessions_between(D(2024, 11, 25), D(2024, 11, 29), "business") == 5
    assert sessions_between(D(2024, 11, 25), D(2024, 11, 29), "24/7") == 5
    assert sessions_between(D(2024, 11, 28), D(2024, 11, 28), "XNYS") == 0
    assert sessions_between(D(2024, 11, 29), D(2024, 11, 25), "XNYS") == 0  # last < first
    assert not is_session(D(2024, 11, 28), "XNYS") and is_session(D(2024, 11, 29), "XNYS")


def test_nyse_2024_has_262_weekdays_less_10_holidays():
    assert len(weekdays(D(2024, 1, 1), D(2024, 12, 31))) == 262
    assert sessions_between(D(2024, 1, 1), D(2024, 12, 31), "XNYS") == 252
    assert [d for d in weekdays(D(2024, 1, 1), D(2024, 12, 31)) if not is_session(d, "XNYS")] == NYSE_HOLIDAYS_2024
    assert not is_session(D(2025, 1, 9), "XNYS")  # day of mourning, a Thursday


def test_crypto_counts_every_calendar_day():
    # 2024 is a leap year: Feb 26 .. Mar 4 is 8 days, weekend and all.
    assert sessions_between(D(2024, 2, 26), D(2024, 3, 4), "24/7") == 8
    assert sessions_between(D(2024, 1, 1), D(2024, 12, 31), "24/7") == 366
    assert sessions_between(D(2024, 12, 24), D(2024, 12, 26), "24/7") == 3  # Christmas trades
    assert first_session_on_or_after(D(2024, 12, 25), "24/7") == D(2024, 12, 25)
    assert last_session_on_or_before(D(2024, 12, 25), "24/7") == D(2024, 12, 25)


def test_neighbouring_sessions_step_over_holidays_and_weekends():
    assert last_session_on_or_before(D(2024, 12, 25), "XNYS") == D(2024, 12, 24)
    assert first_session_on_or_after(D(2024, 12, 25), "XNYS") == D(2024, 12, 26)
    assert last_session_on_or_before(D(2024, 7, 4), "XNYS") == D(2024, 7, 3)
    assert first_session_on_or_after(D(2024, 7, 4), "XNYS") == D(2024, 7, 5)
    # Good Friday then a weekend: Thursday before, Monday after.
    assert last_session_on_or_before(D(2024, 3, 31), "XNYS") == D(2024, 3, 28)
    assert first_session_on_or_after(D(2024, 3, 29), "XNYS") == D(2024, 4, 1)
    assert last_session_on_or_before(D(2024, 11, 29), "XNYS") == D(2024, 11, 29)


def test_quality_does_not_expect_a_bar_on_a_holiday():
    # Every session of Thanksgiving week held: complete on XNYS, 4/5 on weekdays.
    assert quality_score(4, D(2024, 11, 25), D(2024, 11, 29), "XNYS", 0, False) == 1.0
    assert quality_score(4, D(2024, 11, 25), D(2024, 11, 29), "business", 0, False) == 0.8


def test_dates_outside_the_span_raise_and_the_library_range_is_documented():
    assert library_coverage("XNYS") == (D(1990, 1, 1), D(2040, 12, 31))
    assert library_coverage("24/7") is None and library_coverage("business") is None
    # Outside the library's range an exchange calendar is Monday to Friday (the fallback).
    assert sessions_between(D(1980, 12, 22), D(1980, 12, 26), "XNYS") == 5  # Christmas 1980
    assert sessions_between(D(2050, 12, 19), D(2050, 12, 23), "XNYS") == 5
    with pytest.raises(CalendarRangeError, match="1850-01-01"):
        sessions_between(D(1850, 1, 1), D(2024, 1, 1), "XNYS")
    with pytest.raises(CalendarRangeError):
        missing_sessions(np.array(["2024-01-02", "2101-01-03"], dtype="datetime64[D]"), "XNYS")
    assert sessions_between(D(1850, 1, 1), D(1850, 1, 10), "24/7") == 10  # no bounds


def test_importing_the_calendar_does_not_import_the_library():
    code = (
        "import sys, quant_assets, quant_assets.data.calendar, quant_assets.data.gaps, "
        "quant_resources.sources.synthetic\n"
        "print('exchange_calendars' in sys.modules, 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------- gap detection


def nyse_bars(first: dt.date, last: dt.date, without: tuple[dt.date, dt.date] | None = None) -> np.ndarray:
    """Timestamps of every NYSE session in [first, last] (the weekdays less the 2024
    holidays), less the run `without` (inclusive)."""
    days = [d for d in weekdays(first, last) if d not in NYSE_HOLIDAYS_2024]
    if without:
        days = [d for d in days if not without[0] <= d <= without[1]]
    return ts(*days)


def test_holidays_are_never_missing_sessions():
    # Every session of 2024 held: no missing session at all, even with a threshold of 0.
    bars = nyse_bars(D(2024, 1, 2), D(2024, 12, 31))
    assert detect_gaps(bars, "XNYS", 0) == []
    # On weekdays the ten holidays (all but New Year's Day, before the first bar) would show.
    assert [g.start for g in detect_gaps(bars, "business", 0)] == NYSE_HOLIDAYS_2024[1:]
    # Friday 2024-01-05 to Tuesday 01-16: 8..12 and MLK day 15 -> 5 sessions, not a gap.
    assert detect_gaps(ts(D(2024, 1, 5), D(2024, 1, 16)), "XNYS", 5) == []
    assert len(detect_gaps(ts(D(2024, 1, 5), D(2024, 1, 16)), "business", 5)) == 1


def test_five_sessions_across_christmas_are_not_a_gap():
    # Missing Fri 12-20, Mon 23, Tue 24, Thu 26, Fri 27: 5 sessions (Christmas is no session).
    bars = nyse_bars(D(2024, 12, 2), D(2024, 12, 31), without=(D(2024, 12, 20), D(2024, 12, 27)))
    assert detect_gaps(bars, "XNYS", 5) == []
    assert detect_gaps(bars, "business", 5) != []  # weekdays count Christmas: 6


def test_six_missing_sessions_across_christmas_are_a_gap():
    # Missing 12-20, 23, 24, 26, 27, 30: 6 sessions; the gap is named by its sessions.
    bars = nyse_bars(D(2024, 12, 2), D(2024, 12, 31), without=(D(2024, 12, 20), D(2024, 12, 30)))
    gaps = detect_gaps(bars, "XNYS", 5)
    assert [(g.start, g.end, g.missing_sessions) for g in gaps] == [(D(2024, 12, 20), D(2024, 12, 30), 6)]


def test_a_gap_next_to_good_friday_starts_and_ends_on_sessions():
    # Thu 03-28 held, then nothing until Tue 04-09: Apr 1-5 and Apr 8 missing (6); Good
    # Friday and the weekend before are not part of the gap.
    bars = nyse_bars(D(2024, 3, 1), D(2024, 4, 30), without=(D(2024, 3, 29), D(2024, 4, 8)))
    gaps = detect_gaps(bars, "XNYS", 5)
    assert [(g.start, g.end, g.missing_sessions) for g in gaps] == [(D(2024, 4, 1), D(2024, 4, 8), 6)]
    # Wed 03-27 held, then Mon 04-08: Thu 03-28 and Apr 1-5 are 6 missing sessions.
    bars = nyse_bars(D(2024, 3, 1), D(2024, 4, 30), without=(D(2024, 3, 28), D(2024, 4, 5)))
    gaps = detect_gaps(bars, "XNYS", 5)
    assert [(g.start, g.end, g.missing_sessions) for g in gaps] == [(D(2024, 3, 28), D(2024, 4, 5), 6)]


def test_crypto_gaps_count_holidays_as_days():
    # Bars on 12-24 and 12-31 only: Christmas to the 30th are 6 missing days.
    gaps = detect_gaps(ts(D(2024, 12, 24), D(2024, 12, 31)), "24/7", 5)
    assert [(g.start, g.end, g.missing_sessions) for g in gaps] == [(D(2024, 12, 25), D(2024, 12, 30), 6)]


def test_a_bar_on_a_holiday_is_a_boundary_not_an_error():
    # A vendor's bar on Thanksgiving: the sessions between bars are still counted right.
    days = np.array(["2024-11-27", "2024-11-28", "2024-12-09"], dtype="datetime64[D]")
    assert missing_sessions(days, "XNYS").tolist() == [0, 6]  # 11-29, 12-2..12-6


# --------------------------------------------------------------------- synthetic source


def test_synthetic_equities_follow_the_nyse_calendar_and_crypto_every_day():
    source = SyntheticSource(n_symbols=10)
    equities = [i for i in source.list_symbols() if i.asset_class == "equity"]
    crypto = [i for i in source.list_symbols() if i.asset_class == "crypto"]
    assert equities and crypto and {i.calendar for i in equities} == {"XNYS"}
    closed = set(NYSE_HOLIDAYS_2024) | {D(2025, 1, 9)}
    listed = [i for i in equities + crypto if i.genesis_date < D(2024, 1, 1)]
    assert {i.asset_class for i in listed} == {"crypto", "equity"}
    for info in (i for i in listed if i.asset_class == "equity"):
        days = {ts_to_date(t) for t in source.fetch_bars(info.exchange, info.symbol, D(2024, 1, 1), D(2025, 1, 31))["timestamp"]}
        assert not days & closed, info.key
        christmas_week = sorted(d for d in days if D(2024, 12, 23) <= d <= D(2024, 12, 31))
        assert christmas_week == [D(2024, 12, d) for d in (23, 24, 26, 27, 30, 31)], info.key
    for info in (i for i in listed if i.asset_class == "crypto"):
        days = {ts_to_date(t) for t in source.fetch_bars(info.exchange, info.symbol, D(2024, 12, 20), D(2024, 12, 31))["timestamp"]}
        assert D(2024, 12, 25) in days and len(days) == 12, info.key


# --------------------------------------------------------------------- freshness


def test_freshness_on_the_day_after_a_holiday(tmp_path):
    """The daily run of 2024-11-29 ingests yesterday's partition, Thanksgiving: an equity
    whose last bar is Wednesday 11-27 is fresh, not stale, and no gap is recorded."""
    settings = Settings(
        data_dir=tmp_path / "data",
        history_start=D(2024, 10, 1),
        synthetic_symbols=10,
        universe="all",
        freshness_hours=1e6,
    )
    result = run_data_job(settings, D(2024, 11, 28))
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["ohlcv_freshness"].passed, checks["ohlcv_freshness"].metadata
    catalog = json.loads(settings.catalog_path.read_text())["symbols"]
    equities = {k: e for k, e in catalog.items() if e["asset_class"] == "equity"}
    assert equities and {e["calendar"] for e in equities.values()} == {"XNYS"}
    for key, entry in equities.items():
        assert entry["end_date"] == "2024-11-27", key
    assert {e["end_date"] for e in catalog.values() if e["asset_class"] == "crypto"} == {"2024-11-28"}
    # The next partition, Friday 11-29, expects Friday's bar.
    assert last_session_on_or_before(D(2024, 11, 28), entry_calendar(next(iter(equities.values())))) == D(2024, 11, 27)
    assert last_session_on_or_before(D(2024, 11, 29), "XNYS") == D(2024, 11, 29)
