"""The lakehouse bar schema and the symbol metadata every source returns.

A daily bar is stamped at 00:00 UTC of its session date (UTC epoch seconds, int64).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

import polars as pl

from quant_resources.calendars import calendar_for

OHLCV_COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
OHLCV_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": pl.Int64(),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
}
SECONDS_PER_DAY = 86_400

ASSET_CLASSES = ("crypto", "equity")


def empty_ohlcv() -> pl.DataFrame:
    return pl.DataFrame(schema=OHLCV_SCHEMA)


def date_to_ts(day: dt.date) -> int:
    """UTC epoch seconds at 00:00 of `day`."""
    return (day - dt.date(1970, 1, 1)).days * SECONDS_PER_DAY


def ts_to_date(ts: int) -> dt.date:
    """The UTC date of epoch seconds `ts` (a bar stamped later in its day stays on that day)."""
    return dt.date(1970, 1, 1) + dt.timedelta(days=int(ts) // SECONDS_PER_DAY)


def ts_to_date_expr(column: str = "timestamp") -> pl.Expr:
    """`ts_to_date` as a polars expression over an epoch-seconds column (a `pl.Date`)."""
    return (pl.col(column).cast(pl.Int64) // SECONDS_PER_DAY).cast(pl.Int32).cast(pl.Date)


@dataclass(frozen=True)
class SymbolInfo:
    """What a source knows about one listed instrument.

    `calendar` is the symbol's trading calendar (quant_resources/calendars.py): "24/7"
    for crypto (a bar every calendar day); for an equity, its exchange's
    (exchange-calendars' "XNYS" for NYSE, NASDAQ and the synthetic SYNEQ: no bar on
    weekends and NYSE holidays), or "business" (Monday to Friday) when the exchange has
    no known calendar. `median_dollar_volume` is the source's current liquidity statistic in
    quote currency per day: informative only, the scanners rank by the lakehouse's own
    trailing figure as of each day (point in time). `delisting_date` is the last session of
    a symbol that stopped trading for good (None while it trades): its bars stay in the
    lakehouse and it stays in the past candidate lists it belonged to.
    """

    exchange: str
    symbol: str
    asset_class: str
    genesis_date: dt.date
    median_dollar_volume: float
    active: bool = True
    delisting_date: dt.date | None = None

    @property
    def calendar(self) -> str:
        return calendar_for(self.exchange, self.asset_class)

    @property
    def key(self) -> str:
        return f"{self.exchange}_{self.symbol}"

    def to_record(self) -> dict:
        record = asdict(self)
        record["genesis_date"] = self.genesis_date.isoformat()
        record["delisting_date"] = self.delisting_date.isoformat() if self.delisting_date else None
        return record


def symbols_frame(infos: list[SymbolInfo]) -> pl.DataFrame:
    """The registry as stored in `symbols.parquet`."""
    return pl.DataFrame(
        {
            "exchange": [i.exchange for i in infos],
            "symbol": [i.symbol for i in infos],
            "asset_class": [i.asset_class for i in infos],
            "genesis_date": [i.genesis_date for i in infos],
            "median_dollar_volume": [float(i.median_dollar_volume) for i in infos],
            "active": [i.active for i in infos],
            "delisting_date": [i.delisting_date for i in infos],
        },
        schema={
            "exchange": pl.String(),
            "symbol": pl.String(),
            "asset_class": pl.String(),
            "genesis_date": pl.Date(),
            "median_dollar_volume": pl.Float64(),
            "active": pl.Boolean(),
            "delisting_date": pl.Date(),
        },
    )
