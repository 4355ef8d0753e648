"""Finished alpha run folders are immutable: read-only on disk, and refused in code.

Tests run as root, whom mode bits do not stop, so the refusals asserted here are our
code's (the run folder's writers check the `.finished` marker), and the mode bits are
asserted separately, as what a non-root process meets.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import stat
import uuid
from pathlib import Path

import dagster as dg
import pytest
from helpers import run_data_job

from quant_assets.definitions import ALPHA_JOB, build_definitions
from quant_assets.mlops.registry import policy_report
from quant_assets.mlops.reproduce import reproduce
from quant_resources.io_managers import SEAL_FILE
from quant_resources.settings import Settings

AS_OF = dt.date(2025, 6, 30)


def run_alpha(settings: Settings, run_id: str | None = None, instance=None):
    job = build_definitions(settings).resolve_job_def(ALPHA_JOB)
    return job.execute_in_process(
        instance=instance or dg.DagsterInstance.ephemeral(),
        partition_key=AS_OF.isoformat(),
        run_id=run_id,
        raise_on_error=False,
    )


def tree_state(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: sha256 and mtime."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def failure_messages(result) -> str:
    return "\n".join(
        str(e.step_failure_data.error.cause or e.step_failure_data.error)
        for e in result.all_events
        if e.is_step_failure
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A lakehouse of 40 symbols over 18 months and one successful alpha run on it."""
    root = tmp_path_factory.mktemp("immutable")
    settings = Settings(
        data_dir=root / "data", history_start=dt.date(2024, 1, 1), synthetic_symbols=40,
        universe="small", freshness_hours=1e6,
    )
    assert run_data_job(settings, dt.date(2024, 1, 1), AS_OF).success
    result = run_alpha(settings)
    assert result.success, failure_messages(result)
    return settings, result.run_id


def test_a_finished_run_folder_is_read_only_on_disk(finished):
    settings, run_id = finished
    run_dir = settings.runs_dir / run_id
    assert json.loads((run_dir / SEAL_FILE).read_text())["run_id"] == run_id
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    folders = [run_dir, *(p for p in run_dir.rglob("*") if p.is_dir())]
    assert {"manifest.json", "weights.parquet", "backtest.json", "audit.jsonl"} <= {p.name for p in files}
    assert any(p.parent.name == "data" for p in files)  # the snapshot copies too
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(0o444)}
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in folders} == {oct(0o555)}


def test_a_run_that_reuses_a_finished_runs_id_cannot_modify_its_files(finished):
    """The same run id again (a restored instance, a copied id): the first write is refused
    and every file of the finished run keeps its bytes and its modification time."""
    settings, run_id = finished
    run_dir = settings.runs_dir / run_id
    before = tree_state(run_dir)
    again = run_alpha(settings, run_id=run_id)
    assert not again.success
    message = failure_messages(again)
    assert f"run {run_id} finished" in message and "read-only" in message
    assert not again.get_asset_materialization_events()
    assert tree_state(run_dir) == before


def test_a_run_cannot_write_into_another_runs_folder(finished):
    """A folder copied under a new run's id still belongs to the run that made it."""
    settings, run_id = finished
    intruder = str(uuid.uuid4())
    copy = settings.runs_dir / intruder
    shutil.copytree(settings.runs_dir / run_id, copy)
    try:
        before = tree_state(copy)
        result = run_alpha(settings, run_id=intruder)
        assert not result.success
        assert f"belongs to run {run_id}, not {intruder}" in failure_messages(result)
        assert tree_state(copy) == before
    finally:
        for folder in [copy, *copy.rglob("*")]:
            if folder.is_dir():
                folder.chmod(0o755)
        shutil.rmtree(copy)


def test_reproduce_works_on_a_sealed_run_and_cleans_up_its_workspace(finished):
    settings, run_id = finished
    result = reproduce(settings, run_id, instance=dg.DagsterInstance.ephemeral())
    assert result.identical, [(c.name, c.detail) for c in result.differences]
    assert SEAL_FILE not in {c.name for c in result.comparisons}
    assert not result.workspace.exists()  # its re-run folder was sealed too, and still removed


def test_the_registry_reads_the_policy_of_a_sealed_run(finished):
    settings, run_id = finished
    report = policy_report(settings.tracking_uri)
    assert report["versions"] == 1
    champion = report["champion"]
    assert champion["dagster_run_id"] == run_id
    recorded = json.loads((settings.runs_dir / run_id / "optimization.json").read_text())
    assert champion["parameters"] == recorded
