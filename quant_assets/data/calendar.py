"""Session arithmetic on a symbol's trading calendar: counts, neighbours, missing sessions.

A symbol's calendar comes from its exchange (`calendar_for`, `entry_calendar`): "24/7"
for crypto (every calendar day), an exchange-calendars code for an equity on a known
exchange ("XNYS" for NYSE, NASDAQ and the synthetic SYNEQ: weekends and NYSE holidays are
not sessions), "business" (Monday to Friday) for an equity on an exchange with no known
calendar. The names, the exchange map, the library's range and the weekday fallback
outside it are `quant_resources/calendars.py`'s.

Every function takes a calendar name or an exchange code. A holiday is not a session, so
it is never a missing session: gap detection, freshness, quality scores and the lakehouse
NaN density all count in the symbol's own sessions. 24/7 is plain date arithmetic; any
other calendar is an index into its cached running count of sessions (built once per
process, importing exchange-calendars then, not at import of this module). Dates outside
1900..2100 raise CalendarRangeError, except on 24/7.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from quant_resources.calendars import (
    ALWAYS_OPEN,
    DOMAIN_DAYS,
    DOMAIN_START,
    calendar_for,
    range_error,
    resolve,
    session_days,
    sessions_before,
)

_ORIGIN = DOMAIN_START.toordinal()
_ORIGIN_EPOCH = (DOMAIN_START - dt.date(1970, 1, 1)).days


def entry_calendar(entry: dict[str, Any]) -> str:
    """The calendar of a catalog entry: from its exchange and asset class when it has them
    (so an entry written before exchange calendars, which says "business", follows its
    exchange's holidays at once), else the calendar it records, else 24/7."""
    if entry.get("exchange") and entry.get("asset_class"):
        return calendar_for(entry["exchange"], entry["asset_class"])
    return resolve(entry.get("calendar") or ALWAYS_OPEN)


def _offset(day: dt.date, calendar: str) -> int:
    """Days from DOMAIN_START to `day`, checked against the session arrays' span."""
    i = day.toordinal() - _ORIGIN
    if not 0 <= i < DOMAIN_DAYS:
        raise range_error(day, calendar)
    return i


def sessions_between(first: dt.date, last: dt.date, calendar: str) -> int:
    """Number of sessions in [first, last] inclusive (0 when last < first)."""
    if last < first:
        return 0
    name = resolve(calendar)
    if name == ALWAYS_OPEN:
        return (last - first).days + 1
    before = sessions_before(name)
    return int(before[_offset(last, name) + 1] - before[_offset(first, name)])


def is_session(day: dt.date, calendar: str) -> bool:
    return sessions_between(day, day, calendar) == 1


def first_session_on_or_after(day: dt.date, calendar: str) -> dt.date:
    name = resolve(calendar)
    if name == ALWAYS_OPEN:
        return day
    # The span starts on a Monday and ends on a Friday, both sessions: the neighbour exists.
    return session_days(name)[sessions_before(name)[_offset(day, name)]].astype(dt.date)


def last_session_on_or_before(day: dt.date, calendar: str) -> dt.date:
    name = resolve(calendar)
    if name == ALWAYS_OPEN:
        return day
    return session_days(name)[sessions_before(name)[_offset(day, name) + 1] - 1].astype(dt.date)


def _offsets(days: np.ndarray, name: str) -> np.ndarray:
    """Sorted datetime64[D] dates as offsets from DOMAIN_START, checked at both ends."""
    offsets = days.astype("datetime64[D]").view(np.int64) - _ORIGIN_EPOCH
    if offsets[0] < 0 or offsets[-1] >= DOMAIN_DAYS:
        bad = days[0] if offsets[0] < 0 else days[-1]
        raise range_error(bad, name)
    return offsets


def missing_sessions(days: np.ndarray, calendar: str) -> np.ndarray:
    """For sorted bar dates (datetime64[D]), the sessions missing between neighbours.

    The count is of the sessions strictly between two bar dates, so a bar dated off the
    calendar (on a weekend or holiday) is a boundary like any other.
    """
    if days.size < 2:
        return np.zeros(0, dtype=np.int64)
    name = resolve(calendar)
    if name == ALWAYS_OPEN:
        return (np.diff(days).astype(np.int64) - 1).clip(min=0)
    before = sessions_before(name)
    offsets = _offsets(days, name)
    missing = before[offsets[1:]].astype(np.int64) - before[offsets[:-1] + 1]
    return missing.clip(min=0)


def missing_between(
    previous: np.datetime64, following: np.datetime64, calendar: str
) -> tuple[dt.date, dt.date] | None:
    """First and last session strictly between two bar dates (a gap's sessions, not the
    weekend or holiday around them), or None when there is none."""
    previous, following = np.datetime64(previous, "D"), np.datetime64(following, "D")
    name = resolve(calendar)
    if name == ALWAYS_OPEN:
        if following - previous < 2:
            return None
        return (previous + 1).astype(dt.date), (following - 1).astype(dt.date)
    before = sessions_before(name)
    i, j = _offsets(np.array([previous, following]), name)
    first, last = int(before[i + 1]), int(before[j]) - 1  # indices into the session dates
    if last < first:
        return None
    sessions = session_days(name)
    return sessions[first].astype(dt.date), sessions[last].astype(dt.date)
