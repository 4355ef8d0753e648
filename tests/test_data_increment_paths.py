"""Fast paths of the daily increment give what the general paths give."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from quant_resources.lakehouse import merge_frames
from quant_resources.schema import OHLCV_SCHEMA, date_to_ts
from quant_resources.sources import files
from quant_resources.sources.files import FileSource


def _bars(days: list[int], close: float = 10.0) -> pl.DataFrame:
    stamps = [date_to_ts(dt.date(2024, 1, 1) + dt.timedelta(days=d)) for d in days]
    n = len(stamps)
    return pl.DataFrame(
        {"timestamp": stamps, "open": [close] * n, "high": [close] * n, "low": [close] * n,
         "close": [close + i for i in range(n)], "volume": [1.0] * n},
        schema=OHLCV_SCHEMA,
    )


def _general_merge(existing: pl.DataFrame, new_bars: pl.DataFrame) -> pl.DataFrame:
    both = pl.concat([existing, new_bars])
    return both.unique("timestamp", keep="last", maintain_order=True).sort("timestamp")


@pytest.mark.parametrize(
    ("held", "new"),
    [
        ([0, 1, 2], [3]),  # the daily append
        ([0, 1, 2], [5, 9]),  # after a gap
        ([0, 1, 2], []),  # nothing new
        ([0, 1, 2], [2, 3]),  # a revised last bar: the general path
        ([0, 2, 1], [3]),  # a file out of order: the general path sorts it
        ([0, 1, 2], [4, 3]),  # new bars out of order
    ],
)
def test_merge_equals_the_general_merge(held, new):
    existing, new_bars = _bars(held), _bars(new, close=20.0)
    assert merge_frames(existing, new_bars).equals(_general_merge(existing, new_bars))


VENDOR = (
    "Date,Open,High,Low,Close,Adj Close,Volume\n"
    "2024-01-02, 10.5,11,10,10.75,10.7,1000\n"
    "2024-01-03 00:00:00,10.75,null,10.5,11,11,\n"
    "2024-01-04,11,11.5,10.5,11.25,11.2,1e3\n"
)
LAKEHOUSE = "timestamp,open,high,low,close,volume\n1704153600000,1,2,0.5,1.5,10\n1704240000,1.5,2,1,1.75,NA\n"


@pytest.mark.parametrize("text", [VENDOR, LAKEHOUSE])
def test_one_query_parse_equals_the_column_by_column_parse(tmp_path: Path, text):
    path = tmp_path / "X_A.csv"
    path.write_text(text, encoding="utf-8")
    table = files._read_table(path)
    by_name, time_column = files._columns(table)
    fast = files._parse_text_columns(table, by_name, time_column)
    vendor = "timestamp" not in by_name
    stamps = files._session_dates(table, time_column) if vendor else files._timestamps(table, time_column)
    slow = pl.DataFrame(
        [stamps.alias("timestamp")] + [files._numbers(table, by_name[c]).alias(c) for c in files._VALUE_COLUMNS]
    ).cast(OHLCV_SCHEMA)
    assert fast is not None and fast.equals(slow)


def test_a_bad_value_leaves_the_one_query_parse_to_the_named_error(tmp_path: Path):
    path = tmp_path / "X_A.csv"
    path.write_text(VENDOR.replace("1e3", "lots"), encoding="utf-8")
    table = files._read_table(path)
    assert files._parse_text_columns(table, *files._columns(table)) is None


def test_a_run_parses_each_file_once(tmp_path: Path):
    for i in range(3):
        (tmp_path / f"X_S{i}.csv").write_text(VENDOR, encoding="utf-8")
    source = FileSource(folder=str(tmp_path))
    listed = source.list_symbols()
    parsed = {i.symbol: files._PARSED.get(str(tmp_path / f"X_{i.symbol}.csv"), *_stat(tmp_path / f"X_{i.symbol}.csv")) for i in listed}
    source.list_symbols()
    for info in listed:
        path = tmp_path / f"X_{info.symbol}.csv"
        # The same object: listing twice and fetching never parsed the file again.
        assert files._PARSED.get(str(path), *_stat(path)) is parsed[info.symbol]
        assert source.fetch_bars("X", info.symbol, dt.date(2024, 1, 1), dt.date(2024, 1, 31)).height == 3


def _stat(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size
