"""Trading calendars: crypto trades every calendar day, equities Monday to Friday.

Exchange holidays are not modelled: a weekday with no equity bar counts as a missing
session. This keeps gap detection strict; a holiday never makes a gap over 5 days.
"""

from __future__ import annotations

import datetime as dt

import numpy as np


def calendar_for(asset_class: str) -> str:
    return "24/7" if asset_class == "crypto" else "business"


def sessions_between(first: dt.date, last: dt.date, calendar: str) -> int:
    """Number of sessions in [first, last] inclusive (0 when last < first)."""
    if last < first:
        return 0
    if calendar == "24/7":
        return (last - first).days + 1
    return int(np.busday_count(first, last + dt.timedelta(days=1)))


def first_session_on_or_after(day: dt.date, calendar: str) -> dt.date:
    if calendar == "24/7":
        return day
    return np.busday_offset(day, 0, roll="forward").astype(dt.date)


def last_session_on_or_before(day: dt.date, calendar: str) -> dt.date:
    if calendar == "24/7":
        return day
    return np.busday_offset(day, 0, roll="backward").astype(dt.date)


def missing_sessions(days: np.ndarray, calendar: str) -> np.ndarray:
    """For sorted session dates (datetime64[D]), the sessions missing between neighbours."""
    if days.size < 2:
        return np.zeros(0, dtype=np.int64)
    if calendar == "24/7":
        return (np.diff(days).astype(np.int64) - 1).clip(min=0)
    return (np.busday_count(days[:-1] + 1, days[1:]) ).astype(np.int64).clip(min=0)
