"""Schedules and the data-to-alpha sensor, evaluated against a real ephemeral instance."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import polars as pl
import pytest
from helpers import run_data_job

from quant_assets.definitions import build_definitions
from quant_resources.settings import Settings


def test_daily_schedule_asks_for_the_previous_day():
    defs = build_definitions(Settings())
    schedule = defs.resolve_schedule_def("data_cycle_daily")
    tick = dt.datetime(2025, 7, 1, 1, 0, tzinfo=dt.UTC)
    with dg.build_schedule_context(scheduled_execution_time=tick) as context:
        data = schedule.evaluate_tick(context)
    assert [r.partition_key for r in data.run_requests] == ["2025-06-30"]
    assert schedule.cron_schedule == "0 1 * * *" and schedule.execution_timezone == "UTC"


@pytest.mark.parametrize("name,cron", [("gap_repair_weekly", "0 3 * * 0"), ("data_audit_weekly", "0 4 * * 0")])
def test_weekly_schedules(name, cron):
    defs = build_definitions(Settings())
    schedule = defs.resolve_schedule_def(name)
    assert schedule.cron_schedule == cron
    assert schedule.job_name in ("gap_repair_job", "data_audit_job")


@pytest.fixture
def recent(tmp_path):
    today = dt.datetime.now(dt.UTC).date()
    settings = Settings(data_dir=tmp_path / "data", history_start=today - dt.timedelta(days=10), synthetic_symbols=30, universe="small")
    return settings, today - dt.timedelta(days=1)


def evaluate(defs, instance, cursor=None):
    sensor = defs.resolve_sensor_def("alpha_after_data")
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    return sensor.evaluate_tick(context)


def test_sensor_requests_alpha_once_after_the_data_partition_completes(recent):
    settings, day = recent
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    before = evaluate(defs, instance)
    assert before.run_requests == [] and "not yet materialised" in before.skip_message
    assert run_data_job(settings, day, instance=instance).success
    after = evaluate(defs, instance, before.cursor)
    assert [r.partition_key for r in after.run_requests] == [day.isoformat()]
    assert after.run_requests[0].run_key == f"alpha_after_data:{day.isoformat()}"
    again = evaluate(defs, instance, after.cursor)
    assert again.run_requests == []
    assert day.isoformat() in json.loads(again.cursor)


def test_sensor_skips_with_a_reason_when_a_blocking_check_failed(recent):
    settings, day = recent
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    assert run_data_job(settings, day, instance=instance).success
    # Damage the lakehouse behind the sanitiser's back: a +900% bar on the day.
    victim = sorted(settings.ohlcv_dir.glob("*.parquet"))[0]
    bars = pl.read_parquet(victim)
    bars = bars.with_columns(
        pl.when(pl.col("timestamp") == bars["timestamp"].max()).then(pl.col(c) * 10).otherwise(pl.col(c)).alias(c)
        for c in ("open", "high", "low", "close")
    )
    bars.write_parquet(victim)
    rerun = run_data_job(settings, day, instance=instance)
    checks = {e.check_name: e.passed for e in rerun.get_asset_check_evaluations()}
    assert checks["ohlcv_toxic_free"] is False
    result = evaluate(defs, instance)
    assert result.run_requests == []
    assert "blocking check(s) failed" in result.skip_message and "ohlcv:ohlcv_toxic_free" in result.skip_message
