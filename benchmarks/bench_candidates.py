"""Benchmark: point-in-time candidates of a 10-year range of 1000 symbols, apart from I/O.

Builds the synthetic market's bars (1000 symbols, 2010..2025, sorted by symbol and time as
the lakehouse's files read in name order) once, cached as Parquet in --bars, then times
for each shipped universe: `bar_history` (rolling medians per symbol and window, once)
and `scan_point_in_time` over 3653 days (top N per day, JSON text of every day).

    .venv/bin/python benchmarks/bench_candidates.py [--bars /tmp/bench_pit_bars.parquet]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from pathlib import Path

import polars as pl

from quant_assets.data.scanners import bar_history, load_universe, scan_point_in_time
from quant_resources.sources.synthetic import SyntheticSource

N_SYMBOLS, START, DAYS = 1000, dt.date(2016, 1, 1), 3653


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=Path, default=Path("/tmp/bench_pit_bars.parquet"))
    args = parser.parse_args()
    source = SyntheticSource(n_symbols=N_SYMBOLS)
    end = START + dt.timedelta(days=DAYS - 1)
    if not args.bars.exists():
        frames = [
            source.fetch_bars(i.exchange, i.symbol, dt.date(2010, 1, 1), end)
            .unique("timestamp", keep="first")
            .sort("timestamp")
            .select("timestamp", "close", "volume")
            .with_columns(symbol=pl.lit(i.key))
            for i in source.list_symbols()
        ]
        pl.concat(frames).write_parquet(args.bars)
    bars = pl.read_parquet(args.bars)
    symbols = {i.key: i for i in source.list_symbols()}
    days = [START + dt.timedelta(days=i) for i in range(DAYS)]
    print(f"{N_SYMBOLS} symbols, {bars.height:,} bars, {DAYS} days, load {os.getloadavg()[0]:.1f}")
    for name in ("default", "small", "all"):
        config = load_universe(None, name)
        t0 = time.perf_counter()
        history = bar_history(bars, {s.liquidity_window_sessions for s in config.scanners})
        t1 = time.perf_counter()
        size = sum(len(text) for _, text, _ in scan_point_in_time(config, symbols, history, days))
        t2 = time.perf_counter()
        print(f"  {name}: rolling medians {t1 - t0:.2f} s, scan + JSON {t2 - t1:.2f} s, total {t2 - t0:.2f} s, {size / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
