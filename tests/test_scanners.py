"""The candidates files: the streamed JSON text is the document `atomic_write_json` writes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from quant_assets.data.scanners import (
    UniverseConfig,
    bar_history,
    load_universe,
    scan_point_in_time,
)
from quant_resources.atomic import atomic_write_json
from quant_resources.schema import SymbolInfo, date_to_ts
from quant_resources.sources.synthetic import SyntheticSource

# Two scanners that admit the same symbols (two admissions each), a top N that cuts, a
# history rule that admits symbols over the range, volumes whose repr has an exponent.
OVERLAPPING = UniverseConfig.model_validate(
    {
        "universe": "overlap",
        "scanners": [
            {"name": "liquid", "min_history_sessions": 30, "top_n": 3},
            {"name": "seasoned", "rank_by": "history_sessions", "min_history_sessions": 5, "top_n": 4},
            {"name": "crypto", "asset_classes": ["crypto"], "exchanges": ["X"], "min_median_dollar_volume": 1.0},
        ],
    }
)
ODD = {  # key: (info, genesis, dollar volume a day)
    "X_BTC": (SymbolInfo("X", "BTC", "crypto", dt.date(2024, 1, 3), 0.0), 1e16),
    "X_ETH": (SymbolInfo("X", "ETH", "crypto", dt.date(2024, 1, 20), 0.0), 0.1 + 0.2),
    "N_AAA": (SymbolInfo("N", "AAA", "equity", dt.date(2023, 12, 1), 0.0), 123456789.125),
    "N_BBB": (SymbolInfo("N", "BBB", "equity", dt.date(2024, 1, 1), 0.0), 5e-324),
    "N_CCC": (SymbolInfo("N", "CCC", "equity", dt.date(2024, 2, 1), 0.0), 2.5e6),
}


def _days(start: dt.date, n: int) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range(n)]


def _written_bytes(tmp_path: Path, document: dict) -> bytes:
    path = tmp_path / "candidates.json"
    atomic_write_json(path, document, indent=None)
    return path.read_bytes()


def _odd_bars(end: dt.date) -> pl.DataFrame:
    rows = [
        (key, date_to_ts(day), volume)
        for key, (info, volume) in ODD.items()
        for day in _days(info.genesis_date, (end - info.genesis_date).days + 1)
        if info.asset_class == "crypto" or day.weekday() < 5
    ]
    return pl.DataFrame(
        {"symbol": [r[0] for r in rows], "timestamp": [r[1] for r in rows], "close": 1.0, "volume": [r[2] for r in rows]}
    )


@pytest.mark.parametrize("universe", ["all", "default", "small"])
def test_streamed_text_is_the_written_document_for_each_universe(tmp_path, universe):
    config = load_universe(None, universe)  # the configs shipped in the package
    source = SyntheticSource(n_symbols=60)
    days = _days(dt.date(2018, 6, 20), 40)  # across genesis dates of late listings
    frames = [
        source.fetch_bars(i.exchange, i.symbol, dt.date(2017, 6, 1), days[-1]).with_columns(symbol=pl.lit(i.key))
        for i in source.list_symbols()
    ]
    history = bar_history(pl.concat(frames), {s.liquidity_window_sessions for s in config.scanners})
    symbols = {i.key: i for i in source.list_symbols()}
    streamed = list(scan_point_in_time(config, symbols, history, days))
    assert [day for day, _, _ in streamed] == days
    assert any(count for _, _, count in streamed)
    for _, text, count in streamed:
        document = json.loads(text)
        assert text.encode() == _written_bytes(tmp_path, document)
        assert count == len(document["candidates"])


def test_streamed_text_with_overlapping_scanners_and_odd_volumes(tmp_path):
    days = _days(dt.date(2023, 12, 25), 50)
    history = bar_history(_odd_bars(days[-1]), [63])
    symbols = {key: info for key, (info, _) in ODD.items()}
    admitted_twice = 0
    for day, text, _ in scan_point_in_time(OVERLAPPING, symbols, history, days):
        document = json.loads(text)
        assert text.encode() == _written_bytes(tmp_path, document)
        assert document["as_of"] == day.isoformat()
        admitted_twice += sum(len(c["admitted_by"]) > 1 for c in document["candidates"])
        for record in document["candidates"]:
            assert record["median_dollar_volume"] == ODD[f"{record['exchange']}_{record['symbol']}"][1]
    assert admitted_twice  # the case the per-symbol text fragments must get right
