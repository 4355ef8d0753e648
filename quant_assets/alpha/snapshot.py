"""The run snapshot: what an alpha run reads from the lakehouse, copied and fingerprinted.

`plan_snapshot` decides, from the day's candidates and the catalog, which files the run
needs; it fails fast listing every candidate that is missing or stale before anything is
computed. `read_snapshot_files` reads each file once into memory, so the hash in the
manifest is the hash of the bytes copied, even while the data cycle replaces a file.

Point in time: the quality inputs the manifest records for day D (the data-quality score
selection filters on, the level shifts that exclude a symbol) are computed from the
copied bars up to D and the catalog's dated drops and level shifts up to D
(`quality_as_of`), never from the catalog's current score, which counts gaps and drops
that happened after D. The copies themselves hold the bars up to D only, written in one
canonical encoding (`as_of_copy`), so a run folder for D, its manifest's hashes and its
lakehouse fingerprint are the same whatever the lakehouse gained after D.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from quant_assets.data.calendar import entry_calendar
from quant_assets.data.quality import quality_score
from quant_resources.errors import QuantError
from quant_resources.io_managers import LakehouseView
from quant_resources.schema import date_to_ts, ts_to_date


class SnapshotError(QuantError):
    """Candidates the alpha run cannot use; the message lists every one."""


@dataclass
class SnapshotPlan:
    as_of: dt.date
    files: dict[str, Path] = field(default_factory=dict)  # catalog key -> lakehouse file
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)


def plan_snapshot(view: LakehouseView, as_of: dt.date, stale_tolerance_days: int) -> SnapshotPlan:
    candidates = view.candidates()["candidates"]
    catalog = view.catalog()
    plan = SnapshotPlan(as_of)
    missing, stale = [], []
    oldest_ok = as_of - dt.timedelta(days=stale_tolerance_days)
    for record in candidates:
        key = f"{record['exchange']}_{record['symbol']}"
        entry = catalog["symbols"].get(key)
        path = view.ohlcv_path(record["exchange"], record["symbol"])
        if entry is None or not path.exists():
            reason = catalog.get("errors", {}).get(key, {}).get("reason", "not in the lakehouse")
            missing.append(f"{key} ({path.name}: {reason[:160]})")
            continue
        end = dt.date.fromisoformat(entry["end_date"]) if entry.get("end_date") else None
        if end is None or end < oldest_ok:
            stale.append(
                f"{key} (ends {entry.get('end_date')}, needs {oldest_ok.isoformat()} or later)"
            )
            continue
        shifts = [day for day in entry.get("level_shifts", []) if day <= as_of.isoformat()]
        if shifts:  # one flagged after the day was not known on it
            plan.excluded[key] = f"level shift flagged on {', '.join(shifts)}"
            continue
        plan.files[key] = path
        plan.entries[key] = entry
    if missing or stale:
        lines = [f"missing: {m}" for m in missing] + [f"stale: {s}" for s in stale]
        raise SnapshotError(
            f"snapshot for {as_of.isoformat()}: {len(missing)} missing and {len(stale)} stale candidate(s) "
            f"(stale tolerance {stale_tolerance_days} days); run the data cycle for "
            f"{as_of.isoformat()} or repair them:\n  " + "\n  ".join(lines)
        )
    if not plan.files:
        raise SnapshotError(f"snapshot for {as_of.isoformat()}: no usable candidate")
    return plan


def read_snapshot_files(
    plan: SnapshotPlan,
) -> tuple[dict[str, bytes], dict[str, dict[str, Any]], dict[str, bytes]]:
    """(copies, descriptions, originals) per snapshot file name: the copy holds the bars up
    to the as-of day (`as_of_copy`), described by its sha256, rows and the quality inputs
    as of that day; the original is the lakehouse file as read (once), which the DVC
    comparison needs."""
    contents: dict[str, bytes] = {}
    described: dict[str, dict[str, Any]] = {}
    originals: dict[str, bytes] = {}
    for key, path in sorted(plan.files.items()):
        data = path.read_bytes()
        name = path.name
        originals[name] = data
        copy, frame = as_of_copy(data, plan.as_of)
        contents[name] = copy
        described[name] = {
            "symbol": key,
            "sha256": hashlib.sha256(copy).hexdigest(),
            "rows": frame.height,
            "data_quality_score": quality_as_of(frame["timestamp"], plan.entries[key], plan.as_of),
            # The score's only input that is not in the copied file: a reproduction rebuilds it.
            "dropped_rows_as_of": dropped_as_of(plan.entries[key], plan.as_of),
            "asset_class": plan.entries[key].get("asset_class"),
        }
    return contents, described, originals


def as_of_copy(data: bytes, as_of: dt.date) -> tuple[bytes, pl.DataFrame]:
    """The bars of a lakehouse file dated up to `as_of`, as Parquet bytes in one canonical
    encoding (the lakehouse's: Snappy, statistics), and the frame written. The same bars
    give the same bytes, whether the file ended on `as_of` or years later."""
    frame = pl.read_parquet(io.BytesIO(data))
    kept = frame.filter(pl.col("timestamp") < date_to_ts(as_of + dt.timedelta(days=1)))
    buffer = io.BytesIO()
    kept.write_parquet(buffer, compression="snappy", statistics=True)
    return buffer.getvalue(), kept


def quality_as_of(timestamps: pl.Series, entry: dict[str, Any], as_of: dt.date) -> float:
    """The data-quality score of a symbol as known at the close of `as_of`.

    `quality.quality_score` over the bars up to `as_of` (completeness between the first and
    the last of them), the rows the sanitiser dropped on dates up to `as_of` (the catalog's
    dated `dropped` counts) and whether a level shift was flagged up to `as_of`.
    """
    held = timestamps.filter(timestamps < date_to_ts(as_of + dt.timedelta(days=1)))
    if held.is_empty():
        return 0.0
    return quality_score(
        held.len(),
        ts_to_date(int(held.min())),
        ts_to_date(int(held.max())),
        entry_calendar(entry),
        dropped_as_of(entry, as_of),
        any(shift <= as_of.isoformat() for shift in entry.get("level_shifts", [])),
    )


def dropped_as_of(entry: dict[str, Any], as_of: dt.date) -> int:
    """Rows the sanitiser dropped on dates up to `as_of` (the catalog's dated counts)."""
    day = as_of.isoformat()
    return sum(
        int(count) for by_date in entry.get("dropped", {}).values() for date, count in by_date.items() if date <= day
    )


def fingerprint(described: dict[str, dict[str, Any]]) -> str:
    """One hash of the snapshot content: sha256 over the sorted (name, file hash) pairs."""
    digest = hashlib.sha256()
    for name in sorted(described):
        digest.update(f"{name}:{described[name]['sha256']}\n".encode())
    return digest.hexdigest()


def git_revision(start: Path) -> str | None:
    """HEAD's commit read from the .git folder (no git command: loaders never call git)."""
    for folder in [start, *start.parents]:
        git = folder / ".git"
        if git.is_dir():
            head = (git / "HEAD").read_text().strip()
            if not head.startswith("ref: "):
                return head
            ref = head[5:]
            ref_file = git / ref
            if ref_file.exists():
                return ref_file.read_text().strip()
            packed = git / "packed-refs"
            if packed.exists():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0]
            return None
    return None

