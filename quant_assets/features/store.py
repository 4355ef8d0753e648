"""The `tv_technicals_1d` feature table: a Delta Lake table of indicators, one version per commit.

Layout: the columns of `FEATURE_SCHEMA` plus `month` ("YYYY-MM", derived from `date`),
the partition column. A daily write touches one month's folder; a reader asking for a
date range prunes the others.

Every write replaces exactly the dates it covers (a Delta overwrite with a predicate on
`date`) in one atomic commit, so re-running a day never duplicates rows and readers
see either the old or the new day, never half of it. Older versions stay readable
(`read_features(path, version=...)`) until someone vacuums the table.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import deltalake
import numpy as np
import polars as pl
import pyarrow as pa
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from quant_assets.features.indicators import (
    FEATURE_COLUMNS,
    FEATURE_SCHEMA,
    FLOAT_COLUMNS,
    WARMUP_BARS,
    FeaturesSchema,
    compute_indicators,
)
from quant_resources.errors import QuantError
from quant_resources.layout import FEATURE_TABLE
from quant_resources.schema import date_to_ts

PARTITION_COLUMN = "month"
_WRITE_ID_KEY = "quant.write_id"
# delta-rs already retries a commit that lost a race when the winner's changes do not
# conflict with it; this bounds our own retries of the whole write on a real conflict.
MAX_WRITE_ATTEMPTS = 8
# Symbols whose indicators are computed, validated and handed to the writer together.
SYMBOLS_PER_CHUNK = 125


# Indicator values almost never repeat, so dictionary pages only cost time (the default
# dictionary encoding made a 2.5M-row write two to three times slower) and no space.
# Small row groups (2048 rows): delta-rs keeps each open partition's (month's) rows in
# memory until a row group fills, and a month of 1000 symbols is ~30k rows, so with the
# default (a million rows) a 10-year build held every month: 2.6 GB peak in a bench of
# the same shape, 1.1-1.4 GB with 2048-8192 rows (docs/benchmarks.md).
_WRITER_PROPERTIES = deltalake.WriterProperties(
    compression="SNAPPY",
    max_row_group_size=2048,
    column_properties={
        column: deltalake.ColumnProperties(dictionary_enabled=False) for column in FLOAT_COLUMNS
    },
)


class FeatureStoreError(QuantError):
    """The feature table cannot be read or written as asked."""


class FeatureTableNotFoundError(FeatureStoreError, FileNotFoundError):
    """No Delta table at the path: nothing has been written yet."""


@dataclass(frozen=True)
class UpdateResult:
    """What one incremental update committed."""

    version: int  # the Delta version of the commit
    rows_written: int
    symbols: int  # distinct symbols among the rows written
    start: dt.date
    end: dt.date


def current_version(table_path: str | Path) -> int | None:
    """The latest Delta version of the table, None when no table exists at the path."""
    if not deltalake.DeltaTable.is_deltatable(str(table_path)):
        return None
    return deltalake.DeltaTable(str(table_path)).version()


def _check_range(start: dt.date, end: dt.date) -> None:
    if start > end:
        raise FeatureStoreError(f"empty date range: start {start} is after end {end}")


def _range_predicate(start: dt.date, end: dt.date) -> str:
    # The month bounds let delta-rs skip other partitions' files without reading stats;
    # the date bounds are the actual replacement rule. Dates render as ISO literals only.
    return (
        f"{PARTITION_COLUMN} >= '{start:%Y-%m}' AND {PARTITION_COLUMN} <= '{end:%Y-%m}' "
        f"AND date >= '{start.isoformat()}' AND date <= '{end.isoformat()}'"
    )


def _to_table_rows(features: pl.DataFrame, start: dt.date, end: dt.date) -> pl.DataFrame:
    missing = [c for c in FEATURE_COLUMNS if c not in features.columns]
    if missing:
        raise FeatureStoreError(
            f"features lack column(s) {missing}: pass the output of compute_indicators"
        )
    rows = features.select(pl.col(c).cast(t) for c, t in FEATURE_SCHEMA.items()).filter(
        pl.col("date").is_between(start, end)
    )
    # Fail before the commit: the table never holds rows that break the L2 contract.
    FeaturesSchema.validate(rows)
    return _with_partition_column(rows)


def _with_partition_column(rows: pl.DataFrame) -> pl.DataFrame:
    """Add `month` and order rows by (month, symbol, date).

    Month first: the partitioned writer then meets each partition's rows in one run
    (measured up to twice as fast as symbol-major order on 2.5M rows). Formatting the
    few distinct dates and sorting stably on an integer month key, rather than
    formatting every row and sorting on strings, took the step from ~3 s to ~0.7 s.
    """
    dates = rows["date"].unique()
    month = pl.col("date").replace_strict(dates, dates.dt.strftime("%Y-%m"), return_dtype=pl.String)
    month_key = pl.col("date").dt.year().cast(pl.Int32) * 12 + pl.col("date").dt.month()
    symbol, date = pl.col("symbol"), pl.col("date")
    in_order = (symbol > symbol.shift(1)) | ((symbol == symbol.shift(1)) & (date > date.shift(1)))
    # compute_indicators' output is already in order: checking is cheaper than sorting.
    if not rows.select(in_order.slice(1).all()).item():
        rows = rows.sort("symbol", "date")
    ordered = rows.sort(month_key, maintain_order=True)
    return ordered.with_columns(month.alias(PARTITION_COLUMN))


def _table_arrow_schema() -> pa.Schema:
    empty = pl.DataFrame(schema=FEATURE_SCHEMA).with_columns(
        pl.col("date").dt.strftime("%Y-%m").alias(PARTITION_COLUMN)
    )
    return empty.to_arrow().schema


def _ensure_table(table_path: Path) -> None:
    """Create the empty partitioned table (its version 0) if nobody has yet.

    Creating it empty, apart from any data, lets every data write be the same predicate
    overwrite: a data write that also created the table could, racing another creator,
    be retried by delta-rs as a plain append and duplicate rows.
    """
    if deltalake.DeltaTable.is_deltatable(str(table_path)):
        return
    table_path.mkdir(parents=True, exist_ok=True)
    try:
        deltalake.DeltaTable.create(
            str(table_path),
            _table_arrow_schema(),
            mode="ignore",
            partition_by=[PARTITION_COLUMN],
            name=FEATURE_TABLE,
            description="daily technical indicators per symbol (quant_assets.features)",
        )
    except DeltaError:
        # Another writer created it first: fine as long as the table now exists.
        if not deltalake.DeltaTable.is_deltatable(str(table_path)):
            raise


def _version_of_commit(table_path: Path, write_id: str) -> int:
    """The version whose commit carries `write_id`, read from the Delta log files.

    Neither the DeltaTable written through (it may have moved on to a later writer's
    version) nor `DeltaTable.history()` (it numbers commits by counting down from a
    latest version read separately, so a concurrent commit shifts the labels) can say
    which version is ours. The log's `NNN.json` file name can. Local tables only.
    """
    log_dir = table_path / "_delta_log"
    latest = deltalake.DeltaTable(str(table_path)).version()
    for version in range(latest, -1, -1):
        commit_file = log_dir / f"{version:020d}.json"
        if not commit_file.exists():
            break  # older commits were cleaned up; ours is never that old
        for line in commit_file.read_text().splitlines():
            action = json.loads(line)
            if action.get("commitInfo", {}).get(_WRITE_ID_KEY) == write_id:
                return version
    raise FeatureStoreError(f"{table_path}: commit {write_id} not found in the Delta log")


class _RowStream:
    """The rows of one write as Arrow batches, chunk by chunk, counted as they pass.

    delta-rs consumes the batches and commits only after the last one, so a chunk that
    fails (an L2 violation, a count that does not add up) aborts the write before the
    commit. It reaches the caller wrapped in a DeltaError; `error` keeps the original.
    """

    def __init__(self, chunks: Iterable[pl.DataFrame], rows_expected: int) -> None:
        self.chunks = chunks
        self.rows_expected = rows_expected
        self.rows = 0
        self.symbols = 0
        self.error: BaseException | None = None

    def batches(self, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        try:
            for rows in self.chunks:
                self.rows += rows.height
                self.symbols += rows["symbol"].n_unique()  # chunks never share a symbol
                yield from rows.to_arrow().cast(schema).to_batches()
            if self.rows != self.rows_expected:
                raise FeatureStoreError(
                    f"computed {self.rows} feature rows where the bars give {self.rows_expected}: "
                    "nothing was committed"
                )
        except BaseException as error:
            self.error = error
            raise


def _commit(
    table_path: Path, stream: _RowStream, start: dt.date, end: dt.date
) -> int:
    _ensure_table(table_path)
    write_id = uuid.uuid4().hex
    metadata = {
        _WRITE_ID_KEY: write_id,
        "quant.dates": f"{start.isoformat()}..{end.isoformat()}",
        "quant.rows": str(stream.rows_expected),
    }
    schema = _table_arrow_schema()
    try:
        deltalake.write_deltalake(
            str(table_path),
            pa.RecordBatchReader.from_batches(schema, stream.batches(schema)),
            mode="overwrite",
            predicate=_range_predicate(start, end),
            commit_properties=deltalake.CommitProperties(custom_metadata=metadata),
            writer_properties=_WRITER_PROPERTIES,
        )
    except DeltaError:
        if stream.error is not None:
            raise stream.error from None
        raise
    return _version_of_commit(table_path, write_id)


def _write_chunks(
    path: Path,
    chunks: Callable[[], Iterable[pl.DataFrame]],
    rows_expected: int,
    start: dt.date,
    end: dt.date,
) -> tuple[int, _RowStream]:
    """Commit the table rows `chunks()` yields (called again on a retry); one commit."""
    for attempt in range(1, MAX_WRITE_ATTEMPTS + 1):
        stream = _RowStream(chunks(), rows_expected)
        try:
            return _commit(path, stream, start, end), stream
        except (CommitFailedError, DeltaError) as error:
            # Only a lost race is worth retrying; a schema mismatch would fail again.
            if not _is_race(error) or attempt == MAX_WRITE_ATTEMPTS:
                raise FeatureStoreError(
                    f"{path}: cannot commit features for {start}..{end} "
                    f"(attempt {attempt} of {MAX_WRITE_ATTEMPTS}): {error}"
                ) from error
            # Exponential backoff with full jitter: writers that collided spread out
            # instead of colliding again in lock step.
            time.sleep(random.uniform(0.0, min(2.0, 0.05 * 2**attempt)))
    raise AssertionError("unreachable")


def write_features(
    table_path: str | Path, features: pl.DataFrame, start: dt.date, end: dt.date
) -> int:
    """Replace the table's rows dated in [start, end] with `features`' rows in that range.

    Creates the table on first write. Rows of `features` outside [start, end] are
    ignored; rows of the table outside it are kept. Dates in the range that have no
    row in `features` end up with no row in the table. One atomic commit; returns its
    Delta version. Raises pandera's SchemaError if a row breaks `FeaturesSchema`.
    """
    _check_range(start, end)
    rows = _to_table_rows(features, start, end)
    version, _ = _write_chunks(Path(table_path), lambda: [rows], rows.height, start, end)
    return version


def _is_race(error: Exception) -> bool:
    if isinstance(error, CommitFailedError):
        return True
    message = str(error).lower()
    return "conflict" in message or "concurrent" in message


def warmup_start(start: dt.date, warmup_bars: int = WARMUP_BARS) -> dt.date:
    """First date of bars to load so every symbol has `warmup_bars` sessions before `start`.

    Counts Monday to Friday with 30 days more for holidays (the NYSE closes about 10
    weekdays a year: 21 in 520 sessions): for a 24/7 symbol this loads more than needed,
    which `update_features` trims.
    """
    calendar_days = warmup_bars * 7 // 5 + 30
    return start - dt.timedelta(days=calendar_days)


def _trim_to_warmup(
    bars: pl.LazyFrame, start: dt.date, end: dt.date, warmup_bars: int
) -> pl.LazyFrame:
    """Each symbol's last `warmup_bars` bars before `start`, and its bars in [start, end].

    A fixed warm-up makes the update's cost and result independent of how much history
    the caller loaded. Bars after `end` cannot change [start, end]: indicators are causal.
    """
    timestamp = pl.col("timestamp").cast(pl.Int64)
    start_ts, after_end_ts = date_to_ts(start), date_to_ts(end + dt.timedelta(days=1))
    in_range = bars.filter((timestamp >= start_ts) & (timestamp < after_end_ts))
    newest_first = timestamp.rank(method="ordinal", descending=True).over("symbol")
    warmup = bars.filter(timestamp < start_ts).filter(newest_first <= warmup_bars)
    return pl.concat([warmup, in_range], how="vertical_relaxed")


def update_features(
    table_path: str | Path,
    bars: pl.DataFrame | pl.LazyFrame,
    start: dt.date,
    end: dt.date,
    warmup_bars: int = WARMUP_BARS,
) -> UpdateResult:
    """Compute indicators from `bars` and replace the table's rows for [start, end].

    bars: OHLCV of every symbol (see `compute_indicators`), from `warmup_start(start)`
    or earlier up to `end`. Each symbol keeps its last `warmup_bars` bars before
    `start`; with the default the stored values equal a full rebuild's to floating-point
    precision (a symbol listed inside the window is computed from its first bar, as in
    a rebuild). With fewer bars the recursive indicators (EMA, RSI, ATR, MACD) differ
    from a full rebuild by up to (1 - 1/14) ** bars of their seed error.
    """
    _check_range(start, end)
    if warmup_bars < 0:
        raise FeatureStoreError(f"warmup_bars must be >= 0, got {warmup_bars}")
    frame = bars.lazy() if isinstance(bars, pl.DataFrame) else bars
    timestamp = pl.col("timestamp").cast(pl.Int64)
    in_range = (timestamp >= date_to_ts(start)) & (timestamp < date_to_ts(end + dt.timedelta(days=1)))
    # compute_indicators gives one row per bar (it refuses duplicate bars).
    rows_expected = frame.filter(in_range).select(pl.len()).collect().item()

    def chunks() -> Iterator[pl.DataFrame]:
        for symbols in _symbol_groups(frame, SYMBOLS_PER_CHUNK):
            part = frame if symbols is None else frame.filter(pl.col("symbol").is_in(symbols))
            features = compute_indicators(_trim_to_warmup(part, start, end, warmup_bars))
            yield _to_table_rows(features, start, end)

    version, stream = _write_chunks(Path(table_path), chunks, rows_expected, start, end)
    return UpdateResult(
        version=version, rows_written=stream.rows, symbols=stream.symbols, start=start, end=end
    )


def _symbol_groups(frame: pl.LazyFrame, size: int) -> list[list[str] | None]:
    """The frame's symbols in sorted groups of `size`; [None] (everything at once) when small.

    Indicators are per symbol, so computing a group at a time gives the same rows while
    memory holds one group's intermediate columns instead of the whole universe's (a
    10-year backfill of 1000 symbols peaked at 3 GB). A null symbol keeps one group, so
    compute_indicators refuses it as before.
    """
    symbols = frame.select(pl.col("symbol").unique()).collect()["symbol"]
    if symbols.len() <= size or symbols.null_count():
        return [None]
    names = sorted(symbols.to_list())
    return [names[i : i + size] for i in range(0, len(names), size)]


def read_features(
    table_path: str | Path,
    version: int | None = None,
    symbols: list[str] | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    columns: list[str] | None = None,
) -> pl.DataFrame:
    """Rows of the table (latest version, or `version` for time travel), sorted by (symbol, date).

    Filters are inclusive and optional. Returns the columns of `FEATURE_SCHEMA`, or
    `symbol`, `date` and `columns` of it (the `month` partition column is a storage
    detail and is dropped).
    """
    wanted = dict(FEATURE_SCHEMA)
    if columns is not None:
        unknown = sorted(set(columns) - set(FEATURE_SCHEMA))
        if unknown:
            raise FeatureStoreError(f"{table_path}: no column(s) {unknown} in the feature table")
        wanted = {c: FEATURE_SCHEMA[c] for c in ("symbol", "date", *columns) if c in FEATURE_SCHEMA}
    path = Path(table_path)
    if not deltalake.DeltaTable.is_deltatable(str(path)):
        raise FeatureTableNotFoundError(
            f"{path}: no feature table here yet; materialise the feature asset first"
        )
    try:
        table = deltalake.DeltaTable(str(path), version=version)
    except (DeltaError, TableNotFoundError) as error:
        latest = current_version(path)
        raise FeatureStoreError(
            f"{path}: cannot load version {version} (latest is {latest}; versions removed "
            f"by vacuum or log cleanup are gone): {error}"
        ) from error
    frame = pl.scan_delta(table)
    if start is not None:
        frame = frame.filter(pl.col(PARTITION_COLUMN) >= f"{start:%Y-%m}", pl.col("date") >= start)
    if end is not None:
        frame = frame.filter(pl.col(PARTITION_COLUMN) <= f"{end:%Y-%m}", pl.col("date") <= end)
    if symbols is not None:
        frame = frame.filter(pl.col("symbol").is_in(list(symbols)))
    return (
        frame.select(pl.col(c).cast(t) for c, t in wanted.items())
        .sort("symbol", "date")
        .collect()
    )


# How far back `read_features_as_of` looks for a symbol's latest row: a weekend or a
# holiday week leaves an equity without a row on the day itself.
AS_OF_WINDOW_DAYS = 14


def read_features_as_of(
    table_path: str | Path,
    version: int,
    day: dt.date,
    symbols: list[str],
    window_days: int = AS_OF_WINDOW_DAYS,
) -> pl.DataFrame:
    """Each symbol's latest row dated in [day - window_days, day] at Delta `version`.

    Point in time: only rows dated on or before `day` are read, at a fixed version (time
    travel), so later commits (new days, rewritten or deleted rows of any date) cannot
    change the result. Symbols without a row in the window are simply absent. Columns of
    `FEATURE_SCHEMA`, sorted by symbol.
    """
    if window_days < 0:
        raise FeatureStoreError(f"window_days must be >= 0, got {window_days}")
    rows = read_features(
        table_path,
        version=version,
        symbols=sorted(set(symbols)),
        start=day - dt.timedelta(days=window_days),
        end=day,
    )
    # read_features sorts by (symbol, date): the last row of each symbol is its latest.
    return rows.group_by("symbol", maintain_order=True).last().select(FEATURE_COLUMNS)


def as_of_matrix(
    rows: pl.DataFrame,
    dates: np.ndarray | list[dt.date],
    symbols: list[str],
    column: str,
    window_days: int = AS_OF_WINDOW_DAYS,
) -> np.ndarray:
    """(T, N) values of `column` as of each of `dates` for each of `symbols`: the value of
    the symbol's latest row dated in [date - window_days, date], the rule of
    `read_features_as_of`, applied to rows already read (one read for every date).

    NaN where the symbol has no row in the window, or its latest row's value is null.
    Pure: `rows` (symbol, date, column) is any frame, e.g. `read_features(columns=[column])`.
    """
    if window_days < 0:
        raise FeatureStoreError(f"window_days must be >= 0, got {window_days}")
    days = np.asarray(dates, dtype="datetime64[D]").astype(np.int64)
    out = np.full((days.size, len(symbols)), np.nan)
    if rows.height == 0 or days.size == 0:
        return out
    frame = rows.select(
        pl.col("symbol"),
        pl.col("date").cast(pl.Date).cast(pl.Int64).alias("day"),  # days since 1970-01-01
        pl.col(column).cast(pl.Float64).fill_null(np.nan).alias("value"),
    ).sort("symbol", "day")
    if frame.select(pl.struct("symbol", "day").is_duplicated().any()).item():
        raise FeatureStoreError(f"feature rows repeat a (symbol, date): cannot take {column} as of a day")
    index = {s: j for j, s in enumerate(symbols)}
    for (symbol,), part in frame.partition_by("symbol", as_dict=True, maintain_order=True).items():
        j = index.get(symbol)
        if j is None:
            continue
        row_days = part["day"].to_numpy()
        values = part["value"].to_numpy()
        latest = np.searchsorted(row_days, days, side="right") - 1  # last row dated <= day
        found = latest >= 0
        taken = np.where(found, latest, 0)
        found &= days - row_days[taken] <= window_days
        out[:, j] = np.where(found, values[taken], np.nan)
    return out


def version_readable(table_path: str | Path, version: int) -> bool:
    """Whether Delta `version` of the table can still be read: its log is there and every
    data file it references exists (a vacuum removes them). Local tables only."""
    path = Path(table_path)
    if not deltalake.DeltaTable.is_deltatable(str(path)):
        return False
    try:
        table = deltalake.DeltaTable(str(path), version=version)
        uris = table.file_uris()
    except (DeltaError, TableNotFoundError, OSError):
        return False
    return all(Path(uri.removeprefix("file://")).exists() for uri in uris)
