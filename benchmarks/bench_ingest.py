"""Benchmark: the data cycle through Dagster on SyntheticSource(n_symbols=1000).

1. History backfill 2016-01-01..2025-12-31 as ONE run of the data job (candidates, ohlcv,
   tv_technicals_1d and their checks) against a persistent sqlite DAGSTER_HOME, as
   `quant backfill` runs it.
2. A daily incremental run (2026-01-01) on top.

Prints wall time, rows per second, peak RSS, per-step durations from the Dagster event
log, the ingestion breakdown (fetch+sanitise, Pandera validation, write, catalog) and
the share of ingestion time spent in Pandera validation.

Usage: .venv/bin/python benchmarks/bench_ingest.py [--symbols 1000] [--start 2016-01-01] [--end 2025-12-31]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def step_durations(instance, run_id: str) -> dict[str, float]:
    import dagster as dg

    starts, durations = {}, {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or not event.step_key:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = record.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            durations[event.step_key] = record.timestamp - starts.get(event.step_key, record.timestamp)
    return durations


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--start", default="2016-01-01")
    parser.add_argument("--end", default="2025-12-31")
    parser.add_argument("--reuse", help="work dir of an earlier run: skip the backfill, run the next daily increment")
    args = parser.parse_args()
    work = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    os.chdir(work)
    os.environ["DAGSTER_HOME"] = str(work / ".dagster")
    from quant_resources.runtime import prepare_process

    prepare_process()
    import dagster as dg

    from quant_assets import runner
    from quant_resources.settings import Settings

    start, end = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    settings = Settings(data_dir=work / "data", history_start=start, synthetic_symbols=args.symbols, universe="all")
    instance = dg.DagsterInstance.get()

    print(f"# data cycle benchmark: {args.symbols} synthetic symbols, {start}..{end}, work dir {work}", flush=True)
    if args.reuse:
        return daily_increment(settings, instance, work)
    t0 = time.perf_counter()
    backfill = runner.execute(settings, runner.DATA_JOB, start=start, end=end, instance=instance)
    wall = time.perf_counter() - t0
    rss_backfill = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    meta = backfill.asset_metadata["ohlcv"]
    seconds = meta["seconds"]
    ingest_total = sum(seconds.values())
    steps = step_durations(instance, backfill.run_id)
    rows = meta["rows_new"]
    print(f"backfill: {wall:.1f} s wall for {rows:,} rows ({rows / wall:,.0f} rows/s end to end), peak RSS {rss_backfill:,.0f} MiB")
    print("  steps (s): " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(steps.items())))
    print(
        "  ohlcv ingestion (s): "
        + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items())
        + f"; total {ingest_total:.1f} ({rows / ingest_total:,.0f} rows/s)"
    )
    print(f"  Pandera validation share of ingestion: {seconds['validate'] / ingest_total:.1%}")
    print(f"  Dagster bookkeeping (run wall minus step bodies): {wall - sum(steps.values()):.1f} s; "
          f"partition events written: {2 * ((end - start).days + 1) * 3:,} (3 assets x materialization + planned)")

    return daily_increment(settings, instance, work, end + dt.timedelta(days=1))


def daily_increment(settings, instance, work: Path, day: dt.date | None = None) -> int:
    from quant_assets import runner
    from quant_resources.lakehouse import Lakehouse

    if day is None:
        last = Lakehouse(data_dir=str(settings.data_dir)).read_catalog()["meta"]["last_partition"]
        day = dt.date.fromisoformat(last) + dt.timedelta(days=1)
    t0 = time.perf_counter()
    daily = runner.execute(settings, runner.DATA_JOB, start=day, instance=instance)
    wall_daily = time.perf_counter() - t0
    meta = daily.asset_metadata["ohlcv"]
    seconds = meta["seconds"]
    steps = step_durations(instance, daily.run_id)
    print(f"daily {day}: {wall_daily:.1f} s wall, {meta['ingested']} symbols ingested, {meta['rows_new']} new rows")
    print("  steps (s): " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(steps.items())))
    print("  ohlcv ingestion (s): " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()))
    print(f"peak RSS overall: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
