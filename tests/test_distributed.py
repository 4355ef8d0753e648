"""Ingestion sharded over a real Dask cluster on loopback (a `dask scheduler` and two
`dask worker` processes, tests/dask_cluster.py): a backfill through it writes the same
lakehouse as the in-process one, and a worker killed in the middle of a shard leaves
only whole files, the cluster finishes the shard elsewhere and a re-run changes nothing.

Compared byte for byte: every OHLCV file, symbols.parquet, every day's candidates.json
and the feature table's data files. Not compared: in the catalog, each entry's
`last_fetch` (the run's start) and `file_mtime_ns` (when the file was written) and the
catalog's `updated_at`: wall-clock times by contract; in the feature table, its Delta
log (commit timestamps and ids) and the data files' names (a uuid per commit).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from dask_cluster import LocalDaskCluster
from deltalake import DeltaTable
from helpers import metadata_of, run_data_job

from quant_resources.atomic import TMP_MARKER
from quant_resources.compute import ComputeError, DaskCompute
from quant_resources.errors import ConfigError
from quant_resources.lakehouse import Lakehouse
from quant_resources.settings import Settings

pytestmark = pytest.mark.timeout(600)

START, END = dt.date(2024, 11, 1), dt.date(2024, 11, 30)  # a 30-day backfill, one run
SHARD = 4  # symbols per shard: 40 synthetic symbols make several shards for two workers
WALL_CLOCK = {"last_fetch", "file_mtime_ns"}


def settings_for(data_dir: Path, cluster: LocalDaskCluster | None = None) -> Settings:
    base = Settings(data_dir=data_dir, history_start=dt.date(2024, 1, 1), synthetic_symbols=40)
    if cluster is None:
        return base
    return base.replace(compute="dask", dask_scheduler=cluster.address, shard_symbols=SHARD)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lakehouse_state(data_dir: Path) -> dict:
    """Everything a backfill leaves, minus wall-clock times (see the module docstring)."""
    lakehouse = data_dir / "lakehouse"
    catalog = json.loads((lakehouse / "catalog.json").read_text())
    catalog.pop("updated_at")
    for entry in catalog["symbols"].values():
        for field in WALL_CLOCK:
            entry.pop(field)
    features = lakehouse / "features" / "tv_technicals_1d"
    return {
        "ohlcv": {p.name: sha(p) for p in sorted((lakehouse / "ohlcv").iterdir())},
        "symbols": sha(lakehouse / "symbols.parquet"),
        "candidates": {
            str(p.relative_to(data_dir)): sha(p)
            for p in sorted(data_dir.glob("export/*/candidates.json"))
        },
        # The table's current files (a re-run's commit replaces a month's file by an equal one).
        "features": sorted(
            (Path(u).parent.name, sha(Path(u.removeprefix("file://"))))
            for u in DeltaTable(str(features)).file_uris()
        ),
        "catalog": catalog,
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The in-process backfill's lakehouse, the one every cluster run must reproduce."""
    data_dir = tmp_path_factory.mktemp("in_process") / "data"
    assert run_data_job(settings_for(data_dir), START, END).success
    state = lakehouse_state(data_dir)
    assert len(state["ohlcv"]) >= 20 and len(state["features"]) > 0
    return state


@pytest.fixture
def cluster(tmp_path):
    with LocalDaskCluster(tmp_path / "cluster", workers=2) as started:
        yield started


def test_a_backfill_through_the_cluster_writes_the_same_lakehouse_as_in_process(
    reference, cluster, tmp_path
):
    data_dir = tmp_path / "data"
    result = run_data_job(settings_for(data_dir, cluster), START, END)

    assert result.success
    shards = metadata_of(result, "ohlcv")["shards"]
    assert shards["count"] == math.ceil(len(reference["ohlcv"]) / SHARD)
    # Both worker processes ran shards, and neither is this process.
    pids = set(cluster.worker_pids().values())
    assert {int(w.rsplit(":", 1)[1]) for w in shards["workers"]} == pids
    assert lakehouse_state(data_dir) == reference


def test_a_worker_killed_mid_shard_leaves_whole_files_and_the_cluster_finishes(
    reference, cluster, tmp_path
):
    data_dir = tmp_path / "data"
    names = sorted(reference["ohlcv"])
    blocked = names[len(names) // 2].removesuffix("_1d.parquet")  # a symbol in a middle shard
    lakehouse = Lakehouse(data_dir=str(data_dir))
    ohlcv_dir = data_dir / "lakehouse" / "ohlcv"
    seen: dict = {}

    held = threading.Event()

    def kill_the_worker_stuck_on_the_blocked_symbol() -> None:
        # Its shard waits on the symbol's lock (held here) after publishing the files it
        # could; every other shard finishes on the other worker. Then the stuck worker
        # dies, and the lock is released for the shard's second run.
        with lakehouse.lock(blocked):
            held.set()
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                files = list(ohlcv_dir.glob("*_1d.parquet")) if ohlcv_dir.exists() else []
                busy = {w: keys for w, keys in cluster.processing().items() if keys}
                if len(files) == len(names) - 1 and len(busy) == 1:
                    (address,) = busy
                    seen["files"] = {p.name: pl.read_parquet(p).height for p in files}  # each whole
                    seen["temp_files"] = list(ohlcv_dir.glob(f".*{TMP_MARKER}*"))
                    seen["catalogued"] = set(lakehouse.read_catalog()["symbols"])
                    seen["killed"] = cluster.worker_pids()[address]
                    cluster.kill(seen["killed"])
                    return
                time.sleep(0.2)

    killer = threading.Thread(target=kill_the_worker_stuck_on_the_blocked_symbol)
    killer.start()
    held.wait(timeout=30)
    result = run_data_job(settings_for(data_dir, cluster), START, END)
    killer.join(timeout=30)

    assert "killed" in seen, "the run never reached the blocked symbol with one shard left"
    # Mid-shard: its other symbols were published, their catalog entries not yet merged.
    assert f"{blocked}_1d.parquet" not in seen["files"]
    assert len(seen["catalogued"]) < len(seen["files"])
    assert seen["temp_files"] == []
    # The scheduler ran the dead worker's shard again on the survivor; the run succeeded.
    assert result.success
    assert seen["killed"] not in cluster.worker_pids().values()
    assert lakehouse_state(data_dir) == reference
    assert list(ohlcv_dir.glob(f".*{TMP_MARKER}*")) == []

    # A re-run through the one surviving worker completes and changes nothing.
    rerun = run_data_job(settings_for(data_dir, cluster), START, END)
    assert rerun.success
    assert metadata_of(rerun, "ohlcv")["skipped"] == len(names)
    assert lakehouse_state(data_dir) == reference


def test_the_cluster_is_chosen_by_configuration_and_a_missing_one_is_named(tmp_path):
    env = {"QUANT_DATA_DIR": str(tmp_path), "QUANT_COMPUTE": "dask"}
    with pytest.raises(ConfigError, match="QUANT_DASK_SCHEDULER"):
        Settings.from_env(env)
    chosen = Settings.from_env(
        {**env, "QUANT_DASK_SCHEDULER": "tcp://127.0.0.1:8786", "QUANT_SHARD_SYMBOLS": "25"}
    )
    assert (chosen.compute, chosen.dask_scheduler, chosen.shard_symbols) == (
        "dask",
        "tcp://127.0.0.1:8786",
        25,
    )
    assert Settings.from_env({"QUANT_DATA_DIR": str(tmp_path)}).compute == "inprocess"

    nobody = DaskCompute(scheduler="tcp://127.0.0.1:9", connect_timeout_s=2)  # the discard port
    with pytest.raises(ComputeError, match="tcp://127.0.0.1:9"):
        list(nobody.map_unordered(abs, [1]))
