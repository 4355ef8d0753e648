"""`make flow-production` as a user runs it, on the default universe, in a temp data dir.

One run serves two checks: the summary a user reads, and that a secret in the
environment lands nowhere (no output, log, event log, metadata or artifact).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SECRET = "sekrit-token-7f3a9c"


@pytest.fixture(scope="module")
def production(tmp_path_factory):
    work = tmp_path_factory.mktemp("production")
    today = dt.datetime.now(dt.UTC).date()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUANT_", "MAKE"))}
    env.update(
        {
            "QUANT_DATA_DIR": str(work / "data"),
            "DAGSTER_HOME": str(work / ".dagster"),
            # The default universe (300 symbols, default scanners); a shorter history keeps it quick.
            "QUANT_HISTORY_START": (today - dt.timedelta(days=330)).isoformat(),
            "MLFLOW_TRACKING_TOKEN": SECRET,
            "QUANT_EXCHANGE_API_SECRET": SECRET,
            "AWS_SECRET_ACCESS_KEY": SECRET,
        }
    )
    result = subprocess.run(["make", "--no-print-directory", "flow-production"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    return work, result


def test_make_flow_production_exits_0_and_prints_the_summary(production):
    work, result = production
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    yesterday = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    assert "catching up" in out and f"data cycle {yesterday}" in out
    assert f"alpha cycle {yesterday}" in out
    assert "winners (" in out and "weight" in out
    assert "backtest: Sharpe" in out and "max drawdown" in out
    run_folder = out.split("run folder: ", 1)[1].split()[0]
    assert Path(run_folder).is_relative_to(work / "data" / "runs")
    for name in ("selection.json", "weights.parquet", "backtest.json", "manifest.json", "audit.jsonl"):
        assert (Path(run_folder) / name).exists(), name
    assert not (REPO / "data" / "runs").exists() or Path(run_folder).parent != REPO / "data" / "runs"


def test_a_secret_in_the_environment_never_lands_in_logs_metadata_or_artifacts(production):
    work, result = production
    assert result.returncode == 0, result.stderr[-3000:]
    assert SECRET not in result.stdout and SECRET not in result.stderr
    scanned = 0
    for path in work.rglob("*"):
        if path.is_file():
            scanned += 1
            assert SECRET.encode() not in path.read_bytes(), path  # data, runs, mlflow, .dagster
    assert scanned > 50
