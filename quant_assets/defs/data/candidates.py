"""`candidates`: each day's scanner output, written to export/{date}/candidates.json.

Point in time: it runs after `ohlcv` and ranks from the lakehouse's own bars up to each
day (trailing median dollar volume, history in sessions) and the registry's listing and
delisting dates, never from the source's current figures.
"""

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from quant_assets.data.scanners import (
    UniverseConfig,
    bar_history,
    load_universe,
    scan_point_in_time,
)
from quant_assets.partitions import DAILY, window_dates
from quant_resources import progress
from quant_resources.io_managers import LakehouseView
from quant_resources.lakehouse import Lakehouse
from quant_resources.schema import SymbolInfo, date_to_ts
from quant_resources.settings import Settings


def liquidity_bars(files: list[Path], end: dt.date) -> pl.DataFrame:
    """symbol (catalog key), timestamp, close, volume of every bar up to `end` (inclusive),
    in file order: the inputs of the scanners' history and liquidity rules."""
    schema = {"symbol": pl.String(), "timestamp": pl.Int64(), "close": pl.Float64(), "volume": pl.Float64()}
    if not files:
        return pl.DataFrame(schema=schema)
    return (
        pl.scan_parquet([str(f) for f in files], include_file_paths="_path")
        .select("timestamp", "close", "volume", "_path")
        .filter(pl.col("timestamp") < date_to_ts(end + dt.timedelta(days=1)))
        .with_columns(pl.col("_path").str.extract(r"([^/\\]+)_1d\.parquet$", 1).alias("symbol"))
        .select(list(schema))
        .collect()
        .cast(schema)
    )


def registry(lakehouse: Lakehouse) -> dict[str, SymbolInfo]:
    """symbols.parquet by key: asset class, exchange, genesis and delisting dates."""
    frame = lakehouse.read_symbols()
    if frame is None:
        return {}
    infos = {}
    for row in frame.iter_rows(named=True):
        info = SymbolInfo(
            exchange=row["exchange"],
            symbol=row["symbol"],
            asset_class=row["asset_class"],
            genesis_date=row["genesis_date"],
            median_dollar_volume=float(row["median_dollar_volume"] or 0.0),
            active=bool(row["active"]),
            delisting_date=row.get("delisting_date"),
        )
        infos[info.key] = info
    return infos


def write_candidates(
    lakehouse: Lakehouse,
    config: UniverseConfig,
    days: list[dt.date],
    advance: Callable[[int, int], None] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Write each day's candidates.json (compact, atomic) through the lakehouse from the
    lakehouse's own bars and registry; returns (bytes written, the last day's document).

    A history backfill writes one file per day (3653 for 10 years, 7305 for 20):
    documents are scanned and encoded one at a time (memory holds one) and made durable
    together (`Lakehouse.write_candidates`).
    """
    history = bar_history(
        liquidity_bars(lakehouse.ohlcv_files(), max(days)),
        {scanner.liquidity_window_sessions for scanner in config.scanners},
    )
    last: dict[str, Any] = {}

    def days_and_texts() -> Iterator[tuple[dt.date, str]]:
        stream = scan_point_in_time(config, registry(lakehouse), history, days)
        for done, (day, text, _) in enumerate(stream, start=1):
            if advance and (done % 32 == 0 or done == len(days)):
                advance(done, len(days))
            if day == days[-1]:
                last.update(json.loads(text))
            yield day, text

    written = lakehouse.write_candidates(days_and_texts())  # an I/O error fails the asset, naming the file
    return written, last


def read_candidates(settings: Settings, day: dt.date) -> dict[str, Any]:
    """The day's candidates document; the same reader (and error) as the alpha side's."""
    return LakehouseView(settings.data_dir, day).candidates()


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["ohlcv"],
    group_name="data",
    kinds={"python", "json"},
    description=(
        "Scanner output per day, point in time: the symbols of the universe that pass its "
        "scanners (scanners/{universe}.yaml, shipped in quant_assets/configs unless "
        "QUANT_CONFIG_DIR names another folder) as of that day, ranked by the trailing median "
        "dollar volume of the lakehouse's own bars up to it, written to "
        "data/export/{date}/candidates.json."
    ),
)
def candidates(
    context: dg.AssetExecutionContext,
    settings: dg.ResourceParam[Settings],
    lakehouse: Lakehouse,
) -> dg.MaterializeResult:
    start, end = window_dates(context)
    config = load_universe(settings.config_dir, settings.universe)
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    _, last = write_candidates(
        lakehouse, config, days, advance=lambda done, total: progress.advance("candidates", done, total, "days")
    )
    counts: dict[str, int] = {}
    for record in last["candidates"]:
        counts[record["asset_class"]] = counts.get(record["asset_class"], 0) + 1
    context.log.info(f"candidates {start}..{end}: {len(days)} day(s), {len(last['candidates'])} on {end}")
    return dg.MaterializeResult(
        metadata={
            "universe": settings.universe,
            "days_written": len(days),
            "candidates_last_day": len(last["candidates"]),
            "by_asset_class": dg.MetadataValue.json(counts),
            "symbols_in_lakehouse": len(lakehouse.ohlcv_files()),
            "path": dg.MetadataValue.path(str(lakehouse.layout.candidates_path(end))),
        }
    )
