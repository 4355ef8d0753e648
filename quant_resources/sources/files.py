"""Market data from a folder of vendor exports: one CSV or Parquet file per symbol.

This module owns reading such a folder. A file is named `{EXCHANGE}_{SYMBOL}.csv` or
`.parquet`, optionally with `_1d` before the extension (so the lakehouse's own
`ohlcv/` folder is a valid source too). The exchange is the text before the first "_".

Two layouts are understood, column names in any case, extra columns ignored:

- the lakehouse schema: `timestamp` (epoch seconds, or milliseconds: any value above
  1e11 is divided by 1000), `open`, `high`, `low`, `close`, `volume`;
- a vendor export: `Date` (YYYY-MM-DD or a datetime; the bar is stamped at 00:00 UTC of
  that calendar date), `Open`, `High`, `Low`, `Close`, `Adj Close`, `Volume`. `Adj
  Close` is ignored: the lakehouse stores raw traded prices, and adjustments are a
  research decision made downstream.

Bars are returned raw (duplicates, bad prices and all) because sanitising is the
ingestion's job; empty cells become nulls. Parsed files are cached per (path,
modification time, size) within a byte budget that holds a large folder whole, so a run
(listing, then every symbol's window) parses each file once.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl

from quant_resources.errors import ConfigError, InvalidSymbolError, SourceError, UnknownSymbolError
from quant_resources.schema import OHLCV_SCHEMA, SECONDS_PER_DAY, SymbolInfo, date_to_ts, ts_to_date
from quant_resources.sources.base import MarketDataSource
from quant_resources.symbols import validate_name

SUFFIXES = (".csv", ".parquet")
_VALUE_COLUMNS = ("open", "high", "low", "close", "volume")
_MILLISECONDS_ABOVE = 100_000_000_000  # 1e11 s is the year 5138; 1e11 ms is 1973
# Vendors write these for a missing value (Yahoo exports write "null" on holidays).
_NULL_TOKENS = ["null", "NULL", "Null", "NA", "N/A", "n/a", "#N/A", "None", "-"]
_SOURCE = "files"
PARSE_CACHE_BYTES = 1 << 30  # parsed bars kept per process (see _ParsedFiles)
LISTING_THREADS = min(4, 2 * (os.cpu_count() or 1))


class _UnreadableFile(Exception):
    """Why a file cannot give bars; the caller adds the symbol and the file."""


@dataclass(frozen=True)
class _Folder:
    files: dict[tuple[str, str], Path]  # (exchange, symbol) -> file
    skipped: list[tuple[str, str]]  # (file name, reason), from the names alone


def _symbol_of(name: str) -> tuple[str, str]:
    """(exchange, symbol) of a file name, or InvalidSymbolError saying why not."""
    suffix = Path(name).suffix.lower()
    stem = name[: -len(suffix)]
    if stem.endswith("_1d"):
        stem = stem[: -len("_1d")]
    exchange, sep, symbol = stem.partition("_")
    if not sep or not exchange or not symbol:
        raise InvalidSymbolError(
            f"name is not EXCHANGE_SYMBOL{suffix} (optionally EXCHANGE_SYMBOL_1d{suffix}): "
            "rename the file"
        )
    return validate_name(exchange, "exchange"), validate_name(symbol)


@lru_cache(maxsize=16)
def _scan(folder: str, mtime_ns: int) -> _Folder:
    """The data files of `folder` by symbol; `mtime_ns` keys the cache to its contents."""
    files: dict[tuple[str, str], Path] = {}
    skipped: list[tuple[str, str]] = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_file():
            continue  # hidden files (.DS_Store, editor swap files) and folders
        if Path(entry.name).suffix.lower() not in SUFFIXES:
            skipped.append((entry.name, "not a .csv or .parquet file"))
            continue
        try:
            key = _symbol_of(entry.name)
        except InvalidSymbolError as exc:
            skipped.append((entry.name, str(exc)))
            continue
        if key in files:
            skipped.append(
                (entry.name, f"{files[key].name} already provides {key[0]}_{key[1]}: keep one")
            )
            continue
        files[key] = Path(entry.path)
    return _Folder(files=files, skipped=skipped)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_table(path: Path) -> pl.DataFrame:
    """Every column of the file; CSV columns all as text, so nothing is guessed."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _UnreadableFile(f"cannot read the file: {exc.strerror or exc}") from None
    if not raw.strip():
        raise _UnreadableFile("the file is empty: export the symbol again")
    if path.suffix.lower() == ".parquet":
        try:
            return pl.read_parquet(raw)
        except Exception as exc:  # polars and arrow raise several types for a bad file
            raise _UnreadableFile(
                f"corrupt or unreadable Parquet ({_first_line(exc)}): export the symbol again"
            ) from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte-order mark, as spreadsheet programs write
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _UnreadableFile(
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}): "
            "re-save the export as UTF-8 CSV"
        ) from None
    try:
        return pl.read_csv(raw, infer_schema=False, null_values=_NULL_TOKENS)
    except Exception as exc:  # polars raises ComputeError, NoDataError, ... for bad CSV
        raise _UnreadableFile(
            f"unreadable CSV ({_first_line(exc)}): check the delimiter is ',' and "
            "every row has the header's columns"
        ) from None


def _bad_value(table: pl.DataFrame, column: str, parsed: pl.Series) -> tuple[str, int] | None:
    """The first value of `column` that `parsed` could not read, with its CSV line."""
    original = table[column]
    failed = parsed.is_null() & original.is_not_null()
    if not failed.any():
        return None
    row = int(failed.arg_true()[0])
    return str(original[row]), row + 2  # line 1 is the header


def _numbers(table: pl.DataFrame, column: str) -> pl.Series:
    series = table[column]
    if series.dtype == pl.String:
        parsed = series.str.strip_chars().cast(pl.Float64, strict=False)
        if (bad := _bad_value(table, column, parsed)) is not None:
            value, line = bad
            raise _UnreadableFile(
                f"column {column!r} holds text, not a number: {value!r} on line {line}; "
                "fix or remove that row"
            )
        return parsed
    if series.dtype.is_numeric():
        return series.cast(pl.Float64)
    raise _UnreadableFile(f"column {column!r} holds {series.dtype}, not numbers")


def _timestamps(table: pl.DataFrame, column: str) -> pl.Series:
    """Epoch seconds from a lakehouse `timestamp` column (seconds or milliseconds)."""
    series = table[column]
    if series.dtype == pl.Datetime or series.dtype == pl.Date:
        seconds = series.dt.epoch("s")
    else:
        if series.dtype == pl.String:
            parsed = series.str.strip_chars().cast(pl.Float64, strict=False)
        elif series.dtype.is_numeric():
            parsed = series.cast(pl.Float64)
        else:
            raise _UnreadableFile(f"column {column!r} holds {series.dtype}, not epoch seconds")
        unusable = parsed.is_null() | ~parsed.is_finite().fill_null(False)
        if unusable.any():
            row = int(unusable.arg_true()[0])
            raise _UnreadableFile(
                f"column {column!r} holds {str(series[row])!r} on line {row + 2}: expected "
                "epoch seconds or milliseconds"
            )
        seconds = parsed.zip_with(parsed <= _MILLISECONDS_ABOVE, parsed // 1000)
    return seconds.cast(pl.Int64)


def _session_dates(table: pl.DataFrame, column: str) -> pl.Series:
    """Epoch seconds at 00:00 UTC of a vendor `Date` column's calendar dates."""
    series = table[column]
    if series.dtype == pl.Datetime:
        days = series.dt.date()  # the local date of the bar, time zone and all
    elif series.dtype == pl.Date:
        days = series
    elif series.dtype == pl.String:
        # The first ten characters are the date of "2024-01-05" and "2024-01-05 00:00:00".
        days = series.str.strip_chars().str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
        if (bad := _bad_value(table, column, days)) is not None or days.null_count():
            value, line = bad or ("", int(days.is_null().arg_true()[0]) + 2)
            raise _UnreadableFile(
                f"column {column!r} holds {value!r} on line {line}: expected a date "
                "YYYY-MM-DD or a datetime"
            )
    else:
        raise _UnreadableFile(f"column {column!r} holds {series.dtype}, not dates")
    if days.null_count():
        raise _UnreadableFile(f"column {column!r} has an empty value: every bar needs a date")
    return days.cast(pl.Int32).cast(pl.Int64) * SECONDS_PER_DAY


def _columns(table: pl.DataFrame) -> tuple[dict[str, str], str]:
    """The file's column names by lower-case name, and its time column; errors if one lacks."""
    by_name: dict[str, str] = {}
    for name in table.columns:
        by_name.setdefault(name.strip().lower(), name)
    time_column = by_name.get("timestamp") or by_name.get("date")
    vendor = "timestamp" not in by_name
    missing = [c for c in _VALUE_COLUMNS if c not in by_name]
    if time_column is None:
        missing.insert(0, "date")
    if missing:
        shown = [c.capitalize() if vendor else c for c in missing]
        raise _UnreadableFile(
            f"missing column{'s' if len(shown) > 1 else ''} {', '.join(map(repr, shown))} "
            f"(found {', '.join(map(repr, table.columns)) or 'none'}); expected Date (or "
            "timestamp), Open, High, Low, Close, Volume in any case"
        )
    return by_name, time_column


def _parse_text_columns(table: pl.DataFrame, by_name: dict[str, str], time_column: str) -> pl.DataFrame | None:
    """All bars of a CSV read as text, in one query; None when a value does not parse.

    The common case costs one query instead of one per column and check. On None the
    column-by-column path below reads the file again and names the value and its line.
    """
    if any(table[name].dtype != pl.String for name in (time_column, *(by_name[c] for c in _VALUE_COLUMNS))):
        return None
    text = pl.col(time_column).str.strip_chars()
    if "timestamp" in by_name:
        epoch = text.cast(pl.Float64, strict=False)
        timestamp = pl.when(epoch <= _MILLISECONDS_ABOVE).then(epoch).otherwise(epoch // 1000)
        time_ok = (epoch.is_not_null() & epoch.is_finite()).all()
    else:
        days = text.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
        timestamp = days.cast(pl.Int32).cast(pl.Int64) * SECONDS_PER_DAY
        time_ok = days.is_not_null().all()
    numbers = {c: pl.col(by_name[c]).str.strip_chars().cast(pl.Float64, strict=False) for c in _VALUE_COLUMNS}
    parsed_ok = pl.all_horizontal(
        [time_ok] + [~(n.is_null() & pl.col(by_name[c]).is_not_null()).any() for c, n in numbers.items()]
    )
    parsed = (
        table.lazy()
        .select([timestamp.cast(pl.Int64).alias("timestamp")] + [n.alias(c) for c, n in numbers.items()] + [parsed_ok.alias("_ok")])
        .collect()
    )
    if parsed.height and not parsed["_ok"][0]:
        return None
    return parsed.drop("_ok").cast(OHLCV_SCHEMA)


def _parse(path: str) -> pl.DataFrame:
    """All bars of one file in OHLCV_SCHEMA, in file order."""
    table = _read_table(Path(path))
    by_name, time_column = _columns(table)
    parsed = _parse_text_columns(table, by_name, time_column)
    if parsed is not None:
        return parsed
    vendor = "timestamp" not in by_name
    timestamps = _session_dates(table, time_column) if vendor else _timestamps(table, time_column)
    return pl.DataFrame(
        [timestamps.alias("timestamp")]
        + [_numbers(table, by_name[c]).alias(c) for c in _VALUE_COLUMNS]
    ).cast(OHLCV_SCHEMA)


class _ParsedFiles:
    """Parsed files by (path, mtime, size), the least recently used dropped past a byte budget.

    A run lists every file twice (candidates, then ohlcv) and fetches each: with the
    folder held whole (1000 ten-year files take ~130 MB) each file is parsed once per
    process, where a 256-entry cache re-parsed a 1000-file folder three times. A file
    that changed replaces its older parse.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[tuple[str, int, int], tuple[pl.DataFrame, int]] = OrderedDict()
        self._key_of_path: dict[str, tuple[str, int, int]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, path: str, mtime_ns: int, size: int) -> pl.DataFrame:
        key = (path, mtime_ns, size)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
        frame = _parse(path)  # outside the lock: threads parse different files at once
        with self._lock:
            self._drop(self._key_of_path.get(path))
            weight = int(frame.estimated_size())
            self._entries[key] = (frame, weight)
            self._key_of_path[path] = key
            self._bytes += weight
            while self._bytes > self.budget_bytes and len(self._entries) > 1:
                self._drop(next(iter(self._entries)))
        return frame

    def _drop(self, key: tuple[str, int, int] | None) -> None:
        entry = self._entries.pop(key, None) if key is not None else None
        if entry is not None:
            self._bytes -= entry[1]
            if self._key_of_path.get(key[0]) == key:
                del self._key_of_path[key[0]]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._key_of_path.clear()
            self._bytes = 0


_PARSED = _ParsedFiles(PARSE_CACHE_BYTES)


def _as_date(value: dt.date) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


DELISTED_AFTER_SESSIONS = 30  # a file ending this many sessions before the newest is a delisting


def _mark_delistings(infos: list[SymbolInfo]) -> list[SymbolInfo]:
    """A file whose last bar is more than `DELISTED_AFTER_SESSIONS` sessions (of its own
    calendar) before the newest last bar of the folder is a delisting at its last bar; every
    other file trades on (`delisting_date` None). `infos` carry their last bar date in
    `delisting_date` on the way in."""
    newest = max((info.delisting_date for info in infos if info.delisting_date), default=None)
    out = []
    for info in infos:
        last = info.delisting_date
        if newest is None or last is None:
            out.append(replace(info, delisting_date=None))
            continue
        after = last + dt.timedelta(days=1)
        behind = (
            (newest - last).days
            if info.asset_class == "crypto"
            else int(np.busday_count(after, newest + dt.timedelta(days=1)))
        )
        out.append(replace(info, delisting_date=last if behind > DELISTED_AFTER_SESSIONS else None))
    return out


class FileSource(MarketDataSource):
    """Bars from `folder`, one `{EXCHANGE}_{SYMBOL}[_1d].csv|.parquet` file per symbol.

    `list_symbols` derives each symbol's metadata from its bars: asset class "crypto"
    when any bar falls on a Saturday or Sunday (else "equity"), genesis = the first bar's
    date, median dollar volume = median(close * volume), delisting date = the last bar's
    date when the file ends more than 30 sessions before the newest file of the folder
    (`_mark_delistings`; None otherwise). Files that cannot be listed
    (bad name, unreadable content, no bars) are skipped; `skipped_files()` says why.
    """

    folder: str

    def _folder(self) -> _Folder:
        path = Path(self.folder)
        try:
            mtime_ns = path.stat().st_mtime_ns
        except OSError:
            mtime_ns = None
        if mtime_ns is None or not path.is_dir():
            raise ConfigError(
                f"files source folder {path} does not exist or is not a folder: point "
                "QUANT_FILES_DIR at a folder of EXCHANGE_SYMBOL.csv/.parquet exports"
            )
        return _scan(str(path.resolve()), mtime_ns)

    def _bars(self, exchange: str, symbol: str, path: Path) -> pl.DataFrame:
        try:
            stat = path.stat()
            return _PARSED.get(str(path), stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            raise SourceError(
                symbol, "the file vanished while reading it", file=str(path), source=_SOURCE
            ) from None
        except _UnreadableFile as exc:
            raise SourceError(symbol, str(exc), file=str(path), source=_SOURCE) from None

    def _describe(self, exchange: str, symbol: str, path: Path) -> SymbolInfo | tuple[str, str]:
        """The symbol's metadata from its bars, or (file name, why it is skipped)."""
        try:
            bars = self._bars(exchange, symbol, path)
        except SourceError as exc:
            return path.name, exc.reason
        if bars.is_empty():
            return path.name, "no bars in the file"
        stats = bars.select(
            first=pl.col("timestamp").min(),
            last=pl.col("timestamp").max(),
            weekend=((pl.col("timestamp") // SECONDS_PER_DAY + 3) % 7 >= 5).any(),
            dollar_volume=(pl.col("close") * pl.col("volume")).median(),
        ).row(0, named=True)
        return SymbolInfo(
            exchange=exchange,
            symbol=symbol,
            asset_class="crypto" if stats["weekend"] else "equity",
            genesis_date=ts_to_date(stats["first"]),
            median_dollar_volume=float(stats["dollar_volume"] or 0.0),
            delisting_date=ts_to_date(stats["last"]),  # provisional: `_listing` keeps it or not
        )

    def _listing(self) -> tuple[list[SymbolInfo], list[tuple[str, str]]]:
        folder = self._folder()
        infos: list[SymbolInfo] = []
        skipped = list(folder.skipped)
        # Parsing releases the GIL: a few threads read a large folder on every core.
        with ThreadPoolExecutor(max_workers=LISTING_THREADS, thread_name_prefix="files-source") as pool:
            described = pool.map(lambda item: self._describe(*item[0], item[1]), folder.files.items())
            for outcome in described:
                if isinstance(outcome, SymbolInfo):
                    infos.append(outcome)
                else:
                    skipped.append(outcome)
        return _mark_delistings(infos), sorted(skipped)

    def list_symbols(self) -> list[SymbolInfo]:
        return self._listing()[0]

    def skipped_files(self) -> list[tuple[str, str]]:
        """(file name, reason) of every file in the folder that `list_symbols` left out."""
        return self._listing()[1]

    def fetch_bars(self, exchange: str, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        """Raw bars of the symbol's file with timestamps in [start, end + 1 day)."""
        try:
            key = (validate_name(exchange, "exchange"), validate_name(symbol))
        except InvalidSymbolError as exc:
            raise UnknownSymbolError(str(symbol), str(exc), source=_SOURCE) from None
        path = self._folder().files.get(key)
        if path is None:
            raise UnknownSymbolError(
                symbol,
                f"no file {exchange}_{symbol}.csv or .parquet (optionally with _1d) in "
                f"{self.folder}: add the export or pick a symbol from list_symbols()",
                source=_SOURCE,
            )
        bars = self._bars(exchange, symbol, path)
        lo = date_to_ts(_as_date(start))
        hi = date_to_ts(_as_date(end)) + SECONDS_PER_DAY
        return bars.filter((pl.col("timestamp") >= lo) & (pl.col("timestamp") < hi))
