"""An alpha backfill of 20 days, one day after another against two at a time.

    .venv/bin/python benchmarks/bench_alpha_parallel.py [--days 20] [--jobs 2]

Builds a lakehouse (synthetic market, default universe, 2024-01-01..2025-06-30) with
`quant backfill`, then times `quant alpha --start D --end D --jobs 1` and `--jobs N` over
the same days in two copies of it, and checks that both give the same selection per day.
Prints the wall times and their ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUANT = str(Path(sys.executable).parent / "quant")


def quant(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    result = subprocess.run([QUANT, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode not in (0, 1) or "succeeded" not in result.stdout and args[0] == "alpha":
        raise SystemExit(f"quant {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - t0, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_alpha_parallel_"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUANT_", "DAGSTER_HOME"))}
    env["QUANT_HISTORY_START"] = "2024-01-01"
    end = dt.date(2025, 6, 30)
    start = end - dt.timedelta(days=args.days - 1)
    (work / "base").mkdir()
    seconds, _ = quant(["backfill", "--start", "2024-01-01", "--end", end.isoformat()], work / "base", env)
    print(f"lakehouse: 2024-01-01..{end} in {seconds:.1f}s")
    hashes, walls = {}, {}
    for jobs in (1, args.jobs):
        folder = work / f"jobs{jobs}"
        shutil.copytree(work / "base", folder, ignore=shutil.ignore_patterns("postgres"))
        shutil.rmtree(folder / ".dagster", ignore_errors=True)  # a fresh instance each
        seconds, out = quant(["alpha", "--start", start.isoformat(), "--end", end.isoformat(), "--jobs", str(jobs)], folder, env)
        hashes[jobs] = dict(re.findall(r"^  (\d{4}-\d\d-\d\d): run \S+ in [\d.]+s, \d+ winners, selection (\w+)", out, re.M))
        print(f"--jobs {jobs}: {args.days} alpha days in {seconds:.1f}s wall ({seconds / args.days:.2f}s a day)")
        for line in re.findall(r"^  .*FAILED.*$", out, re.M):
            print(f"    {line.strip()[:200]}")
        walls[jobs] = seconds
    same = hashes[1] == hashes[args.jobs]
    print(f"ratio sequential/parallel: {walls[1] / walls[args.jobs]:.2f}x; same selection every day: {same}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
