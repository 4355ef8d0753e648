"""`ohlcv`: daily bars, one Parquet file per symbol, with its five checks (declared on the
asset, evaluated in its step over the run's window)."""

import datetime as dt
import statistics
from collections.abc import Iterator
from typing import Any

import dagster as dg
import numpy as np
import polars as pl

from quant_assets.contracts import check_result_in_chunks, ohlcv_schema
from quant_assets.data.calendar import entry_calendar, last_session_on_or_before
from quant_assets.data.ingest import IngestReport
from quant_assets.data.lakehouse_reads import scan_bars
from quant_assets.data.quality_report import quality_markdown, quality_view
from quant_assets.data.scanners import load_universe, universe_pool
from quant_assets.data.shards import ShardResult, ingest_sharded
from quant_assets.data.skipped import (
    LISTING,
    listing_errors,
    resolved_listing_errors,
    skipped_errors,
    skipped_line,
    skipped_markdown,
)
from quant_assets.defs.names import RESTORE_ASSET
from quant_assets.mlops.tracking import log_data_cycle
from quant_assets.partitions import DAILY, window_dates
from quant_resources import progress
from quant_resources.compute import Compute
from quant_resources.lakehouse import Lakehouse
from quant_resources.schema import SymbolInfo, date_to_ts, ts_to_date
from quant_resources.settings import Settings
from quant_resources.sources.base import MarketDataSource
from quant_resources.tracking import MlflowTracking

CHECK_FILES_PER_CHUNK = 125  # symbols' files a check validates at a time (bounded memory)

CHECKS = [
    dg.AssetCheckSpec(
        "ohlcv_schema",
        asset="ohlcv",
        blocking=True,
        description="L0: types, unique sorted timestamps, high/low bound open and close, prices > 0, volume >= 0.",
    ),
    dg.AssetCheckSpec(
        "ohlcv_toxic_free",
        asset="ohlcv",
        blocking=True,
        description=(
            "No close-to-close return above the toxic threshold (QUANT_TOXIC_THRESHOLD; the value "
            "used is in the metadata), except flagged level shifts."
        ),
    ),
    dg.AssetCheckSpec(
        "ohlcv_gaps",
        asset="ohlcv",
        description=(
            "Warns on gaps longer than the gap threshold (QUANT_GAP_THRESHOLD_DAYS sessions; the "
            "value used is in the metadata) inside the run's window."
        ),
    ),
    dg.AssetCheckSpec(
        "ohlcv_freshness",
        asset="ohlcv",
        description=(
            "Every symbol in the lakehouse reaches the window's last session (or is in a "
            "recorded gap), was fetched within the freshness window, and none failed to ingest."
        ),
    ),
    dg.AssetCheckSpec(
        "ohlcv_skipped_files",
        asset="ohlcv",
        description=(
            "Warns on every file (or symbol) the source could not list or read, naming each "
            "with why (an empty export, a missing Close column, a bad name): never dropped in silence."
        ),
    ),
]


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[RESTORE_ASSET],  # the data job's first step: the recorded lakehouse version, restored
    group_name="data",
    kinds={"polars", "parquet"},
    check_specs=CHECKS,
    description=(
        "Daily OHLCV bars of the universe's pool (every listed symbol its scanners' static rules "
        "admit that traded in the window, and every symbol already held), one Snappy Parquet "
        "file per symbol in data/lakehouse/ohlcv/, "
        "sanitised (duplicates, invalid OHLC, toxic returns over +{toxic_pct}%) before they land; "
        "catalog.json and symbols.parquet updated atomically."
    ),
)
def ohlcv(
    context: dg.AssetExecutionContext,
    settings: dg.ResourceParam[Settings],
    source: MarketDataSource,
    lakehouse: Lakehouse,
    mlflow: MlflowTracking,
    compute: Compute,
) -> dg.MaterializeResult:
    start, end = window_dates(context)
    catalog = lakehouse.read_catalog()
    listed = source.list_symbols()
    skipped = source.skipped_files()  # what it could not list, and why: reported below, never dropped
    # The pool, not a ranked list: which symbols are candidates on each day is decided
    # afterwards from the lakehouse's own bars up to that day (`candidates`, point in time).
    pool = universe_pool(load_universe(settings.config_dir, settings.universe), listed, start, end)
    symbols = symbols_to_ingest(pool, catalog, listed)
    context.log.info(f"ohlcv {start}..{end}: {len(symbols)} symbols to bring up to date")
    # In process (the default) or in shards on a Dask cluster (QUANT_COMPUTE=dask).
    report, shards = ingest_sharded(
        symbols,
        start,
        end,
        compute=compute,
        source=source,
        lakehouse=lakehouse,
        settings=settings,
        progress=context.log.info,
        advance=lambda done, total: progress.advance("ohlcv", done, total, "symbols"),
    )
    ingested = {o.key for o in report.outcomes if o.status in ("ingested", "skipped")}
    lakehouse.update_symbols([s for s in symbols if s.key in ingested])
    catalog = lakehouse.update_catalog(
        meta={"last_partition": end.isoformat(), "last_window": f"{start}..{end}"},
        errors=skipped_errors(skipped, source.source_name, dt.datetime.now(dt.UTC).isoformat(timespec="seconds")),
        remove_errors=resolved_listing_errors(catalog, skipped),
    )
    for failure in report.failures:
        context.log.warning(f"ohlcv: {failure.key or failure.symbol} not ingested: {failure.reason}")
    metadata = ingest_metadata(report, catalog)
    metadata["path"] = dg.MetadataValue.path(str(lakehouse.ohlcv_dir))
    metadata["skipped_files"] = len(skipped)
    if shards:
        metadata["shards"] = dg.MetadataValue.json(shard_metadata(shards))
    if skipped:
        metadata["skipped_file_reasons"] = dg.MetadataValue.json(dict(skipped))
        context.log.warning(f"ohlcv: the source {skipped_line(dict(skipped))}")
    log_data_cycle(mlflow, metadata, catalog)  # queued: never blocks or fails the run
    # The picture goes on the last partition only: MaterializeResult metadata is copied
    # onto every partition of a single-run backfill (3653 PNGs for ten years).
    context.add_asset_metadata(
        {"quality_report": dg.MetadataValue.md(quality_markdown(quality_view(catalog)))},
        partition_key=end.isoformat(),
    )
    delisted = {s.key: s.delisting_date for s in symbols if s.delisting_date is not None}
    return dg.MaterializeResult(
        metadata=metadata, check_results=check_ohlcv(lakehouse, catalog, settings, start, end, delisted)
    )


def check_ohlcv(
    lakehouse: Lakehouse,
    catalog: dict[str, Any],
    settings: Settings,
    start: dt.date,
    end: dt.date,
    delisted: dict[str, dt.date] | None = None,
) -> list[dg.AssetCheckResult]:
    """The five checks of `ohlcv` over the window [start, end], in `CHECKS` order, against
    `catalog` (the one the step just committed: not read again). `delisted`: last sessions
    of symbols that stopped trading (fresh up to that day)."""
    return [
        schema_result(lakehouse, start, end),
        toxic_result(lakehouse, catalog, start, end, settings.toxic_threshold),
        gaps_result(catalog, start, end, settings.gap_threshold_days),
        freshness_result(catalog, end, settings.freshness_hours, delisted),
        skipped_files_result(catalog),
    ]


def symbols_to_ingest(
    pool: list[SymbolInfo], catalog: dict[str, Any], listed: list[SymbolInfo]
) -> list[SymbolInfo]:
    """The window's pool (`scanners.universe_pool`), every symbol already in the lakehouse
    (a delisted one included: the lakehouse never drops a symbol) and every symbol that
    failed before and is listed, once each, sorted by key."""
    by_key = {info.key: info for info in listed}
    wanted: dict[str, SymbolInfo] = {info.key: info for info in pool}
    for key, entry in catalog["symbols"].items():
        if key not in wanted:
            wanted[key] = by_key.get(key) or _info_from_entry(entry)
    for key in catalog.get("errors", {}):
        if key not in wanted and key in by_key:
            wanted[key] = by_key[key]
    return [wanted[k] for k in sorted(wanted)]


def _info_from_entry(entry: dict[str, Any]) -> SymbolInfo:
    return SymbolInfo(
        exchange=entry["exchange"],
        symbol=entry["symbol"],
        asset_class=entry.get("asset_class", "equity"),
        genesis_date=dt.date.fromisoformat(entry.get("genesis_date") or entry["start_date"]),
        median_dollar_volume=float(entry.get("median_dollar_volume", 0.0)),
        delisting_date=dt.date.fromisoformat(entry["delisting_date"]) if entry.get("delisting_date") else None,
    )


def ingest_metadata(report: IngestReport, catalog: dict[str, Any]) -> dict[str, Any]:
    summary = report.summary()
    scores = [e["data_quality_score"] for e in catalog["symbols"].values()]
    metadata: dict[str, Any] = dict(summary.items())
    metadata["seconds"] = dg.MetadataValue.json({k: round(v, 3) for k, v in report.seconds.items()})
    if scores:
        metadata["quality_score_min"] = float(min(scores))
        metadata["quality_score_median"] = float(statistics.median(scores))
        metadata["quality_score_p10"] = float(np.percentile(scores, 10))
    if report.failures:
        rows = "\n".join(f"| {o.key or o.symbol} | {o.file or '-'} | {o.reason[:200]} |" for o in report.failures)
        metadata["failures"] = dg.MetadataValue.md("| symbol | file | reason |\n|---|---|---|\n" + rows)
    flagged = [o for o in report.outcomes if o.toxic or o.level_shifts]
    if flagged:
        rows = "\n".join(f"| {o.key} | {o.toxic} | {o.level_shifts} |" for o in flagged[:50])
        metadata["toxic_and_level_shifts"] = dg.MetadataValue.md(
            "| symbol | toxic rows dropped | level shifts flagged |\n|---|---|---|\n" + rows
        )
    metadata["lakehouse_symbols"] = len(catalog["symbols"])
    return metadata


def shard_metadata(shards: list[ShardResult]) -> dict[str, Any]:
    """How a distributed run's shards went: count, wall seconds each, the workers used."""
    seconds = [r.seconds for r in shards]
    return {
        "count": len(shards),
        "workers": sorted({r.worker for r in shards}),
        "seconds_min": round(min(seconds), 3),
        "seconds_median": round(statistics.median(seconds), 3),
        "seconds_max": round(max(seconds), 3),
        "seconds_total": round(sum(seconds), 3),
    }


# -- the checks ------------------------------------------------------------------


def window_bars(lakehouse: Lakehouse, start: dt.date, end: dt.date) -> Iterator[pl.DataFrame]:
    """The window's bars, symbol by symbol in groups: a ten-year check never holds every
    bar of the lakehouse at once (its peak memory was the run's)."""
    files = lakehouse.ohlcv_files()
    for offset in range(0, len(files), CHECK_FILES_PER_CHUNK):
        group = files[offset : offset + CHECK_FILES_PER_CHUNK]
        yield scan_bars(group, start, end).sort(["symbol", "timestamp"])


def schema_result(lakehouse: Lakehouse, start: dt.date, end: dt.date) -> dg.AssetCheckResult:
    result = check_result_in_chunks(ohlcv_schema(with_symbol=True), window_bars(lakehouse, start, end))
    return dg.AssetCheckResult(check_name="ohlcv_schema", passed=result.passed, metadata=result.metadata)


def toxic_result(
    lakehouse: Lakehouse, catalog: dict[str, Any], start: dt.date, end: dt.date, threshold: float
) -> dg.AssetCheckResult:
    shifts = {
        (key, date_to_ts(dt.date.fromisoformat(day)))
        for key, entry in catalog["symbols"].items()
        for day in entry.get("level_shifts", [])
    }
    rows_checked, offending = 0, []
    # 30 days of margin: the first day's return needs the close before it.
    for bars in window_bars(lakehouse, start - dt.timedelta(days=30), end):
        returns = bars.with_columns(
            (pl.col("close") / pl.col("close").shift(1).over("symbol") - 1.0).alias("ret")
        ).filter((pl.col("timestamp") >= date_to_ts(start)) & (pl.col("ret") > threshold))
        offending += [r for r in returns.iter_rows(named=True) if (r["symbol"], r["timestamp"]) not in shifts]
        rows_checked += bars.height
    metadata: dict[str, Any] = {"rows_checked": rows_checked, "toxic_rows": len(offending), "threshold": threshold}
    if offending:
        lines = [f"- {r['symbol']} {ts_to_date(r['timestamp'])}: return {r['ret']:.2%}" for r in offending[:20]]
        metadata["toxic_returns"] = dg.MetadataValue.md("\n".join(lines))
    return dg.AssetCheckResult(check_name="ohlcv_toxic_free", passed=not offending, metadata=metadata)


def gaps_result(catalog: dict[str, Any], start: dt.date, end: dt.date, threshold_days: int) -> dg.AssetCheckResult:
    found = [
        (key, gap)
        for key, entry in catalog["symbols"].items()
        for gap in entry.get("gaps", [])
        if gap["start"] <= end.isoformat() and gap["end"] >= start.isoformat()
    ]
    metadata: dict[str, Any] = {"gaps": len(found), "threshold_sessions": threshold_days}
    if found:
        metadata["gap_list"] = dg.MetadataValue.md(
            "\n".join(f"- {k}: {g['start']}..{g['end']} ({g['missing_sessions']} sessions)" for k, g in found[:50])
        )
    return dg.AssetCheckResult(
        check_name="ohlcv_gaps", passed=not found, severity=dg.AssetCheckSeverity.WARN, metadata=metadata
    )


def freshness_result(
    catalog: dict[str, Any], end: dt.date, freshness_hours: float, delisted: dict[str, dt.date] | None = None
) -> dg.AssetCheckResult:
    now = dt.datetime.now(dt.UTC)
    stale, old_fetch = [], []
    delisted = dict(delisted or {})
    for key, entry in catalog["symbols"].items():
        expected = last_session_on_or_before(end, entry_calendar(entry))
        if entry.get("delisting_date"):
            delisted.setdefault(key, dt.date.fromisoformat(entry["delisting_date"]))
        if key in delisted:  # no bar after its last session: it is as fresh as it gets
            expected = min(expected, delisted[key])
        in_gap = any(g["start"] <= expected.isoformat() <= g["end"] for g in entry.get("gaps", []))
        if entry.get("end_date") and entry["end_date"] < expected.isoformat() and not in_gap:
            stale.append(f"{key} ends {entry['end_date']}, expected {expected}")
        fetched = dt.datetime.fromisoformat(entry["last_fetch"])
        if (now - fetched).total_seconds() > freshness_hours * 3600 and end >= (now.date() - dt.timedelta(days=2)):
            old_fetch.append(f"{key} fetched {entry['last_fetch']}")
    # Files the source could not list are ohlcv_skipped_files' to report.
    errors = [f"{k}: {e['reason']}" for k, e in catalog.get("errors", {}).items() if e.get("stage") != LISTING]
    problems = stale + errors
    metadata: dict[str, Any] = {
        "symbols": len(catalog["symbols"]),
        "stale": len(stale),
        "failed": len(errors),
        "fetched_outside_freshness_window": len(old_fetch),
    }
    if problems:
        metadata["problems"] = dg.MetadataValue.md("\n".join(f"- {p[:300]}" for p in problems[:50]))
    return dg.AssetCheckResult(check_name="ohlcv_freshness", passed=not problems, metadata=metadata)


def skipped_files_result(catalog: dict[str, Any]) -> dg.AssetCheckResult:
    reasons = listing_errors(catalog)
    metadata: dict[str, Any] = {"skipped_files": len(reasons)}
    if reasons:
        metadata["skipped"] = dg.MetadataValue.md(skipped_markdown(reasons))
    return dg.AssetCheckResult(
        check_name="ohlcv_skipped_files", passed=not reasons, severity=dg.AssetCheckSeverity.WARN, metadata=metadata
    )
