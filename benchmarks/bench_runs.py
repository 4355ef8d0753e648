"""Whole runs as a user starts them: `quant backfill` and `quant data` in subprocesses,
timed from the outside with their peak RSS (the figures of issue 10's target table).

    .venv/bin/python benchmarks/bench_runs.py synthetic   # 1000 symbols x 10 years, universe all, then +1 day
    .venv/bin/python benchmarks/bench_runs.py files       # the same market as 1000 CSV exports, then +1 day
    .venv/bin/python benchmarks/bench_runs.py two-series  # two 20-year daily series (business days) as CSV

Each case runs in a new temp folder with its own DAGSTER_HOME (the embedded PostgreSQL
instance, started by the first command: its start-up is part of the figure). Prints the
wall time, the run's own time (from the CLI summary), the bookkeeping share (wall minus
the steps' work as the CLI reports it) and the peak RSS of each command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUANT = str(Path(sys.executable).parent / "quant")


def run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of one `quant` command, measured by GNU time."""
    rss_file = cwd / ".peak_rss_kb"
    t0 = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), QUANT, *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if result.returncode != 0:
        raise SystemExit(f"quant {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return wall, int(rss_file.read_text().split()[-1]) / 1024, result.stdout


def steps(stdout: str) -> str:
    return ", ".join(f"{m[0]} {m[1]}s" for m in re.findall(r"^  (\w+): done in ([\d.]+)s", stdout, re.M))


def report(label: str, wall: float, rss: float, stdout: str) -> None:
    run_s = re.search(r"run \S+ in ([\d.]+)s", stdout)
    print(f"{label}: wall {wall:.1f} s, run {run_s.group(1) if run_s else '?'} s, peak RSS {rss:.0f} MB")
    print(f"    steps: {steps(stdout)}")


def write_csvs(folder: Path, n_symbols: int, start: dt.date, end: dt.date) -> None:
    """The synthetic market as vendor CSV exports (Date, Open, High, Low, Close, Volume)."""
    import polars as pl

    from quant_resources.sources.synthetic import SyntheticSource

    folder.mkdir(parents=True, exist_ok=True)
    source = SyntheticSource(n_symbols=n_symbols)
    for info in source.list_symbols():
        bars = source.fetch_bars(info.exchange, info.symbol, start, end)
        if bars.height == 0:
            continue
        frame = bars.select(
            pl.from_epoch("timestamp", time_unit="s").dt.date().alias("Date"),
            pl.col("open").alias("Open"), pl.col("high").alias("High"), pl.col("low").alias("Low"),
            pl.col("close").alias("Close"), pl.col("volume").alias("Volume"),
        )
        frame.write_csv(folder / f"{info.exchange}_{info.symbol}.csv")


def two_series(folder: Path, start: dt.date, end: dt.date) -> None:
    """Two index-like daily series over business days (the size of S&P 500 and NASDAQ, 1999-2018)."""
    import numpy as np
    import polars as pl

    folder.mkdir(parents=True, exist_ok=True)
    days = [d for d in (start + dt.timedelta(days=i) for i in range((end - start).days + 1)) if d.weekday() < 5]
    rng = np.random.default_rng(7)
    for name, level in (("GSPC", 1200.0), ("IXIC", 2500.0)):
        close = level * np.exp(np.cumsum(rng.normal(0.0003, 0.012, len(days))))
        open_ = close * np.exp(rng.normal(0, 0.003, len(days)))
        high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.004, len(days))))
        low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.004, len(days))))
        volume = rng.uniform(1e9, 3e9, len(days))
        pl.DataFrame({"Date": days, "Open": open_, "High": high, "Low": low, "Close": close, "Adj Close": close, "Volume": volume}).write_csv(
            folder / f"INDEX_{name}.csv"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=["synthetic", "files", "two-series"])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix=f"bench_runs_{args.case}_"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUANT_", "DAGSTER_HOME"))}
    if args.case == "two-series":
        start, end = dt.date(1999, 1, 4), dt.date(2018, 12, 31)
        two_series(work / "exports", start, end)
        env.update(QUANT_SOURCE="files", QUANT_FILES_DIR=str(work / "exports"), QUANT_UNIVERSE="all")
    else:
        start, end = dt.date(2016, 1, 1), dt.date(2025, 12, 31)
        env.update(QUANT_UNIVERSE="all", QUANT_SYNTHETIC_SYMBOLS=str(args.symbols))
        if args.case == "files":
            t0 = time.perf_counter()
            write_csvs(work / "exports", args.symbols, start, end + dt.timedelta(days=1))
            print(f"wrote {len(list((work / 'exports').glob('*.csv')))} CSV files in {time.perf_counter() - t0:.1f} s")
            env.update(QUANT_SOURCE="files", QUANT_FILES_DIR=str(work / "exports"))
    env["QUANT_HISTORY_START"] = start.isoformat()
    print(f"case {args.case}: {start}..{end} in {work}")
    wall, rss, out = run(["backfill", "--start", start.isoformat(), "--end", end.isoformat()], work, env)
    report("backfill", wall, rss, out)
    if args.case != "two-series":
        day = end + dt.timedelta(days=1)
        wall, rss, out = run(["data", "--date", day.isoformat()], work, env)
        report(f"daily increment {day}", wall, rss, out)
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
