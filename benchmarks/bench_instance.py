"""Bookkeeping cost of the Dagster instance: a no-op daily-partitioned asset with
`BackfillPolicy.single_run()` run over N partitions as one run, on the sqlite instance
(Dagster's default) and on the project's embedded PostgreSQL with batched event writes.

    .venv/bin/python benchmarks/bench_instance.py [--partitions 366 3653]

Prints one line per (storage, partitions): the run's wall time and the materialisations
recorded. The work is nil, so the time is Dagster recording the run.
"""

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import dagster as dg

SQLITE_YAML = """\
telemetry:
  enabled: false
storage:
  sqlite:
    base_dir: {home}
"""


def run_once(home: Path, partitions: int) -> tuple[float, int]:
    start = dt.date(2000, 1, 1)
    end = start + dt.timedelta(days=partitions - 1)
    daily = dg.DailyPartitionsDefinition(start_date=start.isoformat(), end_date=(end + dt.timedelta(days=1)).isoformat())

    @dg.asset(partitions_def=daily, backfill_policy=dg.BackfillPolicy.single_run())
    def noop(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"days": len(context.partition_keys)})

    @dg.logger
    def silent(_context: dg.InitLoggerContext):  # the events still go to the instance
        import logging

        return logging.Logger("silent", level=logging.CRITICAL)

    defs = dg.Definitions(assets=[noop], jobs=[dg.define_asset_job("noop_job", [noop])], loggers={"silent": silent})
    job = defs.resolve_job_def("noop_job")
    tags = {
        "dagster/asset_partition_range_start": start.isoformat(),
        "dagster/asset_partition_range_end": end.isoformat(),
    }
    with dg.DagsterInstance.from_config(str(home)) as instance:
        t0 = time.perf_counter()
        result = job.execute_in_process(instance=instance, tags=tags, run_config={"loggers": {"silent": {}}})
        seconds = time.perf_counter() - t0
        assert result.success
        recorded = len(instance.get_materialized_partitions(dg.AssetKey("noop")))
    return seconds, recorded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partitions", type=int, nargs="+", default=[366, 3653])
    args = parser.parse_args()
    from quant_resources.instance import EmbeddedPostgres, ensure_instance
    from quant_resources.runtime import offline_environment

    offline_environment()  # telemetry off, DAGSTER_EVENT_BATCH_SIZE=1000, planned-events flag
    print(f"DAGSTER_EVENT_BATCH_SIZE={os.environ['DAGSTER_EVENT_BATCH_SIZE']}")
    for partitions in args.partitions:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp) / "sqlite"
            home.mkdir()
            (home / "dagster.yaml").write_text(SQLITE_YAML.format(home=home))
            seconds, recorded = run_once(home, partitions)
            print(f"sqlite            {partitions:5d} partitions: {seconds:6.1f} s, {recorded} recorded")
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp) / "pg"
            ensure_instance(home)
            try:
                seconds, recorded = run_once(home, partitions)
            finally:
                EmbeddedPostgres(home).release()
            print(f"postgres embedded {partitions:5d} partitions: {seconds:6.1f} s, {recorded} recorded")


if __name__ == "__main__":
    main()
