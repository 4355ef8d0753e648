"""The market-data source protocol every source implements.

A source lists symbols with their metadata and fetches daily bars for one symbol and
an inclusive date window, as a polars frame with the lakehouse columns
(`quant_resources.schema.OHLCV_SCHEMA`). Frames are *raw*: they may hold duplicate,
unsorted, invalid or toxic bars. Cleaning is the ingestion's job, not the source's, so
every source goes through the same sanitiser and contracts.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl

from quant_resources.schema import SymbolInfo


class MarketDataSource(dg.ConfigurableResource):
    """Base class of the sources (synthetic, files, binance). Subclasses override both methods."""

    @property
    def source_name(self) -> str:
        return type(self).__name__

    def list_symbols(self) -> list[SymbolInfo]:
        """Every symbol the source offers, with exchange, asset class, genesis and liquidity."""
        raise NotImplementedError

    def fetch_bars(self, exchange: str, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        """Raw daily bars with timestamps in [start 00:00 UTC, end+1 00:00 UTC).

        Raises `quant_resources.errors.UnknownSymbolError` for a symbol the source does not
        list and `SourceError` (naming symbol and file or URL) when the data cannot be read.
        A window before the symbol's genesis gives an empty frame, not an error.
        """
        raise NotImplementedError

    def skipped_files(self) -> list[tuple[str, str]]:
        """(file or symbol, why) of everything the source has that `list_symbols` left out.

        Reported by the data cycle (run summary, `ohlcv` metadata, catalog errors, the
        `ohlcv_skipped_files` check): a source never drops input in silence.
        """
        return []

    def symbol_info(self, exchange: str, symbol: str) -> SymbolInfo | None:
        for info in self.list_symbols():
            if info.exchange == exchange and info.symbol == symbol:
                return info
        return None
