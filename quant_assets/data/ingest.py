"""Ingestion: fetch each symbol's window once, sanitise, validate (L0), merge atomically.

`ingest(...)` is plain Python: the `ohlcv` asset calls it with its resources, tests call
it directly. One bad symbol never blocks the rest: its failure is recorded with the
symbol, the file and the reason, and every other symbol is ingested.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from quant_assets.contracts import enforce, ohlcv_schema
from quant_assets.data.calendar import (
    first_session_on_or_after,
    last_session_on_or_before,
)
from quant_assets.data.gaps import detect_gaps
from quant_assets.data.quality import quality_score
from quant_assets.data.sanitize import SanitizeResult, sanitize_bars
from quant_resources.errors import QuantError
from quant_resources.lakehouse import Lakehouse
from quant_resources.schema import SymbolInfo, date_to_ts, ts_to_date
from quant_resources.settings import Settings
from quant_resources.sources.base import MarketDataSource
from quant_resources.symbols import symbol_key

PRIOR_CLOSES = 5  # existing closes handed to the sanitiser as context
CHUNK_SIZE = 250  # symbols validated and catalogued together
# Threads per chunk: fetching waits on I/O (HTTP, disk) and polars releases the GIL.
WORKERS = min(8, 2 * (os.cpu_count() or 1))
DROP_KINDS = ("toxic", "duplicate", "invalid")


@dataclass
class SymbolOutcome:
    key: str
    exchange: str
    symbol: str
    status: str  # ingested | skipped | failed | not_listed
    file: str = ""
    rows_fetched: int = 0
    rows_new: int = 0
    rows_total: int = 0
    toxic: int = 0
    duplicates: int = 0
    invalid: int = 0
    level_shifts: int = 0
    gaps: int = 0
    out_of_window: int = 0  # bars the source sent outside the window asked (e.g. future-dated)
    reason: str = ""


@dataclass
class IngestReport:
    start: dt.date
    end: dt.date
    outcomes: list[SymbolOutcome] = field(default_factory=list)
    # Catalog entries and errors not yet written (a shard leaves them to the run's merge).
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(
        # wall-clock seconds per phase (fetch and sanitise run on a thread pool)
        default_factory=lambda: {
            "fetch_sanitize": 0.0,
            "validate": 0.0,
            "write": 0.0,
            "catalog": 0.0,
        }
    )

    def by_status(self, status: str) -> list[SymbolOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def failures(self) -> list[SymbolOutcome]:
        return self.by_status("failed")

    def summary(self) -> dict[str, Any]:
        done = [o for o in self.outcomes if o.status == "ingested"]
        return {
            "window": f"{self.start.isoformat()}..{self.end.isoformat()}",
            "symbols": len(self.outcomes),
            "ingested": len(done),
            "skipped": len(self.by_status("skipped")),
            "not_listed": len(self.by_status("not_listed")),
            "failed": len(self.failures),
            "rows_fetched": sum(o.rows_fetched for o in done),
            "rows_new": sum(o.rows_new for o in done),
            "toxic_rows_dropped": sum(o.toxic for o in done),
            "duplicates_dropped": sum(o.duplicates for o in done),
            "invalid_rows_dropped": sum(o.invalid for o in done),
            "level_shifts_flagged": sum(o.level_shifts for o in done),
            "gaps": sum(o.gaps for o in done),
            "bars_outside_window_ignored": sum(o.out_of_window for o in done),
        }


def _iso(ts: int) -> str:
    return ts_to_date(ts).isoformat()


def _merge_counts(old: dict[str, int], new_ts: list[int]) -> dict[str, int]:
    counts: dict[str, int] = dict(old)
    fresh: dict[str, int] = {}
    for ts in new_ts:
        fresh[_iso(ts)] = fresh.get(_iso(ts), 0) + 1
    for day, n in fresh.items():
        counts[day] = max(counts.get(day, 0), n)
    return counts


def build_entry(
    info: SymbolInfo,
    merged: pl.DataFrame,
    result: SanitizeResult,
    old: dict[str, Any] | None,
    *,
    file: str,
    file_mtime_ns: int,
    now: dt.datetime,
    settings: Settings,
) -> dict[str, Any]:
    """The catalog entry of one symbol after a merge (see docs/lakehouse_contract.md)."""
    old = old or {}
    old_dropped = old.get("dropped", {})
    held = merged["timestamp"].to_numpy()

    def present(days: set[str] | list[str]) -> set[str]:
        days = list(days)
        if not days or held.size == 0:
            return set()
        stamps = np.array([date_to_ts(dt.date.fromisoformat(d)) for d in days], dtype=np.int64)
        return {d for d, hit in zip(days, np.isin(stamps, held), strict=True) if hit}

    dropped = {
        "toxic": _merge_counts(old_dropped.get("toxic", {}), result.toxic),
        "duplicate": _merge_counts(old_dropped.get("duplicate", {}), result.duplicates),
        "invalid": _merge_counts(old_dropped.get("invalid", {}), result.invalid),
    }
    # A bar dropped once and now held (a re-admitted level shift, a corrected bar) is no
    # longer a dropped row.
    for kind in ("toxic", "invalid"):
        now_held = present(dropped[kind])
        dropped[kind] = {d: n for d, n in dropped[kind].items() if d not in now_held}
    level_shifts = sorted(
        present({*old.get("level_shifts", []), *(_iso(t) for t in result.level_shifts)})
    )
    pending = sorted({_iso(t) for t in result.pending_toxic})
    calendar = info.calendar
    ts = merged["timestamp"].to_numpy()
    gaps = detect_gaps(ts, calendar, settings.gap_threshold_days)
    first = ts_to_date(int(ts[0])) if ts.size else None
    last = ts_to_date(int(ts[-1])) if ts.size else None
    counts = {kind: sum(dropped[kind].values()) for kind in DROP_KINDS}
    return {
        "exchange": info.exchange,
        "symbol": info.symbol,
        "asset_class": info.asset_class,
        "calendar": calendar,
        "genesis_date": info.genesis_date.isoformat(),
        "delisting_date": info.delisting_date.isoformat() if info.delisting_date else None,
        "file": file,
        "file_mtime_ns": file_mtime_ns,
        "start_date": first.isoformat() if first else None,
        "end_date": last.isoformat() if last else None,
        "rows": int(merged.height),
        "last_fetch": now.isoformat(timespec="seconds"),
        "gaps": [g.to_record() for g in gaps],
        "toxic_rows_dropped": counts["toxic"],
        "duplicates_dropped": counts["duplicate"],
        "invalid_rows_dropped": counts["invalid"],
        "level_shifts": level_shifts,
        "pending_toxic": pending,
        "dropped": dropped,
        "data_quality_score": quality_score(
            int(merged.height), first, last, calendar, sum(counts.values()), bool(level_shifts)
        ),
    }


def sanitize_window(
    raw: pl.DataFrame,
    lo: dt.date,
    hi: dt.date,
    known: tuple[pl.DataFrame | None, tuple | None],
    settings: Settings,
) -> tuple[SanitizeResult, int]:
    """Sanitise the fetched bars inside [lo, hi] against the file's closes before `lo`.

    `known` is `Lakehouse.read_ohlcv_versioned`'s answer, kept on the result so the merge
    reuses it when the file has not changed. Returns the result and the rows in the window.
    """
    existing = known[0]
    lo_ts, hi_ts = date_to_ts(lo), date_to_ts(hi + dt.timedelta(days=1))
    raw = raw.filter((pl.col("timestamp") >= lo_ts) & (pl.col("timestamp") < hi_ts))
    prior = np.zeros(0)
    if existing is not None and existing.height:
        prior = existing.filter(pl.col("timestamp") < lo_ts)["close"].tail(PRIOR_CLOSES).to_numpy()
    result = sanitize_bars(raw, toxic_threshold=settings.toxic_threshold, prior_closes=prior)
    result.known_file = known
    return result, raw.height


def merge_and_describe(
    lakehouse: Lakehouse,
    info: SymbolInfo,
    result: SanitizeResult,
    old: dict[str, Any] | None,
    *,
    now: dt.datetime,
    settings: Settings,
) -> dict[str, Any]:
    """Merge sanitised bars into the symbol's file and return its new catalog entry."""
    merged = lakehouse.merge_bars(info.exchange, info.symbol, result.bars, known=result.known_file)
    path = lakehouse.ohlcv_path(info.exchange, info.symbol)
    return build_entry(
        info,
        merged,
        result,
        old,
        file=str(path.relative_to(lakehouse.root)),
        file_mtime_ns=path.stat().st_mtime_ns,
        now=now,
        settings=settings,
    )


def fetch_window(
    info: SymbolInfo, entry: dict[str, Any] | None, start: dt.date, end: dt.date, settings: Settings
) -> tuple[dt.date, dt.date] | None:
    """The dates to fetch for one symbol, or None when it was not listed yet.

    A symbol new to the lakehouse gets its whole history from the history start; a known
    one gets the window, widened back to its last bar when it fell behind and to any bar
    held back as possibly toxic, so a level shift is recognised once it has lasted.
    """
    calendar = info.calendar
    lo = start if entry else min(start, settings.history_start)
    if entry and entry.get("end_date"):
        last_held = dt.date.fromisoformat(entry["end_date"])
        if last_held < start:
            lo = min(lo, last_held + dt.timedelta(days=1))
        for day in entry.get("pending_toxic", []):
            lo = min(lo, dt.date.fromisoformat(day))
    lo = max(lo, info.genesis_date)
    lo = first_session_on_or_after(lo, calendar)
    hi = last_session_on_or_before(end, calendar)
    if info.delisting_date is not None:  # no bar after the last session, ever
        hi = min(hi, info.delisting_date)
    if lo > hi:
        return None
    return lo, hi


def is_fresh(
    entry: dict[str, Any] | None, lo: dt.date, hi: dt.date, now: dt.datetime, settings: Settings
) -> bool:
    """The file covers [lo, hi] and was fetched within the freshness window."""
    if not entry or not entry.get("start_date") or entry.get("pending_toxic"):
        return False
    try:
        last_fetch = dt.datetime.fromisoformat(entry["last_fetch"])
    except (KeyError, TypeError, ValueError):
        return False
    covered = (
        dt.date.fromisoformat(entry["start_date"]) <= lo
        and dt.date.fromisoformat(entry["end_date"]) >= hi
    )
    age_h = (now - last_fetch).total_seconds() / 3600.0
    return covered and 0 <= age_h <= settings.freshness_hours


def ingest(
    symbols: list[SymbolInfo],
    start: dt.date,
    end: dt.date,
    *,
    source: MarketDataSource,
    lakehouse: Lakehouse,
    settings: Settings,
    now: dt.datetime | None = None,
    progress: Callable[[str], None] | None = None,
    advance: Callable[[int, int], None] | None = None,
    chunk_size: int = CHUNK_SIZE,
    workers: int = WORKERS,
    commit_catalog: bool = True,
    catalog: dict[str, Any] | None = None,
) -> IngestReport:
    """Bring every symbol's file up to date for [start, end]; return what happened.

    `commit_catalog=False` (a shard on a cluster worker) writes the symbols' files but
    leaves their catalog entries and errors on the report, for the run to merge; it then
    also leaves stale temp files alone (a pid seen from another host proves nothing) and
    reads `catalog` when given (the run's copy) instead of the file.
    """
    now = now or dt.datetime.now(dt.UTC)
    report = IngestReport(start, end)
    lakehouse.check_writable()  # a read-only folder fails here, before anything is fetched
    if commit_catalog:
        lakehouse.remove_stale_temp_files()  # left by a process killed mid-write
    catalog = catalog if catalog is not None else lakehouse.read_catalog()
    schema = ohlcv_schema(with_symbol=True)
    t_begin = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ingest")
    try:
        for offset in range(0, len(symbols), chunk_size):
            chunk = symbols[offset : offset + chunk_size]
            catalog = _ingest_chunk(
                chunk, catalog, start, end, source, lakehouse, settings, now, report, schema, pool, commit_catalog
            )
            if advance:  # (symbols done, symbols in all): a progress bar
                advance(offset + len(chunk), len(symbols))
            if progress:
                done = offset + len(chunk)
                s = report.summary()
                progress(
                    f"ohlcv {start}..{end}: {done}/{len(symbols)} symbols "
                    f"(ingested {s['ingested']}, skipped {s['skipped']}, failed {s['failed']}) "
                    f"in {time.perf_counter() - t_begin:.1f}s"
                )
    finally:
        pool.shutdown(wait=True)
    return report


def _ingest_chunk(
    chunk: list[SymbolInfo],
    catalog: dict[str, Any],
    start: dt.date,
    end: dt.date,
    source: MarketDataSource,
    lakehouse: Lakehouse,
    settings: Settings,
    now: dt.datetime,
    report: IngestReport,
    schema,
    pool: ThreadPoolExecutor,
    commit_catalog: bool = True,
) -> dict[str, Any]:
    staged: list[tuple[SymbolInfo, SanitizeResult, int]] = []
    errors: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    fetched = list(
        pool.map(
            lambda info: _fetch_one(
                info, catalog, start, end, source, lakehouse, settings, now, report
            ),
            chunk,
        )
    )
    report.seconds["fetch_sanitize"] += time.perf_counter() - t0
    for info, (outcome, staged_item) in zip(chunk, fetched, strict=True):
        report.outcomes.append(outcome)
        if outcome.status == "failed":
            errors[outcome.key or f"{info.exchange}_{info.symbol}"] = {
                "exchange": info.exchange,
                "symbol": info.symbol,
                "file": outcome.file,
                "reason": outcome.reason,
                "window": f"{start.isoformat()}..{end.isoformat()}",
                "at": now.isoformat(timespec="seconds"),
            }
        if staged_item is not None:
            staged.append((info, staged_item, len(report.outcomes) - 1))
    # L0 on the whole chunk at once: one validation instead of one per symbol.
    t0 = time.perf_counter()
    if staged:
        batch = pl.concat(
            [
                r.bars.with_columns(pl.lit(i.key).alias("symbol"))
                for i, r, _ in staged
                if r.bars.height
            ]
            or [staged[0][1].bars.with_columns(pl.lit("").alias("symbol"))]
        )
        enforce(
            schema, batch, what=f"ohlcv {start.isoformat()}..{end.isoformat()} (sanitised bars)"
        )
    report.seconds["validate"] += time.perf_counter() - t0
    entries: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()

    def write(item: tuple[SymbolInfo, SanitizeResult, int]) -> tuple[str, dict[str, Any], int]:
        info, result, index = item
        entry = merge_and_describe(
            lakehouse, info, result, catalog["symbols"].get(info.key), now=now, settings=settings
        )
        return info.key, entry, index

    for key, entry, index in pool.map(write, staged):
        outcome = report.outcomes[index]
        old = catalog["symbols"].get(key)
        entries[key] = entry
        outcome.rows_total = entry["rows"]
        outcome.rows_new = max(entry["rows"] - (old["rows"] if old else 0), 0)
        outcome.gaps = len(entry["gaps"])
    report.seconds["write"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    if not commit_catalog:
        report.entries.update(entries)
        report.errors.update(errors)
    elif entries or errors:
        catalog = lakehouse.update_catalog(entries=entries, errors=errors)
    report.seconds["catalog"] += time.perf_counter() - t0
    return catalog


def _fetch_one(
    info: SymbolInfo,
    catalog: dict[str, Any],
    start: dt.date,
    end: dt.date,
    source: MarketDataSource,
    lakehouse: Lakehouse,
    settings: Settings,
    now: dt.datetime,
    report: IngestReport,
) -> tuple[SymbolOutcome, SanitizeResult | None]:
    try:
        key = symbol_key(info.exchange, info.symbol)
        path = lakehouse.ohlcv_path(info.exchange, info.symbol)
    except QuantError as exc:
        return SymbolOutcome("", info.exchange, info.symbol, "failed", reason=str(exc)), None
    outcome = SymbolOutcome(key, info.exchange, info.symbol, "ingested", file=str(path))
    entry = catalog["symbols"].get(key)
    window = fetch_window(info, entry, start, end, settings)
    if window is None and entry and info.delisting_date is not None and path.exists():
        outcome.status = "skipped"  # delisted and held whole: it stays, nothing to fetch
        outcome.rows_total = entry["rows"]
        return outcome, None
    if window is None:
        outcome.status = "not_listed"
        return outcome, None
    lo, hi = window
    if is_fresh(entry, lo, hi, now, settings) and path.exists():
        outcome.status = "skipped"
        outcome.rows_total = entry["rows"]
        return outcome, None
    try:
        raw = source.fetch_bars(info.exchange, info.symbol, lo, hi)
        existing, version = lakehouse.read_ohlcv_versioned(info.exchange, info.symbol)
    except QuantError as exc:
        outcome.status = "failed"
        outcome.reason = str(exc)
        return outcome, None
    except Exception as exc:  # a source bug or an I/O error: recorded, the rest goes on
        outcome.status = "failed"
        outcome.reason = f"{exc.__class__.__name__}: {exc}"
        return outcome, None
    result, in_window = sanitize_window(raw, lo, hi, (existing, version), settings)
    outcome.out_of_window = raw.height - in_window
    outcome.rows_fetched = in_window
    outcome.toxic = len(result.toxic)
    outcome.duplicates = len(result.duplicates)
    outcome.invalid = len(result.invalid)
    outcome.level_shifts = len(result.level_shifts)
    return outcome, result
