"""Benchmark: the data cycle's own work, apart from the Dagster instance's bookkeeping.

Runs the `data_cycle` job (candidates, ohlcv, tv_technicals_1d and their checks) on an
in-memory instance (`DagsterInstance.ephemeral()`), so what is left is our work:

1. a history backfill of every symbol (universe `all`) as ONE run over the range;
2. the daily increment on top, in a fresh process as `quant data` runs it (cold caches).
   With the files source each CSV first gets the next business day's bar appended, as a
   vendor's daily export does.

Each phase runs in its own process, so its peak RSS (`getrusage`) is its own. Printed per
phase: the run's wall time, each step's body (its own work, up to its first output
event), each whole step (plus the in-memory events of its partitions), the ingestion
breakdown, peak RSS.

Sources: `synthetic` (SyntheticSource(n_symbols)) or `files` (a folder of vendor CSVs,
Date/Open/High/Low/Close/Adj Close/Volume, every business day of the range; generated
once into --files-dir and copied into the work dir, as the increment appends to them).

Usage:
  .venv/bin/python benchmarks/bench_data_work.py --source synthetic
  .venv/bin/python benchmarks/bench_data_work.py --source files --files-dir /tmp/bench_csv_1000
  .venv/bin/python benchmarks/bench_data_work.py --source files --work DIR --phase increment
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BUSINESS_DAYS_PER_YEAR = 261


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def business_days(start: dt.date, end: dt.date) -> np.ndarray:
    days = np.arange(np.datetime64(start), np.datetime64(end) + 1)
    return days[np.is_busday(days)]


def write_vendor_csvs(folder: Path, symbols: int, start: dt.date, end: dt.date, seed: int = 7) -> None:
    """One Yahoo-style CSV per symbol: a random walk on every business day of the range."""
    import polars as pl

    folder.mkdir(parents=True, exist_ok=True)
    days = business_days(start, end)
    rng = np.random.default_rng(seed)
    for i in range(symbols):
        close = 20.0 * np.exp(np.cumsum(rng.normal(0.0003, 0.02, days.size)))
        spread = np.abs(rng.normal(0.0, 0.01, days.size)) * close
        open_ = close * np.exp(rng.normal(0.0, 0.005, days.size))
        frame = pl.DataFrame(
            {
                "Date": days.astype("datetime64[D]").astype(str),
                "Open": open_.round(4),
                "High": (np.maximum(open_, close) + spread).round(4),
                "Low": (np.minimum(open_, close) - spread).clip(min=0.01).round(4),
                "Close": close.round(4),
                "Adj Close": close.round(4),
                "Volume": rng.integers(10_000, 5_000_000, days.size).astype(float),
            }
        )
        frame.write_csv(folder / f"BENCH_S{i:04d}.csv")


def append_next_bar(folder: Path, day: dt.date) -> int:
    """Append `day`'s bar to every CSV (the vendor's daily update); returns files touched."""
    touched = 0
    for path in sorted(folder.glob("*.csv")):
        last = path.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[1].decode().split(",")
        close = float(last[4]) * 1.001
        row = [day.isoformat(), last[4], f"{close * 1.01:.4f}", f"{float(last[4]) * 0.99:.4f}", f"{close:.4f}", f"{close:.4f}", last[6]]
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(",".join(row) + "\n")
        touched += 1
    return touched


def step_durations(instance, run_id: str) -> tuple[dict[str, float], dict[str, float]]:
    """Per step: (its body, until its first output event) and (the whole step).

    The difference is the per-partition events the step records after its body returns
    (in memory here): bookkeeping, not our work.
    """
    import dagster as dg

    outputs = (dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    starts, bodies, durations = {}, {}, {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or not event.step_key:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = record.timestamp
        elif event.event_type in outputs and event.step_key not in bodies:
            bodies[event.step_key] = record.timestamp - starts.get(event.step_key, record.timestamp)
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            durations[event.step_key] = record.timestamp - starts.get(event.step_key, record.timestamp)
    return bodies, durations


def run_phase(args: argparse.Namespace) -> int:
    """One run of the data job in this process; prints its figures as one JSON line too."""
    work = Path(args.work)
    os.chdir(work)
    os.environ["DAGSTER_HOME"] = str(work / ".dagster")
    from quant_resources.runtime import prepare_process

    prepare_process()
    import dagster as dg

    from quant_assets import runner
    from quant_resources.lakehouse import Lakehouse
    from quant_resources.settings import Settings

    start, end = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    settings = Settings(
        data_dir=work / "data",
        history_start=start,
        synthetic_symbols=args.symbols,
        universe="all",
        source=args.source,
        files_dir=work / "csv" if args.source == "files" else None,
    )
    if args.phase == "backfill":
        first, last = start, end
    else:
        last_done = Lakehouse(data_dir=str(settings.data_dir)).read_catalog()["meta"]["last_partition"]
        first = last = dt.date.fromisoformat(last_done) + dt.timedelta(days=1)
        if args.source == "files":
            append_next_bar(work / "csv", first)
    instance = dg.DagsterInstance.ephemeral()
    t0 = time.perf_counter()
    summary = runner.execute(settings, runner.DATA_JOB, start=first, end=last, instance=instance)
    wall = time.perf_counter() - t0
    bodies, steps = step_durations(instance, summary.run_id)
    meta = summary.asset_metadata["ohlcv"]
    figures = {
        "phase": args.phase,
        "source": args.source,
        "window": f"{first}..{last}",
        "wall_s": round(wall, 2),
        "work_s": {k: round(v, 2) for k, v in sorted(bodies.items())},
        "steps_s": {k: round(v, 2) for k, v in sorted(steps.items())},
        "ingest_s": meta["seconds"],
        "rows_new": meta["rows_new"],
        "ingested": meta["ingested"],
        "skipped": meta["skipped"],
        "failed": meta["failed"],
        "peak_rss_mib": round(peak_rss_mib()),
    }
    print(f"{args.phase} {first}..{last} ({args.source}): {wall:.1f} s wall, peak RSS {figures['peak_rss_mib']:,} MiB")
    print("  work (s, step body): " + ", ".join(f"{k} {v}" for k, v in figures["work_s"].items()))
    print(f"  work total {sum(bodies.values()):.1f} s; steps incl. their partition events (s): "
          + ", ".join(f"{k} {v}" for k, v in figures["steps_s"].items()))
    print("  ohlcv ingestion (s): " + ", ".join(f"{k} {v}" for k, v in meta["seconds"].items()))
    print(f"  ingested {meta['ingested']}, skipped {meta['skipped']}, failed {meta['failed']}, rows new {meta['rows_new']:,}")
    print("FIGURES " + json.dumps(figures), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", choices=("synthetic", "files"), default="synthetic")
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--start", default="2016-01-01")
    parser.add_argument("--end", default="2025-12-31")
    parser.add_argument("--files-dir", default="/tmp/bench_csv_1000", help="generated CSVs, reused between runs")
    parser.add_argument("--work", help="work dir (default: a new temp dir); with --phase increment, an earlier run's")
    parser.add_argument("--phase", choices=("all", "backfill", "increment"), default="all")
    args = parser.parse_args()
    if args.phase != "all":
        return run_phase(args)
    work = Path(args.work or tempfile.mkdtemp(prefix=f"bench_work_{args.source}_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.source == "files":
        files_dir = Path(args.files_dir)
        if not files_dir.exists():
            t0 = time.perf_counter()
            write_vendor_csvs(files_dir, args.symbols, dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end))
            print(f"# wrote {args.symbols} CSVs to {files_dir} in {time.perf_counter() - t0:.1f} s")
        shutil.copytree(files_dir, work / "csv", dirs_exist_ok=True)
    print(f"# data cycle work: {args.symbols} symbols ({args.source}), {args.start}..{args.end}, work dir {work}", flush=True)
    common = [sys.executable, __file__, "--source", args.source, "--symbols", str(args.symbols),
              "--start", args.start, "--end", args.end, "--work", str(work)]
    for phase in ("backfill", "increment"):
        subprocess.run([*common, "--phase", phase], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
