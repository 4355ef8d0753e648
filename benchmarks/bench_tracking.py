"""What MLflow tracking adds to an alpha run.

Builds (or reuses) a lakehouse of the default synthetic market (300 symbols, default
universe, history from 2018), then times the alpha job as `quant alpha` runs it
(`execute_in_process`, in-process executor) with tracking on and off. "Off" is the same
code with the run tag `quant/tracking=off`: the resource opens no MLflow run, so the
difference is exactly what tracking costs, the end-of-run flush included.

- warm: one long-lived process (a code server, the daemon, a notebook): after one warm-up
  run per mode, `--rounds` alternating pairs; medians and the overhead.
- cold: each run in a fresh process (a `quant alpha` from the shell): the first run of a
  process pays MLflow's one-time costs in the tracking worker (opening a sqlite store
  loads ~70 schema migrations; the first model logged scans the installed packages).

Usage:
  .venv/bin/python benchmarks/bench_tracking.py [--data-dir /tmp/bench_tracking] [--rounds 8] [--cold 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

AS_OF = dt.date(2025, 6, 30)
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def settings_for(data_dir: Path, symbols: int, history_start: dt.date):
    from quant_resources.settings import Settings

    return Settings(data_dir=data_dir, history_start=history_start, synthetic_symbols=symbols, freshness_hours=1e6)


def ensure_lakehouse(settings) -> None:
    import dagster as dg

    from quant_assets.definitions import DATA_JOB, build_definitions
    from quant_resources.tracking import TRACKING_TAG

    if settings.catalog_path.exists():
        return
    print(f"building the lakehouse {settings.history_start}..{AS_OF} in {settings.data_dir} (a few minutes)", flush=True)
    job = build_definitions(settings).resolve_job_def(DATA_JOB)
    tags = {
        "dagster/asset_partition_range_start": settings.history_start.isoformat(),
        "dagster/asset_partition_range_end": AS_OF.isoformat(),
        TRACKING_TAG: "off",
    }
    result = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), tags=tags, run_config=QUIET, raise_on_error=False
    )
    if not result.success:
        raise SystemExit("the data cycle failed; see the log above")


def time_alpha(settings, tracking: bool) -> float:
    import dagster as dg

    from quant_assets.definitions import ALPHA_JOB, build_definitions
    from quant_resources.tracking import TRACKING_TAG

    job = build_definitions(settings).resolve_job_def(ALPHA_JOB)
    tags = {} if tracking else {TRACKING_TAG: "off"}
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        partition_key=AS_OF.isoformat(),
        tags=tags,
        run_config=QUIET,
        raise_on_error=False,
    )
    seconds = time.perf_counter() - started
    if not result.success:
        raise SystemExit("the alpha cycle failed")
    return seconds


def measure_run_thread_cost() -> dict[str, float]:
    """Time spent in the resource on the run's own thread: queueing each call, and the wait
    for the worker at the end of the run. Everything else happens in the worker."""
    from quant_resources.tracking import resource

    spent = {"send": 0.0, "close": 0.0}

    def timed(name, method):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started

        return wrapper

    resource._Session.send = timed("send", resource._Session.send)
    resource._Session.close = timed("close", resource._Session.close)
    return spent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="/tmp/bench_tracking/data")
    parser.add_argument("--symbols", type=int, default=300)
    parser.add_argument("--history-start", default="2018-01-01")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--cold", type=int, default=3, help="fresh-process runs per mode")
    parser.add_argument("--one", choices=["on", "off"], help=argparse.SUPPRESS)  # a cold child
    args = parser.parse_args()
    from quant_resources.runtime import prepare_process

    prepare_process()
    settings = settings_for(Path(args.data_dir), args.symbols, dt.date.fromisoformat(args.history_start))
    if args.one:
        print(json.dumps({"seconds": time_alpha(settings, args.one == "on")}))
        return 0
    ensure_lakehouse(settings)

    cold: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.cold):
        for mode in ("off", "on"):
            child = subprocess.run(
                [sys.executable, __file__, "--one", mode, "--data-dir", args.data_dir, "--symbols", str(args.symbols),
                 "--history-start", args.history_start],
                capture_output=True, text=True, check=True,
            )
            cold[mode].append(json.loads(child.stdout.strip().splitlines()[-1])["seconds"])

    time_alpha(settings, False), time_alpha(settings, True)  # warm-up: imports, worker, MLflow store
    spent = measure_run_thread_cost()
    warm: dict[str, list[float]] = {"off": [], "on": []}
    for i in range(args.rounds):
        for mode in (("off", "on") if i % 2 == 0 else ("on", "off")):
            warm[mode].append(time_alpha(settings, mode == "on"))

    def line(label: str, runs: dict[str, list[float]]) -> str:
        off, on = statistics.median(runs["off"]), statistics.median(runs["on"])
        return (
            f"{label:<5} alpha run, median of {len(runs['off'])}: tracking off {off:.2f} s, on {on:.2f} s, "
            f"added {on - off:+.2f} s ({(on - off) / off:+.1%})"
        )

    print(f"lakehouse: {args.symbols} symbols from {args.history_start}, alpha cycle as of {AS_OF}")
    if args.cold:
        print(line("cold", cold))
    print(line("warm", warm))
    tracked = len(warm["on"])
    print(
        f"on the run's thread, per tracked run: queueing calls {1000 * spent['send'] / tracked:.1f} ms, "
        f"waiting for the worker at run end {1000 * spent['close'] / tracked:.1f} ms"
    )
    print(json.dumps({"cold": cold, "warm": warm}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
