"""Maintenance of the lakehouse: gap repair and the audit.

- `repair_gaps`: re-fetch only the windows of recorded gaps (and whole files that the
  audit quarantined); report gaps healed and gaps still open. A gap the source still
  cannot fill is a real halt: it stays open and is annotated; nothing is invented.
- `audit_lakehouse`: re-validate every file against L0 and the toxic threshold, check
  the catalog agrees with the files, move unreadable files to a quarantine folder (never
  deleted), and report drift since the previous audit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from quant_assets.contracts import ohlcv_schema, validate
from quant_assets.data.calendar import entry_calendar
from quant_assets.data.gaps import detect_gaps
from quant_assets.data.ingest import merge_and_describe, sanitize_window
from quant_assets.data.lakehouse_reads import symbol_of_file
from quant_resources.atomic import atomic_write_json, read_json
from quant_resources.errors import QuantError
from quant_resources.lakehouse import Lakehouse, LakehouseError, read_ohlcv_file
from quant_resources.schema import SymbolInfo, ts_to_date
from quant_resources.settings import Settings
from quant_resources.sources.base import MarketDataSource


@dataclass
class RepairReport:
    healed: list[dict] = field(default_factory=list)
    still_open: list[dict] = field(default_factory=list)
    refetched_files: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {
            "gaps_healed": len(self.healed),
            "gaps_still_open": len(self.still_open),
            "files_refetched": len(self.refetched_files),
            "failed": len(self.failed),
        }


def _info(entry: dict[str, Any]) -> SymbolInfo:
    return SymbolInfo(
        entry["exchange"],
        entry["symbol"],
        entry.get("asset_class", "equity"),
        dt.date.fromisoformat(entry.get("genesis_date") or entry["start_date"]),
        float(entry.get("median_dollar_volume", 0.0)),
    )


def _refetch(
    info: SymbolInfo,
    lo: dt.date,
    hi: dt.date,
    *,
    source: MarketDataSource,
    lakehouse: Lakehouse,
    settings: Settings,
    old_entry: dict[str, Any] | None,
    now: dt.datetime,
) -> dict[str, Any]:
    raw = source.fetch_bars(info.exchange, info.symbol, lo, hi)
    known = lakehouse.read_ohlcv_versioned(info.exchange, info.symbol)
    result, _ = sanitize_window(raw, lo, hi, known, settings)
    entry = merge_and_describe(lakehouse, info, result, old_entry, now=now, settings=settings)
    if old_entry and "last_fetch" in old_entry:
        entry["last_fetch"] = old_entry["last_fetch"]  # a repair is not a fresh full fetch
    return entry


def repair_gaps(
    *,
    source: MarketDataSource,
    lakehouse: Lakehouse,
    settings: Settings,
    now: dt.datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> RepairReport:
    """Targeted re-fetch of every recorded gap and every quarantined file."""
    now = now or dt.datetime.now(dt.UTC)
    catalog = lakehouse.read_catalog()
    report = RepairReport()
    entries: dict[str, dict[str, Any]] = {}
    errors: dict[str, dict[str, Any]] = {}
    for key, entry in sorted(catalog["symbols"].items()):
        gaps = entry.get("gaps", [])
        missing_file = not (lakehouse.root / entry["file"]).exists() if entry.get("file") else True
        if not gaps and not missing_file:
            continue
        info = _info(entry)
        try:
            if missing_file:
                lo = max(settings.history_start, info.genesis_date)
                hi = (
                    dt.date.fromisoformat(entry["end_date"])
                    if entry.get("end_date")
                    else now.date()
                )
                entry = _refetch(
                    info,
                    lo,
                    hi,
                    source=source,
                    lakehouse=lakehouse,
                    settings=settings,
                    old_entry={**entry, "dropped": {}},
                    now=now,
                )
                report.refetched_files.append(key)
            for gap in gaps:
                start, end = dt.date.fromisoformat(gap["start"]), dt.date.fromisoformat(gap["end"])
                entry = _refetch(
                    info,
                    start,
                    end,
                    source=source,
                    lakehouse=lakehouse,
                    settings=settings,
                    old_entry=entry,
                    now=now,
                )
                still = [
                    g
                    for g in entry["gaps"]
                    if g["start"] <= gap["end"] and g["end"] >= gap["start"]
                ]
                if still:
                    annotated = {
                        **gap,
                        "symbol": key,
                        "note": "source has no bars for these sessions: a real halt, left open",
                    }
                    report.still_open.append(annotated)
                else:
                    report.healed.append({**gap, "symbol": key})
            annotations = {
                f"{g['start']}..{g['end']}": f"re-fetched {now.date().isoformat()}: source has no bars (halt)"
                for g in entry["gaps"]
            }
            entry["gap_annotations"] = annotations
            entries[key] = entry
        except (QuantError, OSError) as exc:
            report.failed.append({"symbol": key, "reason": str(exc)})
            errors[key] = {
                "exchange": info.exchange,
                "symbol": info.symbol,
                "file": entry.get("file", ""),
                "reason": str(exc),
                "at": now.isoformat(timespec="seconds"),
            }
        if progress and (len(entries) + len(report.failed)) % 25 == 0:
            progress(f"repair: {len(entries) + len(report.failed)} symbols done")
    if entries or errors:
        lakehouse.update_catalog(entries=entries, errors=errors)
    return report


# -- audit ------------------------------------------------------------------------------


@dataclass
class AuditReport:
    files: int = 0
    rows: int = 0
    quarantined: list[dict] = field(default_factory=list)
    contract_failures: list[dict] = field(default_factory=list)
    toxic: list[dict] = field(default_factory=list)
    catalog_mismatches: list[dict] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    drift: dict[str, list[str]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not (
            self.quarantined
            or self.contract_failures
            or self.toxic
            or self.catalog_mismatches
            or self.missing_files
        )

    def summary(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "rows": self.rows,
            "quarantined": len(self.quarantined),
            "contract_failures": len(self.contract_failures),
            "toxic_returns": len(self.toxic),
            "catalog_mismatches": len(self.catalog_mismatches),
            "orphan_files": len(self.orphans),
            "missing_files": len(self.missing_files),
            "changed_since_last_audit": len(self.drift.get("changed", [])),
            "added_since_last_audit": len(self.drift.get("added", [])),
            "removed_since_last_audit": len(self.drift.get("removed", [])),
        }


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def audit_lakehouse(
    *,
    lakehouse: Lakehouse,
    settings: Settings,
    now: dt.datetime | None = None,
    reconcile: bool = True,
) -> AuditReport:
    """Re-validate every file; quarantine unreadable ones; reconcile and report drift."""
    now = now or dt.datetime.now(dt.UTC)
    report = AuditReport()
    catalog = lakehouse.read_catalog()
    schema = ohlcv_schema(with_symbol=False)
    fingerprints: dict[str, str] = {}
    fixes: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for path in lakehouse.ohlcv_files():
        key = symbol_of_file(path)
        seen.add(key)
        report.files += 1
        try:
            bars = read_ohlcv_file(path)
        except LakehouseError as exc:
            target = lakehouse.quarantine_dir / f"{now.strftime('%Y%m%dT%H%M%SZ')}_{path.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            report.quarantined.append(
                {
                    "symbol": key,
                    "file": str(path),
                    "moved_to": str(target),
                    "reason": str(exc)[:300],
                }
            )
            continue
        report.rows += bars.height
        fingerprints[key] = _sha256(path)
        cases = validate(schema, bars)
        if cases is not None:
            report.contract_failures.append(
                {
                    "symbol": key,
                    "file": str(path),
                    "failures": cases.height,
                    "checks": sorted(set(cases["check"].cast(pl.String).to_list())),
                }
            )
        entry = catalog["symbols"].get(key)
        shifts = set(entry.get("level_shifts", [])) if entry else set()
        closes = bars["close"].to_numpy()
        if closes.size > 1:
            ratios = closes[1:] / closes[:-1] - 1.0
            for i in np.flatnonzero(ratios > settings.toxic_threshold):
                day = ts_to_date(bars["timestamp"][int(i) + 1]).isoformat()
                if day not in shifts:
                    report.toxic.append({"symbol": key, "date": day, "return": float(ratios[i])})
        if entry is None:
            report.orphans.append(str(path))
            continue
        ts = bars["timestamp"]
        actual = {
            "rows": bars.height,
            "start_date": ts_to_date(ts.min()).isoformat() if bars.height else None,
            "end_date": ts_to_date(ts.max()).isoformat() if bars.height else None,
        }
        diff = {k: (entry.get(k), v) for k, v in actual.items() if entry.get(k) != v}
        if diff:
            report.catalog_mismatches.append({"symbol": key, "catalog_vs_file": diff})
            if reconcile:
                gaps = detect_gaps(
                    ts.to_numpy(),
                    entry_calendar(entry),
                    settings.gap_threshold_days,
                )
                fixes[key] = {
                    **entry,
                    **actual,
                    "gaps": [g.to_record() for g in gaps],
                    "file_mtime_ns": path.stat().st_mtime_ns,
                }
    for key in catalog["symbols"]:
        if key not in seen:
            report.missing_files.append(key)
    previous = read_json(audit_path(lakehouse), default={}) or {}
    before = previous.get("fingerprints", {})
    report.drift = {
        "changed": sorted(k for k in fingerprints if k in before and before[k] != fingerprints[k]),
        "added": sorted(k for k in fingerprints if k not in before),
        "removed": sorted(k for k in before if k not in fingerprints),
    }
    if fixes:
        lakehouse.update_catalog(entries=fixes)
    atomic_write_json(
        audit_path(lakehouse),
        {
            "at": now.isoformat(timespec="seconds"),
            "summary": report.summary(),
            "fingerprints": fingerprints,
            "quarantined": report.quarantined,
            "contract_failures": report.contract_failures,
            "toxic": report.toxic,
            "catalog_mismatches": report.catalog_mismatches,
            "orphans": report.orphans,
            "missing_files": report.missing_files,
        },
    )
    return report


def audit_path(lakehouse: Lakehouse):
    return lakehouse.layout.audit_report_path
