"""Ingestion in symbol shards: the run splits its symbols, a compute (`quant_resources/
compute.py`) runs each shard where it likes (in this process, or on a Dask cluster
worker), and the run alone merges what the shards report into the catalog.

A shard writes only its own symbols' files (each under its lock, published atomically)
and returns their catalog entries: two shards never write the same file, and the catalog
has one writer, the run, so no lock has to hold across hosts for it. A shard killed
midway (its worker died) is run again by the cluster; the files it had published are
read back and merged unchanged, so the re-run gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from quant_assets.data.ingest import IngestReport, ingest
from quant_resources.compute import Compute
from quant_resources.lakehouse import Lakehouse
from quant_resources.schema import SymbolInfo
from quant_resources.settings import Settings
from quant_resources.sources.base import MarketDataSource


@dataclass(frozen=True)
class ShardTask:
    """What one shard needs; picklable, so it can cross to another process or host."""

    index: int
    symbols: list[SymbolInfo]
    start: dt.date
    end: dt.date
    settings: Settings
    now: dt.datetime
    catalog: dict[str, Any]  # the run's catalog entries of these symbols


@dataclass
class ShardResult:
    index: int
    report: IngestReport
    seconds: float  # wall time of the shard where it ran
    worker: str  # host:pid that ran it


def split_shards(symbols: list[SymbolInfo], size: int) -> list[list[SymbolInfo]]:
    """Consecutive groups of `size` symbols (the last one smaller)."""
    return [symbols[i : i + size] for i in range(0, len(symbols), max(1, size))]


def ingest_shard(task: ShardTask) -> ShardResult:
    """Ingest one shard where it runs: the source and the lakehouse from the settings."""
    from quant_resources.sources import source_from_settings

    t0 = time.perf_counter()
    report = ingest(
        task.symbols,
        task.start,
        task.end,
        source=source_from_settings(task.settings),
        lakehouse=Lakehouse(data_dir=str(task.settings.data_dir)),
        settings=task.settings,
        now=task.now,
        commit_catalog=False,
        catalog=task.catalog,
    )
    return ShardResult(
        task.index, report, time.perf_counter() - t0, f"{socket.gethostname()}:{os.getpid()}"
    )


def ingest_sharded(
    symbols: list[SymbolInfo],
    start: dt.date,
    end: dt.date,
    *,
    compute: Compute,
    source: MarketDataSource,
    lakehouse: Lakehouse,
    settings: Settings,
    progress: Callable[[str], None] | None = None,
    advance: Callable[[int, int], None] | None = None,
) -> tuple[IngestReport, list[ShardResult]]:
    """Bring every symbol's file up to date for [start, end] through `compute`.

    In process this is `ingest` itself (one shard: its threads, its catalog updates per
    chunk, today's speed). Distributed, the symbols go out in shards of
    `settings.shard_symbols`; the catalog takes each shard's entries as it finishes.
    Returns the whole run's report (outcomes in symbol order) and the shards' results.
    """
    if not compute.distributed:
        report = ingest(
            symbols,
            start,
            end,
            source=source,
            lakehouse=lakehouse,
            settings=settings,
            progress=progress,
            advance=advance,
        )
        return report, []
    if not symbols:
        return IngestReport(start, end), []
    now = dt.datetime.now(dt.UTC)
    lakehouse.check_writable()
    # Only here, before any shard runs: on a worker of another host every pid looks dead.
    lakehouse.remove_stale_temp_files()
    known = lakehouse.read_catalog()["symbols"]
    shards = split_shards(symbols, settings.shard_symbols)
    tasks = [
        ShardTask(
            index,
            shard,
            start,
            end,
            settings,
            now,
            {
                "symbols": {s.key: known[s.key] for s in shard if s.key in known},
                "errors": {},
                "meta": {},
            },
        )
        for index, shard in enumerate(shards)
    ]
    results: list[ShardResult] = []
    done = 0
    t0 = time.perf_counter()
    for _, result in compute.map_unordered(ingest_shard, tasks, name="ohlcv-shard"):
        # The run is the catalog's one writer: each finished shard lands at once, so a
        # run stopped later keeps what its finished shards wrote.
        if result.report.entries or result.report.errors:
            lakehouse.update_catalog(entries=result.report.entries, errors=result.report.errors)
        results.append(result)
        done += len(tasks[result.index].symbols)
        if advance:
            advance(done, len(symbols))
        if progress:
            progress(
                f"ohlcv {start}..{end}: shard {result.index + 1}/{len(tasks)} done on {result.worker} "
                f"in {result.seconds:.1f}s; {done}/{len(symbols)} symbols in {time.perf_counter() - t0:.1f}s"
            )
    results.sort(key=lambda r: r.index)
    report = IngestReport(start, end)
    for result in results:
        report.outcomes += result.report.outcomes
        for phase, seconds in result.report.seconds.items():
            report.seconds[phase] += seconds
    return report, results
