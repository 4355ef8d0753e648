"""Data-cycle assets: `candidates` (discovery) and `ohlcv` (ingestion), with their checks.

Assets are thin: they read the partition window, call the pure functions of
`quant_assets.data`, and return `MaterializeResult` with metadata. Both use
`BackfillPolicy.single_run()`, so a history backfill is one run that fetches each
symbol's window once.
"""


import datetime as dt
import statistics
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import numpy as np
import polars as pl

from quant_assets.contracts import (
    check_result_in_chunks,
    ohlcv_schema,
)
from quant_assets.data.calendar import entry_calendar, last_session_on_or_before
from quant_assets.data.ingest import IngestReport, ingest
from quant_assets.data.lakehouse_reads import scan_bars
from quant_assets.data.quality_report import quality_markdown, quality_view
from quant_assets.data.restore import RESTORE_ASSET
from quant_assets.data.scanners import (
    UniverseConfig,
    load_universe,
    scan_days_json,
    scan_many,
    window_candidate_keys,
)
from quant_assets.data.skipped import (
    LISTING,
    listing_errors,
    resolved_listing_errors,
    skipped_errors,
    skipped_line,
    skipped_markdown,
)
from quant_assets.mlops.tracking import log_data_cycle
from quant_assets.partitions import window_dates
from quant_resources import progress
from quant_resources.io_managers import LakehouseView
from quant_resources.lakehouse import Lakehouse
from quant_resources.schema import SymbolInfo, date_to_ts, ts_to_date
from quant_resources.settings import Settings
from quant_resources.sources.base import MarketDataSource
from quant_resources.tracking import MlflowTracking

warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)

OWNERS = ["team:data-platform"]
CHECK_FILES_PER_CHUNK = 125  # symbols' files a check validates at a time (bounded memory)


def write_candidates(
    lakehouse: Lakehouse,
    config: UniverseConfig,
    listed: list[SymbolInfo],
    days: list[dt.date],
    advance: Callable[[int, int], None] | None = None,
) -> int:
    """Write each day's candidates.json (compact, atomic) through the lakehouse; returns
    the bytes written.

    A history backfill writes one file per day (3653 for 10 years, 7305 for 20):
    documents are scanned and encoded one at a time (memory holds one) and made durable
    together (`Lakehouse.write_candidates`).
    """

    def days_and_texts() -> Iterator[tuple[dt.date, str]]:
        for done, (day, text, _) in enumerate(scan_days_json(config, listed, days), start=1):
            if advance and (done % 32 == 0 or done == len(days)):
                advance(done, len(days))
            yield day, text

    return lakehouse.write_candidates(days_and_texts())  # an I/O error fails the asset, naming the file


def read_candidates(settings: Settings, day: dt.date) -> dict[str, Any]:
    """The day's candidates document; the same reader (and error) as the alpha side's."""
    return LakehouseView(settings.data_dir, day).candidates()


def _info_from_entry(entry: dict[str, Any]) -> SymbolInfo:
    return SymbolInfo(
        exchange=entry["exchange"],
        symbol=entry["symbol"],
        asset_class=entry.get("asset_class", "equity"),
        genesis_date=dt.date.fromisoformat(entry.get("genesis_date") or entry["start_date"]),
        median_dollar_volume=float(entry.get("median_dollar_volume", 0.0)),
    )


def symbols_to_ingest(
    candidates: dict[str, Any],
    catalog: dict[str, Any],
    listed: list[SymbolInfo],
    window_candidates: set[str] | frozenset[str] = frozenset(),
) -> list[SymbolInfo]:
    """The last day's candidates, every other candidate of the window
    (`window_candidates`, keys of listed symbols) and every symbol already in the
    lakehouse, once each."""
    by_key = {info.key: info for info in listed}
    wanted: dict[str, SymbolInfo] = {key: by_key[key] for key in window_candidates if key in by_key}
    for record in candidates["candidates"]:
        key = f"{record['exchange']}_{record['symbol']}"
        wanted[key] = by_key.get(key) or SymbolInfo(
            record["exchange"],
            record["symbol"],
            record["asset_class"],
            dt.date.fromisoformat(record["genesis_date"]),
            float(record["median_dollar_volume"]),
        )
    for key, entry in catalog["symbols"].items():
        if key not in wanted:
            wanted[key] = by_key.get(key) or _info_from_entry(entry)
    for key in catalog.get("errors", {}):
        if key not in wanted and key in by_key:
            wanted[key] = by_key[key]
    return [wanted[k] for k in sorted(wanted)]


def ingest_metadata(report: IngestReport, catalog: dict[str, Any]) -> dict[str, Any]:
    summary = report.summary()
    scores = [e["data_quality_score"] for e in catalog["symbols"].values()]
    metadata: dict[str, Any] = {k: v for k, v in summary.items()}
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


def build_data_assets(settings: Settings, partitions_def: dg.PartitionsDefinition) -> list:
    """The data-cycle assets and checks for these settings."""

    @dg.asset(
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[RESTORE_ASSET],  # the data job's first step: the recorded lakehouse version, restored
        group_name="data",
        kinds={"python", "json"},
        owners=OWNERS,
        code_version="1",
        description=(
            "Scanner output per day: the symbols of the universe that pass its scanners "
            f"(scanners/{settings.universe}.yaml, shipped in quant_assets/configs unless "
            "QUANT_CONFIG_DIR names another folder), written to data/export/{date}/candidates.json."
        ),
    )
    def candidates(
        context: dg.AssetExecutionContext, source: MarketDataSource, lakehouse: Lakehouse
    ) -> dg.MaterializeResult:
        start, end = window_dates(context)
        config = load_universe(settings.config_dir, settings.universe)
        listed = source.list_symbols()
        days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
        write_candidates(
            lakehouse, config, listed, days, advance=lambda done, total: progress.advance("candidates", done, total, "days")
        )
        last = scan_many(config, listed, [end])[end]
        counts = {}
        for record in last["candidates"]:
            counts[record["asset_class"]] = counts.get(record["asset_class"], 0) + 1
        context.log.info(f"candidates {start}..{end}: {len(days)} day(s), {len(last['candidates'])} on {end}")
        return dg.MaterializeResult(
            metadata={
                "universe": settings.universe,
                "days_written": len(days),
                "candidates_last_day": len(last["candidates"]),
                "by_asset_class": dg.MetadataValue.json(counts),
                "symbols_listed": len(listed),
                "path": dg.MetadataValue.path(str(lakehouse.layout.candidates_path(end))),
            }
        )

    @dg.asset(
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[candidates],
        group_name="data",
        kinds={"polars", "parquet"},
        owners=OWNERS,
        code_version="1",
        description=(
            "Daily OHLCV bars, one Snappy Parquet file per symbol in data/lakehouse/ohlcv/, "
            f"sanitised (duplicates, invalid OHLC, toxic returns over +{settings.toxic_threshold * 100:g}%) before they land; "
            "catalog.json and symbols.parquet updated atomically."
        ),
    )
    def ohlcv(
        context: dg.AssetExecutionContext,
        source: MarketDataSource,
        lakehouse: Lakehouse,
        mlflow: MlflowTracking,
    ) -> dg.MaterializeResult:
        start, end = window_dates(context)
        candidates_doc = read_candidates(settings, end)
        catalog = lakehouse.read_catalog()
        listed = source.list_symbols()
        skipped = source.skipped_files()  # what it could not list, and why: reported below, never dropped
        # A range: every candidate of the window, not only the last day's (point in time).
        window = (
            window_candidate_keys(
                load_universe(settings.config_dir, settings.universe),
                listed,
                [start + dt.timedelta(days=i) for i in range((end - start).days + 1)],
            )
            if start < end
            else frozenset()
        )
        symbols = symbols_to_ingest(candidates_doc, catalog, listed, window)
        context.log.info(f"ohlcv {start}..{end}: {len(symbols)} symbols to bring up to date")
        report = ingest(
            symbols,
            start,
            end,
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
        return dg.MaterializeResult(metadata=metadata)

    def _window_bars(context: dg.AssetCheckExecutionContext, margin_days: int = 0) -> Iterator[pl.DataFrame]:
        """The window's bars, symbol by symbol in groups: a ten-year check never holds
        every bar of the lakehouse at once (its peak memory was the run's)."""
        start, end = window_dates(context)
        lakehouse: Lakehouse = context.resources.lakehouse
        files = lakehouse.ohlcv_files()
        for offset in range(0, len(files), CHECK_FILES_PER_CHUNK):
            group = files[offset : offset + CHECK_FILES_PER_CHUNK]
            yield scan_bars(group, start - dt.timedelta(days=margin_days), end).sort(["symbol", "timestamp"])

    @dg.asset_check(
        asset=ohlcv,
        name="ohlcv_schema",
        partitions_def=partitions_def,
        blocking=True,
        required_resource_keys={"lakehouse"},
        description="L0: types, unique sorted timestamps, high/low bound open and close, prices > 0, volume >= 0.",
    )
    def ohlcv_schema_check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        return check_result_in_chunks(ohlcv_schema(with_symbol=True), _window_bars(context))

    @dg.asset_check(
        asset=ohlcv,
        name="ohlcv_toxic_free",
        partitions_def=partitions_def,
        blocking=True,
        required_resource_keys={"lakehouse"},
        description=(
            f"No close-to-close return above the toxic threshold (+{settings.toxic_threshold * 100:g}%), "
            "except flagged level shifts."
        ),
    )
    def ohlcv_toxic_free(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        start, _ = window_dates(context)
        catalog = context.resources.lakehouse.read_catalog()
        shifts = {
            (key, date_to_ts(dt.date.fromisoformat(day)))
            for key, entry in catalog["symbols"].items()
            for day in entry.get("level_shifts", [])
        }
        rows_checked, offending = 0, []
        for bars in _window_bars(context, margin_days=30):
            returns = bars.with_columns(
                (pl.col("close") / pl.col("close").shift(1).over("symbol") - 1.0).alias("ret")
            ).filter((pl.col("timestamp") >= date_to_ts(start)) & (pl.col("ret") > settings.toxic_threshold))
            offending += [r for r in returns.iter_rows(named=True) if (r["symbol"], r["timestamp"]) not in shifts]
            rows_checked += bars.height
        metadata: dict[str, Any] = {"rows_checked": rows_checked, "toxic_rows": len(offending), "threshold": settings.toxic_threshold}
        if offending:
            lines = [
                f"- {r['symbol']} {ts_to_date(r['timestamp'])}: return {r['ret']:.2%}"
                for r in offending[:20]
            ]
            metadata["toxic_returns"] = dg.MetadataValue.md("\n".join(lines))
        return dg.AssetCheckResult(passed=not offending, metadata=metadata)

    @dg.asset_check(
        asset=ohlcv,
        name="ohlcv_gaps",
        partitions_def=partitions_def,
        blocking=False,
        required_resource_keys={"lakehouse"},
        description=(
            f"Warns on gaps longer than the gap threshold ({settings.gap_threshold_days} sessions) "
            "inside the partition window."
        ),
    )
    def ohlcv_gaps(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        start, end = window_dates(context)
        catalog = context.resources.lakehouse.read_catalog()
        found = [
            (key, gap)
            for key, entry in catalog["symbols"].items()
            for gap in entry.get("gaps", [])
            if gap["start"] <= end.isoformat() and gap["end"] >= start.isoformat()
        ]
        metadata: dict[str, Any] = {"gaps": len(found), "threshold_sessions": settings.gap_threshold_days}
        if found:
            metadata["gap_list"] = dg.MetadataValue.md(
                "\n".join(f"- {k}: {g['start']}..{g['end']} ({g['missing_sessions']} sessions)" for k, g in found[:50])
            )
        return dg.AssetCheckResult(passed=not found, severity=dg.AssetCheckSeverity.WARN, metadata=metadata)

    @dg.asset_check(
        asset=ohlcv,
        name="ohlcv_freshness",
        partitions_def=partitions_def,
        blocking=False,
        required_resource_keys={"lakehouse"},
        description=(
            "Every symbol in the lakehouse reaches the partition's last session (or is in a "
            "recorded gap), was fetched within the freshness window, and none failed to ingest."
        ),
    )
    def ohlcv_freshness(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        _, end = window_dates(context)
        catalog = context.resources.lakehouse.read_catalog()
        now = dt.datetime.now(dt.UTC)
        stale, old_fetch = [], []
        for key, entry in catalog["symbols"].items():
            expected = last_session_on_or_before(end, entry_calendar(entry))
            in_gap = any(g["start"] <= expected.isoformat() <= g["end"] for g in entry.get("gaps", []))
            if entry.get("end_date") and entry["end_date"] < expected.isoformat() and not in_gap:
                stale.append(f"{key} ends {entry['end_date']}, expected {expected}")
            fetched = dt.datetime.fromisoformat(entry["last_fetch"])
            if (now - fetched).total_seconds() > settings.freshness_hours * 3600 and end >= (now.date() - dt.timedelta(days=2)):
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
        return dg.AssetCheckResult(passed=not problems, metadata=metadata)

    @dg.asset_check(
        asset=ohlcv,
        name="ohlcv_skipped_files",
        partitions_def=partitions_def,
        blocking=False,
        required_resource_keys={"lakehouse"},
        description=(
            "Warns on every file (or symbol) the source could not list or read, naming each "
            "with why (an empty export, a missing Close column, a bad name): never dropped in silence."
        ),
    )
    def ohlcv_skipped_files(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        reasons = listing_errors(context.resources.lakehouse.read_catalog())
        metadata: dict[str, Any] = {"skipped_files": len(reasons)}
        if reasons:
            metadata["skipped"] = dg.MetadataValue.md(skipped_markdown(reasons))
        return dg.AssetCheckResult(passed=not reasons, severity=dg.AssetCheckSeverity.WARN, metadata=metadata)

    return [candidates, ohlcv, ohlcv_schema_check, ohlcv_toxic_free, ohlcv_gaps, ohlcv_freshness, ohlcv_skipped_files]
