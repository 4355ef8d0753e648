"""`tv_technicals_1d`: the technical-indicator feature store as a Delta table.

A run computes only its window's dates, reading enough history before it to warm the
indicators up, and replaces those dates with one Delta commit (a predicate overwrite), so
re-running a day never duplicates rows. The L2 check is declared on the asset.
"""

import datetime as dt
from pathlib import Path

import dagster as dg

from quant_assets.contracts import check_result_in_chunks
from quant_assets.data.lakehouse_reads import scan_bars
from quant_assets.features.indicators import FeaturesSchema
from quant_assets.features.store import (
    current_version,
    read_features,
    update_features,
    warmup_start,
)
from quant_assets.partitions import DAILY, window_dates
from quant_resources.lakehouse import Lakehouse
from quant_resources.layout import FEATURE_TABLE

TABLE = FEATURE_TABLE  # the asset is named after its Delta table


@dg.asset(
    name=TABLE,
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["ohlcv"],
    group_name="data",
    kinds={"polars", "deltalake"},
    check_specs=[
        dg.AssetCheckSpec(
            "features_l2",
            asset=TABLE,
            blocking=True,
            description="L2: RSI in [0, 100], Bollinger bands ordered, ATR and volatility >= 0, rating in [-1, 1], no infinities.",
        )
    ],
    description=(
        "Technical indicators per symbol and day (SMA, EMA, RSI, MACD, Bollinger, ATR, ROC, "
        "realised volatility, a rating in [-1, 1]) in the Delta table "
        "data/lakehouse/features/tv_technicals_1d/; one Delta version per commit."
    ),
)
def tv_technicals_1d(context: dg.AssetExecutionContext, lakehouse: Lakehouse) -> dg.MaterializeResult:
    start, end = window_dates(context)
    bars = scan_bars(lakehouse.ohlcv_files(), warmup_start(start), end)
    if bars.height == 0:
        context.log.warning(f"{TABLE}: no bars in the lakehouse for {start}..{end}")
    result = lakehouse.write_features(update_features, bars, start, end)
    context.log.info(
        f"{TABLE} {start}..{end}: {result.rows_written} rows for {result.symbols} symbols, Delta version {result.version}"
    )
    return dg.MaterializeResult(
        metadata={
            "delta_version": result.version,
            "rows_written": result.rows_written,
            "symbols": result.symbols,
            "window": f"{start}..{end}",
            "path": dg.MetadataValue.path(str(lakehouse.features_table)),
        },
        check_results=[features_l2(lakehouse.features_table, start, end)],
    )


def features_l2(table_path: Path, start: dt.date, end: dt.date) -> dg.AssetCheckResult:
    """L2 over the window's dates of the table's current version."""
    version = current_version(table_path)
    if version is None:
        return dg.AssetCheckResult(
            check_name="features_l2", passed=False, metadata={"reason": f"no Delta table at {table_path}"}
        )
    # A year at a time (one partition prune each): ten years at once held 2.6M rows and
    # Pandera's copies, the run's peak memory.
    years = (
        read_features(table_path, version=version, start=max(start, dt.date(y, 1, 1)), end=min(end, dt.date(y, 12, 31)))
        for y in range(start.year, end.year + 1)
    )
    result = check_result_in_chunks(FeaturesSchema, years, extra={"delta_version": version})
    return dg.AssetCheckResult(check_name="features_l2", passed=result.passed, metadata=result.metadata)
