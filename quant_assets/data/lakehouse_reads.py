"""Read helpers over the lakehouse files shared by the checks, the audit and the alpha side."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from quant_resources.schema import OHLCV_COLUMNS, OHLCV_SCHEMA, date_to_ts


def symbol_of_file(path: str | Path) -> str:
    """`SYNEQ_E001_1d.parquet` -> `SYNEQ_E001` (the catalog key)."""
    name = Path(path).name
    return name[: -len("_1d.parquet")] if name.endswith("_1d.parquet") else Path(name).stem


def scan_bars(files: list[Path], start: dt.date | None = None, end: dt.date | None = None) -> pl.DataFrame:
    """Bars of many files in [start, end] with a `symbol` column (the catalog key)."""
    schema = {"symbol": pl.String(), **OHLCV_SCHEMA}
    if not files:
        return pl.DataFrame(schema=schema)
    lazy = pl.scan_parquet([str(f) for f in files], include_file_paths="_path").select(
        [*OHLCV_COLUMNS, "_path"]
    )
    if start is not None:
        lazy = lazy.filter(pl.col("timestamp") >= date_to_ts(start))
    if end is not None:
        lazy = lazy.filter(pl.col("timestamp") < date_to_ts(end + dt.timedelta(days=1)))
    frame = lazy.with_columns(
        pl.col("_path").str.extract(r"([^/\\]+)_1d\.parquet$", 1).alias("symbol")
    ).collect()
    return frame.select(list(schema)).cast(schema)
