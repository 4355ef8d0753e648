"""Feature store benchmark: full build of 1000 symbols x 10 years, then one daily increment.

    .venv/bin/python benchmarks/bench_features.py [--symbols 1000] [--days 2520]

Bars are numpy random walks on business days (2520 sessions ~ 10 years), written once to
a Parquet file as the lakehouse would hold them. Each phase runs in its own child
process so its peak RSS (`resource.getrusage`) is its own, not the largest so far:

- full: load all bars, `compute_indicators`, `write_features` (L2 validation + one Delta
  commit of every row).
- daily: load the bars from `warmup_start(day)` (what the asset reads), then
  `update_features` for the next session (trim, compute, validate, commit).

Targets: full build under 10 s, daily increment under 2 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from quant_assets.features.indicators import compute_indicators
from quant_assets.features.store import (
    current_version,
    read_features,
    update_features,
    warmup_start,
    write_features,
)
from quant_resources.schema import date_to_ts

FIRST_SESSION = dt.date(2014, 1, 1)


def business_days(first: dt.date, count: int) -> list[dt.date]:
    days: list[dt.date] = []
    day = first
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def generate_bars(n_symbols: int, sessions: list[dt.date], seed: int = 7) -> pl.DataFrame:
    """Random-walk OHLCV for every symbol on every session (long format)."""
    rng = np.random.default_rng(seed)
    n_days = len(sessions)
    shape = (n_symbols, n_days)
    close = 20.0 * np.exp(
        rng.uniform(0, 3, (n_symbols, 1)) + np.cumsum(rng.normal(0, 0.02, shape), axis=1)
    )
    open_ = close * np.exp(rng.normal(0, 0.005, shape))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, shape))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, shape))
    timestamps = np.array([date_to_ts(d) for d in sessions], dtype=np.int64)
    symbols = np.array([f"SYM{i:04d}" for i in range(n_symbols)])
    return pl.DataFrame(
        {
            "symbol": np.repeat(symbols, n_days),
            "timestamp": np.tile(timestamps, n_symbols),
            "open": open_.ravel(),
            "high": high.ravel(),
            "low": low.ravel(),
            "close": close.ravel(),
            "volume": rng.uniform(1e4, 1e7, n_symbols * n_days),
        }
    )


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def phase_full(workdir: Path, last_day: dt.date) -> dict:
    bars = pl.read_parquet(workdir / "bars.parquet").filter(
        pl.col("timestamp") <= date_to_ts(last_day)
    )
    table = workdir / "tv_technicals_1d"
    t0 = time.perf_counter()
    features = compute_indicators(bars)
    t1 = time.perf_counter()
    version = write_features(table, features, features["date"].min(), last_day)
    t2 = time.perf_counter()
    return {
        "phase": "full",
        "bars": bars.height,
        "rows_written": features.height,
        "compute_s": round(t1 - t0, 3),
        "validate_and_write_s": round(t2 - t1, 3),
        "total_s": round(t2 - t0, 3),
        "version": version,
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def phase_daily(workdir: Path, day: dt.date) -> dict:
    table = workdir / "tv_technicals_1d"
    t0 = time.perf_counter()
    bars = (
        pl.scan_parquet(workdir / "bars.parquet")
        .filter(pl.col("timestamp") >= date_to_ts(warmup_start(day)))
        .collect()
    )
    t1 = time.perf_counter()
    result = update_features(table, bars, day, day)
    t2 = time.perf_counter()
    peak = peak_rss_mib()  # before the check below reads the whole table back
    rows_in_table = read_features(table, start=day, end=day).height
    return {
        "phase": "daily",
        "bars_loaded": bars.height,
        "rows_written": result.rows_written,
        "load_bars_s": round(t1 - t0, 3),
        "update_s": round(t2 - t1, 3),
        "version": result.version,
        "rows_on_day_in_table": rows_in_table,
        "peak_rss_mib": round(peak, 1),
    }


def run_child(phase: str, workdir: Path, day: dt.date) -> dict:
    completed = subprocess.run(
        [sys.executable, __file__, "--phase", phase, "--workdir", str(workdir), "--day", str(day)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--days", type=int, default=2520, help="sessions in the full build")
    parser.add_argument("--phase", choices=["full", "daily"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--day", type=dt.date.fromisoformat, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase == "full":
        print(json.dumps(phase_full(args.workdir, args.day)))
        return
    if args.phase == "daily":
        print(json.dumps(phase_daily(args.workdir, args.day)))
        return

    sessions = business_days(FIRST_SESSION, args.days + 1)  # + the daily increment
    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        generate_bars(args.symbols, sessions).write_parquet(workdir / "bars.parquet")
        print(
            f"generated {args.symbols} symbols x {len(sessions)} sessions "
            f"in {time.perf_counter() - t0:.1f} s (not timed below)"
        )
        full = run_child("full", workdir, sessions[-2])
        daily = run_child("daily", workdir, sessions[-1])
        print(json.dumps(full))
        print(json.dumps(daily))
        table_mib = (
            sum(p.stat().st_size for p in (workdir / "tv_technicals_1d").rglob("*") if p.is_file())
            / 2**20
        )
        print(
            f"full build: {full['total_s']:.2f} s (compute {full['compute_s']:.2f} s, "
            f"validate+write {full['validate_and_write_s']:.2f} s), peak RSS "
            f"{full['peak_rss_mib']:.0f} MiB, {full['rows_written']:,} rows, table "
            f"{table_mib:.0f} MiB   [target < 10 s]"
        )
        print(
            f"daily increment: {daily['update_s']:.2f} s (+ {daily['load_bars_s']:.2f} s "
            f"loading {daily['bars_loaded']:,} bars), peak RSS {daily['peak_rss_mib']:.0f} MiB, "
            f"{daily['rows_written']} rows, version {daily['version']}   [target < 2 s]"
        )
        assert current_version(workdir / "tv_technicals_1d") == daily["version"]


if __name__ == "__main__":
    main()
