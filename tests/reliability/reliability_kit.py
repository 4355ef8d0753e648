"""Kit of the reliability suite: a folder of exports ingested through the real pipeline."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from quant_assets.data.ingest import ingest
from quant_resources.lakehouse import Lakehouse
from quant_resources.schema import date_to_ts
from quant_resources.settings import Settings
from quant_resources.sources.files import FileSource

START = dt.date(2024, 1, 1)
END = dt.date(2024, 1, 31)
NOW = dt.datetime(2024, 2, 1, 12, tzinfo=dt.UTC)


def good_bars(days: int = 31, start: dt.date = START, price: float = 100.0) -> pl.DataFrame:
    """Clean daily bars (every calendar day): a gentle uptrend."""
    closes = [price * (1.0 + 0.001 * i) for i in range(days)]
    return pl.DataFrame(
        {
            "timestamp": [date_to_ts(start + dt.timedelta(days=i)) for i in range(days)],
            "open": closes,
            "high": [c * 1.01 for c in closes],
            "low": [c * 0.99 for c in closes],
            "close": closes,
            "volume": [1000.0] * days,
        }
    )


class Exports:
    """A folder of exports and a lakehouse, ingested with the production code path."""

    def __init__(self, root: Path):
        self.folder = root / "exports"
        self.folder.mkdir()
        self.settings = Settings(data_dir=root / "data", history_start=START, source="files", files_dir=self.folder, freshness_hours=0)
        self.lakehouse = Lakehouse(data_dir=str(self.settings.data_dir))

    def write(self, name: str, content: pl.DataFrame | bytes | str) -> Path:
        path = self.folder / name
        if isinstance(content, pl.DataFrame):
            if name.endswith(".csv"):
                content.write_csv(path)
            else:
                content.write_parquet(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def ingest(self, start: dt.date = START, end: dt.date = END, infos=None):
        source = FileSource(folder=str(self.folder))
        infos = infos if infos is not None else source.list_symbols()
        return ingest(infos, start, end, source=source, lakehouse=self.lakehouse, settings=self.settings, now=NOW)

    def bars(self, key: str) -> pl.DataFrame:
        exchange, symbol = key.split("_", 1)
        return self.lakehouse.read_ohlcv(exchange, symbol)

    def entry(self, key: str) -> dict:
        return self.lakehouse.read_catalog()["symbols"][key]


