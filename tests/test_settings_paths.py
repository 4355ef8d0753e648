"""Settings per thread, path safety, atomic writes."""

import os
import threading

import polars as pl
import pytest

from quant_resources.atomic import atomic_write_parquet
from quant_resources.errors import ConfigError, InvalidSymbolError
from quant_resources.lakehouse import Lakehouse
from quant_resources.settings import Settings, get_settings, use_settings
from quant_resources.symbols import ohlcv_filename, validate_name


def test_settings_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("QUANT_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("QUANT_HISTORY_START", "2020-02-03")
    monkeypatch.setenv("QUANT_UNIVERSE", "small")
    s = get_settings()
    assert s.data_dir == tmp_path / "d" and s.history_start.isoformat() == "2020-02-03" and s.universe == "small"
    assert s.catalog_path == tmp_path / "d" / "lakehouse" / "catalog.json"
    assert s.tracking_uri == f"sqlite:///{tmp_path / 'd' / 'mlflow' / 'mlflow.db'}"
    monkeypatch.setenv("QUANT_MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert get_settings().tracking_uri == "http://127.0.0.1:5000"


def test_bad_settings_give_one_line_errors(monkeypatch):
    monkeypatch.setenv("QUANT_HISTORY_START", "yesterday")
    with pytest.raises(ConfigError, match="QUANT_HISTORY_START='yesterday' is not a date"):
        get_settings()
    monkeypatch.delenv("QUANT_HISTORY_START")
    monkeypatch.setenv("QUANT_SOURCE", "files")
    with pytest.raises(ConfigError, match="QUANT_FILES_DIR"):
        get_settings()


def test_two_threads_with_different_settings_never_see_each_other(tmp_path):
    barrier = threading.Barrier(2)
    seen: dict[str, list] = {"a": [], "b": []}

    def worker(name):
        with use_settings(data_dir=tmp_path / name, universe=name):
            barrier.wait()  # both overrides are installed at the same time
            for _ in range(200):
                s = get_settings()
                seen[name].append((s.universe, s.data_dir.name))
            barrier.wait()

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(seen["a"]) == {("a", "a")}
    assert set(seen["b"]) == {("b", "b")}
    assert get_settings().universe == "default"  # nothing leaked into this thread


@pytest.mark.parametrize("bad", ["../../etc/passwd", "A/B", "", "..", ".hidden", "a\\b", "x" * 65, "sp ace"])
def test_unsafe_symbols_are_rejected(bad):
    with pytest.raises(InvalidSymbolError, match="invalid symbol"):
        validate_name(bad)


def test_lakehouse_refuses_paths_outside_and_writes_nothing(tmp_path):
    lake = Lakehouse(data_dir=str(tmp_path / "data"))
    for bad in ("../../etc/passwd", "A/B", ""):
        with pytest.raises(InvalidSymbolError):
            lake.ohlcv_path("SYNEQ", bad)
    with pytest.raises(InvalidSymbolError, match="invalid exchange"):
        lake.ohlcv_path("SYN_EQ", "E001")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
    assert ohlcv_filename("SYNEQ", "BRK.B") == "SYNEQ_BRK.B_1d.parquet"


def test_exception_before_rename_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "x.parquet"
    old = pl.DataFrame({"a": [1, 2, 3]})
    atomic_write_parquet(path, old)

    def boom(src, dst):
        raise OSError("disk unplugged")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk unplugged"):
        atomic_write_parquet(path, pl.DataFrame({"a": [9]}))
    monkeypatch.undo()
    assert pl.read_parquet(path).equals(old)
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]  # no temp file left behind


def test_settings_reject_unknown_source():
    with pytest.raises(ConfigError, match="unknown source 'ftp'"):
        Settings(source="ftp")
