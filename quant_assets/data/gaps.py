"""Gap detection: runs of missing sessions longer than the threshold (5 by default).

Sessions are the symbol's calendar's (quant_assets/data/calendar.py): a weekend or an
exchange holiday is not a session, so it never makes or lengthens a gap.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

import numpy as np

from quant_assets.data.calendar import missing_between, missing_sessions
from quant_resources.schema import SECONDS_PER_DAY


@dataclass(frozen=True)
class Gap:
    """Sessions from `start` to `end` (inclusive, calendar dates) have no bar."""

    start: dt.date
    end: dt.date
    missing_sessions: int

    def to_record(self) -> dict:
        record = asdict(self)
        record["start"] = self.start.isoformat()
        record["end"] = self.end.isoformat()
        return record

    @classmethod
    def from_record(cls, record: dict) -> Gap:
        return cls(
            dt.date.fromisoformat(record["start"]),
            dt.date.fromisoformat(record["end"]),
            int(record["missing_sessions"]),
        )


def detect_gaps(timestamps: np.ndarray, calendar: str, threshold: int = 5) -> list[Gap]:
    """Gaps longer than `threshold` missing sessions between consecutive bars.

    timestamps: sorted UTC epoch seconds at 00:00 of each session date.
    calendar: the symbol's calendar ("24/7", "XNYS", ...) or its exchange code; a gap
    names its first and last missing session, not the weekend or holiday around them.
    """
    ts = np.asarray(timestamps, dtype=np.int64)
    if ts.size < 2:
        return []
    days = (ts // SECONDS_PER_DAY).astype("datetime64[D]")
    missing = missing_sessions(days, calendar)
    gaps = []
    for i in np.flatnonzero(missing > threshold):
        start, end = missing_between(days[i], days[i + 1], calendar)
        gaps.append(Gap(start, end, int(missing[i])))
    return gaps
