"""The 1000-symbol, 10-year backfill in process and through a local Dask cluster of two
workers (tests/dask_cluster.py: a `dask scheduler` and two `dask worker` processes, one
thread each, on 127.0.0.1): wall time of each `quant backfill`, the `ohlcv` step, each
shard's cost where it ran, and one hash of each lakehouse (they must be equal).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_cluster.py [--symbols 1000] [--shard 100]

Each run in a new temp folder with its own DAGSTER_HOME (its embedded PostgreSQL). The
hash covers every OHLCV file and symbols.parquet byte for byte and the catalog without
its wall-clock fields (last_fetch, file_mtime_ns, updated_at).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_runs import run, steps  # noqa: E402
from dask_cluster import LocalDaskCluster  # noqa: E402

START, END = dt.date(2016, 1, 1), dt.date(2025, 12, 31)
SHARD_LINE = re.compile(r"shard (\d+)/(\d+) done on (\S+) in ([\d.]+)s")
# The step's last progress line: all symbols done, seconds since ingestion began.
INGEST_LINE = re.compile(r"ohlcv \S+: (?:shard \S+ done on \S+ in \S+; )?(\d+)/\1 symbols.* in ([\d.]+)s")


def lakehouse_hash(data_dir: Path) -> str:
    lakehouse = data_dir / "lakehouse"
    digest = hashlib.sha256()
    for path in [*sorted((lakehouse / "ohlcv").glob("*.parquet")), lakehouse / "symbols.parquet"]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    catalog = json.loads((lakehouse / "catalog.json").read_text())
    catalog.pop("updated_at", None)
    for entry in catalog["symbols"].values():
        entry.pop("last_fetch", None)
        entry.pop("file_mtime_ns", None)
    digest.update(json.dumps(catalog, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def ohlcv_seconds(stdout: str) -> float:
    found = re.search(r"^  ohlcv: done in ([\d.]+)s", stdout, re.M)
    return float(found.group(1)) if found else float("nan")


def ingest_seconds(work: Path) -> float:
    """Seconds from the start of ingestion to its last symbol, inside the `ohlcv` step
    (the rest of the step: the catalog's last update, MLflow, the five checks)."""
    log = (work / ".dagster" / "logs" / "quant.log").read_text(errors="replace")
    found = INGEST_LINE.findall(log)
    return float(found[-1][1]) if found else float("nan")


def backfill(work: Path, env: dict[str, str], label: str) -> tuple[float, str]:
    work.mkdir(parents=True)
    wall, rss, out = run(
        ["backfill", "--start", START.isoformat(), "--end", END.isoformat()], work, env
    )
    print(
        f"{label}: wall {wall:.1f} s, ohlcv step {ohlcv_seconds(out):.1f} s "
        f"(ingestion {ingest_seconds(work):.1f} s of it), peak RSS {rss:.0f} MB"
    )
    print(f"    steps: {steps(out)}")
    return wall, lakehouse_hash(work / "data")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument(
        "--shard", type=int, default=100, help="symbols per shard (QUANT_SHARD_SYMBOLS)"
    )
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUANT_", "DAGSTER_HOME"))}
    env.update(
        QUANT_UNIVERSE="all",
        QUANT_SYNTHETIC_SYMBOLS=str(args.symbols),
        QUANT_HISTORY_START=START.isoformat(),
    )
    print(f"{args.symbols} symbols, {START}..{END}, in {root}; {os.cpu_count()} cores")
    try:
        _, in_process = backfill(root / "in_process", env, "in process")
        with LocalDaskCluster(root / "cluster", workers=2) as cluster:
            cluster_env = {
                **env,
                "QUANT_COMPUTE": "dask",
                "QUANT_DASK_SCHEDULER": cluster.address,
                "QUANT_SHARD_SYMBOLS": str(args.shard),
            }
            _, distributed = backfill(root / "on_cluster", cluster_env, "2-worker cluster")
        log = (root / "on_cluster" / ".dagster" / "logs" / "quant.log").read_text(errors="replace")
        shards = [(int(i), w, float(s)) for i, _, w, s in SHARD_LINE.findall(log)]
        if shards:
            seconds = [s for _, _, s in shards]
            per_worker: dict[str, float] = {}
            for _, worker, s in shards:
                per_worker[worker] = per_worker.get(worker, 0.0) + s
            print(
                f"    {len(shards)} shards of {args.shard} symbols: median {statistics.median(seconds):.2f} s, "
                f"min {min(seconds):.2f}, max {max(seconds):.2f}, sum {sum(seconds):.1f} s; "
                f"busy per worker: {', '.join(f'{w} {s:.1f} s' for w, s in sorted(per_worker.items()))}"
            )
        print(
            f"lakehouse hash: in process {in_process}, cluster {distributed}: "
            f"{'SAME' if in_process == distributed else 'DIFFERENT'}"
        )
        if in_process != distributed:
            raise SystemExit(1)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
