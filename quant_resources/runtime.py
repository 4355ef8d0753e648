"""Process environment for every entry point: offline telemetry, batched event writes and a
persistent DAGSTER_HOME whose instance lives in PostgreSQL (quant_resources/instance.py).

Called by the CLI and by the definitions loader, never at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

OFFLINE_ENV = {
    "DAGSTER_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",  # MLflow ignores "1"
    "DVC_NO_ANALYTICS": "1",
    "MPLBACKEND": "Agg",
    # One "planned" event per asset for a single-run backfill instead of one per partition
    # (a 10-year history backfill otherwise writes ~3650 extra events per asset).
    "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1",
    # Store events in batches of up to 1000 (one INSERT on Postgres) instead of one by one.
    # It must be set in the process that runs the steps: every entry point goes through here.
    "DAGSTER_EVENT_BATCH_SIZE": "1000",
}

def offline_environment() -> None:
    """Turn off the telemetry of Dagster, MLflow and DVC for this process and its children."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    # A value of "0"/"false" set by a user still means telemetry: force the safe values.
    for key in ("DAGSTER_DISABLE_TELEMETRY", "DVC_NO_ANALYTICS"):
        os.environ[key] = OFFLINE_ENV[key]
    os.environ["DO_NOT_TRACK"] = "true"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"


def ensure_dagster_home(default: Path | None = None) -> Path:
    """Use $DAGSTER_HOME, else `./.dagster`: its dagster.yaml written and the instance's
    PostgreSQL (embedded by default) running. See quant_resources/instance.py."""
    from quant_resources.instance import dagster_home, ensure_instance

    home = dagster_home(default)
    ensure_instance(home)
    return home


def prepare_process() -> Path:
    """Every command: telemetry off, batching on, the instance ready."""
    offline_environment()
    return ensure_dagster_home()
