"""The files source: vendor CSV and lakehouse Parquet exports read exactly, bad files named."""

from __future__ import annotations

import datetime as dt
import io
import os
from pathlib import Path

import polars as pl
import pytest

from quant_resources.errors import ConfigError, SourceError, UnknownSymbolError
from quant_resources.schema import OHLCV_SCHEMA, date_to_ts
from quant_resources.sources.files import FileSource

WINDOW = (dt.date(2000, 1, 1), dt.date(2030, 12, 31))

VENDOR_CSV = """Date,Open,High,Low,Close,Adj Close,Volume
2024-01-05,185.5,187.25,184.0,186.75,180.1,4200000
2024-01-08,186.0,189.5,185.75,189.25,182.6,3900000
2024-01-09,189.0,190.0,187.5,188.0,181.4,3100000
2024-01-10,188.5,191.0,188.0,190.5,183.8,2800000
"""


def _write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _lakehouse_frame(days: list[dt.date], start_price: float = 100.0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "timestamp": [date_to_ts(d) for d in days],
            "open": [start_price + i for i in range(len(days))],
            "high": [start_price + i + 2.0 for i in range(len(days))],
            "low": [start_price + i - 1.0 for i in range(len(days))],
            "close": [start_price + i + 1.0 for i in range(len(days))],
            "volume": [1000.0 * (i + 1) for i in range(len(days))],
        },
        schema=OHLCV_SCHEMA,
    )


def _reason(tmp_path: Path, name: str, text: str | bytes, exchange: str, symbol: str) -> str:
    _write(tmp_path, name, text)
    with pytest.raises(SourceError) as caught:
        FileSource(folder=str(tmp_path)).fetch_bars(exchange, symbol, *WINDOW)
    message = str(caught.value)
    assert name in message and symbol in message
    return message


def test_vendor_csv_is_read_with_exact_raw_values(tmp_path: Path) -> None:
    _write(tmp_path, "NYSE_IBM.csv", VENDOR_CSV)
    source = FileSource(folder=str(tmp_path))
    bars = source.fetch_bars("NYSE", "IBM", dt.date(2024, 1, 8), dt.date(2024, 1, 9))
    assert bars.schema == pl.Schema(OHLCV_SCHEMA)
    # Raw prices: Adj Close is ignored, the window is inclusive of both ends.
    assert bars.rows() == [
        (date_to_ts(dt.date(2024, 1, 8)), 186.0, 189.5, 185.75, 189.25, 3_900_000.0),
        (date_to_ts(dt.date(2024, 1, 9)), 189.0, 190.0, 187.5, 188.0, 3_100_000.0),
    ]
    (info,) = source.list_symbols()
    assert (info.exchange, info.symbol, info.asset_class) == ("NYSE", "IBM", "equity")
    assert info.genesis_date == dt.date(2024, 1, 5)
    # median of close * volume over the four bars
    dollar_volumes = sorted([186.75 * 4.2e6, 189.25 * 3.9e6, 188.0 * 3.1e6, 190.5 * 2.8e6])
    assert info.median_dollar_volume == pytest.approx(sum(dollar_volumes[1:3]) / 2)
    assert source.skipped_files() == []


def test_vendor_columns_in_any_case_with_datetimes_and_extra_columns(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "LSE_VOD.csv",
        "date,OPEN,high,LOW,close,Volume,Dividends\n"
        "2023-06-30 00:00:00,70.1,71.0,69.9,70.5,1e6,0\n"
        "2023-07-03T00:00:00-04:00,70.5,72.0,70.0,71.5,2e6,0.1\n",
    )
    bars = FileSource(folder=str(tmp_path)).fetch_bars("LSE", "VOD", *WINDOW)
    assert bars["timestamp"].to_list() == [
        date_to_ts(dt.date(2023, 6, 30)),
        date_to_ts(dt.date(2023, 7, 3)),
    ]
    assert bars["close"].to_list() == [70.5, 71.5]
    assert bars.columns == list(OHLCV_SCHEMA)


def test_lakehouse_parquet_folder_with_1d_suffix_and_weekend_bars(tmp_path: Path) -> None:
    days = [dt.date(2024, 3, 1) + dt.timedelta(i) for i in range(10)]  # includes a weekend
    crypto = _lakehouse_frame(days)
    crypto.write_parquet(tmp_path / "BINANCE_BTCUSDT_1d.parquet")
    business = [d for d in days if d.weekday() < 5]
    _lakehouse_frame(business, 50.0).write_parquet(tmp_path / "NASDAQ_AAPL.parquet")
    source = FileSource(folder=str(tmp_path))
    assert source.fetch_bars("BINANCE", "BTCUSDT", *WINDOW).equals(crypto)
    window = source.fetch_bars("BINANCE", "BTCUSDT", dt.date(2024, 3, 3), dt.date(2024, 3, 4))
    assert window.equals(crypto.slice(2, 2))
    infos = {i.key: i for i in source.list_symbols()}
    assert infos["BINANCE_BTCUSDT"].asset_class == "crypto"
    assert infos["NASDAQ_AAPL"].asset_class == "equity"
    assert infos["NASDAQ_AAPL"].genesis_date == dt.date(2024, 3, 1)
    assert source.fetch_bars("BINANCE", "BTCUSDT", dt.date(2020, 1, 1), dt.date(2020, 2, 1)).equals(
        crypto.clear()
    )


def test_vendor_parquet_with_date_and_datetime_columns(tmp_path: Path) -> None:
    days = [dt.date(2024, 2, 1), dt.date(2024, 2, 2)]
    prices = {"Open": [5.0, 6.0], "High": [7.0, 8.0], "Low": [4.0, 5.0], "Close": [6.0, 7.0]}
    pl.DataFrame({"Date": days, **prices, "Volume": [10, 20]}).write_parquet(
        tmp_path / "XETRA_SAP.parquet"
    )
    stamped = [dt.datetime(d.year, d.month, d.day, 16, 30) for d in days]
    pl.DataFrame(
        {"Date": stamped, **prices, "Volume": [10.0, 20.0]},
        schema_overrides={"Date": pl.Datetime("us", "America/New_York")},
    ).write_parquet(tmp_path / "NYSE_KO.parquet")
    source = FileSource(folder=str(tmp_path))
    expected = [date_to_ts(d) for d in days]
    for exchange, symbol in (("XETRA", "SAP"), ("NYSE", "KO")):
        bars = source.fetch_bars(exchange, symbol, *WINDOW)
        assert bars["timestamp"].to_list() == expected  # 00:00 UTC of the session date
        assert bars["volume"].to_list() == [10.0, 20.0]
        assert bars.schema == pl.Schema(OHLCV_SCHEMA)


def test_millisecond_timestamps_become_seconds(tmp_path: Path) -> None:
    day = dt.date(2024, 1, 6)
    _write(
        tmp_path,
        "BINANCE_ETHUSDT_1d.csv",
        "timestamp,open,high,low,close,volume\n"
        f"{date_to_ts(day) * 1000},2200,2250,2190,2240,15000.5\n"
        f"{date_to_ts(day) + 86400},2240,2300,2230,2290,16000\n",
    )
    bars = FileSource(folder=str(tmp_path)).fetch_bars("BINANCE", "ETHUSDT", day, day)
    assert bars.rows() == [(date_to_ts(day), 2200.0, 2250.0, 2190.0, 2240.0, 15000.5)]


def test_raw_bars_are_not_cleaned(tmp_path: Path) -> None:
    # Duplicates, unsorted rows, a non-positive price and a missing volume all come
    # through: the ingestion's sanitiser decides what to do with them.
    _write(
        tmp_path,
        "NYSE_GE.csv",
        "Date,Open,High,Low,Close,Volume\n"
        "2024-01-09,10,11,9,-1,100\n"
        "2024-01-08,10,11,9,10.5,null\n"
        "2024-01-08,10,11,9,10.5,101\n",
    )
    bars = FileSource(folder=str(tmp_path)).fetch_bars("NYSE", "GE", *WINDOW)
    assert bars["close"].to_list() == [-1.0, 10.5, 10.5]
    assert bars["volume"].to_list() == [100.0, None, 101.0]


def test_missing_column_is_named(tmp_path: Path) -> None:
    message = _reason(
        tmp_path, "NYSE_F.csv", "Date,Open,High,Low,Volume\n2024-01-05,1,2,1,5\n", "NYSE", "F"
    )
    assert "missing column 'Close'" in message


def test_text_in_a_price_column_is_named_with_its_line(tmp_path: Path) -> None:
    message = _reason(
        tmp_path,
        "NYSE_T.csv",
        "Date,Open,High,Low,Close,Volume\n2024-01-05,1,2,1,1.5,5\n2024-01-08,1,2,1,n/a?,5\n",
        "NYSE",
        "T",
    )
    assert "'Close'" in message and "'n/a?'" in message and "line 3" in message


def test_empty_file_is_refused(tmp_path: Path) -> None:
    assert "empty" in _reason(tmp_path, "NYSE_E.csv", "", "NYSE", "E")


def test_non_utf8_csv_is_refused(tmp_path: Path) -> None:
    latin1 = "Date,Open,High,Low,Close,Volume,Note\n2024-01-05,1,2,1,1.5,5,Société\n"
    message = _reason(tmp_path, "EPA_ORA.csv", latin1.encode("latin-1"), "EPA", "ORA")
    assert "UTF-8" in message


def test_corrupt_parquet_and_bad_dates_are_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    _lakehouse_frame([dt.date(2024, 1, 2)]).write_parquet(buffer)
    truncated = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    assert "Parquet" in _reason(tmp_path, "X_A.parquet", truncated, "X", "A")
    message = _reason(
        tmp_path, "X_B.csv", "Date,Open,High,Low,Close,Volume\n05/01/2024,1,2,1,1.5,5\n", "X", "B"
    )
    assert "'Date'" in message and "05/01/2024" in message


def test_bad_names_and_bad_files_are_skipped_and_reported(tmp_path: Path) -> None:
    _write(tmp_path, "NYSE_IBM.csv", VENDOR_CSV)
    _write(tmp_path, "NOSEPARATOR.csv", VENDOR_CSV)
    _write(tmp_path, "NY SE_IBM.csv", VENDOR_CSV)
    _write(tmp_path, "NYSE_IBM_1d.csv", VENDOR_CSV)  # a second file for the same symbol
    _write(tmp_path, "NYSE_EMPTY.csv", "")
    _write(tmp_path, "notes.txt", "not data")
    _write(tmp_path, ".DS_Store", "finder noise")
    source = FileSource(folder=str(tmp_path))
    assert [i.key for i in source.list_symbols()] == ["NYSE_IBM"]
    skipped = dict(source.skipped_files())
    assert set(skipped) == {
        "NOSEPARATOR.csv",
        "NY SE_IBM.csv",
        "NYSE_IBM_1d.csv",
        "NYSE_EMPTY.csv",
        "notes.txt",
    }
    assert "EXCHANGE_SYMBOL" in skipped["NOSEPARATOR.csv"]
    assert "invalid exchange" in skipped["NY SE_IBM.csv"]
    assert "NYSE_IBM.csv" in skipped["NYSE_IBM_1d.csv"]
    assert "empty" in skipped["NYSE_EMPTY.csv"]


def test_unknown_symbol_and_missing_folder(tmp_path: Path) -> None:
    _write(tmp_path, "NYSE_IBM.csv", VENDOR_CSV)
    source = FileSource(folder=str(tmp_path))
    with pytest.raises(UnknownSymbolError, match="NYSE_MSFT"):
        source.fetch_bars("NYSE", "MSFT", *WINDOW)
    with pytest.raises(UnknownSymbolError):
        source.fetch_bars("NYSE", "../NYSE_IBM", *WINDOW)
    with pytest.raises(ConfigError, match="QUANT_FILES_DIR"):
        FileSource(folder=str(tmp_path / "absent")).list_symbols()


def test_parsed_files_are_cached_until_the_file_changes(tmp_path: Path) -> None:
    path = _write(tmp_path, "NYSE_IBM.csv", VENDOR_CSV)
    source = FileSource(folder=str(tmp_path))
    first = source.fetch_bars("NYSE", "IBM", *WINDOW)
    stat = path.stat()
    # Same size and modification time: the cached parse is used, the file is not re-read.
    path.write_text(VENDOR_CSV.replace("186.75", "999.99"), encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    for day in range(5, 11):
        window = (dt.date(2024, 1, day), dt.date(2024, 1, 10))
        assert source.fetch_bars("NYSE", "IBM", *window).equals(
            first.filter(pl.col("timestamp") >= date_to_ts(window[0]))
        )
    # A new modification time invalidates it.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert source.fetch_bars("NYSE", "IBM", *WINDOW)["close"][0] == 999.99
