"""Runs in parallel: `quant alpha --start --end --jobs N` runs several days at once and
gives what one day after another gives; the instance's run queue limits what the UI, the
schedules and backfills launch (one lakehouse writer at a time, a few alpha days)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from quant_resources.instance import ALPHA_RUNS_AT_ONCE, LANE_TAG, EmbeddedPostgres, ensure_instance

pytestmark = pytest.mark.slow

QUANT = str(Path(sys.executable).parent / "quant")
START = dt.date(2024, 6, 1)  # a year: the selection asks for 200 sessions of history
END = dt.date(2025, 5, 31)
DAYS = [dt.date(2025, 5, 29), dt.date(2025, 5, 30), dt.date(2025, 5, 31)]


def quant(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUANT_", "DAGSTER_HOME"))}
    env.update(QUANT_HISTORY_START=START.isoformat(), QUANT_UNIVERSE="small", QUANT_SYNTHETIC_SYMBOLS="40")
    return subprocess.run([QUANT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def lakehouses(tmp_path_factory):
    """The same lakehouse twice, each with an instance of its own."""
    root = tmp_path_factory.mktemp("alpha_range")
    first = root / "parallel"
    first.mkdir()
    backfill = quant(["backfill", "--start", START.isoformat(), "--end", END.isoformat()], first)
    assert backfill.returncode == 0, backfill.stderr[-3000:]
    second = root / "sequential"
    shutil.copytree(first / "data", second / "data")
    return first, second


def selections(folder: Path) -> dict[str, str]:
    found = {}
    for path in (folder / "data" / "runs").glob("*/selection.json"):
        document = json.loads(path.read_text())
        found[document["as_of"]] = document["hash"]
    return found


def test_a_range_runs_days_at_once_and_gives_what_one_after_another_gives(lakehouses):
    parallel, sequential = lakehouses
    args = ["alpha", "--start", DAYS[0].isoformat(), "--end", DAYS[-1].isoformat()]
    at_once = quant([*args, "--jobs", "2"], parallel)
    assert at_once.returncode == 0, at_once.stderr[-3000:]
    assert "3 day(s), 2 at a time" in at_once.stdout and "3 succeeded, 0 failed" in at_once.stdout
    one_by_one = quant([*args, "--jobs", "1"], sequential)
    assert one_by_one.returncode == 0, one_by_one.stderr[-3000:]
    assert selections(parallel) == selections(sequential)
    assert sorted(selections(parallel)) == [d.isoformat() for d in DAYS]
    home = parallel / ".dagster"
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        ensure_instance(home)
        with dg.DagsterInstance.get() as instance:
            runs = instance.get_runs(filters=dg.RunsFilter(job_name="alpha_cycle"))
            assert sorted(r.tags["dagster/partition"] for r in runs) == [d.isoformat() for d in DAYS]
            assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
            assert {r.tags[LANE_TAG] for r in runs} == {"alpha"}  # the job's tag, for the queue
    finally:
        EmbeddedPostgres(home).release()


def test_a_bad_range_is_one_line(lakehouses):
    parallel, _ = lakehouses
    result = quant(["alpha", "--start", "2025-05-31", "--end", "2025-05-01"], parallel)
    assert result.returncode == 2 and "ends (2025-05-01) before it starts" in result.stderr
    result = quant(["alpha", "--start", "2025-05-31"], parallel)
    assert result.returncode == 2 and "--start and --end together" in result.stderr


def test_the_run_queue_limits_lakehouse_writers_to_one_and_alpha_days_to_a_few(tmp_path, monkeypatch):
    home = tmp_path / ".dagster"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ensure_instance(home)
    try:
        with dg.DagsterInstance.get() as instance:
            config = instance.run_coordinator.get_run_queue_config()
            limits = {(limit["key"], limit.get("value")): limit["limit"] for limit in config.tag_concurrency_limits}
            assert limits == {(LANE_TAG, "lakehouse"): 1, (LANE_TAG, "alpha"): ALPHA_RUNS_AT_ONCE}
            assert config.max_concurrent_runs >= ALPHA_RUNS_AT_ONCE + 1
    finally:
        EmbeddedPostgres(home).release()


def test_every_job_that_writes_the_lakehouse_queues_in_its_lane(settings):
    from quant_assets.definitions import build_definitions

    defs = build_definitions(settings)
    lanes = {name: defs.resolve_job_def(name).tags.get(LANE_TAG) for name in
             ("data_cycle", "gap_repair_job", "data_audit_job", "alpha_cycle")}
    assert lanes == {"data_cycle": "lakehouse", "gap_repair_job": "lakehouse", "data_audit_job": "lakehouse", "alpha_cycle": "alpha"}
