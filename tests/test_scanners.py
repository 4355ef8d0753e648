"""The candidates files: the streamed JSON text is the document `atomic_write_json` writes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from quant_assets.data.scanners import (
    UniverseConfig,
    load_universe,
    scan_days,
    scan_days_json,
    scan_many,
    window_candidate_keys,
)
from quant_resources.atomic import atomic_write_json
from quant_resources.schema import SymbolInfo
from quant_resources.sources.synthetic import SyntheticSource

# Two scanners that admit the same symbols (two admissions each), a top N that cuts, a
# history rule that admits symbols over the range, volumes whose repr has an exponent.
OVERLAPPING = UniverseConfig.model_validate(
    {
        "universe": "overlap",
        "scanners": [
            {"name": "liquid", "min_history_days": 30, "top_n": 3},
            {"name": "seasoned", "rank_by": "history_days", "min_history_days": 5, "top_n": 4},
            {"name": "crypto", "asset_classes": ["crypto"], "exchanges": ["X"], "min_median_dollar_volume": 1.0},
        ],
    }
)
ODD_SYMBOLS = [
    SymbolInfo("X", "BTC", "crypto", dt.date(2024, 1, 3), 1e16),
    SymbolInfo("X", "ETH", "crypto", dt.date(2024, 1, 20), 0.1 + 0.2),
    SymbolInfo("N", "AAA", "equity", dt.date(2023, 12, 1), 123456789.125),
    SymbolInfo("N", "BBB", "equity", dt.date(2024, 1, 1), 5e-324),
    SymbolInfo("N", "CCC", "equity", dt.date(2024, 2, 1), 2.5e6),
    SymbolInfo("N", "OLD", "equity", dt.date(2020, 1, 1), 7.0, active=False),
]


def _days(start: dt.date, n: int) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range(n)]


def _written_bytes(tmp_path: Path, document: dict) -> bytes:
    path = tmp_path / "candidates.json"
    atomic_write_json(path, document, indent=None)
    return path.read_bytes()


@pytest.mark.parametrize("universe", ["all", "default", "small"])
def test_streamed_text_is_the_written_document_for_each_universe(tmp_path, universe):
    config = load_universe(None, universe)  # the configs shipped in the package
    listed = SyntheticSource(n_symbols=60).list_symbols()
    days = _days(dt.date(2017, 12, 20), 40)  # across genesis dates of late listings
    documents = scan_many(config, listed, days)
    streamed = list(scan_days_json(config, listed, days))
    assert [day for day, _, _ in streamed] == days
    for day, text, count in streamed:
        assert text.encode() == _written_bytes(tmp_path, documents[day])
        assert count == len(documents[day]["candidates"])


def test_streamed_text_with_overlapping_scanners_and_odd_volumes(tmp_path):
    days = _days(dt.date(2023, 12, 25), 50)
    documents = scan_many(OVERLAPPING, ODD_SYMBOLS, days)
    admitted_twice = 0
    for day, text, _ in scan_days_json(OVERLAPPING, ODD_SYMBOLS, days):
        assert text.encode() == _written_bytes(tmp_path, documents[day])
        assert json.loads(text) == documents[day]
        admitted_twice += sum(len(c["admitted_by"]) > 1 for c in documents[day]["candidates"])
    assert admitted_twice  # the case the per-symbol text cache must get right


def test_scan_many_keeps_its_rules():
    day = dt.date(2024, 3, 1)
    document = scan_many(OVERLAPPING, ODD_SYMBOLS, [day])[day]
    by_key = {f"{c['exchange']}_{c['symbol']}": c for c in document["candidates"]}
    assert "N_OLD" not in by_key  # inactive
    assert [a["rank"] for a in by_key["X_BTC"]["admitted_by"] if a["scanner"] == "liquid"] == [1]
    assert by_key["N_AAA"]["history_days"] == (day - dt.date(2023, 12, 1)).days + 1
    assert sum(1 for c in document["candidates"] for a in c["admitted_by"] if a["scanner"] == "liquid") == 3


def test_the_candidates_of_a_window_are_every_candidate_of_every_day():
    """What a range run ingests: the union of the window's daily lists, which outgrows the
    last day's when a later listing ranks a symbol out of a top N (3 symbols in 2024 here)."""
    listed = SyntheticSource(n_symbols=300).list_symbols()
    config = load_universe(None, "default")
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(366)]
    union, last = set(), set()
    for _, document in scan_days(config, listed, days):
        last = {f"{c['exchange']}_{c['symbol']}" for c in document["candidates"]}
        union |= last
    assert window_candidate_keys(config, listed, days) == union
    assert len(union - last) == 3  # ranked out before the last day: the case this guards
