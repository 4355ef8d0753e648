"""Each sanitiser rule on hand-made frames."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from quant_assets.data.sanitize import sanitize_bars, toxic_rows
from quant_resources.schema import date_to_ts

D0 = dt.date(2024, 1, 1)


def bars(closes, days=None, **overrides):
    days = days if days is not None else list(range(len(closes)))
    ts = [date_to_ts(D0 + dt.timedelta(days=d)) for d in days]
    closes = [float(c) for c in closes]
    frame = pl.DataFrame(
        {
            "timestamp": ts,
            "open": closes,
            "high": [c * 1.01 if c > 0 else c for c in closes],
            "low": [c * 0.99 if c > 0 else c for c in closes],
            "close": closes,
            "volume": [100.0] * len(closes),
        }
    )
    for column, values in overrides.items():
        frame = frame.with_columns(pl.Series(column, values, dtype=pl.Float64))
    return frame


def test_duplicates_collapse_to_last_delivered_and_are_counted():
    raw = bars([10, 11, 12, 13], days=[0, 1, 1, 2])
    raw = raw.with_columns(pl.Series("volume", [1.0, 2.0, 3.0, 4.0]))
    result = sanitize_bars(raw)
    assert result.bars.height == 3
    assert result.bars["volume"].to_list() == [1.0, 3.0, 4.0]  # the later copy wins
    assert result.duplicates == [date_to_ts(D0 + dt.timedelta(days=1))]


def test_unsorted_input_comes_out_sorted_without_counting_anything():
    raw = bars([10, 11, 12], days=[2, 0, 1])
    result = sanitize_bars(raw)
    assert result.bars["timestamp"].is_sorted()
    assert result.dropped_rows == 0


@pytest.mark.parametrize(
    "column,value",
    [("high", 5.0), ("low", 20.0), ("close", 0.0), ("close", -3.0), ("open", float("nan")), ("volume", -1.0), ("close", float("inf"))],
)
def test_invalid_bars_are_dropped_and_counted(column, value):
    closes = [10.0, 10.5, 11.0, 11.5]
    values = bars(closes)[column].to_list()
    values[2] = value
    result = sanitize_bars(bars(closes, **{column: values}))
    assert result.invalid == [date_to_ts(D0 + dt.timedelta(days=2))]
    assert result.bars.height == 3


def test_high_below_low_is_invalid():
    raw = bars([10, 10, 10], high=[10.1, 9.0, 10.1], low=[9.9, 11.0, 9.9])
    result = sanitize_bars(raw)
    assert len(result.invalid) == 1


def test_single_toxic_spike_is_dropped_and_the_next_bar_kept():
    result = sanitize_bars(bars([10, 11, 88, 11.5, 12]))  # 88/11 - 1 = +700%
    assert result.toxic == [date_to_ts(D0 + dt.timedelta(days=2))]
    assert result.bars["close"].to_list() == [10, 11, 11.5, 12]
    assert result.level_shifts == []


def test_return_of_exactly_the_threshold_is_not_toxic():
    result = sanitize_bars(bars([10, 60, 61, 62, 63]))  # +500% exactly
    assert result.toxic == []


def test_lasting_level_shift_is_kept_and_flagged_not_toxic():
    result = sanitize_bars(bars([10, 11, 110, 111, 112, 113]))
    assert result.toxic == []
    assert result.level_shifts == [date_to_ts(D0 + dt.timedelta(days=2))]
    assert result.bars.height == 6


def test_level_shift_does_not_make_every_later_bar_toxic():
    closes = [10.0] * 5 + [100.0] * 50
    result = sanitize_bars(bars(closes))
    assert result.toxic == [] and len(result.level_shifts) == 1 and result.bars.height == 55


def test_jump_at_the_end_is_held_back_until_it_can_be_told_apart():
    result = sanitize_bars(bars([10, 11, 12, 100]))
    assert result.toxic == [date_to_ts(D0 + dt.timedelta(days=3))]
    assert result.pending_toxic == result.toxic


def test_prior_closes_give_the_first_bar_its_reference():
    spike = sanitize_bars(bars([90, 10.5, 11, 11.5]), prior_closes=[10.0, 10.2])
    assert spike.toxic == [date_to_ts(D0)]
    shifted = sanitize_bars(bars([100, 101, 102, 103]), prior_closes=[10.0, 10.2])
    assert shifted.toxic == [] and shifted.level_shifts == [date_to_ts(D0)]


def test_recovery_from_a_lone_low_bar_drops_the_low_bar():
    drop, shifts, pending = toxic_rows(np.array([10.0, 10.5, 1.2, 10.8, 11.0]), 5.0)
    assert drop.tolist() == [False, False, True, False, False]
    assert shifts == [] and pending == []


def test_two_bar_spike_drops_both():
    drop, _, _ = toxic_rows(np.array([10.0, 10.0, 80.0, 82.0, 10.0, 10.0, 10.0]), 5.0)
    assert drop.tolist() == [False, False, True, True, False, False, False]
