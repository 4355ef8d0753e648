"""The alpha cycle over a range of days, several days at once (`quant alpha --start --end`).

Each day is its own Dagster run (an alpha run reads the lakehouse as of its day and
writes its own run folder, so days are independent). The CLI runs jobs in-process, which
the instance's run queue does not see, so the parallelism is ours: a pool of `jobs`
worker processes (spawned, not forked: Dagster and polars hold threads), each preparing
the process as every `quant` command does (telemetry off, the shared embedded server
joined) and running days one after another. On 2 cores, 2 workers overlap one day's
Python work with the other's solver and I/O; past one machine the same runs go through
the instance's queue (docs/deployment.md).
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DayResult:
    day: dt.date
    run_id: str
    seconds: float
    report: dict[str, Any] | None  # alpha_report(...) when the run succeeded
    error: str | None  # one line when it failed


def _prepare_worker() -> None:
    from threadpoolctl import threadpool_limits

    from quant_resources.progress import quiet_python_logging
    from quant_resources.runtime import prepare_process

    prepare_process()
    quiet_python_logging()
    # One BLAS thread per worker: `jobs` workers already fill the cores, and two BLAS
    # pools per core only trade places.
    threadpool_limits(1)


def _run_day(settings, day: dt.date, objective: str | None) -> DayResult:
    from quant_assets import runner
    from quant_resources.errors import QuantError

    try:
        summary = runner.run_alpha(settings, day, objective=objective)
    except QuantError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return DayResult(day, "", 0.0, None, message)
    return DayResult(day, summary.run_id, summary.seconds, runner.alpha_report(settings, summary.run_id), None)


def run_alpha_days(
    settings,
    days: list[dt.date],
    *,
    objective: str | None = None,
    jobs: int = 2,
    on_done: Callable[[DayResult], None] | None = None,
) -> list[DayResult]:
    """Run the alpha cycle for each day, `jobs` days at a time; results in day order.

    A failed day is reported (its one-line reason) and does not stop the others.
    """
    if jobs <= 1:
        results = []
        for day in days:
            result = _run_day(settings, day, objective)
            if on_done:
                on_done(result)
            results.append(result)
        return results
    results = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_prepare_worker) as pool:
        futures = [pool.submit(_run_day, settings, day, objective) for day in days]
        for future in as_completed(futures):
            result = future.result()
            if on_done:
                on_done(result)
            results.append(result)
    return sorted(results, key=lambda r: r.day)


def day_range(start: dt.date, end: dt.date) -> Iterator[dt.date]:
    for offset in range((end - start).days + 1):
        yield start + dt.timedelta(days=offset)
