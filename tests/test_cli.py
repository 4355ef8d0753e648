"""The CLI end to end, as a user runs it, in a temp working directory."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

QUANT = str(Path(sys.executable).parent / "quant")


def run(args, cwd, **env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("QUANT_", "DAGSTER_HOME"))}
    full_env.update(env)
    return subprocess.run([QUANT, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def env():
    today = dt.datetime.now(dt.UTC).date()
    return {
        "QUANT_HISTORY_START": (today - dt.timedelta(days=45)).isoformat(),
        "QUANT_UNIVERSE": "small",
        "QUANT_SYNTHETIC_SYMBOLS": "40",
    }


def test_backfill_then_data_then_audit(tmp_path, env):
    today = dt.datetime.now(dt.UTC).date()
    start = today - dt.timedelta(days=45)
    end = today - dt.timedelta(days=2)
    backfill = run(["backfill", "--start", start.isoformat(), "--end", end.isoformat()], tmp_path, **env)
    assert backfill.returncode == 0, backfill.stderr[-3000:]
    assert f"data cycle {start}..{end}" in backfill.stdout
    assert "ohlcv: " in backfill.stdout and "checks: " in backfill.stdout
    files = list((tmp_path / "data" / "lakehouse" / "ohlcv").glob("*_1d.parquet"))
    # The universe's pool: every symbol of the 40-symbol market listed by the end and not
    # delisted before the start (SYNEQ_E024 delisted in 2021); the small universe's top 10
    # crypto + top 10 equities are ranked from the lakehouse each day.
    assert len(files) == 39
    last_day = json.loads((tmp_path / "data" / "export" / end.isoformat() / "candidates.json").read_text())
    assert len(last_day["candidates"]) == 20
    data = run(["data"], tmp_path, **env)
    assert data.returncode == 0, data.stderr[-3000:]
    assert f"data cycle {today - dt.timedelta(days=1)}" in data.stdout
    audit = run(["audit"], tmp_path, **env)
    assert audit.returncode == 0, audit.stderr[-3000:]
    assert "files=39" in audit.stdout and "quarantined=0" in audit.stdout
    # the runs are in the persistent DAGSTER_HOME of the working directory
    assert (tmp_path / ".dagster" / "dagster.yaml").exists()
    assert "enabled: false" in (tmp_path / ".dagster" / "dagster.yaml").read_text()
    catalog = json.loads((tmp_path / "data" / "lakehouse" / "catalog.json").read_text())
    assert catalog["meta"]["last_partition"] == (today - dt.timedelta(days=1)).isoformat()


@pytest.mark.parametrize(
    "args,extra_env,message",
    [
        (["data", "--date", "2999-01-01"], {}, "is not complete yet"),
        (["data", "--date", "01/02/2024"], {}, "is not a date"),
        (["backfill", "--start", "2024-02-01", "--end", "2024-01-01"], {"QUANT_HISTORY_START": "2023-01-01"}, "ends (2024-01-01) before it starts"),
        (["data"], {"QUANT_UNIVERSE": "nope"}, "unknown universe 'nope'"),
        (["data"], {"QUANT_SOURCE": "files"}, "QUANT_FILES_DIR"),
    ],
)
def test_user_errors_are_one_line(tmp_path, env, args, extra_env, message):
    result = run(args, tmp_path, **{**env, **extra_env})
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and message in lines[0], result.stderr
