"""The sanitiser: every rule that cleans raw bars before they reach the lakehouse.

Rules run in this order, each counted per symbol:

1. **duplicates**: bars sharing a timestamp collapse to the last one delivered.
2. **invalid**: a price or the volume missing, NaN or infinite; a price <= 0; volume < 0;
   high < low; high below max(open, close); low above min(open, close).
3. **toxic**: a bar whose close-to-close return against the previous kept close exceeds
   the threshold (+500% by default) is dropped, unless the new level lasts (a level
   shift such as a redenomination): then the bar is kept and the symbol is flagged.
   A jump that returns to the level before a lone low bar is a recovery from a
   downward spike: the low bar is the toxic one and is dropped instead.

The functions are pure: frames in, frames and counts out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from quant_resources.schema import OHLCV_COLUMNS, OHLCV_SCHEMA, PRICE_COLUMNS

LEVEL_SHIFT_CONFIRM_BARS = 3  # bars after a jump that must stay at the new level
LEVEL_BAND = math.log(2.0)  # "the same level": within a factor of 2


@dataclass
class SanitizeResult:
    """Clean bars (sorted, unique timestamps) and what was dropped or flagged, by timestamp."""

    bars: pl.DataFrame
    duplicates: list[int] = field(default_factory=list)  # one entry per extra row
    invalid: list[int] = field(default_factory=list)
    toxic: list[int] = field(default_factory=list)
    level_shifts: list[int] = field(default_factory=list)
    pending_toxic: list[int] = field(default_factory=list)  # toxic at the end, not yet confirmable
    known_file: tuple | None = None  # (frame, version) of the file as read before sanitising

    @property
    def dropped_rows(self) -> int:
        return len(self.duplicates) + len(self.invalid) + len(self.toxic)


def collapse_duplicates(bars: pl.DataFrame) -> tuple[pl.DataFrame, list[int]]:
    """Keep the last bar delivered for each timestamp; return the extra rows' timestamps."""
    if bars.height == 0:
        return bars, []
    counts = bars.group_by("timestamp").len()
    extra = counts.filter(pl.col("len") > 1)
    duplicates: list[int] = []
    for ts, n in extra.sort("timestamp").iter_rows():
        duplicates.extend([int(ts)] * (int(n) - 1))
    if not duplicates:
        return bars.sort("timestamp"), []
    kept = bars.with_row_index("_order").unique("timestamp", keep="last").sort("timestamp")
    return kept.drop("_order"), duplicates


def _same_level(a: float, b: float) -> bool:
    return abs(math.log(a / b)) < LEVEL_BAND


def toxic_rows(
    closes: np.ndarray,
    threshold: float,
    prior_closes: np.ndarray | None = None,
    confirm_bars: int = LEVEL_SHIFT_CONFIRM_BARS,
) -> tuple[np.ndarray, list[int], list[int]]:
    """Decide which bars are toxic.

    closes: 1-D array of positive closes in time order (already free of invalid bars).
    prior_closes: the closes just before `closes` already in the lakehouse (oldest first);
        they give the first bar its reference and are never dropped.
    Returns (drop mask over `closes`, indexes of level-shift bars kept, indexes of toxic
    bars too close to the end to tell a spike from a level shift).
    """
    n = closes.size
    drop = np.zeros(n, dtype=bool)
    prior = np.asarray(prior_closes if prior_closes is not None else [], dtype=float)
    series = np.concatenate([prior, closes])
    offset = prior.size
    if n == 0 or series.size < 2:
        return drop, [], []
    limit = 1.0 + threshold
    jumps = series[1:] / series[:-1] > limit
    # Only a jump can start a toxic run; most symbols have none and skip the loop.
    first = np.flatnonzero(jumps[max(offset - 1, 0) :])
    if first.size == 0:
        return drop, [], []
    start = int(first[0]) + max(offset - 1, 0) + 1
    level_shifts: list[int] = []
    pending: list[int] = []
    kept = [i for i in range(start)]  # indexes into `series` of kept bars so far
    for i in range(start, series.size):
        if not kept:
            kept.append(i)
            continue
        ref = series[kept[-1]]
        if series[i] / ref <= limit:
            kept.append(i)
            continue
        # Recovery from a lone low bar: the jump lands back on the level before it.
        if len(kept) >= 2 and kept[-1] >= offset and _same_level(series[i], series[kept[-2]]):
            drop[kept[-1] - offset] = True
            kept.pop()
            kept.append(i)
            continue
        following = [j for j in range(i + 1, min(i + 1 + confirm_bars, series.size))]
        if len(following) < confirm_bars and all(
            _same_level(series[j], series[i]) for j in following
        ):
            # Too close to the end to know: drop for now, reconsider when more bars arrive.
            drop[i - offset] = True
            pending.append(i - offset)
            continue
        if all(_same_level(series[j], series[i]) for j in following):
            level_shifts.append(i - offset)
            kept.append(i)
            continue
        drop[i - offset] = True
    return drop, level_shifts, pending


def _invalid_numpy(bars: pl.DataFrame) -> np.ndarray:
    """True where a bar breaks the OHLC rules (module docstring, rule 2), on NumPy arrays."""
    o, h, lo, c, v = (bars[col].to_numpy() for col in ("open", "high", "low", "close", "volume"))
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c) & np.isfinite(v)
        ok = (
            finite
            & (o > 0) & (h > 0) & (lo > 0) & (c > 0)
            & (h >= lo) & (h >= np.maximum(o, c)) & (lo <= np.minimum(o, c)) & (v >= 0)
        )
    return ~ok


def sanitize_bars(
    raw: pl.DataFrame,
    *,
    toxic_threshold: float = 5.0,
    prior_closes: list[float] | np.ndarray | None = None,
) -> SanitizeResult:
    """Apply the rules of the module docstring to one symbol's raw bars."""
    if raw.schema != OHLCV_SCHEMA or raw["timestamp"].null_count():
        raw = raw.select([pl.col(c).cast(t, strict=False) for c, t in OHLCV_SCHEMA.items()])
        raw = raw.filter(pl.col("timestamp").is_not_null())
    ts = raw["timestamp"].to_numpy()
    if ts.size > 1 and not bool(np.all(np.diff(ts) > 0)):  # unsorted or duplicated
        bars, duplicates = collapse_duplicates(raw)
    else:
        bars, duplicates = raw, []
    if any(bars[c].null_count() for c in OHLCV_SCHEMA):
        bars = bars.with_columns(pl.col(c).fill_null(float("nan")) for c in (*PRICE_COLUMNS, "volume"))
    bad = _invalid_numpy(bars)
    invalid = bars["timestamp"].to_numpy()[bad].tolist() if bad.any() else []
    if bad.any():
        bars = bars.filter(pl.Series(~bad))
    drop, shifts, pending = toxic_rows(
        bars["close"].to_numpy(), toxic_threshold, np.asarray(prior_closes if prior_closes is not None else [], dtype=float)
    )
    ts = bars["timestamp"].to_numpy()
    toxic = [int(t) for t in ts[drop]]
    if drop.any():
        bars = bars.filter(pl.Series(~drop))
    return SanitizeResult(
        bars=bars.select(OHLCV_COLUMNS),
        duplicates=duplicates,
        invalid=[int(t) for t in invalid],
        toxic=toxic,
        level_shifts=[int(ts[i]) for i in shifts],
        pending_toxic=[int(ts[i]) for i in pending],
    )
