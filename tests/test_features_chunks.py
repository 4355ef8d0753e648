"""The feature update computes symbols in groups: same rows as all at once, one commit or none."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandera.errors
import polars as pl
import pytest
from test_features_store import assert_frames_close, business_days, calendar_days, walk

from quant_assets.features import store
from quant_assets.features.indicators import compute_indicators
from quant_assets.features.store import (
    _to_table_rows,
    _write_chunks,
    current_version,
    read_features,
    update_features,
)
from quant_resources.schema import date_to_ts

LAST_DAY = dt.date(2024, 3, 29)


@pytest.fixture(scope="module")
def universe() -> pl.DataFrame:
    """Seven symbols, 24/7 and business days, one listed inside the window."""
    frames = [walk(f"C{i}", calendar_days(dt.date(2022, 6, 1), LAST_DAY), seed=i) for i in range(3)]
    frames += [walk(f"S{i}", business_days(dt.date(2021, 1, 4), LAST_DAY), seed=10 + i) for i in range(3)]
    frames.append(walk("NEW", business_days(dt.date(2024, 2, 1), LAST_DAY), seed=99))
    return pl.concat(frames)


def test_groups_of_symbols_give_the_rows_of_one_group(tmp_path: Path, universe, monkeypatch):
    start, end = dt.date(2024, 1, 15), LAST_DAY
    whole = update_features(tmp_path / "whole", universe, start, end)
    monkeypatch.setattr(store, "SYMBOLS_PER_CHUNK", 2)  # four groups, the last of one symbol
    grouped = update_features(tmp_path / "grouped", universe.lazy(), start, end)
    in_window = universe.filter(pl.col("timestamp") >= date_to_ts(start)).height
    assert (grouped.rows_written, grouped.symbols) == (whole.rows_written, whole.symbols) == (in_window, 7)
    assert grouped.version == 1  # version 0 is the empty table: one commit for every group
    # Equal to floating-point precision, not bit for bit: the rolling windows run over the
    # symbol-sorted column, so a symbol's sums carry the rounding of the symbols before it
    # (as a daily update's do against a full rebuild, docs/features.md).
    assert_frames_close(read_features(tmp_path / "grouped"), read_features(tmp_path / "whole"))


def test_a_group_that_breaks_l2_commits_nothing(tmp_path: Path, universe):
    table = tmp_path / "t"
    day = LAST_DAY
    update_features(table, universe, day, day)
    before = read_features(table)
    features = compute_indicators(universe)
    good = _to_table_rows(features.filter(pl.col("symbol") == "C0"), day, day)
    broken = features.filter(pl.col("symbol") == "S0").with_columns(rsi_14=pl.lit(150.0))

    def chunks():
        yield good.with_columns(close=pl.col("close") + 1.0)
        yield _to_table_rows(broken, day, day)  # raises inside the write, after a chunk went in

    with pytest.raises(pandera.errors.SchemaError, match="rsi_14"):
        _write_chunks(table, chunks, 2, day, day)
    assert current_version(table) == 1
    assert read_features(table).equals(before)
