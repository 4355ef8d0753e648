"""Daily partitions: one per UTC day from the history start; the newest is yesterday."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from quant_resources.settings import Settings


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=settings.history_start.isoformat(), timezone="UTC")


# What the module-level assets are declared with: the default history start. The code
# location replaces it with the settings' own start (`quant_assets.definitions.bind`), the
# one definition that depends on a setting.
DAILY = daily_partitions(Settings())


def window_dates(context: dg.OpExecutionContext | dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> tuple[dt.date, dt.date]:
    """First and last day (inclusive) of the run's partition or partition range."""
    window = context.partition_time_window
    return window.start.date(), (window.end - dt.timedelta(days=1)).date()


def latest_complete_day(now: dt.datetime | None = None) -> dt.date:
    """Yesterday in UTC: the newest day whose bars are final."""
    now = now or dt.datetime.now(dt.UTC)
    return now.date() - dt.timedelta(days=1)
