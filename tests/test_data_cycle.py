"""The data cycle: ingestion against the synthetic market, idempotency, concurrency, graph runs."""

from __future__ import annotations

import datetime as dt
import multiprocessing

import dagster as dg
import polars as pl
import pytest
from helpers import file_hashes, metadata_of, run_data_job

from quant_assets.contracts import enforce, ohlcv_schema
from quant_assets.data.ingest import ingest
from quant_assets.definitions import build_definitions
from quant_resources.lakehouse import Lakehouse
from quant_resources.schema import date_to_ts, ts_to_date
from quant_resources.settings import Settings
from quant_resources.sources.synthetic import SyntheticSource

NOW = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def default_universe_lakehouse(tmp_path_factory):
    """The default 300-symbol universe ingested 2018-01-01..2025-07-31 (no Dagster)."""
    root = tmp_path_factory.mktemp("lake")
    settings = Settings(data_dir=root / "data", history_start=dt.date(2018, 1, 1))
    source = SyntheticSource()
    lake = Lakehouse(data_dir=str(settings.data_dir))
    report = ingest(
        source.list_symbols(), dt.date(2018, 1, 1), dt.date(2025, 7, 31),
        source=source, lakehouse=lake, settings=settings, now=NOW,
    )
    return settings, source, lake, report


def test_default_universe_lands_clean(default_universe_lakehouse):
    settings, source, lake, report = default_universe_lakehouse
    assert report.failures == []
    files = lake.ohlcv_files()
    assert len(files) == len(source.list_symbols()) - len(report.by_status("not_listed"))
    bars = pl.concat(
        [pl.read_parquet(f).with_columns(pl.lit(f.name).alias("symbol")) for f in files]
    ).select(["symbol", "timestamp", "open", "high", "low", "close", "volume"])
    enforce(ohlcv_schema(with_symbol=True), bars)  # no duplicate, no OHLC violation, prices > 0
    returns = bars.with_columns((pl.col("close") / pl.col("close").shift(1).over("symbol") - 1).alias("r"))
    catalog = lake.read_catalog()
    shifts = {(f"{e['exchange']}_{e['symbol']}_1d.parquet", d) for e in catalog["symbols"].values() for d in e["level_shifts"]}
    toxic = [
        r for r in returns.filter(pl.col("r") > settings.toxic_threshold).iter_rows(named=True)
        if (r["symbol"], str(ts_to_date(r["timestamp"]))) not in shifts
    ]
    assert toxic == []


def test_catalog_counts_match_what_was_seeded(default_universe_lakehouse):
    settings, source, lake, report = default_universe_lakehouse
    catalog = lake.read_catalog()["symbols"]
    seeded_totals = {"toxic": 0, "duplicate": 0, "invalid": 0, "level_shift": 0, "gap": 0}
    for info in source.list_symbols():
        if info.key not in catalog:
            continue
        entry = catalog[info.key]
        seeded = source.seeded_defects(info.exchange, info.symbol, dt.date(2018, 1, 1), dt.date(2025, 7, 31))
        assert entry["toxic_rows_dropped"] == len(seeded["toxic"]), info.key
        assert entry["duplicates_dropped"] == len(seeded["duplicate"]), info.key
        assert entry["invalid_rows_dropped"] == len(seeded["high_low"]) + len(seeded["nonpositive"]), info.key
        assert entry["level_shifts"] == [d.isoformat() for d in seeded["level_shift"]], info.key
        recorded = {(g["start"], g["end"]) for g in entry["gaps"]}
        for first, last in seeded["gap"]:
            assert (first.isoformat(), last.isoformat()) in recorded, (info.key, first, last)
        assert 0.0 <= entry["data_quality_score"] <= 1.0
        seeded_totals["toxic"] += len(seeded["toxic"])
        seeded_totals["duplicate"] += len(seeded["duplicate"])
        seeded_totals["invalid"] += len(seeded["high_low"]) + len(seeded["nonpositive"])
        seeded_totals["level_shift"] += len(seeded["level_shift"])
        seeded_totals["gap"] += len(seeded["gap"])
    assert all(n >= 5 for n in seeded_totals.values()), seeded_totals  # every defect class exercised


def test_staggered_genesis_symbols_start_at_their_listing(default_universe_lakehouse):
    settings, source, lake, report = default_universe_lakehouse
    catalog = lake.read_catalog()["symbols"]
    late = [i for i in source.list_symbols() if dt.date(2018, 1, 1) < i.genesis_date <= dt.date(2025, 6, 1)]
    assert len(late) >= 10
    for info in late:
        assert catalog[info.key]["start_date"] >= info.genesis_date.isoformat()


def _ingest_window(data_dir: str, start: str, end: str, keys: list[str]) -> None:
    settings = Settings(data_dir=data_dir, history_start=dt.date(2024, 1, 1), freshness_hours=0)
    source = SyntheticSource(n_symbols=40)
    infos = [i for i in source.list_symbols() if i.key in keys]
    ingest(infos, dt.date.fromisoformat(start), dt.date.fromisoformat(end), source=source,
           lakehouse=Lakehouse(data_dir=data_dir), settings=settings, chunk_size=1)


def test_a_range_run_ingests_every_candidate_of_every_day(tmp_path):
    """Point in time: a symbol that was a candidate on any day of a backfilled range has its
    file, though a later listing ranked it out of the last day's list (the alpha cycle of
    those days snapshots it)."""
    import json

    settings = Settings(data_dir=tmp_path / "data", history_start=dt.date(2024, 1, 1), synthetic_symbols=300)
    result = run_data_job(settings, dt.date(2024, 1, 1), dt.date(2024, 12, 31))
    assert result.success
    wanted, last = set(), set()
    for day in (dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(366)):
        document = json.loads((settings.data_dir / "export" / day.isoformat() / "candidates.json").read_text())
        last = {f"{c['exchange']}_{c['symbol']}" for c in document["candidates"]}
        wanted |= last
    assert wanted - last  # some were ranked out before the last day
    files = {p.name.removesuffix("_1d.parquet") for p in Lakehouse(data_dir=str(settings.data_dir)).ohlcv_files()}
    assert wanted <= files, sorted(wanted - files)


def test_two_processes_ingesting_overlapping_windows_keep_the_union(tmp_path):
    data_dir = str(tmp_path / "data")
    source = SyntheticSource(n_symbols=40)
    infos = [i for i in source.list_symbols() if i.genesis_date < dt.date(2023, 6, 1)][:8]
    keys = [i.key for i in infos]
    _ingest_window(data_dir, "2024-03-01", "2024-03-31", keys)  # the symbols exist already
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_ingest_window, args=(data_dir, "2024-01-01", "2024-03-15", keys)),
        ctx.Process(target=_ingest_window, args=(data_dir, "2024-03-10", "2024-06-30", keys)),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
        assert p.exitcode == 0
    lake = Lakehouse(data_dir=data_dir)
    catalog = lake.read_catalog()["symbols"]
    for info in infos:
        bars = lake.read_ohlcv(info.exchange, info.symbol)
        raw = source.fetch_bars(info.exchange, info.symbol, dt.date(2024, 1, 1), dt.date(2024, 6, 30))
        expected = raw["timestamp"].unique().len()
        seeded = source.seeded_defects(info.exchange, info.symbol, dt.date(2024, 1, 1), dt.date(2024, 6, 30))
        dropped = len(seeded["toxic"]) + len(seeded["high_low"]) + len(seeded["nonpositive"])
        assert bars.height == expected - dropped, info.key
        assert bars["timestamp"].min() == date_to_ts(max(dt.date(2024, 1, 1), info.genesis_date)) or info.asset_class == "equity"
        assert catalog[info.key]["rows"] == bars.height
    assert not list((tmp_path / "data" / "lakehouse" / "ohlcv").glob(".*tmp*"))


def test_same_partition_twice_is_byte_identical_and_all_skipped(settings):
    day = dt.date(2024, 3, 5)
    first = run_data_job(settings, day)
    assert first.success
    before = file_hashes(settings.ohlcv_dir)
    catalog_before = settings.catalog_path.read_text()
    second = run_data_job(settings, day)
    assert second.success
    meta = metadata_of(second, "ohlcv")
    assert meta["skipped"] == meta["symbols"] and meta["ingested"] == 0
    assert file_hashes(settings.ohlcv_dir) == before
    import json
    a, b = json.loads(catalog_before), json.loads(settings.catalog_path.read_text())
    assert a["symbols"] == b["symbols"]


def test_backfill_then_daily_loses_nothing_and_is_one_run(settings):
    instance = dg.DagsterInstance.ephemeral()
    result = run_data_job(settings, dt.date(2024, 1, 1), dt.date(2024, 2, 29), instance=instance)
    assert result.success
    assert len(instance.get_runs()) == 1
    materialized = instance.get_materialized_partitions(dg.AssetKey("ohlcv"))
    assert len(materialized) == 60
    lake = Lakehouse(data_dir=str(settings.data_dir))
    before = {p.name: pl.read_parquet(p) for p in lake.ohlcv_files()}
    # a later day, fetched as a new run, with the freshness window elapsed
    later = run_data_job(settings.replace(freshness_hours=0), dt.date(2024, 3, 1), instance=instance)
    assert later.success
    for name, old in before.items():
        new = pl.read_parquet(settings.ohlcv_dir / name)
        assert old.join(new, on="timestamp", how="anti").height == 0, name  # nothing lost
        assert new["timestamp"].max() >= old["timestamp"].max()
    checks = {e.check_name: e.passed for e in later.get_asset_check_evaluations()}
    assert checks["ohlcv_schema"] and checks["ohlcv_toxic_free"]


def test_definitions_load_and_every_data_asset_has_checks_and_group():
    defs = build_definitions(Settings())
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name in {"data", "alpha", "maintenance"}, key
        assert node.description, key
    checks = {k.name for k in graph.asset_check_keys if k.asset_key == dg.AssetKey("ohlcv")}
    assert {"ohlcv_schema", "ohlcv_toxic_free", "ohlcv_gaps", "ohlcv_freshness"} <= checks
    for job in ("data_cycle", "gap_repair_job", "data_audit_job"):
        assert defs.resolve_job_def(job) is not None


def test_a_bad_symbol_never_blocks_the_rest(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    good = SyntheticSource(n_symbols=40)
    infos = [i for i in good.list_symbols() if i.genesis_date < dt.date(2023, 1, 1)][:4]
    for info in infos:
        bars = good.fetch_bars(info.exchange, info.symbol, dt.date(2024, 1, 1), dt.date(2024, 2, 29))
        bars.write_parquet(folder / f"{info.key}.parquet")
    (tmp_path / "configs" / "scanners").mkdir(parents=True)
    (tmp_path / "configs" / "scanners" / "default.yaml").write_text(
        "universe: default\nscanners:\n  - name: all\n    top_n: 100\n"
    )
    settings = Settings(
        data_dir=tmp_path / "data", history_start=dt.date(2024, 1, 1), source="files",
        files_dir=folder, config_dir=tmp_path / "configs", freshness_hours=0,
    )
    assert run_data_job(settings, dt.date(2024, 1, 1), dt.date(2024, 1, 31)).success
    broken = infos[0]
    (folder / f"{broken.key}.parquet").write_bytes(b"PAR1 this is not parquet any more")
    result = run_data_job(settings, dt.date(2024, 2, 1), dt.date(2024, 2, 29))
    assert result.success  # the run completes; the checks say what went wrong
    meta = metadata_of(result, "ohlcv")
    assert meta["failed"] == 1 and meta["ingested"] == len(infos) - 1
    assert broken.key in meta["failures"] and f"{broken.key}.parquet" in meta["failures"]
    catalog = Lakehouse(data_dir=str(settings.data_dir)).read_catalog()
    error = catalog["errors"][broken.key]
    assert error["symbol"] == broken.symbol and f"{broken.key}.parquet" in error["reason"]
    for info in infos[1:]:
        assert catalog["symbols"][info.key]["end_date"] >= "2024-02-28"
    assert catalog["symbols"][broken.key]["end_date"] <= "2024-01-31"  # old data kept, not lost
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["ohlcv_freshness"] is False and checks["ohlcv_schema"] is True


def test_feature_store_follows_the_data_cycle_and_reruns_replace_rows(settings):
    from quant_assets.features.store import current_version, read_features

    table = settings.features_dir / "tv_technicals_1d"
    assert run_data_job(settings, dt.date(2024, 1, 1), dt.date(2024, 3, 31)).success
    rows = read_features(table)
    assert rows.height > 0 and rows["date"].max() == dt.date(2024, 3, 31)
    catalog = Lakehouse(data_dir=str(settings.data_dir)).read_catalog()["symbols"]
    assert set(rows["symbol"].unique()) == set(catalog)
    version = current_version(table)
    day = run_data_job(settings, dt.date(2024, 3, 31))
    assert day.success
    assert current_version(table) == version + 1  # one commit per run
    again = read_features(table)
    assert again.height == rows.height  # the day was replaced, not appended
    assert read_features(table, version=version).height == rows.height  # time travel
    checks = {e.check_name: e.passed for e in day.get_asset_check_evaluations()}
    assert checks["features_l2"] is True
