"""A recorded run: the data job then the alpha job on a fixed 60-symbol synthetic
lakehouse; prints the selection hash and the weights. Run it on two checkouts to show that
a refactor changed no output:

    PYTHONPATH=/path/to/checkout .venv/bin/python /path/to/checkout/benchmarks/golden_run.py

Issue 11: the commits before and after the defs/ move (a61f21a, 49de71d) both printed
selection hash bfb5a408...c73d079 and the same 12 weights to 1e-10. Later commits change
the market (exchange calendars, delistings) and the policy (the feature term), so their
hash differs by design.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

HISTORY_START = dt.date(2022, 1, 1)
DAY = dt.date(2024, 6, 28)


def main() -> None:
    warnings.filterwarnings("ignore")
    os.environ["DAGSTER_HOME"] = tempfile.mkdtemp(prefix="golden_home_")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/helpers.py
    import dagster as dg
    import polars as pl
    from helpers import run_data_job

    from quant_assets.definitions import ALPHA_JOB, build_definitions
    from quant_resources.settings import Settings

    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="golden_data_")), history_start=HISTORY_START, synthetic_symbols=60
    )
    with dg.instance_for_test() as instance:
        assert run_data_job(settings, HISTORY_START, DAY, instance=instance).success
        job = build_definitions(settings).resolve_job_def(ALPHA_JOB)
        result = job.execute_in_process(partition_key=DAY.isoformat(), instance=instance)
        assert result.success
        run_dir = settings.layout.run_dir(result.run_id)
        selection = json.loads((run_dir / "selection.json").read_text())
        weights = pl.read_parquet(run_dir / "weights.parquet")
    print("HASH", selection["hash"])
    print("WEIGHTS", [(symbol, round(weight, 10)) for symbol, weight in weights.iter_rows()])


if __name__ == "__main__":
    main()
