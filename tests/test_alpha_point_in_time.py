"""The alpha cycle of day D cannot see after D: take a lakehouse that runs past D, run D,
then change everything after D (every symbol's later bars, the feature rows after D, the
catalog's scores and gaps, a later run folder) and run D again: the snapshot (its copies,
hashes and fingerprint), the selection, the features it read, the weights and the
backtest come out byte for byte the same.

The data side (candidates and quality inputs of D) has its own proof in
tests/test_point_in_time.py; the policy walk-forward's per-rebalance proof is in
tests/test_policy.py.
"""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import numpy as np
import polars as pl
import pytest
from helpers import run_data_job

from quant_assets.data.lakehouse_reads import scan_bars
from quant_assets.definitions import ALPHA_JOB, build_definitions
from quant_assets.features.store import update_features, warmup_start
from quant_resources.lakehouse import Lakehouse
from quant_resources.schema import date_to_ts
from quant_resources.settings import Settings

pytestmark = pytest.mark.slow

D = dt.date(2025, 3, 31)
LATER = D + dt.timedelta(days=45)  # the lakehouse runs this far past D
FILES = ("selection.json", "features.parquet", "weights.parquet", "backtest_features.parquet")


def run_alpha(settings: Settings, day: dt.date, instance: dg.DagsterInstance) -> str:
    job = build_definitions(settings).resolve_job_def(ALPHA_JOB)
    result = job.execute_in_process(instance=instance, partition_key=day.isoformat(), raise_on_error=False)
    checks = [(e.check_name, e.metadata) for e in result.get_asset_check_evaluations() if not e.passed]
    assert result.success, (day, checks, [e.message for e in result.all_events if e.is_failure])
    return result.run_id


def change_the_future(settings: Settings) -> dict[str, int]:
    """Rewrite every bar after D (prices scaled by a per-symbol random factor, volumes
    shuffled, a third of the symbols cut off at D + 1), recompute the feature rows after D
    from them (a new Delta version), and poison the catalog's scores and gaps."""
    lakehouse = Lakehouse(data_dir=str(settings.data_dir))
    rng = np.random.default_rng(7)
    after = date_to_ts(D + dt.timedelta(days=1))
    changed = cut = 0
    for index, path in enumerate(lakehouse.ohlcv_files()):
        bars = pl.read_parquet(path)
        future = bars["timestamp"].cast(pl.Int64) >= after
        if not future.any():
            continue
        if index % 3 == 0:
            bars = bars.filter(~future | (bars["timestamp"].cast(pl.Int64) == after))
            cut += 1
        factor = float(rng.uniform(0.3, 3.0))
        scaled = {c: pl.when(pl.col("timestamp").cast(pl.Int64) >= after).then(pl.col(c) * factor).otherwise(pl.col(c)) for c in ("open", "high", "low", "close")}
        bars = bars.with_columns(**scaled, volume=pl.when(pl.col("timestamp").cast(pl.Int64) >= after).then(pl.col("volume").shuffle(seed=index)).otherwise(pl.col("volume")))
        bars.write_parquet(path)
        changed += 1
    start = D + dt.timedelta(days=1)
    bars = scan_bars(lakehouse.ohlcv_files(), warmup_start(start), LATER)  # what tv_technicals_1d reads
    lakehouse.write_features(update_features, bars, start, LATER)
    catalog_file = settings.layout.catalog_path
    catalog = json.loads(catalog_file.read_text())
    for entry in catalog["symbols"].values():
        entry["data_quality_score"] = 0.01
        entry.setdefault("gaps", []).append(
            {"start": (D + dt.timedelta(days=2)).isoformat(), "end": (D + dt.timedelta(days=20)).isoformat(), "missing_sessions": 12}
        )
    catalog_file.write_text(json.dumps(catalog))
    return {"files_changed": changed, "files_cut": cut}


def test_nothing_after_d_moves_the_alpha_run_of_d(tmp_path):
    settings = Settings(
        data_dir=tmp_path / "data", history_start=dt.date(2023, 1, 1), synthetic_symbols=60,
        universe="small", freshness_hours=1e6,
    )
    with dg.instance_for_test() as instance:
        assert run_data_job(settings, dt.date(2023, 1, 1), LATER, instance=instance).success
        first = settings.runs_dir / run_alpha(settings, D, instance)
        before = {name: (first / name).read_bytes() for name in FILES}
        backtest_before = json.loads((first / "backtest.json").read_text())

        run_alpha(settings, LATER, instance)  # a later run folder exists when D runs again
        counts = change_the_future(settings)
        assert counts["files_changed"] > 10 and counts["files_cut"] > 3

        second = settings.runs_dir / run_alpha(settings, D, instance)
    manifests = [json.loads((run / "manifest.json").read_text()) for run in (first, second)]
    assert manifests[1]["feature_store_version"] > manifests[0]["feature_store_version"]  # the table moved on
    for name in FILES:
        assert (second / name).read_bytes() == before[name], f"{name} changed with data after {D}"
    backtest_after = json.loads((second / "backtest.json").read_text())
    for key in ("metrics", "rebalances", "features"):
        assert backtest_after[key] == backtest_before[key], key
    # The snapshot itself: bars up to D only, so the same copies, hashes and fingerprint.
    assert manifests[1]["files"] == manifests[0]["files"]
    assert manifests[1]["lakehouse_fingerprint"] == manifests[0]["lakehouse_fingerprint"]
    for name in manifests[0]["files"]:
        assert (second / "data" / name).read_bytes() == (first / "data" / name).read_bytes(), name
    quality = [{d["symbol"]: d["data_quality_score"] for d in m["files"].values()} for m in manifests]
    assert quality[0] == quality[1] and min(quality[1].values()) > 0.01  # the poisoned scores were not read
