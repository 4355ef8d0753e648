"""Shared fixtures. Every test runs offline with telemetry off and its own DAGSTER_HOME."""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import pytest

from quant_resources.runtime import OFFLINE_ENV

sys.path.insert(0, str(Path(__file__).parent))  # tests import their helpers (fake_binance)

for _key, _value in OFFLINE_ENV.items():
    os.environ[_key] = _value


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for key in [k for k in os.environ if k.startswith("QUANT_")]:
        monkeypatch.delenv(key, raising=False)
    yield


@pytest.fixture
def settings(tmp_path):
    from quant_resources.settings import Settings

    return Settings(data_dir=tmp_path / "data", history_start=dt.date(2024, 1, 1), synthetic_symbols=40)


@pytest.fixture(scope="session")
def dvc() -> str:
    """DVC from its own tool environment (never imported: it breaks Dagster's antlr4),
    built from the project's Makefile when missing; a lock keeps two workers from both
    building it."""
    import subprocess

    from filelock import FileLock

    from quant_assets.mlops.dvc import DVC_TOOL
    from quant_resources.settings import PROJECT_ROOT

    DVC_TOOL.parent.parent.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(DVC_TOOL.parent.parent.parent / ".dvc-tool.lock")):
        if not DVC_TOOL.exists():
            subprocess.run(["make", "-C", str(PROJECT_ROOT), "dvc-tool"], check=True, timeout=1200)
    return str(DVC_TOOL)


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium under Playwright (tests/ui_helpers.py)."""
    from ui_helpers import chromium

    with chromium() as launched:
        yield launched
