"""`returns_matrix`: dates x symbols simple returns from the snapshot, with the L1 check."""

import datetime as dt
import time

import dagster as dg
import numpy as np
import polars as pl

from quant_assets.alpha.returns import build_returns_matrix, panel_calendars
from quant_assets.contracts import (
    check_result_from_cases,
    returns_schema,
    validate,
)
from quant_assets.defs.alpha._common import (
    audit,
    audit_contract,
    forward_fill_cases,
)
from quant_assets.partitions import DAILY
from quant_resources.io_managers import Artifact
from quant_resources.settings import Settings


@dg.asset(
    partitions_def=DAILY,
    group_name="alpha",
    io_manager_key="run_artifacts",
    metadata={"artifact": "returns_matrix.parquet"},
    kinds={"polars", "parquet"},
    required_resource_keys={"mlflow", "settings"},  # audit lines mirrored to MLflow
    check_specs=[
        dg.AssetCheckSpec(
            "returns_l1",
            asset="returns_matrix",
            blocking=True,
            description=(
                "L1: finite or NaN where no bar; no return above the toxic threshold "
                "(QUANT_TOXIC_THRESHOLD; the value used is in the metadata); no forward fill."
            ),
        )
    ],
    description=(
        "Dates x symbols simple close-to-close returns from the snapshot: NaN before each "
        "symbol's first bar and on missing sessions, never forward-filled, never truncated "
        "to the youngest symbol. Written as returns_matrix.parquet."
    ),
)
def returns_matrix(context: dg.AssetExecutionContext, run_snapshot: Artifact):
    settings: Settings = context.resources.settings
    started = time.perf_counter()
    manifest = run_snapshot.payload
    as_of = dt.date.fromisoformat(manifest["as_of"])
    data_dir = run_snapshot.run_dir / "data"
    closes = {
        d["symbol"]: pl.read_parquet(data_dir / name, columns=["timestamp", "close"])
        for name, d in manifest["files"].items()
    }
    calendars = panel_calendars(manifest["files"].values())
    matrix = build_returns_matrix(closes, calendars=calendars, end=as_of)
    symbols = [c for c in matrix.columns if c != "date"]
    cases = validate(returns_schema(symbols, settings.toxic_threshold), matrix)
    filled = forward_fill_cases(matrix, closes)
    result = check_result_from_cases(
        matrix, cases, extra={"forward_filled_values": filled, "toxic_threshold": settings.toxic_threshold}
    )
    if filled:
        result = dg.AssetCheckResult(
            passed=False, metadata={**(result.metadata or {}), "forward_filled_values": filled}
        )
    values = matrix.select(symbols).to_numpy() if symbols else np.zeros((0, 0))
    nan_density = float(np.isnan(values).mean()) if values.size else 0.0
    yield dg.Output(
        Artifact(matrix),
        metadata={
            "dates": matrix.height,
            "symbols": len(symbols),
            "nan_density": nan_density,
            "first_date": str(matrix["date"].min()),
            "last_date": str(matrix["date"].max()),
            "calendar": "+".join(calendars) or "24/7",
        },
    )
    yield dg.AssetCheckResult(
        check_name="returns_l1", passed=result.passed, metadata=result.metadata
    )
    audit_contract(settings, context, "L1_returns", result)
    audit(
        settings,
        context,
        "returns_matrix",
        started,
        rows_in=len(closes),
        rows_out=matrix.height,
        nan_density=nan_density,
        checks={"returns_l1": bool(result.passed)},
    )
