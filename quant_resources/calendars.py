"""Trading calendars: which calendar a symbol trades on, and that calendar's session dates.

This module owns the choice of a symbol's calendar (`calendar_for`) and the session
dates of each calendar (`session_days`); the counting rules built on them (sessions
between two dates, missing sessions, gaps) are `quant_assets/data/calendar.py`'s. It is a
pure helper (numpy only at import), so the sources below the graph and the pure core
above it share one answer.

Calendar names:

- `"24/7"`: every calendar day (crypto). Plain date arithmetic, no bounds.
- an exchange-calendars code (`"XNYS"`, `"XLON"`, `"XETR"`, ...): the sessions that the
  maintained `exchange-calendars` library gives for that exchange, weekends and
  holidays excluded (NYSE: no session on 2024-07-04, 2024-11-28 or 2024-12-25).
- `"business"`: Monday to Friday with no holidays. The calendar of an equity whose
  exchange has no known calendar (a holiday there counts as a missing session), and the
  one catalogs written before exchange calendars recorded for every equity.

Any function that takes a calendar name also takes an exchange code (`"NYSE"`,
`"SYNEQ"`, `"BINANCE"`): `resolve` maps it through `EXCHANGE_CALENDARS` or the library's
own names and aliases (NYSE, NASDAQ, LSE, TSX, ...).

Coverage (the documented fallback): an exchange calendar holds the library's sessions
from `LIBRARY_START` (1990-01-01) to `LIBRARY_END` (2040-12-31), or over the narrower
range the library records for that exchange (XTKS from 1997, XSES to 2026); before and
after that it is Monday to Friday, as `"business"`. `library_coverage` says where the
library's sessions are. Dates before `DOMAIN_START` (1900-01-01) or after `DOMAIN_END`
(2100-12-31) raise `CalendarRangeError` for every calendar but 24/7.

Cost: `exchange_calendars` (and pandas) is imported on the first session array asked for,
never at import of this module; building one calendar's 51 years takes about 0.5 s, once
per process. Two read-only arrays are cached per canonical name: the session dates, and
the running count of sessions before each day of the domain, which turns every count and
neighbour lookup into an array index (as fast as numpy's business-day functions were).
"""

from __future__ import annotations

import datetime as dt
import threading
from functools import lru_cache

import numpy as np

from quant_resources.errors import ConfigError

ALWAYS_OPEN = "24/7"
WEEKDAYS = "business"

# The domain starts on a Monday and ends on a Friday, both weekday-fallback sessions: any
# date inside it has a session on or before it and one on or after it.
DOMAIN_START = dt.date(1900, 1, 1)
DOMAIN_END = dt.date(2100, 12, 31)
DOMAIN_DAYS = (DOMAIN_END - DOMAIN_START).days + 1

# Exchange names of our sources that exchange-calendars does not know, and the calendar
# each trades on. The library's own names and aliases need no entry: NYSE, NASDAQ, BATS,
# XNAS, XASE, ARCX -> XNYS; LSE -> XLON; TSX -> XTSE; SIX -> XSWX; JPX -> XTKS; ASX ->
# XASX; HKEX -> XHKG; XETR, XPAR, XAMS, ... as themselves.
EXCHANGE_CALENDARS: dict[str, str] = {
    "SYNEQ": "XNYS",  # the synthetic source's equities follow the NYSE
    "SYNCX": ALWAYS_OPEN,  # the synthetic source's crypto
    "BINANCE": ALWAYS_OPEN,
    "AMEX": "XNYS",
    "ARCA": "XNYS",
    "NYSEARCA": "XNYS",
    "NYSEAMERICAN": "XNYS",
    "NYSEMKT": "XNYS",
    "XETRA": "XETR",
}

LIBRARY_START = dt.date(1990, 1, 1)
LIBRARY_END = dt.date(2040, 12, 31)


class UnknownCalendarError(ConfigError):
    """A calendar name that is neither ours, an exchange we map, nor the library's."""


class CalendarRangeError(ConfigError):
    """A date outside the span the session arrays cover."""


@lru_cache(maxsize=4096)
def calendar_for(exchange: str | None, asset_class: str) -> str:
    """The calendar of a symbol: 24/7 for crypto; an equity's from its exchange.

    An equity exchange that neither `EXCHANGE_CALENDARS` nor exchange-calendars knows
    gets "business" (Monday to Friday, no holidays): name such files after the
    exchange's MIC (`XLON_VOD.csv`) or add the exchange to the map.
    """
    if asset_class == "crypto":
        return ALWAYS_OPEN
    if not exchange:
        return WEEKDAYS
    try:
        return resolve(exchange)
    except UnknownCalendarError:
        return WEEKDAYS


@lru_cache(maxsize=1024)
def resolve(name: str) -> str:
    """The canonical calendar name of a calendar name or exchange code.

    "24/7" and "business" are themselves; an exchange of `EXCHANGE_CALENDARS` maps to its
    calendar; a name or alias of exchange-calendars to the library's canonical name
    ("NYSE" -> "XNYS"). Anything else raises UnknownCalendarError.
    """
    if name in (ALWAYS_OPEN, WEEKDAYS):
        return name
    mapped = EXCHANGE_CALENDARS.get(name.upper())
    if mapped is not None:
        return mapped
    library = _library_names()
    for candidate in (name, name.upper()):
        if candidate in library:
            return library[candidate]
    raise UnknownCalendarError(
        f"unknown calendar or exchange {name!r}: use '24/7', 'business', an "
        "exchange-calendars code such as 'XNYS' or 'XLON', or an exchange of "
        "quant_resources.calendars.EXCHANGE_CALENDARS"
    )


@lru_cache(maxsize=1)
def _library_names() -> dict[str, str]:
    """exchange-calendars' names and aliases -> canonical name (imports the library)."""
    import exchange_calendars as xc

    return {n: xc.resolve_alias(n) for n in xc.get_calendar_names(include_aliases=True)}


_SESSIONS: dict[str, tuple[np.ndarray, np.ndarray]] = {}
_COVERAGE: dict[str, tuple[dt.date, dt.date] | None] = {}
_LOCK = threading.Lock()


def _arrays(calendar: str) -> tuple[np.ndarray, np.ndarray]:
    name = resolve(calendar)
    arrays = _SESSIONS.get(name)
    if arrays is not None:
        return arrays
    if name == ALWAYS_OPEN:
        raise ValueError("the 24/7 calendar has every day as a session: no array is kept")
    with _LOCK:  # ingest threads ask at once: build (and import the library) once
        if name not in _SESSIONS:
            days, coverage = _build(name)
            offsets = days.view(np.int64) - np.datetime64(DOMAIN_START, "D").view(np.int64)
            before = np.zeros(DOMAIN_DAYS + 1, dtype=np.int32)
            before[offsets + 1] = 1
            np.cumsum(before, out=before)
            days.flags.writeable = before.flags.writeable = False
            _COVERAGE[name] = coverage
            _SESSIONS[name] = days, before
    return _SESSIONS[name]


def session_days(calendar: str) -> np.ndarray:
    """Sorted session dates (datetime64[D], read-only) of a calendar from DOMAIN_START to
    DOMAIN_END; `.view("int64")` gives them as epoch days. Not for "24/7" (every day)."""
    return _arrays(calendar)[0]


def sessions_before(calendar: str) -> np.ndarray:
    """Running session count (int32, read-only, DOMAIN_DAYS + 1 long): element i is the
    number of sessions strictly before DOMAIN_START + i days, so the sessions in [a, b] are
    `before[b + 1] - before[a]` and the first session on or after day i is
    `session_days(calendar)[before[i]]`. Not for "24/7"."""
    return _arrays(calendar)[1]


def library_coverage(calendar: str) -> tuple[dt.date, dt.date] | None:
    """First and last date the calendar's sessions come from exchange-calendars (None for
    "24/7" and "business"); outside it an exchange calendar is Monday to Friday."""
    name = resolve(calendar)
    if name in (ALWAYS_OPEN, WEEKDAYS):
        return None
    session_days(name)
    return _COVERAGE[name]


def range_error(day: object, calendar: str) -> CalendarRangeError:
    """The error for a date outside the span the session arrays cover."""
    return CalendarRangeError(
        f"date {day} is outside the {calendar!r} calendar's sessions "
        f"({DOMAIN_START}..{DOMAIN_END}): only 24/7 has no bounds"
    )


def _weekdays(first: dt.date, last: dt.date) -> np.ndarray:
    days = np.arange(np.datetime64(first, "D"), np.datetime64(last, "D") + 1)
    return days[(days.view("int64") + 3) % 7 < 5]  # 1970-01-01 was a Thursday


def _build(name: str) -> tuple[np.ndarray, tuple[dt.date, dt.date] | None]:
    if name == WEEKDAYS:
        return _weekdays(DOMAIN_START, DOMAIN_END), None
    import exchange_calendars as xc

    start, end = LIBRARY_START, LIBRARY_END
    try:
        calendar = xc.get_calendar(name, start=start, end=end)
    except ValueError:
        # Holidays recorded over a narrower range (XTKS from 1997, XSES to 2026): keep
        # what the library knows, within our range.
        kind = type(xc.get_calendar(name))
        lower, upper = kind.bound_min(), kind.bound_max()
        start = max(start, lower.date()) if lower is not None else start
        end = min(end, upper.date()) if upper is not None else end
        calendar = xc.get_calendar(name, start=start, end=end)
    sessions = np.asarray(calendar.sessions.values).astype("datetime64[D]")
    before = _weekdays(DOMAIN_START, start - dt.timedelta(days=1))
    after = _weekdays(end + dt.timedelta(days=1), DOMAIN_END)
    return np.concatenate([before, sessions, after]), (start, end)
