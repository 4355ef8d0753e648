"""Orchestration used by the CLI: run jobs of the definitions against the persistent
Dagster instance (so every run shows in the UI afterwards) and summarise them.

This is the only layer, with the Makefile, that decides *what* to run: which partitions
a production run needs, and (with `--dvc`) when to version the lakehouse.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from quant_assets.definitions import ALPHA_JOB, AUDIT_JOB, DATA_JOB, REPAIR_JOB, build_definitions
from quant_assets.partitions import latest_complete_day
from quant_resources.errors import ConfigError, QuantError
from quant_resources.lakehouse import Lakehouse
from quant_resources.progress import run_loggers_config
from quant_resources.run_tags import LAUNCHER_PID as LAUNCHER_PID_TAG
from quant_resources.run_tags import RANGE_END, RANGE_START
from quant_resources.settings import Settings


class RunFailed(QuantError):
    pass


@dataclass
class RunSummary:
    job: str
    run_id: str
    window: str
    seconds: float
    asset_metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)


def parse_day(value: str, what: str = "date") -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{what} {value!r} is not a date: use YYYY-MM-DD") from None


def check_day(day: dt.date, settings: Settings, what: str = "date") -> dt.date:
    newest = latest_complete_day()
    if day > newest:
        raise ConfigError(
            f"{what} {day.isoformat()} is not complete yet: the newest complete day (UTC) is {newest.isoformat()}"
        )
    if day < settings.history_start:
        raise ConfigError(
            f"{what} {day.isoformat()} is before the history start {settings.history_start.isoformat()} "
            "(QUANT_HISTORY_START)"
        )
    return day


def _metadata_values(metadata: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in metadata.items():
        out[key] = getattr(value, "value", value)
    return out


def execute(
    settings: Settings,
    job_name: str,
    *,
    start: dt.date | None = None,
    end: dt.date | None = None,
    instance: dg.DagsterInstance | None = None,
    run_config: dict | None = None,
    tags: dict[str, str] | None = None,
    verbose: bool = False,
    assets: list[str] | None = None,
) -> RunSummary:
    """Run one job of the definitions for a day, a range (one run) or unpartitioned;
    `assets` runs only those steps of the job.

    Dagster's event stream goes to the instance and `$DAGSTER_HOME/logs/quant.log`; to the
    terminal only when `verbose`. Step progress goes to the installed `progress.Reporter`.
    """
    defs = build_definitions(settings)
    job = defs.resolve_job_def(job_name)
    if assets:
        job = job.get_subset(asset_selection={dg.AssetKey(name) for name in assets})
    run_tags = dict(tags or {})
    partition_key = None
    if start is not None and end is not None and start != end:
        run_tags[RANGE_START] = start.isoformat()
        run_tags[RANGE_END] = end.isoformat()
    elif start is not None:
        partition_key = start.isoformat()
    run_config = {**(run_config or {}), "loggers": run_loggers_config(verbose)}
    run_tags[LAUNCHER_PID_TAG] = str(os.getpid())
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if instance is None:  # the persistent instance of DAGSTER_HOME
            instance = stack.enter_context(dg.DagsterInstance.get())
            fail_orphaned_runs(instance)
        try:
            result = job.execute_in_process(
                instance=instance, partition_key=partition_key, tags=run_tags, run_config=run_config, raise_on_error=False
            )
        except Exception as exc:
            if not _is_storage_error(exc):
                raise
            raise RunFailed(
                f"{job_name}: the Dagster instance's database went away during the run "
                f"({_first_line(exc)}); the next command restarts the embedded server and "
                "marks the run failed: run it again"
            ) from None
    seconds = time.perf_counter() - t0
    window = "" if start is None else (start.isoformat() if not end or end == start else f"{start}..{end}")
    summary = RunSummary(job_name, result.run_id, window, seconds)
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        summary.asset_metadata[materialization.asset_key.to_user_string()] = _metadata_values(materialization.metadata)
    for evaluation in result.get_asset_check_evaluations():
        summary.checks[f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"] = evaluation.passed
    if not result.success:
        raise RunFailed(f"{job_name} {window} failed (run {result.run_id}): {_failure_reason(result)}")
    return summary


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_storage_error(exc: BaseException) -> bool:
    """An error of the instance's database (a server killed mid-run), however wrapped."""
    import sqlalchemy.exc

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, sqlalchemy.exc.DBAPIError | sqlalchemy.exc.InterfaceError):
            return True
        if type(exc).__module__.startswith("psycopg2"):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def fail_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the runs this CLI started whose process is gone (killed, or its
    database went away mid-run), so the UI does not show them running forever."""
    import psutil

    orphaned = []
    records = instance.get_runs(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING]), limit=50
    )
    for run in records:
        pid = run.tags.get(LAUNCHER_PID_TAG)
        if not pid or not pid.isdigit() or psutil.pid_exists(int(pid)):
            continue
        instance.report_run_failed(run, f"the quant process ({pid}) that ran it is gone")
        orphaned.append(run.run_id)
    return orphaned


def _failure_reason(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause is not None and error.message.startswith("dagster."):
                error = error.cause
            cause = error.cause or error
            message = (cause.message or error.message).strip()
            return f"step {event.step_key}: {message}"
    return "see the run in the Dagster UI"


def preflight(settings: Settings) -> None:
    """Fail before any run starts on what a user can fix: universe and scanner config."""
    from quant_assets.data.scanners import load_universe

    load_universe(settings.config_dir, settings.universe)


def run_data(settings: Settings, day: dt.date, **kwargs: Any) -> RunSummary:
    preflight(settings)
    return execute(settings, DATA_JOB, start=check_day(day, settings), **kwargs)


def run_backfill(settings: Settings, start: dt.date, end: dt.date, **kwargs: Any) -> RunSummary:
    check_day(start, settings, "start")
    check_day(end, settings, "end")
    if end < start:
        raise ConfigError(f"the backfill ends ({end}) before it starts ({start})")
    preflight(settings)
    return execute(settings, DATA_JOB, start=start, end=end, **kwargs)


def run_repair(settings: Settings, **kwargs: Any) -> RunSummary:
    return execute(settings, REPAIR_JOB, **kwargs)


def run_audit(settings: Settings, **kwargs: Any) -> RunSummary:
    return execute(settings, AUDIT_JOB, **kwargs)


def data_catch_up_plan(settings: Settings, day: dt.date) -> list[tuple[dt.date, dt.date]]:
    """What a production run must materialise to bring the lakehouse to `day`.

    Empty lakehouse: the whole history up to the day before as one run, then the day.
    Otherwise the days since the last data partition (one run), then the day.
    """
    catalog = Lakehouse(data_dir=str(settings.data_dir)).read_catalog()
    last = catalog.get("meta", {}).get("last_partition")
    if not catalog["symbols"] or not last:
        history_end = day - dt.timedelta(days=1)
        plan = [(settings.history_start, history_end)] if history_end >= settings.history_start else []
        return plan + [(day, day)]
    last_day = dt.date.fromisoformat(last)
    if last_day >= day:
        return [(day, day)]
    plan = []
    if last_day + dt.timedelta(days=1) < day:
        plan.append((last_day + dt.timedelta(days=1), day - dt.timedelta(days=1)))
    return plan + [(day, day)]


def alpha_run_config(
    objective: str | None = None, overrides: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Run config of the alpha job: `objective` sets portfolio_weights' objective."""
    ops: dict[str, Any] = {}
    for asset, config in (overrides or {}).items():
        ops.setdefault(asset, {"config": {}})["config"].update(config)
    if objective:
        ops.setdefault("portfolio_weights", {"config": {}})["config"]["objective"] = objective
    return {"ops": ops} if ops else {}


def run_alpha(
    settings: Settings, day: dt.date, objective: str | None = None, overrides: dict | None = None, **kwargs: Any
) -> RunSummary:
    from quant_assets.definitions import validate_alpha_run_config

    check_day(day, settings)
    run_config = alpha_run_config(objective, overrides)
    validate_alpha_run_config(run_config)
    return execute(settings, ALPHA_JOB, start=day, run_config=run_config, **kwargs)


def alpha_report(settings: Settings, run_id: str) -> dict[str, Any]:
    """What a user wants to see of an alpha run: winners, weights, backtest, the folder."""
    import json

    import polars as pl

    run_dir = settings.layout.run_dir(run_id)
    selection = json.loads((run_dir / "selection.json").read_text())
    weights = pl.read_parquet(run_dir / "weights.parquet")
    backtest = json.loads((run_dir / "backtest.json").read_text())
    return {
        "run_dir": str(run_dir),
        "as_of": selection["as_of"],
        "winners": selection["winners"],
        "selection_hash": selection["hash"],
        "weights": dict(weights.iter_rows()),
        "metrics": backtest["metrics"],
        "benchmark_metrics": backtest["benchmark_metrics"],
    }
