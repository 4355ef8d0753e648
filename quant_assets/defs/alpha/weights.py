"""`portfolio_weights`: the optimiser on the winners, with the L4 check."""

import time

import dagster as dg

from quant_assets.alpha.policy import weights_frame
from quant_assets.contracts import (
    check_result_from_cases,
    enforce,
    selection_schema,
    validate,
    weights_schema,
)
from quant_assets.defs.alpha._common import (
    audit,
    audit_contract,
    json_bytes,
    periods_per_year,
    winners_frame,
)
from quant_assets.defs.alpha.config import OptimizationConfig
from quant_assets.mlops.tracking import register_policy
from quant_assets.partitions import DAILY
from quant_resources.io_managers import Artifact
from quant_resources.settings import Settings


@dg.asset(
    partitions_def=DAILY,
    group_name="alpha",
    io_manager_key="run_artifacts",
    metadata={"artifact": "weights.parquet"},
    kinds={"cvxpy", "parquet"},
    required_resource_keys={"mlflow", "settings"},  # audit lines mirrored to MLflow
    check_specs=[
        dg.AssetCheckSpec(
            "weights_l4",
            asset="portfolio_weights",
            blocking=True,
            description="L4: finite, long-only, sum to 1 within 1e-6, caps respected.",
        )
    ],
    description="Portfolio weights of the winners from cvxpy (objective and covariance in run config): weights.parquet.",
)
def portfolio_weights(
    context: dg.AssetExecutionContext,
    config: OptimizationConfig,
    returns_matrix: Artifact,
    selected_winners: Artifact,
):
    settings: Settings = context.resources.settings
    started = time.perf_counter()
    matrix = returns_matrix.payload
    # L3 again on the selection as read back: a re-execution reads it from the parent
    # run's folder, which is checked here rather than trusted.
    enforce(
        selection_schema([c for c in matrix.columns if c != "date"]),
        winners_frame(selected_winners.payload),
        f"the selection read from {selected_winners.run_dir}",
    )
    winners = [w["symbol"] for w in selected_winners.payload["winners"]]
    frame = weights_frame(matrix, winners, config.model_dump(), periods_per_year(matrix))
    schema = weights_schema(max_weight=config.max_weight, min_weight=config.min_weight)
    result = check_result_from_cases(
        frame, validate(schema, frame), extra={"weight_sum": float(frame["weight"].sum())}
    )
    params = {
        "optimization": config.model_dump(),
        "selection": selected_winners.payload["parameters"],
    }
    table = "\n".join(f"| {s} | {w:.4f} |" for s, w in frame.iter_rows())
    yield dg.Output(
        Artifact(frame, files={"optimization.json": json_bytes(params)}),
        metadata={
            "objective": config.objective,
            "covariance": config.covariance,
            "symbols": frame.height,
            "max_weight_held": float(frame["weight"].max()) if frame.height else 0.0,
            "weights": dg.MetadataValue.md("| symbol | weight |\n|---|---|\n" + table),
        },
    )
    yield dg.AssetCheckResult(
        check_name="weights_l4", passed=result.passed, metadata=result.metadata
    )
    audit_contract(settings, context, "L4_weights", result)
    audit(
        settings,
        context,
        "portfolio_weights",
        started,
        rows_in=len(winners),
        rows_out=frame.height,
        parameters=config.model_dump(),
        checks={"weights_l4": bool(result.passed)},
    )
    if result.passed:  # the run's policy becomes a model version (registered in the worker)
        register_policy(context, params, as_of=selected_winners.payload["as_of"])
