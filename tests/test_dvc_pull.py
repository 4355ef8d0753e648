"""The orchestrated DVC pull: `lakehouse_restore`, the data job's first step, restores the
lakehouse version dvc.lock records before anything reads the lakehouse.

A temporary git repository with the project's DVC files and a local remote records one
lakehouse version (`quant backfill --dvc`, dvc.lock committed). Fresh clones of it then
run the data cycle as a user would: in process through the CLI (with DVC behind a shim
that logs every call), and `make flow-production` in a subprocess. DVC runs from its tool
environment (`make dvc-tool`), never imported.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from helpers import git, new_dvc_project

from quant_assets import cli
from quant_assets.definitions import DATA_JOB, RESTORE_ASSET, build_definitions
from quant_assets.defs.maintenance.restore import lakehouse_restore
from quant_assets.mlops import dvc as dvc_module
from quant_assets.mlops.dvc import pull_plan, read_lock_md5
from quant_resources.schema import date_to_ts
from quant_resources.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.slow

HISTORY = dt.date(2025, 1, 1)
RECORDED = dt.date(2025, 6, 30)  # the last partition of the recorded version
PROJECT_FILES = ("dvc.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore", "Makefile", "pyproject.toml")



def quant(*args: str) -> int:
    return cli.main(list(args))


def env_for(data_dir: Path, home: Path) -> dict[str, str]:
    return {
        "QUANT_DATA_DIR": str(data_dir),
        "QUANT_HISTORY_START": HISTORY.isoformat(),
        "QUANT_SYNTHETIC_SYMBOLS": "40",
        "QUANT_UNIVERSE": "small",
        "QUANT_FRESHNESS_HOURS": "1000000",
        "DAGSTER_HOME": str(home),
    }


@pytest.fixture(scope="module")
def project(dvc, tmp_path_factory):
    """A repository whose dvc.lock (committed) records the lakehouse up to RECORDED, pushed
    to a local remote."""
    root = tmp_path_factory.mktemp("dvc_pull")
    repo, remote = new_dvc_project(root, dvc, PROJECT_FILES)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env_for(repo / "data", root / "dagster_home").items():
            patch.setenv(key, value)
        patch.chdir(repo)
        assert quant("backfill", "--start", HISTORY.isoformat(), "--end", RECORDED.isoformat(), "--dvc") == 0
    git(repo, "add", "dvc.lock")
    git(repo, "commit", "-q", "-m", "lakehouse up to the recorded day")
    return {"repo": repo, "remote": remote, "root": root, "md5": read_lock_md5(repo, "data/lakehouse")}


@pytest.fixture
def dvc_calls(dvc, tmp_path, monkeypatch):
    """DVC behind a shim that logs each call's arguments; returns the calls so far."""
    log = tmp_path / "dvc_calls.log"
    shim = tmp_path / "dvc_shim"
    shim.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{dvc}" "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(dvc_module, "DVC_TOOL", shim)
    return lambda: log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def clone(project, tmp_path, monkeypatch):
    """A fresh clone (no lakehouse, an empty DVC cache), as the working directory."""
    path = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project["repo"]), str(path)], check=True)
    assert (path / "dvc.lock").exists() and not (path / "data").exists()
    for key, value in env_for(path / "data", tmp_path / "dagster_home").items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(path)
    return path


def ohlcv_frames(lakehouse: Path) -> dict[str, pl.DataFrame]:
    return {p.name: pl.read_parquet(p) for p in sorted((lakehouse / "ohlcv").glob("*_1d.parquet"))}


def rows_fetched(out: str) -> int:
    return int(re.search(r"rows fetched (\d+)", out).group(1))


def test_the_restore_step_heads_the_data_job():
    job = build_definitions(Settings()).resolve_job_def(DATA_JOB)
    graph = job.asset_layer.asset_graph
    assert dg.AssetKey(RESTORE_ASSET) in job.asset_layer.executable_asset_keys
    # ohlcv, the first reader and writer of the lakehouse, runs after it (candidates after ohlcv)
    assert dg.AssetKey(RESTORE_ASSET) in graph.get(dg.AssetKey("ohlcv")).parent_keys
    assert dg.AssetKey("ohlcv") in graph.get(dg.AssetKey("candidates")).parent_keys
    assert graph.get(dg.AssetKey(RESTORE_ASSET)).partitions_def is None  # one step per run, whatever the range


def test_a_fresh_clone_restores_the_recorded_version_in_the_data_job_before_ingesting(project, clone, dvc_calls, capsys):
    day = RECORDED + dt.timedelta(days=1)
    assert quant("data", "--date", day.isoformat()) == 0
    out = capsys.readouterr().out
    assert f"lakehouse_restore: restored DVC version {project['md5']}" in out
    assert "the lakehouse is missing" in out
    assert [c for c in dvc_calls() if c.startswith("pull")] == ["pull --force data_cycle"]
    # Every bar up to the recorded day is the recorded version's, bit for bit; the run
    # fetched only the new day, so ohlcv read the restored lakehouse, not an empty one.
    recorded = ohlcv_frames(project["repo"] / "data" / "lakehouse")
    restored = ohlcv_frames(clone / "data" / "lakehouse")
    assert recorded and set(restored) == set(recorded)
    for name, bars in recorded.items():
        assert restored[name].filter(pl.col("timestamp") <= date_to_ts(RECORDED)).equals(bars), name
    assert 0 < rows_fetched(out) <= len(recorded)
    catalog = json.loads((clone / "data" / "lakehouse" / "catalog.json").read_text())
    assert catalog["meta"]["last_partition"] == day.isoformat()

    # The next run finds the lakehouse ahead of the recorded version: no DVC process at all.
    calls = len(dvc_calls())
    assert quant("data", "--date", day.isoformat()) == 0
    assert "restored DVC version" not in capsys.readouterr().out
    assert len(dvc_calls()) == calls


def test_a_lakehouse_behind_the_recorded_version_is_pulled_again(project, clone, dvc_calls, capsys):
    assert quant("pull") == 0  # by hand: the recorded version
    capsys.readouterr()
    catalog_path = clone / "data" / "lakehouse" / "catalog.json"
    catalog = json.loads(catalog_path.read_text())
    older = (RECORDED - dt.timedelta(days=30)).isoformat()
    catalog["meta"]["last_partition"] = older  # as a lakehouse a month behind records itself
    catalog_path.write_text(json.dumps(catalog))
    assert quant("data", "--date", (RECORDED + dt.timedelta(days=1)).isoformat()) == 0
    out = capsys.readouterr().out
    assert f"the lakehouse ends at {older}; the recorded version {project['md5']} reaches {RECORDED}" in out
    assert "pull --force data_cycle" in dvc_calls()


def test_nothing_to_restore_costs_no_dvc_process(project, clone, tmp_path, dvc_calls):
    # QUANT_DATA_DIR outside any DVC project (every other test), or inside the checkout
    # but not its lakehouse.
    elsewhere = pull_plan(tmp_path / "data")
    assert not elsewhere.needed and "no DVC project" in elsewhere.why
    inside = pull_plan(project["repo"] / "other" / "data")
    assert not inside.needed and "is not the `data_cycle` output" in inside.why
    # A DVC project whose dvc.lock records no version.
    bare = tmp_path / "bare"
    for name in PROJECT_FILES:
        (bare / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROJECT_ROOT / name, bare / name)
    unrecorded = pull_plan(bare / "data")
    assert not unrecorded.needed and "records no lakehouse version" in unrecorded.why
    # Files without a catalog naming how far they go: never overwritten by a run's pull.
    stray = clone / "data" / "lakehouse" / "ohlcv" / "SYNX_KEEP_1d.parquet"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"bars of unknown extent")
    unknown = pull_plan(clone / "data")
    assert not unknown.needed and "quant pull --force" in unknown.why
    # The lakehouse the version was recorded from: current. Through the asset itself too.
    current = pull_plan(project["repo"] / "data")
    assert not current.needed and current.md5 == project["md5"] and "is not behind" in current.why
    settings = Settings(data_dir=project["repo"] / "data", history_start=HISTORY)
    result = dg.materialize([lakehouse_restore], resources={"settings": settings}, instance=dg.DagsterInstance.ephemeral())
    (event,) = result.get_asset_materialization_events()
    materialization = event.step_materialization_data.materialization
    assert materialization.metadata["restored"].value is False
    assert materialization.tags["dagster/data_version"] == project["md5"]
    assert dvc_calls() == []


def test_without_dvc_the_restore_fails_the_run_before_anything_reads_the_lakehouse(clone, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dvc_module, "DVC_TOOL", tmp_path / "no-dvc-here")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # and none on PATH
    day = RECORDED + dt.timedelta(days=1)
    assert quant("data", "--date", day.isoformat()) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step lakehouse_restore" in err[0] and "make dvc-tool" in err[0], err
    assert not (clone / "data" / "lakehouse").exists()  # ohlcv never ran
    assert not (clone / "data" / "export" / day.isoformat()).exists()  # nor candidates


def test_make_flow_production_in_a_fresh_clone_pulls_through_dagster(project, tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project["repo"]), str(clone)], check=True)
    # The clone shares this checkout's environment (and DVC tool) instead of installing its
    # own: `-o` keeps make from re-running pip for the clone's newer pyproject.toml.
    (clone / ".venv").symlink_to(PROJECT_ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUANT_", "MAKE", "DAGSTER_HOME"))}
    env.update(env_for(clone / "data", tmp_path / "dagster_home"))
    del env["QUANT_DATA_DIR"]  # the checkout's own data/, as a user runs it
    day = RECORDED + dt.timedelta(days=3)
    result = subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed", "flow-production", f"DATE={day}"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    out = result.stdout
    assert "quant pull" not in out and "dvc pull:" not in out  # the Makefile no longer pulls
    assert "lakehouse restore: run" in out
    assert f"lakehouse_restore: restored DVC version {project['md5']}" in out
    # Restored before the plan: the catch-up starts the day after the recorded version.
    next_day, day_before = RECORDED + dt.timedelta(days=1), day - dt.timedelta(days=1)
    assert f"catching up {next_day}..{day_before} as one run" in out
    assert f"alpha cycle {day}" in out and "winners (" in out
    catalog = json.loads((clone / "data" / "lakehouse" / "catalog.json").read_text())
    assert catalog["meta"]["last_partition"] == day.isoformat()
