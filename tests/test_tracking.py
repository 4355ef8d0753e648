"""MLflow tracking through dagster-mlflow, on a real sqlite store: one finished MLflow run
per Dagster run with its tags, metrics and artifacts; audit.jsonl and MLflow agree; an
outage (unreachable URI, locked database) never fails a run and warns once."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import shutil
import socket
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
from helpers import metadata_of, run_data_job
from mlflow import MlflowClient

from quant_assets.alpha.audit import read_audit
from quant_assets.definitions import ALPHA_JOB, build_definitions
from quant_assets.mlops.tracking import lakehouse_nan_density
from quant_resources.settings import PROJECT_ROOT, Settings
from quant_resources.tracking import TRACKING_TAG

AS_OF = dt.date(2025, 6, 30)
START = dt.date(2024, 1, 1)
ARTIFACTS = {
    "manifest.json",
    "selection.json",
    "optimization.json",
    "weights.parquet",
    "backtest.json",
    "equity_curve.png",
    "weights.png",
    "audit.jsonl",
}
STAGES = {"run_snapshot", "returns_matrix", "selected_winners", "portfolio_weights", "backtest"}
CONTRACTS = {"L1_returns", "L3_selection", "L4_weights"}


def client_for(settings: Settings) -> MlflowClient:
    return MlflowClient(f"sqlite:///{settings.mlflow_dir / 'mlflow.db'}")


def mlflow_runs_of(settings: Settings, dagster_run_id: str) -> list:
    client = client_for(settings)
    experiment = client.get_experiment_by_name("quant-lakehouse")
    if experiment is None:
        return []
    return client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.dagster_run_id = '{dagster_run_id}'"
    )


def run_alpha(settings: Settings, instance=None, tags=None, run_config=None):
    job = build_definitions(settings).resolve_job_def(ALPHA_JOB)
    return job.execute_in_process(
        instance=instance or dg.DagsterInstance.ephemeral(),
        partition_key=AS_OF.isoformat(),
        tags=tags,
        run_config=run_config or {},
        raise_on_error=False,
    )


def tracking_warnings(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [
        entry.user_message
        for entry in instance.all_logs(run_id)
        if entry.level == logging.WARNING and "MLflow tracking unavailable" in (entry.user_message or "")
    ]


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory):
    """A small universe with 18 months of history; the data run that built it."""
    root = tmp_path_factory.mktemp("tracking")
    settings = Settings(
        data_dir=root / "data", history_start=START, synthetic_symbols=40, universe="small",
        freshness_hours=1e6,
    )
    result = run_data_job(settings, START, AS_OF)
    assert result.success
    return settings, result


@pytest.fixture(scope="module")
def alpha_run(lakehouse):
    settings, _ = lakehouse
    result = run_alpha(settings)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result


@pytest.fixture
def lakehouse_copy(lakehouse, tmp_path):
    """The same lakehouse in a data folder of its own (for tracking that must not touch the shared store)."""
    settings, _ = lakehouse
    copy = settings.replace(data_dir=tmp_path / "data")
    shutil.copytree(settings.lakehouse_dir, copy.lakehouse_dir)
    shutil.copytree(settings.export_dir, copy.export_dir)
    return copy


def test_a_data_cycle_run_gives_one_finished_mlflow_run_with_its_counts(lakehouse):
    settings, result = lakehouse
    (run,) = mlflow_runs_of(settings, result.run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["cycle"] == "data" and tags["partition"] == f"{START}..{AS_OF}"
    assert tags["dagster_job"] == "data_cycle" and tags["code_version"] and tags["git_revision"]
    meta = metadata_of(result, "ohlcv")
    metrics = run.data.metrics
    for key in ("ingested", "skipped", "toxic_rows_dropped", "duplicates_dropped", "invalid_rows_dropped", "gaps"):
        assert metrics[f"ingest/{key}"] == meta[key], key
    assert metrics["ingest/ingested"] == metrics["lakehouse/symbols"] > 0
    assert metrics["lakehouse/quality_min"] == pytest.approx(meta["quality_score_min"])
    assert metrics["lakehouse/quality_median"] == pytest.approx(meta["quality_score_median"])
    assert metrics["lakehouse/quality_min"] <= metrics["lakehouse/quality_p10"] <= metrics["lakehouse/quality_max"]
    assert metrics["lakehouse/nan_density"] == pytest.approx(lakehouse_nan_density(json.loads(settings.catalog_path.read_text())))
    assert run.data.params["ingest/window"] == f"{START}..{AS_OF}"
    artifact_root = client_for(settings).get_experiment_by_name("quant-lakehouse").artifact_location
    assert Path(artifact_root) == settings.mlflow_dir / "artifacts"  # not ./mlruns


def test_nan_density_counts_missing_sessions_on_each_symbols_calendar():
    catalog = {
        "symbols": {
            # 10 calendar days, 8 bars: 2 missing
            "X_C": {"start_date": "2024-01-01", "end_date": "2024-01-10", "rows": 8, "calendar": "24/7"},
            # Monday to Friday, 5 bars: complete (the weekend is not a session)
            "X_E": {"start_date": "2024-01-08", "end_date": "2024-01-12", "rows": 5, "calendar": "business"},
        }
    }
    assert lakehouse_nan_density(catalog) == pytest.approx(2 / 15)
    assert lakehouse_nan_density({"symbols": {}}) == 0.0


def test_an_alpha_run_gives_one_finished_mlflow_run_with_tags_params_metrics_and_artifacts(lakehouse, alpha_run):
    settings, _ = lakehouse
    (run,) = mlflow_runs_of(settings, alpha_run.run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["cycle"] == "alpha" and tags["partition"] == AS_OF.isoformat()
    assert tags["dagster_job"] == "alpha_cycle" and tags["code_version"] and tags["git_revision"]
    params = run.data.params
    assert params["selected_winners/parameters/lookback"] == "252"
    assert params["portfolio_weights/parameters/objective"] == "min_variance"
    assert params["portfolio_weights/parameters/max_weight"] == "0.25"
    run_dir = settings.runs_dir / alpha_run.run_id
    backtest = json.loads((run_dir / "backtest.json").read_text())
    selection = json.loads((run_dir / "selection.json").read_text())
    metrics = run.data.metrics
    for name in ("sharpe", "sortino", "max_drawdown", "calmar", "annual_volatility", "annual_turnover"):
        assert metrics[f"backtest/metrics/{name}"] == pytest.approx(backtest["metrics"][name]), name
    assert metrics["selected_winners/rows_out"] == len(selection["winners"])
    assert metrics["selected_winners/rows_in"] == selection["candidates"]
    artifact_dir = Path(run.info.artifact_uri.removeprefix("file://"))
    assert {p.name for p in artifact_dir.iterdir()} >= ARTIFACTS
    for name in ARTIFACTS:
        assert (artifact_dir / name).read_bytes() == (run_dir / name).read_bytes(), name
    assert str(artifact_dir).startswith(str(settings.mlflow_dir / "artifacts"))


def test_audit_jsonl_and_mlflow_hold_the_same_stages_metrics_and_values(lakehouse, alpha_run):
    settings, _ = lakehouse
    (run,) = mlflow_runs_of(settings, alpha_run.run_id)
    audit = read_audit(settings.runs_dir / alpha_run.run_id)
    expected: dict[str, float] = {}

    def leaves(prefix, value):
        if isinstance(value, dict):
            for key, item in value.items():
                leaves(f"{prefix}/{key}", item)
        elif isinstance(value, (bool, int, float)):  # booleans as 1.0 / 0.0
            expected[prefix] = float(value)

    for line in audit:
        stage = f"contract/{line['contract']}" if line["stage"] == "contract" else line["stage"]
        for key, value in line.items():
            if key not in ("at", "stage", "contract", "asset_key", "partition", "run_id", "parameters"):
                leaves(f"{stage}/{key}", value)
    stages = {line["stage"] for line in audit}
    assert stages == STAGES | {"contract"}
    assert {line["contract"] for line in audit if line["stage"] == "contract"} == CONTRACTS
    logged = run.data.metrics
    assert set(logged) == set(expected)  # nothing missing, nothing that is not in audit.jsonl
    for key, value in expected.items():
        assert math.isclose(logged[key], value, rel_tol=1e-12, abs_tol=0.0), key
    for line in audit:  # every parameter too, under its stage
        for key, value in (line.get("parameters") or {}).items():
            text = value if isinstance(value, str) else json.dumps(value)
            assert run.data.params[f"{line['stage']}/parameters/{key}"] == text


def test_two_materialisations_in_one_process_give_two_mlflow_runs(lakehouse):
    settings, _ = lakehouse
    instance = dg.DagsterInstance.ephemeral()
    first, second = run_alpha(settings, instance), run_alpha(settings, instance)
    assert first.success and second.success
    (a,) = mlflow_runs_of(settings, first.run_id)
    (b,) = mlflow_runs_of(settings, second.run_id)
    assert a.info.run_id != b.info.run_id
    assert a.info.status == b.info.status == "FINISHED"
    history = client_for(settings).get_metric_history(b.info.run_id, "backtest/metrics/sharpe")
    assert len(history) == 1  # the second run did not inherit the first's MLflow run


def test_a_failed_run_ends_its_mlflow_run_as_failed(lakehouse_copy):
    candidates = json.loads((lakehouse_copy.export_dir / AS_OF.isoformat() / "candidates.json").read_text())
    gone = candidates["candidates"][0]
    (lakehouse_copy.ohlcv_dir / f"{gone['exchange']}_{gone['symbol']}_1d.parquet").unlink()
    result = run_alpha(lakehouse_copy)
    assert not result.success  # the snapshot fails fast on a missing candidate
    (run,) = mlflow_runs_of(lakehouse_copy, result.run_id)
    assert run.info.status == "FAILED"


def test_a_run_tagged_tracking_off_opens_no_mlflow_run(lakehouse):
    settings, _ = lakehouse
    result = run_alpha(settings, tags={TRACKING_TAG: "off"})
    assert result.success
    assert mlflow_runs_of(settings, result.run_id) == []


def _assert_complete_audit(settings: Settings, run_id: str) -> None:
    audit = read_audit(settings.runs_dir / run_id)
    assert {line["stage"] for line in audit} == STAGES | {"contract"}
    assert {line["contract"] for line in audit if line["stage"] == "contract"} == CONTRACTS


def test_an_unreachable_tracking_uri_never_fails_the_run_and_warns_once(lakehouse_copy):
    unreachable = lakehouse_copy.replace(mlflow_tracking_uri="http://127.0.0.1:9")  # nothing listens there
    instance = dg.DagsterInstance.ephemeral()
    started = time.perf_counter()
    result = run_alpha(unreachable, instance)
    elapsed = time.perf_counter() - started
    assert result.success
    _assert_complete_audit(lakehouse_copy, result.run_id)
    (warning,) = tracking_warnings(instance, result.run_id)
    assert "http://127.0.0.1:9" in warning and "audit.jsonl" in warning
    assert elapsed < 60  # one refused connection, not a retry per call
    assert not (lakehouse_copy.mlflow_dir / "mlflow.db").exists()


def test_a_locked_tracking_database_never_fails_the_run_and_warns_once(lakehouse_copy):
    instance = dg.DagsterInstance.ephemeral()
    first = run_alpha(lakehouse_copy, instance)  # creates the store
    assert first.success and mlflow_runs_of(lakehouse_copy, first.run_id)
    db = sqlite3.connect(lakehouse_copy.mlflow_dir / "mlflow.db", isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")  # another process holds the database
    try:
        result = run_alpha(lakehouse_copy, instance)  # MLflow waits 20 s (its sqlite busy timeout)
    finally:
        db.execute("ROLLBACK")
        db.close()
    assert result.success
    _assert_complete_audit(lakehouse_copy, result.run_id)
    assert len(tracking_warnings(instance, result.run_id)) == 1
    assert tracking_warnings(instance, first.run_id) == []


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, session id) of every process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                found[int(entry.name)] = (int(fields[1]), int(fields[3]))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _tree(root: int) -> set[int]:
    """`root`, its descendants, and every member of their sessions."""
    table = _processes()
    tree, frontier = set(), {root} & set(table)
    while frontier:
        tree |= frontier
        frontier = {pid for pid, (parent, _) in table.items() if parent in frontier} - tree
    sessions = {table[pid][1] for pid in tree if pid in table}
    return tree | {pid for pid, (_, sid) in table.items() if sid in sessions}


@pytest.mark.slow
def test_make_mlflow_ui_serves_the_store_on_loopback_and_a_plain_kill_stops_it(lakehouse):
    settings, _ = lakehouse
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    env.update({"QUANT_DATA_DIR": str(settings.data_dir), "MLFLOW_PORT": str(port)})
    make = subprocess.Popen(
        ["make", "--no-print-directory", "mlflow-ui"], cwd=PROJECT_ROOT, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=quant-lakehouse"
    started: set[int] = set()
    try:
        deadline, found = time.time() + 120, None
        while time.time() < deadline and make.poll() is None and found is None:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    found = json.loads(response.read())["experiment"]
            except OSError:
                time.sleep(0.5)
        assert found is not None, make.stdout.read() if make.poll() is not None else "no answer"
        assert Path(found["artifact_location"]) == settings.mlflow_dir / "artifacts"
        started = _tree(make.pid)
        assert len(started) >= 4  # make, quant, the mlflow server and its uvicorn
    finally:
        make.terminate()  # a plain `kill PID` of make
        deadline = time.time() + 30
        while time.time() < deadline and started & set(_processes()):
            make.poll()
            time.sleep(0.2)
    assert not started & set(_processes()), "processes of the MLflow UI outlived a plain kill"
