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
