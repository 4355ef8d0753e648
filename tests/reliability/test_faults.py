"""Faults: a killed backfill, a truncated file, a read-only folder, a re-executed run,
concurrent readers and writers. Nothing is lost or half-written; re-running is safe."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from quant_assets.alpha.snapshot import SnapshotPlan, read_snapshot_files
from quant_assets.data.ingest import ingest
from quant_assets.data.maintenance import audit_lakehouse, repair_gaps
from quant_resources.lakehouse import Lakehouse, LakehouseError
from quant_resources.settings import Settings
from quant_resources.sources.synthetic import SyntheticSource

QUANT = str(Path(sys.executable).parent / "quant")


def small_lakehouse(data_dir: Path, n: int = 12, start=dt.date(2024, 1, 1), end=dt.date(2024, 3, 31)):
    settings = Settings(data_dir=data_dir, history_start=start, synthetic_symbols=40)
    source = SyntheticSource(n_symbols=40)
    infos = [i for i in source.list_symbols() if i.genesis_date < start][:n]
    lake = Lakehouse(data_dir=str(data_dir))
    report = ingest(infos, start, end, source=source, lakehouse=lake, settings=settings)
    assert report.failures == []
    return settings, source, lake, infos


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_backfill_then_rerun(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANT_")}
    env.update({"QUANT_HISTORY_START": "2024-01-01", "QUANT_UNIVERSE": "all", "QUANT_SYNTHETIC_SYMBOLS": "400"})
    env.pop("DAGSTER_HOME", None)
    args = [QUANT, "backfill", "--start", "2024-01-01", "--end", "2024-12-31"]
    ohlcv = tmp_path / "data" / "lakehouse" / "ohlcv"
    process = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (ohlcv.exists() and any(ohlcv.glob("*_1d.parquet"))):
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # mid-ingestion: some files written, most not
    process.wait()
    written = list(ohlcv.glob("*_1d.parquet"))
    assert 0 < len(written) < 400
    for path in written:  # no torn or partial file
        pl.read_parquet(path)
    rerun = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    audit = subprocess.run([QUANT, "audit"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert audit.returncode == 0
    assert "catalog_mismatches=0" in audit.stdout and "missing_files=0" in audit.stdout and "quarantined=0" in audit.stdout
    catalog = json.loads((tmp_path / "data" / "lakehouse" / "catalog.json").read_text())
    files = {p.name for p in ohlcv.glob("*_1d.parquet")}
    assert {Path(e["file"]).name for e in catalog["symbols"].values()} == files
    for entry in catalog["symbols"].values():
        assert pl.read_parquet(tmp_path / "data" / "lakehouse" / entry["file"]).height == entry["rows"]
    assert not list(ohlcv.glob(".*tmp-*"))  # the killed writer's temp files were cleaned up


def test_truncated_file_is_quarantined_by_the_audit_and_refetched_by_repair(tmp_path):
    settings, source, lake, infos = small_lakehouse(tmp_path / "data")
    victim = lake.ohlcv_path(infos[0].exchange, infos[0].symbol)
    good = pl.read_parquet(victim)
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # a torn write from outside our code path
    audit = audit_lakehouse(lakehouse=lake, settings=settings)
    assert [q["symbol"] for q in audit.quarantined] == [infos[0].key]
    moved = Path(audit.quarantined[0]["moved_to"])
    assert moved.exists() and moved.read_bytes() == data[: len(data) // 2]  # kept, never deleted
    assert not victim.exists()
    repair = repair_gaps(source=source, lakehouse=lake, settings=settings)
    assert infos[0].key in repair.refetched_files
    assert pl.read_parquet(victim).equals(good)
    assert audit_lakehouse(lakehouse=lake, settings=settings).clean


def _make_read_only(folders: list[Path]) -> list[Path]:
    """Read-only folders. Root ignores permission bits, so as root use the immutable flag."""
    if os.geteuid() != 0:
        for folder in folders:
            folder.chmod(0o555)
        return folders
    done = []
    for folder in folders:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            _make_writable(done)
            pytest.skip("cannot make a folder read-only here (root without chattr +i support)")
        done.append(folder)
    return done


def _make_writable(folders: list[Path]) -> None:
    for folder in folders:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        else:
            folder.chmod(0o755)


def test_read_only_data_folder_gives_a_clear_error_and_keeps_the_data(tmp_path):
    settings, source, lake, infos = small_lakehouse(tmp_path / "data", n=3, end=dt.date(2024, 1, 31))
    before = {p.name: p.read_bytes() for p in lake.ohlcv_files()}
    catalog = lake.catalog_path.read_bytes()
    locked = _make_read_only([lake.root, lake.ohlcv_dir])
    try:
        with pytest.raises(LakehouseError, match="is not writable .*Nothing was changed"):
            ingest(infos, dt.date(2024, 2, 1), dt.date(2024, 2, 29), source=source, lakehouse=lake, settings=settings.replace(freshness_hours=0))
    finally:
        _make_writable(locked)
    assert {p.name: p.read_bytes() for p in lake.ohlcv_files()} == before
    assert lake.catalog_path.read_bytes() == catalog


def test_a_failed_run_reexecuted_from_failure_runs_only_what_failed(tmp_path, monkeypatch):
    from reexec_job import data_job

    monkeypatch.setenv("QUANT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("QUANT_HISTORY_START", "2024-01-01")
    monkeypatch.setenv("QUANT_SYNTHETIC_SYMBOLS", "30")
    monkeypatch.setenv("QUANT_UNIVERSE", "small")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    table = tmp_path / "data" / "lakehouse" / "features" / "tv_technicals_1d"
    table.parent.mkdir(parents=True)
    table.write_text("not a Delta table")  # the feature step cannot write here
    with dg.instance_for_test() as instance:
        job = dg.reconstructable(data_job)
        first = dg.execute_job(job, instance, tags={"dagster/partition": "2024-01-10"}, raise_on_error=False)
        assert not first.success
        failed = {e.step_key for e in first.all_events if e.is_step_failure}
        assert failed == {"tv_technicals_1d"}
        files = {p.name: p.read_bytes() for p in (tmp_path / "data" / "lakehouse" / "ohlcv").glob("*.parquet")}
        table.unlink()  # the operator fixes the cause
        options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
        # The UI copies the parent run's tags (its partition) into a re-execution; the API needs them passed.
        second = dg.execute_job(job, instance, reexecution_options=options, tags=first.dagster_run.tags, raise_on_error=False)
        assert second.success
        ran = {e.step_key for e in second.all_events if e.is_step_success}
        assert "tv_technicals_1d" in ran and "ohlcv" not in ran and "candidates" not in ran
        assert (table / "_delta_log").exists()
        assert {p.name: p.read_bytes() for p in (tmp_path / "data" / "lakehouse" / "ohlcv").glob("*.parquet")} == files


def test_a_reader_sees_each_file_whole_while_the_data_cycle_rewrites_it(tmp_path):
    settings, source, lake, infos = small_lakehouse(tmp_path / "data", n=1, end=dt.date(2024, 1, 31))
    info = infos[0]
    path = lake.ohlcv_path(info.exchange, info.symbol)
    versions = {hashlib.sha256(path.read_bytes()).hexdigest()}
    stop = threading.Event()
    errors: list[str] = []

    def writer():
        day = dt.date(2024, 2, 1)
        while not stop.is_set():
            bars = source.fetch_bars(info.exchange, info.symbol, day, day)
            lake.merge_bars(info.exchange, info.symbol, bars)
            versions.add(hashlib.sha256(path.read_bytes()).hexdigest())
            day += dt.timedelta(days=1)

    thread = threading.Thread(target=writer)
    thread.start()
    plan = SnapshotPlan(dt.date(2024, 1, 31), files={info.key: path}, entries={info.key: {"data_quality_score": 1.0, "asset_class": info.asset_class}})
    seen = []
    deadline = time.time() + 60
    try:
        while time.time() < deadline and (len(seen) < 150 or len(versions) < 4):
            try:
                contents, described, originals = read_snapshot_files(plan)
            except Exception as exc:  # a torn read would land here
                errors.append(repr(exc))
                continue
            name = path.name
            assert hashlib.sha256(contents[name]).hexdigest() == described[name]["sha256"]
            seen.append(hashlib.sha256(originals[name]).hexdigest())
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert set(seen) <= versions and len(versions) > 2  # every read was a whole published version
