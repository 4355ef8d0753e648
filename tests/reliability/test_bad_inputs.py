"""Bad inputs: each gets a clear error naming what was wrong, or is filtered and counted;
the lakehouse is left clean and nothing already in it is lost."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from reliability_kit import END, START, good_bars

from quant_assets.contracts import enforce, ohlcv_schema
from quant_resources.errors import InvalidSymbolError
from quant_resources.schema import SymbolInfo, date_to_ts


def with_values(frame: pl.DataFrame, day: int, **values) -> pl.DataFrame:
    ts = date_to_ts(START + dt.timedelta(days=day))
    return frame.with_columns(
        pl.when(pl.col("timestamp") == ts).then(pl.lit(v, dtype=pl.Float64)).otherwise(pl.col(c)).alias(c)
        for c, v in values.items()
    )


def assert_clean(bars: pl.DataFrame) -> None:
    enforce(ohlcv_schema(with_symbol=False), bars)


@pytest.mark.parametrize(
    "values",
    [
        {"close": float("nan")},
        {"open": float("inf")},
        {"close": 0.0, "low": 0.0},
        {"close": -5.0, "low": -5.0},
        {"high": 90.0, "low": 110.0},  # high below low
        {"open": 150.0},  # open above high
        {"close": 10.0},  # close below low
        {"volume": -1.0},
    ],
    ids=["nan", "inf", "zero", "negative", "high_below_low", "open_outside", "close_outside", "negative_volume"],
)
def test_invalid_bars_are_dropped_and_counted(exports, values):
    exports.write("SYNX_AAA.parquet", with_values(good_bars(), 10, **values))
    report = exports.ingest()
    assert report.failures == []
    bars = exports.bars("SYNX_AAA")
    assert bars.height == 30 and date_to_ts(START + dt.timedelta(days=10)) not in bars["timestamp"].to_list()
    assert exports.entry("SYNX_AAA")["invalid_rows_dropped"] == 1
    assert_clean(bars)


def test_duplicate_timestamps_collapse_and_are_counted(exports):
    frame = good_bars()
    exports.write("SYNX_DUP.parquet", pl.concat([frame, frame.slice(5, 3).with_columns(pl.col("volume") * 2)]))
    exports.ingest()
    bars = exports.bars("SYNX_DUP")
    assert bars.height == 31 and exports.entry("SYNX_DUP")["duplicates_dropped"] == 3
    assert bars.filter(pl.col("timestamp") == date_to_ts(START + dt.timedelta(days=5)))["volume"].item() == 2000.0
    assert_clean(bars)


def test_unsorted_timestamps_land_sorted(exports):
    exports.write("SYNX_UNS.parquet", good_bars().sample(fraction=1.0, shuffle=True, seed=3))
    exports.ingest()
    bars = exports.bars("SYNX_UNS")
    assert bars["timestamp"].is_sorted() and bars.height == 31
    assert exports.entry("SYNX_UNS")["duplicates_dropped"] == 0


def test_millisecond_timestamps_are_converted_to_seconds(exports):
    exports.write("SYNX_MS.parquet", good_bars().with_columns(pl.col("timestamp") * 1000))
    exports.ingest()
    bars = exports.bars("SYNX_MS")
    assert bars["timestamp"].to_list() == good_bars()["timestamp"].to_list()


def test_future_bars_never_land(exports):
    frame = pl.concat([good_bars(), good_bars(days=5, start=dt.date(2099, 1, 1))])
    exports.write("SYNX_FUT.parquet", frame)
    exports.ingest()
    bars = exports.bars("SYNX_FUT")
    assert bars["timestamp"].max() == date_to_ts(END)
    assert exports.entry("SYNX_FUT")["end_date"] == END.isoformat()


def test_bars_a_source_sends_outside_the_window_are_counted(tmp_path):
    """A source that ignores the window (a vendor API bug) cannot push future bars in."""
    import polars as pl

    from quant_assets.data.ingest import ingest
    from quant_resources.lakehouse import Lakehouse
    from quant_resources.settings import Settings
    from quant_resources.sources.base import MarketDataSource

    class Sloppy(MarketDataSource):
        def fetch_bars(self, exchange, symbol, start, end):
            return pl.concat([good_bars(), good_bars(days=3, start=dt.date(2099, 1, 1))])

    settings = Settings(data_dir=tmp_path / "data", history_start=START)
    lake = Lakehouse(data_dir=str(settings.data_dir))
    info = SymbolInfo("SYNX", "SLOP", "crypto", START, 1.0)
    report = ingest([info], START, END, source=Sloppy(), lakehouse=lake, settings=settings)
    assert report.summary()["bars_outside_window_ignored"] == 3
    assert lake.read_ohlcv("SYNX", "SLOP")["timestamp"].max() == date_to_ts(END)


def test_extra_columns_are_ignored(exports):
    exports.write("SYNX_EXT.csv", good_bars().with_columns(pl.lit("x").alias("note"), pl.lit(1).alias("trades")))
    report = exports.ingest()
    assert report.failures == [] and exports.bars("SYNX_EXT").columns == ["timestamp", "open", "high", "low", "close", "volume"]


def test_one_row_file_is_ingested(exports):
    exports.write("SYNX_ONE.parquet", good_bars(days=1))
    exports.ingest()
    assert exports.bars("SYNX_ONE").height == 1 and exports.entry("SYNX_ONE")["data_quality_score"] == 1.0


def test_single_toxic_spike_is_dropped_and_counted(exports):
    exports.write("SYNX_TOX.parquet", with_values(good_bars(), 12, close=900.0, high=910.0))
    exports.ingest()
    entry = exports.entry("SYNX_TOX")
    assert entry["toxic_rows_dropped"] == 1 and entry["level_shifts"] == []
    closes = exports.bars("SYNX_TOX")["close"].to_numpy()
    assert (closes[1:] / closes[:-1] - 1).max() < 5.0


def test_lasting_level_shift_is_kept_and_flagged(exports):
    frame = good_bars()
    frame = frame.with_columns(
        pl.when(pl.col("timestamp") >= date_to_ts(START + dt.timedelta(days=15))).then(pl.col(c) * 10).otherwise(pl.col(c)).alias(c)
        for c in ("open", "high", "low", "close")
    )
    exports.write("SYNX_LVL.parquet", frame)
    exports.ingest()
    entry = exports.entry("SYNX_LVL")
    assert entry["toxic_rows_dropped"] == 0 and entry["level_shifts"] == [(START + dt.timedelta(days=15)).isoformat()]
    assert exports.bars("SYNX_LVL").height == 31
    assert entry["data_quality_score"] == 0.5  # flagged symbols score half


def _known_symbol_then_broken(exports, content, name="SYNX_BRK.csv"):
    """The symbol is in the lakehouse; its export is then replaced by a broken one."""
    exports.write(name, good_bars(days=20))
    exports.ingest(end=dt.date(2024, 1, 20))
    before = exports.bars("SYNX_BRK")
    path = exports.write(name, content)
    info = SymbolInfo("SYNX", "BRK", "crypto", START, 1.0)
    report = exports.ingest(infos=[info])
    assert [o.status for o in report.outcomes] == ["failed"]
    assert exports.bars("SYNX_BRK").equals(before)  # nothing already in the lakehouse is lost
    error = exports.lakehouse.read_catalog()["errors"]["SYNX_BRK"]
    assert path.name in error["reason"] and error["symbol"] == "BRK"
    return error["reason"]


def test_missing_column_names_file_and_column(exports):
    reason = _known_symbol_then_broken(exports, good_bars().drop("close"))
    assert "close" in reason.lower()


def test_text_in_price_column_names_file_and_column(exports):
    frame = good_bars().with_columns(pl.col("close").cast(pl.String))
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("n/a-x")).otherwise(pl.col("close")).alias("close"))
    reason = _known_symbol_then_broken(exports, frame)
    assert "close" in reason.lower()


def test_empty_file_is_a_clear_error(exports):
    reason = _known_symbol_then_broken(exports, b"")
    assert "empty" in reason.lower() or "no bars" in reason.lower()


def test_csv_not_utf8_is_a_clear_error(exports):
    text = b"Date,Open,High,Low,Close,Volume\n2024-01-21,1,1,1,1,1\n" + "caf\xe9\n".encode("latin-1")
    reason = _known_symbol_then_broken(exports, text)
    assert "utf-8" in reason.lower()


def test_symbol_name_not_allowed_is_refused(exports):
    exports.write("SYNX_OK.parquet", good_bars())
    bad = SymbolInfo("SYNX", "../../etc/passwd", "crypto", START, 1.0)
    good = SymbolInfo("SYNX", "OK", "crypto", START, 1.0)
    report = exports.ingest(infos=[bad, good])
    assert report.outcomes[0].status == "failed" and "invalid symbol" in report.outcomes[0].reason
    assert report.outcomes[1].status == "ingested"  # the bad name does not block the rest
    with pytest.raises(InvalidSymbolError):
        exports.lakehouse.ohlcv_path("SYNX", "../../etc/passwd")
    assert not any(p.name == "passwd" for p in exports.settings.data_dir.rglob("*"))
    # a file whose name is not a valid symbol is skipped by the source, with the reason
    exports.write("SYNX_bad name.csv", good_bars())
    from quant_resources.sources.files import FileSource

    skipped = dict(FileSource(folder=str(exports.folder)).skipped_files())
    assert "SYNX_bad name.csv" in skipped
