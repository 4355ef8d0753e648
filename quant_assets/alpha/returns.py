"""The returns matrix: dates x symbols simple close-to-close returns from snapshot files.

Panel calendar: the sessions of the equities' calendars when the snapshot holds any
equity (their union: "XNYS" for NYSE and NASDAQ stocks, so no row on a weekend or an NYSE
holiday), else every calendar day. A crypto symbol on an equity panel gets its weekend
and holiday moves compounded into the next session (close-to-close between panel
dates), which is what a holder earns; an equity has no NaN row for its own holidays, so
a holiday never counts against its history. Equities of exchanges with different
holidays still see NaN on the days only the others trade.

A symbol's return on a panel date is NaN when it has no bar that day: before its first
bar (genesis) and on missing sessions (gaps, dropped toxic or invalid bars). Prices are
never forward-filled, so a gap never shows as flat returns, and the panel is never
truncated to the youngest symbol: it spans the oldest symbol's history.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import numpy as np
import polars as pl

from quant_resources.calendars import ALWAYS_OPEN, calendar_for, resolve, session_days
from quant_resources.schema import ts_to_date_expr


def panel_calendars(files: Iterable[dict]) -> list[str]:
    """The calendars of a snapshot's equities, sorted: its manifest's file descriptions, each
    with `symbol` ("EXCHANGE_SYMBOL": an exchange name has no "_") and `asset_class`."""
    return sorted(
        {
            calendar_for(d["symbol"].split("_", 1)[0], "equity")
            for d in files
            if d.get("asset_class") == "equity"
        }
    )


def panel_dates(first: dt.date, last: dt.date, calendars: Iterable[str]) -> pl.Series:
    """Dates in [first, last] that are sessions of any of `calendars` (names or exchange
    codes); every calendar day when there is none or one of them is 24/7."""
    names = {resolve(c) for c in calendars}
    if not names or ALWAYS_OPEN in names:
        return pl.date_range(first, last, interval="1d", eager=True).alias("date")
    lo, hi = np.datetime64(first, "D"), np.datetime64(last, "D")
    days = np.unique(
        np.concatenate([s[(s >= lo) & (s <= hi)] for s in map(session_days, sorted(names))])
    )
    return pl.Series("date", days, dtype=pl.Date)


def build_returns_matrix(
    closes: dict[str, pl.DataFrame],
    *,
    calendars: Iterable[str] = (),
    end: dt.date | None = None,
) -> pl.DataFrame:
    """Wide frame: a `date` column then one Float64 column per symbol (sorted by name).

    closes: symbol -> frame with `timestamp` (UTC epoch seconds at 00:00) and `close`.
    calendars: the panel's calendars (the equities'; empty for every calendar day).
    end: last panel date (bars after it are ignored); default the newest bar.
    """
    bars_of = {}
    for symbol in sorted(closes):
        bars = closes[symbol].select(ts_to_date_expr().alias("date"), pl.col("close"))
        bars_of[symbol] = bars.filter(pl.col("date") <= end) if end is not None else bars
    held = [b for b in bars_of.values() if b.height]
    if not held:
        return pl.DataFrame({"date": pl.Series([], dtype=pl.Date)})
    first = min(b["date"].min() for b in held)
    last = end or max(b["date"].max() for b in held)
    dates = panel_dates(first, last, calendars)
    panel = pl.DataFrame(dates)
    frames = []
    for symbol, bars in bars_of.items():
        # A bar off the panel (a crypto weekend) drops out: its move lands on the next row.
        bars = bars.filter(pl.col("date").is_in(dates.implode())).sort("date")
        frames.append(
            bars.select(
                "date", (pl.col("close") / pl.col("close").shift(1) - 1.0).alias(symbol)
            )
        )
    for frame in frames:
        panel = panel.join(frame, on="date", how="left")
    # A present return is float; an absent bar is null -> NaN (the matrix speaks NaN).
    symbols = [c for c in panel.columns if c != "date"]
    return panel.with_columns([pl.col(s).fill_null(float("nan")) for s in symbols])


def returns_array(matrix: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(T, N) float array, (T,) datetime64[D] dates and the symbol names."""
    symbols = [c for c in matrix.columns if c != "date"]
    values = (
        matrix.select(symbols).to_numpy().astype(float) if symbols else np.zeros((matrix.height, 0))
    )
    dates = matrix["date"].to_numpy().astype("datetime64[D]")
    return values, dates, symbols
