"""Security: no path traversal, servers on loopback, secrets never written anywhere."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quant_assets.cli import build_parser
from quant_resources.errors import InvalidSymbolError
from quant_resources.io_managers import RunArtifactIOManager
from quant_resources.symbols import safe_child

QUANT = str(Path(sys.executable).parent / "quant")
SECRET = "sekrit-token-7f3a9c"


@pytest.mark.parametrize("run_id", ["../../etc", "a/b", "..", ""])
def test_run_ids_cannot_leave_the_runs_folder(tmp_path, run_id):
    manager = RunArtifactIOManager(runs_dir=str(tmp_path / "runs"))
    with pytest.raises(InvalidSymbolError):
        manager.run_dir(run_id)


def test_safe_child_refuses_escapes(tmp_path):
    for name in ("../x", "/etc/passwd", "a/../../b"):
        with pytest.raises(InvalidSymbolError):
            safe_child(tmp_path, name)


def test_dagster_ui_binds_to_loopback_by_default():
    args = build_parser().parse_args(["ui"])
    assert args.host == "127.0.0.1"


def test_mlflow_ui_binds_to_loopback_by_default():
    makefile = (Path(__file__).parents[2] / "Makefile").read_text()
    if "mlflow-ui:" not in makefile:
        pytest.skip("no mlflow-ui target yet")
    recipe = makefile.split("mlflow-ui:", 1)[1].split("\n\n", 1)[0]
    assert "--host 127.0.0.1" in recipe


@pytest.mark.slow
def test_a_secret_in_the_environment_never_lands_in_logs_metadata_or_artifacts(tmp_path):
    today = dt.datetime.now(dt.UTC).date()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANT_") and k != "DAGSTER_HOME"}
    env.update(
        {
            "QUANT_HISTORY_START": (today - dt.timedelta(days=330)).isoformat(),
            "QUANT_UNIVERSE": "small",
            "QUANT_SYNTHETIC_SYMBOLS": "30",
            "MLFLOW_TRACKING_TOKEN": SECRET,
            "QUANT_EXCHANGE_API_SECRET": SECRET,
            "AWS_SECRET_ACCESS_KEY": SECRET,
        }
    )
    result = subprocess.run([QUANT, "production"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert SECRET not in result.stdout and SECRET not in result.stderr
    scanned = 0
    for path in tmp_path.rglob("*"):
        if path.is_file():
            scanned += 1
            assert SECRET.encode() not in path.read_bytes(), path  # data, runs, mlflow, .dagster
    assert scanned > 50
