"""The storage layout: every path of the storage contract, spelled once."""

import datetime as dt
import json

import pytest

from quant_resources.errors import InvalidSymbolError
from quant_resources.io_managers import LakehouseView, RunArtifactIOManager
from quant_resources.lakehouse import Lakehouse
from quant_resources.layout import StorageLayout
from quant_resources.settings import Settings

DAY = dt.date(2024, 3, 5)


def test_every_path_of_the_storage_contract(tmp_path):
    data = tmp_path / "data"
    layout = StorageLayout(data)
    lake = data / "lakehouse"
    assert layout.lakehouse_dir == lake
    assert layout.symbols_path == lake / "symbols.parquet"
    assert layout.catalog_path == lake / "catalog.json"
    assert layout.ohlcv_dir == lake / "ohlcv"
    assert layout.ohlcv_path("BINANCE", "BTCUSDT") == (lake / "ohlcv" / "BINANCE_BTCUSDT_1d.parquet").resolve()
    assert layout.features_dir == lake / "features"
    assert layout.feature_table() == lake / "features" / "tv_technicals_1d"
    assert layout.quarantine_dir == lake / "quarantine"
    assert layout.audit_report_path == lake / "audit" / "latest.json"
    assert layout.locks_dir == lake / ".locks"
    assert layout.lock_path("catalog") == lake / ".locks" / "catalog.lock"
    assert layout.export_dir == data / "export"
    assert layout.export_day_dir(DAY) == data / "export" / "2024-03-05"
    assert layout.candidates_path(DAY) == data / "export" / "2024-03-05" / "candidates.json"
    assert layout.data_runs_dir == data / "export" / "runs"
    assert layout.data_run_dir("abc-123") == data / "export" / "runs" / "abc-123"
    assert layout.runs_dir == data / "runs"
    assert layout.run_dir("abc-123") == (data / "runs" / "abc-123").resolve()
    assert layout.mlflow_dir == data / "mlflow"
    assert layout.mlflow_db == data / "mlflow" / "mlflow.db"


@pytest.mark.parametrize(
    "call",
    [
        lambda layout: layout.ohlcv_path("BINANCE", "../../etc/passwd"),
        lambda layout: layout.ohlcv_path("BINANCE", ".hidden"),
        lambda layout: layout.ohlcv_path("BIN_ANCE", "BTCUSDT"),  # "_" ends the exchange in a file name
        lambda layout: layout.run_dir("../other"),
        lambda layout: layout.data_run_dir(".."),
        lambda layout: layout.feature_table("../ohlcv"),
        lambda layout: layout.lock_path("a/b"),
    ],
)
def test_bad_names_never_become_paths(tmp_path, call):
    with pytest.raises(InvalidSymbolError):
        call(StorageLayout(tmp_path))


def test_settings_lakehouse_and_io_managers_take_their_paths_from_the_layout(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    layout = settings.layout
    lake = Lakehouse(data_dir=str(settings.data_dir))
    view = LakehouseView(settings.data_dir, DAY)
    runs = RunArtifactIOManager(runs_dir=str(settings.runs_dir))
    assert lake.layout == layout == view.layout
    assert (settings.lakehouse_dir, settings.catalog_path, settings.symbols_path) == (
        layout.lakehouse_dir, layout.catalog_path, layout.symbols_path
    )
    assert (settings.ohlcv_dir, settings.features_dir, settings.quarantine_dir) == (
        layout.ohlcv_dir, layout.features_dir, layout.quarantine_dir
    )
    assert (settings.export_dir, settings.runs_dir, settings.mlflow_dir) == (
        layout.export_dir, layout.runs_dir, layout.mlflow_dir
    )
    assert settings.tracking_uri == f"sqlite:///{layout.mlflow_db}"
    assert (lake.root, lake.ohlcv_dir, lake.catalog_path, lake.symbols_path) == (
        layout.lakehouse_dir, layout.ohlcv_dir, layout.catalog_path, layout.symbols_path
    )
    assert lake.features_table == view.features_table == layout.feature_table()
    assert lake.ohlcv_path("NYSE", "IBM") == view.ohlcv_path("NYSE", "IBM") == layout.ohlcv_path("NYSE", "IBM")
    assert runs.run_dir("r1") == layout.run_dir("r1")


def test_candidates_are_written_through_the_lakehouse_and_read_back_by_the_view(tmp_path):
    lake = Lakehouse(data_dir=str(tmp_path))
    texts = [(DAY, json.dumps({"date": DAY.isoformat(), "candidates": []})), (DAY + dt.timedelta(days=1), "{}")]
    written = lake.write_candidates(iter(texts))
    assert written == sum(len(text.encode()) for _, text in texts)
    for day, text in texts:
        assert lake.layout.candidates_path(day).read_text() == text
    assert LakehouseView(tmp_path, DAY).candidates() == {"date": DAY.isoformat(), "candidates": []}
    assert not [p for p in lake.layout.export_dir.rglob(".*")]  # no temp file left behind
