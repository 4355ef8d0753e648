"""The returns matrix: dates x symbols simple close-to-close returns from snapshot files.

Panel calendar: business days (Monday-Friday) when the snapshot holds any equity, else
every calendar day. A crypto symbol on a business-day panel gets its weekend compounded
into Monday (close-to-close between panel dates), which is what a holder earns.

A symbol's return on a panel date is NaN when it has no bar that day: before its first
bar (genesis) and on missing sessions (gaps, dropped toxic or invalid bars). Prices are
never forward-filled, so a gap never shows as flat returns, and the panel is never
truncated to the youngest symbol: it spans the oldest symbol's history.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from quant_resources.schema import ts_to_date_expr


def panel_dates(first: dt.date, last: dt.date, business: bool) -> pl.Series:
    days = pl.date_range(first, last, interval="1d", eager=True)
    if business:
        days = days.filter(days.dt.weekday() <= 5)
    return days.alias("date")


def build_returns_matrix(
    closes: dict[str, pl.DataFrame],
    *,
    business_days: bool,
    end: dt.date | None = None,
) -> pl.DataFrame:
    """Wide frame: a `date` column then one Float64 column per symbol (sorted by name).

    closes: symbol -> frame with `timestamp` (UTC epoch seconds at 00:00) and `close`.
    end: last panel date (bars after it are ignored); default the newest bar.
    """
    frames = []
    for symbol in sorted(closes):
        bars = closes[symbol].select(
            ts_to_date_expr().alias("date"),
            pl.col("close"),
        )
        if end is not None:
            bars = bars.filter(pl.col("date") <= end)
        if business_days:
            bars = bars.filter(pl.col("date").dt.weekday() <= 5)
        bars = bars.sort("date").with_columns(
            (pl.col("close") / pl.col("close").shift(1) - 1.0).alias(symbol)
        )
        frames.append(bars.select("date", symbol))
    if not frames:
        return pl.DataFrame({"date": pl.Series([], dtype=pl.Date)})
    first = min(f["date"].min() for f in frames if f.height)
    last = end or max(f["date"].max() for f in frames if f.height)
    panel = pl.DataFrame(panel_dates(first, last, business_days))
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
