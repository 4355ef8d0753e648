"""Bad files never vanish in silence: a folder of CSV exports with an empty file and one
without a Close column next to good ones, through `quant backfill` as a user runs it.

Every file the source could not list is named with why in the run summary, the `ohlcv`
metadata, the catalog's errors and a failing warn check (`ohlcv_skipped_files`), while
the good files ingest as before. Once the exports are fixed, the next run clears them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

pytestmark = pytest.mark.slow

QUANT = str(Path(sys.executable).parent / "quant")
FIRST = dt.date(2024, 1, 1)
LAST = dt.date(2024, 6, 28)  # a Friday: the exports' last session
START = dt.date(2024, 6, 17)
GOOD = ["TEST_ALPHA", "TEST_BRAVO", "TEST_CHARLIE", "TEST_DELTA", "TEST_ECHO", "TEST_FOXTROT", "TEST_GOLF", "TEST_HOTEL"]


def vendor_csv(price: float) -> str:
    """Business-day bars from FIRST to LAST in a vendor's layout (Date, Open, ..., Volume)."""
    days = [FIRST + dt.timedelta(days=i) for i in range((LAST - FIRST).days + 1)]
    days = [d for d in days if d.weekday() < 5]
    close = [price * (1 + 0.002 * i) for i in range(len(days))]
    return pl.DataFrame(
        {
            "Date": [d.isoformat() for d in days],
            "Open": close,
            "High": [c * 1.01 for c in close],
            "Low": [c * 0.99 for c in close],
            "Close": close,
            "Volume": [10_000.0] * len(days),
        }
    ).write_csv()


def quant(args: list[str], cwd: Path, folder: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUANT_", "DAGSTER_HOME"))}
    env.update(
        {
            "QUANT_SOURCE": "files",
            "QUANT_FILES_DIR": str(folder),
            "QUANT_HISTORY_START": FIRST.isoformat(),
            "QUANT_UNIVERSE": "small",
            "QUANT_FRESHNESS_HOURS": "1000000",
        }
    )
    return subprocess.run([QUANT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def audit_lines(work: Path, out: str) -> list[dict]:
    run_id = out.split(": run ", 1)[1].split()[0]
    path = work / "data" / "export" / "runs" / run_id / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A backfill over 8 good exports, an empty one and one without Close; then the same
    day again after the empty export is re-delivered and the other is removed."""
    work = tmp_path_factory.mktemp("bad_files")
    folder = work / "exports"
    folder.mkdir()
    for i, key in enumerate(GOOD):
        (folder / f"{key}.csv").write_text(vendor_csv(50.0 + 10 * i))
    (folder / "TEST_EMPTY.csv").write_text("")
    (folder / "TEST_NOCLOSE.csv").write_text(pl.read_csv(vendor_csv(70.0).encode()).drop("Close").write_csv())
    backfill = quant(["backfill", "--start", START.isoformat(), "--end", LAST.isoformat()], work, folder)
    catalog = json.loads((work / "data" / "lakehouse" / "catalog.json").read_text())
    (folder / "TEST_EMPTY.csv").write_text(vendor_csv(200.0))  # the vendor re-delivers it
    (folder / "TEST_NOCLOSE.csv").unlink()  # and the other is dropped from the folder
    rerun = quant(["data", "--date", LAST.isoformat()], work, folder)
    return {"work": work, "backfill": backfill, "catalog": catalog, "rerun": rerun}


def test_the_run_summary_names_each_skipped_file_with_why(exports):
    backfill = exports["backfill"]
    assert backfill.returncode == 0, backfill.stderr[-3000:]
    out = backfill.stdout
    assert "ohlcv: 8 symbols, ingested 8, skipped 0, failed 0" in out
    (line,) = [line for line in out.splitlines() if "skipped 2 files:" in line]
    assert "TEST_EMPTY.csv: the file is empty" in line
    assert "TEST_NOCLOSE.csv: missing column 'Close'" in line
    assert "checks:" in out and "1 failed (ohlcv:ohlcv_skipped_files)" in out


def test_the_catalog_keeps_each_skipped_file_as_an_error_and_the_good_files_land(exports):
    catalog = exports["catalog"]
    assert sorted(catalog["symbols"]) == GOOD
    errors = catalog["errors"]
    assert set(errors) == {"TEST_EMPTY.csv", "TEST_NOCLOSE.csv"}
    assert "empty" in errors["TEST_EMPTY.csv"]["reason"]
    assert "'Close'" in errors["TEST_NOCLOSE.csv"]["reason"]
    for error in errors.values():
        assert error["stage"] == "listing" and error["source"] == "FileSource" and error["at"]


def test_the_ohlcv_metadata_and_a_failing_warn_check_name_them(exports):
    lines = audit_lines(exports["work"], exports["backfill"].stdout)
    ohlcv = next(line for line in lines if line.get("stage") == "ohlcv")
    assert ohlcv["skipped_files"] == 2
    reasons = ohlcv["details"]["skipped_file_reasons"]
    assert "TEST_EMPTY.csv" in reasons and "TEST_NOCLOSE.csv" in reasons
    check = next(line for line in lines if line.get("contract") == "ohlcv_skipped_files")
    assert check["passed"] is False and check["severity"] == "WARN"
    assert check["skipped_files"] == 2
    assert "TEST_EMPTY.csv" in check["details"]["skipped"] and "missing column 'Close'" in check["details"]["skipped"]
    # The other checks are not dragged down by the skipped files (freshness reports ingestion).
    others = [line for line in lines if line.get("stage") == "contract" and line["contract"] != "ohlcv_skipped_files"]
    assert others and all(line["passed"] for line in others), others


def test_fixed_exports_leave_the_catalog_and_the_check_passes(exports):
    rerun = exports["rerun"]
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert not re.search(r"skipped \d+ files?:", rerun.stdout), rerun.stdout
    assert "checks:" in rerun.stdout and " 0 failed" in rerun.stdout
    catalog = json.loads((exports["work"] / "data" / "lakehouse" / "catalog.json").read_text())
    assert catalog["errors"] == {}
    assert "TEST_EMPTY" in catalog["symbols"]  # re-delivered, listed and ingested
    check = next(line for line in audit_lines(exports["work"], rerun.stdout) if line.get("contract") == "ohlcv_skipped_files")
    assert check["passed"] is True and check["skipped_files"] == 0
