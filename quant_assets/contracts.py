"""Data contracts (Pandera, polars backend): one schema per tier, used twice.

Inside an asset, `enforce(...)` fails fast with a `ContractViolation` (a Pandera
`SchemaError`) that names the symbol, the column and the rows. As Dagster asset checks,
`check_result_from_cases(...)` / `check_result_in_chunks(...)` turn the same schema's
failure cases into an `AssetCheckResult` whose metadata, visible in the UI, lists them.

Tiers: L0 OHLCV bars (ingestion), L1 returns (returns matrix), L2 features (feature
store), L3 selection, L4 weights. Frames are validated eagerly: a LazyFrame would only
be schema-checked.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg
import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData
from pandera.errors import SchemaError, SchemaErrors

from quant_resources.errors import QuantError
from quant_resources.schema import SECONDS_PER_DAY, ts_to_date

MAX_CASES_SHOWN = 20


class ContractViolation(QuantError, SchemaError):
    """A frame that breaks a contract; the message lists symbol, column and rows."""

    def __init__(self, contract: str, failure_cases: pl.DataFrame, message: str):
        QuantError.__init__(self, message)
        self.contract = contract
        self.failure_cases = failure_cases
        self.args = (message,)

    def __str__(self) -> str:
        return self.args[0]


# -- L0: OHLCV bars ----------------------------------------------------------------


def _by_symbol(expr: pl.Expr, data: PolarsData) -> pl.Expr:
    names = data.lazyframe.collect_schema().names()
    return expr.over("symbol") if "symbol" in names else expr


def _timestamps_increase(data: PolarsData) -> pl.LazyFrame:
    diff = _by_symbol(pl.col("timestamp").diff(), data)
    return data.lazyframe.select((diff.is_null() | (diff > 0)).alias("timestamps_increase"))


def _high_is_highest(data: PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(
        (
            (pl.col("high") >= pl.max_horizontal("open", "close"))
            & (pl.col("high") >= pl.col("low"))
        ).alias("high_is_highest")
    )


def _low_is_lowest(data: PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(
        (pl.col("low") <= pl.min_horizontal("open", "close")).alias("low_is_lowest")
    )


def _on_day_boundary(data: PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(
        ((pl.col("timestamp") % SECONDS_PER_DAY) == 0).alias("timestamp_at_midnight_utc")
    )


def _price(name: str) -> pa.Column:
    return pa.Column(
        pl.Float64, checks=[pa.Check.gt(0), pa.Check(lambda d: d.lazyframe.select(pl.col(d.key).is_finite()), name=f"{name}_finite")], nullable=False
    )


def ohlcv_schema(with_symbol: bool = True) -> pa.DataFrameSchema:
    """L0: one row per bar. With `with_symbol`, a batch of many symbols in a `symbol` column."""
    columns: dict[str, pa.Column] = {}
    if with_symbol:
        columns["symbol"] = pa.Column(pl.String, nullable=False)
    columns.update(
        {
            "timestamp": pa.Column(pl.Int64, nullable=False),
            "open": _price("open"),
            "high": _price("high"),
            "low": _price("low"),
            "close": _price("close"),
            "volume": pa.Column(
                pl.Float64,
                checks=[pa.Check.ge(0), pa.Check(lambda d: d.lazyframe.select(pl.col(d.key).is_finite()), name="volume_finite")],
                nullable=False,
            ),
        }
    )
    return pa.DataFrameSchema(
        columns,
        checks=[
            pa.Check(_timestamps_increase, name="timestamps_unique_and_sorted"),
            pa.Check(_high_is_highest, name="high_ge_open_close_low"),
            pa.Check(_low_is_lowest, name="low_le_open_close"),
            pa.Check(_on_day_boundary, name="timestamp_at_midnight_utc"),
        ],
        strict=True,
        ordered=False,
        name="L0_ohlcv",
    )


# -- enforcement ---------------------------------------------------------------------


def _describe_cases(frame: pl.DataFrame, cases: pl.DataFrame, offset: int = 0) -> list[str]:
    """One line per failure: check, column, symbol and date of the row (`offset`: where
    `frame` starts in the rows checked, when they were checked in chunks)."""
    lines = []
    rows = cases.head(MAX_CASES_SHOWN).to_dicts()
    for case in rows:
        index = case.get("index")
        where = ""
        if index is not None and 0 <= int(index) < frame.height:
            row = frame.row(int(index), named=True)
            parts = []
            if "symbol" in row:
                parts.append(f"symbol {row['symbol']}")
            if "timestamp" in row and row["timestamp"] is not None:
                parts.append(f"date {ts_to_date(row['timestamp']).isoformat()}")
            if "date" in row and row["date"] is not None:
                parts.append(f"date {row['date']}")
            parts.append(f"row {int(index) + offset}")
            where = " at " + ", ".join(parts)
        lines.append(
            f"check {case.get('check')} on column {case.get('column')}{where}: "
            f"value {case.get('failure_case')}"
        )
    if cases.height > MAX_CASES_SHOWN:
        lines.append(f"... and {cases.height - MAX_CASES_SHOWN} more")
    return lines


def validate(schema: pa.DataFrameSchema, frame: pl.DataFrame) -> pl.DataFrame | None:
    """Validate eagerly and lazily (all failures at once). Returns failure cases or None."""
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as exc:
        return exc.failure_cases
    except SchemaError as exc:
        return pl.DataFrame({"check": [str(exc.check)], "column": [None], "failure_case": [str(exc)], "index": [None]})
    return None


def enforce(schema: pa.DataFrameSchema, frame: pl.DataFrame, what: str = "") -> pl.DataFrame:
    """Return `frame` when it meets the contract, else raise ContractViolation."""
    cases = validate(schema, frame)
    if cases is None:
        return frame
    lines = _describe_cases(frame, cases)
    subject = f" for {what}" if what else ""
    message = (
        f"contract {schema.name} broken{subject}: {cases.height} failure(s)\n  "
        + "\n  ".join(lines)
    )
    raise ContractViolation(schema.name or "contract", cases, message)


def check_result_from_cases(
    frame: pl.DataFrame, cases: pl.DataFrame | None, *, severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR, extra: dict | None = None
) -> dg.AssetCheckResult:
    metadata: dict = {"rows_checked": frame.height, **(extra or {})}
    if cases is None:
        return dg.AssetCheckResult(passed=True, metadata={**metadata, "failures": 0})
    metadata["failures"] = cases.height
    metadata["failure_cases"] = dg.MetadataValue.md("\n".join(f"- {line}" for line in _describe_cases(frame, cases)))
    return dg.AssetCheckResult(passed=False, severity=severity, metadata=metadata)


def check_result_in_chunks(
    schema: pa.DataFrameSchema,
    chunks: Iterable[pl.DataFrame],
    *,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    extra: dict | None = None,
) -> dg.AssetCheckResult:
    """`check_result_from_cases` over rows that come in chunks (groups of symbols, ranges
    of dates), so a ten-year check holds one chunk in memory, not 2.6M rows and Pandera's
    copies of them. The schema's row checks must hold within a chunk (per symbol, per date)."""
    rows = failures = 0
    lines: list[str] = []
    for chunk in chunks:
        cases = validate(schema, chunk)
        if cases is not None:
            failures += cases.height
            if len(lines) < MAX_CASES_SHOWN:
                lines.extend(_describe_cases(chunk, cases.head(MAX_CASES_SHOWN - len(lines)), offset=rows))
        rows += chunk.height
    metadata: dict = {"rows_checked": rows, **(extra or {}), "failures": failures}
    if not failures:
        return dg.AssetCheckResult(passed=True, metadata=metadata)
    if failures > len(lines):
        lines.append(f"... and {failures - len(lines)} more")
    metadata["failure_cases"] = dg.MetadataValue.md("\n".join(f"- {line}" for line in lines))
    return dg.AssetCheckResult(passed=False, severity=severity, metadata=metadata)


# -- L1: returns ----------------------------------------------------------------------


def returns_schema(symbols: list[str], toxic_threshold: float = 5.0) -> pa.DataFrameSchema:
    """L1: a `date` column (unique, increasing) and one Float64 column per symbol whose
    values are NaN (no bar that day) or finite and at most the toxic threshold."""

    def _ok(data: PolarsData) -> pl.LazyFrame:
        col = pl.col(data.key)
        return data.lazyframe.select(col.is_nan() | (col.is_finite() & (col <= toxic_threshold)))

    columns = {
        "date": pa.Column(pl.Date, nullable=False, unique=True),
        **{
            s: pa.Column(pl.Float64, nullable=True, checks=[pa.Check(_ok, name=f"finite_or_nan_and_at_most_{toxic_threshold:g}")])
            for s in symbols
        },
    }

    def _dates_increase(data: PolarsData) -> pl.LazyFrame:
        diff = pl.col("date").diff()
        return data.lazyframe.select(diff.is_null() | (diff > pl.duration(days=0)))

    return pa.DataFrameSchema(columns, checks=[pa.Check(_dates_increase, name="dates_increase")], strict=True, name="L1_returns")


# -- L3: selection ----------------------------------------------------------------------


def selection_schema(snapshot_symbols: list[str]) -> pa.DataFrameSchema:
    """L3: winners are unique symbols of the snapshot with finite scores and clusters >= 1.

    `snapshot_symbols`: the symbols the run's snapshot holds (its manifest), not the
    columns of a returns matrix, which a fault could have changed.
    """
    allowed = sorted(snapshot_symbols)

    def _finite(data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).is_finite())

    def _in_snapshot(data: PolarsData) -> pl.LazyFrame:
        # Named, not `isin`: Pandera names an `isin` check by its whole list of symbols.
        return data.lazyframe.select(pl.col(data.key).is_in(allowed))

    return pa.DataFrameSchema(
        {
            "symbol": pa.Column(
                pl.String, nullable=False, unique=True, checks=[pa.Check(_in_snapshot, name="symbol_in_snapshot")]
            ),
            "score": pa.Column(pl.Float64, nullable=False, checks=[pa.Check(_finite, name="score_finite")]),
            "momentum": pa.Column(pl.Float64, nullable=False, checks=[pa.Check(_finite, name="momentum_finite")]),
            "volatility": pa.Column(pl.Float64, nullable=False, checks=[pa.Check.ge(0)]),
            "cluster": pa.Column(pl.Int64, nullable=False, checks=[pa.Check.ge(1)]),
        },
        checks=[pa.Check(lambda d: d.lazyframe.select(pl.len() > 0), name="at_least_one_winner")],
        strict=True,
        name="L3_selection",
    )


# -- L4: weights ----------------------------------------------------------------------


def weights_schema(
    *, max_weight: float | None = None, min_weight: float = 0.0, long_only: bool = True, tolerance: float = 1e-6
) -> pa.DataFrameSchema:
    """L4: finite weights, >= 0 when long-only, within [min_weight, max_weight], summing to 1."""
    weight_checks = [pa.Check(lambda d: d.lazyframe.select(pl.col(d.key).is_finite()), name="weight_finite")]
    if long_only:
        weight_checks.append(pa.Check.ge(-1e-12))
    if min_weight:
        weight_checks.append(pa.Check.ge(min_weight - 1e-9))
    if max_weight is not None:
        weight_checks.append(pa.Check.le(max_weight + 1e-9))

    def _sums_to_one(data: PolarsData) -> pl.LazyFrame:
        # One answer per row, so a failure names every row that makes up the sum (a single
        # aggregate answer would name the first row alone).
        whole = (pl.col("weight").sum() - 1.0).abs() <= tolerance
        return data.lazyframe.select((pl.col("weight").is_not_null() & whole).alias("sum_to_one"))

    return pa.DataFrameSchema(
        {
            "symbol": pa.Column(pl.String, nullable=False, unique=True),
            "weight": pa.Column(pl.Float64, nullable=False, checks=weight_checks),
        },
        checks=[pa.Check(_sums_to_one, name=f"sum_to_one_within_{tolerance:g}")],
        strict=True,
        name="L4_weights",
    )
