"""`data_cycle_daily` (01:00 UTC, the previous day's partition), `gap_repair_weekly`
(Sunday 03:00 UTC) and `data_audit_weekly` (Sunday 04:00 UTC)."""

import dagster as dg

from quant_assets.defs.automation.jobs import data_audit_job, data_cycle, gap_repair_job

data_cycle_daily = dg.build_schedule_from_partitioned_job(
    data_cycle,
    name="data_cycle_daily",
    hour_of_day=1,
    minute_of_hour=0,
    description="The data cycle at 01:00 UTC for the previous day (the newest complete day).",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
gap_repair_weekly = dg.ScheduleDefinition(
    name="gap_repair_weekly",
    job=gap_repair_job,
    cron_schedule="0 3 * * 0",
    execution_timezone="UTC",
    description="Re-fetch the windows of recorded gaps, Sundays 03:00 UTC.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
data_audit_weekly = dg.ScheduleDefinition(
    name="data_audit_weekly",
    job=data_audit_job,
    cron_schedule="0 4 * * 0",
    execution_timezone="UTC",
    description="Re-validate the whole lakehouse, Sundays 04:00 UTC.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
