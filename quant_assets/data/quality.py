"""The data-quality score of one symbol's file, in [0, 1].

score = completeness x cleanliness x (0.5 when a level shift is flagged)

- completeness: bars held / sessions expected between the first and last bar
  on the symbol's calendar (crypto: calendar days; an equity: its exchange's sessions,
  so a holiday is not expected);
- cleanliness: bars held / (bars held + rows the sanitiser ever dropped).
"""

from __future__ import annotations

import datetime as dt

from quant_assets.data.calendar import sessions_between

LEVEL_SHIFT_PENALTY = 0.5


def quality_score(
    rows: int,
    first: dt.date | None,
    last: dt.date | None,
    calendar: str,
    dropped_rows: int,
    level_shift: bool,
) -> float:
    if rows <= 0 or first is None or last is None:
        return 0.0
    expected = max(sessions_between(first, last, calendar), rows)
    completeness = rows / expected
    cleanliness = rows / (rows + max(dropped_rows, 0))
    score = completeness * cleanliness * (LEVEL_SHIFT_PENALTY if level_shift else 1.0)
    return round(min(max(score, 0.0), 1.0), 6)
