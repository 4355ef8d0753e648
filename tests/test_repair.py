"""Gap repair that can heal, through the definitions and through `quant repair`.

The synthetic market's late bars (a bulk fetch misses them, a targeted fetch has them)
make gaps that the repair heals; its seeded gaps are real halts and stay open. The CLI
test uses a folder of vendor exports whose missing bars the vendor delivers later.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from helpers import metadata_of
from mlflow import MlflowClient

from quant_assets.alpha.audit import read_audit
from quant_assets.definitions import AUDIT_JOB, DATA_JOB, REPAIR_JOB, build_definitions
from quant_assets.mlops.tracking import run_audit_dir
from quant_resources.lakehouse import Lakehouse
from quant_resources.schema import ts_to_date
from quant_resources.settings import Settings
from quant_resources.sources.synthetic import SyntheticSource

START, END = dt.date(2024, 3, 1), dt.date(2024, 6, 30)
# The outside world, as a run configures it: a market of 100 symbols (the default universe
# takes 83, one with a seeded halt in the window) whose history download misses some bars.
SOURCE = {"n_symbols": 100, "seed": 7, "late_bars_seed": 4}
RUN_CONFIG = {"resources": {"source": {"config": SOURCE}}}
QUANT = str(Path(sys.executable).parent / "quant")


def rows_by_file(settings: Settings) -> dict[str, set[int]]:
    return {
        p.name: set(pl.read_parquet(p, columns=["timestamp"])["timestamp"].to_list())
        for p in sorted(settings.ohlcv_dir.glob("*.parquet"))
    }


def gaps_by_symbol(catalog: dict) -> dict[str, set[tuple[str, str]]]:
    return {k: {(g["start"], g["end"]) for g in e.get("gaps", [])} for k, e in catalog["symbols"].items() if e.get("gaps")}


def mlflow_run(settings: Settings, dagster_run_id: str):
    client = MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name("quant-lakehouse")
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.dagster_run_id = '{dagster_run_id}'")
    return client, run


@pytest.fixture(scope="module")
def repaired(tmp_path_factory):
    """A backfill that misses the late bars, then the repair job: the state before and after."""
    root = tmp_path_factory.mktemp("repair")
    settings = Settings(data_dir=root / "data", history_start=START, freshness_hours=1e6)
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    backfill = defs.resolve_job_def(DATA_JOB).execute_in_process(
        instance=instance,
        run_config=RUN_CONFIG,
        tags={"dagster/asset_partition_range_start": START.isoformat(), "dagster/asset_partition_range_end": END.isoformat()},
        raise_on_error=False,
    )
    assert backfill.success
    lake = Lakehouse(data_dir=str(settings.data_dir))
    before = {"catalog": lake.read_catalog(), "rows": rows_by_file(settings)}
    repair = defs.resolve_job_def(REPAIR_JOB).execute_in_process(instance=instance, run_config=RUN_CONFIG, raise_on_error=False)
    assert repair.success, [e.message for e in repair.all_events if e.is_failure]
    after = {"catalog": lake.read_catalog(), "rows": rows_by_file(settings)}
    return settings, instance, repair, before, after


def expected_gaps(catalog: dict) -> tuple[dict, dict]:
    """(late, halts): the gaps the catalog should hold after the backfill, by symbol, from the
    source's own account of its late bars and seeded gaps inside each file's span."""
    source = SyntheticSource(**SOURCE)
    late, halts = {}, {}
    for key, entry in catalog["symbols"].items():
        first, last = dt.date.fromisoformat(entry["start_date"]), dt.date.fromisoformat(entry["end_date"])
        inside = (first + dt.timedelta(days=1), last - dt.timedelta(days=1))
        runs = {(a.isoformat(), b.isoformat()) for a, b in source.late_bars(entry["exchange"], entry["symbol"], *inside)}
        seeded = source.seeded_defects(entry["exchange"], entry["symbol"], *inside)["gap"]
        if runs:
            late[key] = runs
        if seeded:
            halts[key] = {(a.isoformat(), b.isoformat()) for a, b in seeded}
    return late, halts


def test_the_backfill_records_late_bars_and_halts_as_gaps(repaired):
    _, _, _, before, _ = repaired
    late, halts = expected_gaps(before["catalog"])
    assert sum(map(len, late.values())) >= 3 and halts  # the scenario holds both kinds
    recorded = gaps_by_symbol(before["catalog"])
    for key in late.keys() | halts.keys():
        assert recorded[key] == late.get(key, set()) | halts.get(key, set()), key


def test_healed_gaps_leave_the_catalog_and_halts_stay_with_a_reason(repaired):
    _, _, repair, before, after = repaired
    late, halts = expected_gaps(before["catalog"])
    assert gaps_by_symbol(after["catalog"]) == halts
    for key, spans in halts.items():
        reasons = after["catalog"]["symbols"][key]["gap_annotations"]
        assert {tuple(span.split("..")) for span in reasons} == spans
        assert all("source has no bars" in reason for reason in reasons.values())
    meta = metadata_of(repair, "gap_repair")
    assert meta["gaps_healed"] == sum(map(len, late.values()))
    assert meta["gaps_still_open"] == sum(map(len, halts.values()))
    assert meta["failed"] == 0
    for key in late:  # a healed symbol's score reflects its now complete file
        assert after["catalog"]["symbols"][key]["data_quality_score"] >= before["catalog"]["symbols"][key]["data_quality_score"]


def test_the_repair_loses_no_row_and_lands_the_late_bars_as_the_source_has_them(repaired):
    settings, _, _, before, after = repaired
    late, _ = expected_gaps(before["catalog"])
    assert before["rows"].keys() == after["rows"].keys()
    source = SyntheticSource(**SOURCE)
    for name, stamps in before["rows"].items():
        assert stamps <= after["rows"][name], name
        key = name.removesuffix("_1d.parquet")
        added = {ts_to_date(t) for t in after["rows"][name] - stamps}
        if key not in late:
            assert not added, name
            continue
        exchange, symbol = key.split("_", 1)
        delivered = pl.concat(  # a targeted fetch of each healed gap, as the repair made it
            [source.fetch_bars(exchange, symbol, dt.date.fromisoformat(a), dt.date.fromisoformat(b)) for a, b in late[key]]
        )
        assert added == {ts_to_date(t) for t in delivered["timestamp"]}, name
        file = pl.read_parquet(settings.ohlcv_dir / name)
        landed = file.filter(pl.col("timestamp").is_in(delivered["timestamp"].to_list()))
        assert landed.sort("timestamp").equals(delivered.sort("timestamp")), name
        assert after["catalog"]["symbols"][key]["rows"] == len(after["rows"][name])


def test_the_repair_run_is_tracked_and_audited(repaired):
    settings, _, repair, _, after = repaired
    client, run = mlflow_run(settings, repair.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["cycle"] == "repair" and run.data.tags["dagster_job"] == REPAIR_JOB
    meta = metadata_of(repair, "gap_repair")
    assert run.data.metrics["gap_repair/gaps_healed"] == meta["gaps_healed"]
    assert run.data.metrics["gap_repair/gaps_still_open"] == meta["gaps_still_open"]
    assert "audit.jsonl" in {a.path for a in client.list_artifacts(run.info.run_id)}
    (line,) = read_audit(run_audit_dir(settings.data_dir, repair.run_id))
    assert line["stage"] == "gap_repair" and line["status"] == "success"
    assert line["gaps_healed"] == meta["gaps_healed"]
    assert "- {" in line["details"]["still_open"]  # the open gaps, each named


def test_the_audit_run_is_tracked_and_audited_after_the_repair(repaired):
    settings, instance, _, _, _ = repaired
    audit = build_definitions(settings).resolve_job_def(AUDIT_JOB).execute_in_process(instance=instance, raise_on_error=False)
    assert audit.success
    _, run = mlflow_run(settings, audit.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["cycle"] == "audit"
    assert run.data.metrics["contract/lakehouse_clean/passed"] == 1.0  # healed files audit clean
    assert run.data.metrics["data_audit/catalog_mismatches"] == 0.0
    lines = read_audit(run_audit_dir(settings.data_dir, audit.run_id))
    assert [(x["stage"], x.get("contract")) for x in lines] == [("data_audit", None), ("contract", "lakehouse_clean")]


def test_data_runs_write_their_audit_jsonl_outside_the_lakehouse(repaired):
    """One line per asset and per check of the backfill, where DVC does not look."""
    settings, instance, _, _, _ = repaired
    (backfill,) = instance.get_runs(filters=dg.RunsFilter(job_name=DATA_JOB))
    folder = run_audit_dir(settings.data_dir, backfill.run_id)
    assert not folder.is_relative_to(settings.lakehouse_dir)
    lines = read_audit(folder)
    stages = [(x["stage"], x.get("contract")) for x in lines]
    assert {("candidates", None), ("ohlcv", None), ("tv_technicals_1d", None)} <= set(stages)
    assert {c for s, c in stages if s == "contract"} == {
        "ohlcv_schema", "ohlcv_toxic_free", "ohlcv_gaps", "ohlcv_freshness", "ohlcv_skipped_files", "features_l2",
    }
    gaps = next(x for x in lines if x.get("contract") == "ohlcv_gaps")
    assert gaps["passed"] is False and gaps["gaps"] > 0 and "E059" in gaps["details"]["gap_list"]
    assert all(x["run_id"] == backfill.run_id and x["partition"] == f"{START}..{END}" for x in lines)


def test_late_bars_are_off_by_default_and_arrive_on_a_targeted_fetch():
    plain, late = SyntheticSource(n_symbols=100), SyntheticSource(**SOURCE)
    assert not plain.late_bars("SYNEQ", "E010")
    (first, last), *_ = late.late_bars("SYNEQ", "E010", START, END)
    bulk = late.fetch_bars("SYNEQ", "E010", START, END)
    assert plain.fetch_bars("SYNEQ", "E010", START, END).filter(
        ~pl.col("timestamp").is_in(bulk["timestamp"].to_list())
    ).equals(plain.fetch_bars("SYNEQ", "E010", first, last))  # exactly the run is missing
    targeted = late.fetch_bars("SYNEQ", "E010", first, last)
    assert targeted.height >= 6 and targeted.equals(plain.fetch_bars("SYNEQ", "E010", first, last))
    assert SyntheticSource(**SOURCE).fetch_bars("SYNEQ", "E010", START, END).equals(bulk)  # deterministic


def test_maintenance_assets_hang_off_ohlcv_in_the_lineage_and_run_unpartitioned():
    defs = build_definitions(Settings())
    graph = defs.resolve_asset_graph()
    for name in ("gap_repair", "data_audit"):
        node = graph.get(dg.AssetKey(name))
        assert node.parent_keys == {dg.AssetKey("ohlcv")}, name
        assert node.partitions_def is None, name
    for job in (REPAIR_JOB, AUDIT_JOB):
        assert defs.resolve_job_def(job).partitions_def is None, job


# -- `quant repair`, end to end ------------------------------------------------------------
def vendor_csv(path: Path, days: list[dt.date], price: float) -> None:
    closes = [price * (1.0 + 0.002 * i) for i in range(len(days))]
    pl.DataFrame(
        {
            "Date": [d.isoformat() for d in days],
            "Open": closes,
            "High": [c * 1.01 for c in closes],
            "Low": [c * 0.99 for c in closes],
            "Close": closes,
            "Adj Close": closes,
            "Volume": [1e6] * len(days),
        }
    ).write_csv(path)


def quant(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("QUANT_", "DAGSTER_HOME"))}
    return subprocess.run([QUANT, *args], cwd=cwd, env={**full, **env}, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_quant_repair_heals_what_the_vendor_delivered_later_and_keeps_the_rest_open(tmp_path):
    exports = tmp_path / "exports"
    exports.mkdir()
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(182)]  # to 2024-06-30
    late = [d for d in days if dt.date(2024, 3, 1) <= d <= dt.date(2024, 3, 10)]
    halt = [d for d in days if dt.date(2024, 4, 1) <= d <= dt.date(2024, 4, 8)]
    vendor_csv(exports / "VNDX_AAAUSDT.csv", [d for d in days if d not in late], 100.0)
    vendor_csv(exports / "VNDX_BBBUSDT.csv", [d for d in days if d not in halt], 50.0)
    env = {"QUANT_SOURCE": "files", "QUANT_FILES_DIR": str(exports), "QUANT_HISTORY_START": "2024-01-01", "QUANT_UNIVERSE": "small"}
    backfill = quant(["backfill", "--start", "2024-01-01", "--end", "2024-06-30"], tmp_path, env)
    assert backfill.returncode == 0, backfill.stdout[-2000:] + backfill.stderr[-3000:]
    settings = Settings(data_dir=tmp_path / "data")
    catalog = json.loads(settings.catalog_path.read_text())
    assert gaps_by_symbol(catalog) == {
        "VNDX_AAAUSDT": {("2024-03-01", "2024-03-10")},
        "VNDX_BBBUSDT": {("2024-04-01", "2024-04-08")},
    }
    rows_before = rows_by_file(settings)
    vendor_csv(exports / "VNDX_AAAUSDT.csv", days, 100.0)  # the vendor corrects its export
    repair = quant(["repair"], tmp_path, env)
    assert repair.returncode == 0, repair.stdout[-2000:] + repair.stderr[-3000:]
    assert "gaps_healed=1" in repair.stdout and "gaps_still_open=1" in repair.stdout
    catalog = json.loads(settings.catalog_path.read_text())
    assert gaps_by_symbol(catalog) == {"VNDX_BBBUSDT": {("2024-04-01", "2024-04-08")}}
    (reason,) = catalog["symbols"]["VNDX_BBBUSDT"]["gap_annotations"].values()
    assert "source has no bars" in reason
    rows_after = rows_by_file(settings)
    assert rows_after["VNDX_BBBUSDT_1d.parquet"] == rows_before["VNDX_BBBUSDT_1d.parquet"]
    aaa_before, aaa_after = rows_before["VNDX_AAAUSDT_1d.parquet"], rows_after["VNDX_AAAUSDT_1d.parquet"]
    assert aaa_before < aaa_after and {ts_to_date(t) for t in aaa_after - aaa_before} == set(late)
    assert catalog["symbols"]["VNDX_AAAUSDT"]["rows"] == len(days)
