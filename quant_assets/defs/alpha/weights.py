"""`portfolio_weights`: the run's policy on the winners, with the L4 check.

The asset builds the run's `Policy` once (the selection's parameters as selection.json
recorded them, its own config, the backtest section of the run config) and writes it to
`optimization.json` with its hash. A policy with a turnover penalty or cap trades from
the weights of the latest earlier sealed run of the same policy on the same universe
(`alpha.runs.find_previous_run`); which run that was, and its weights, are recorded too.
"""

import time

import dagster as dg

from quant_assets.alpha.policy import turnover_between, weights_frame
from quant_assets.alpha.runs import find_previous_run
from quant_assets.alpha.selection import SelectionParams
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
    winners_frame,
)
from quant_assets.defs.alpha.config import (
    OptimizationConfig,
    backtest_config_of,
    policy_from_config,
)
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
    description=(
        "Portfolio weights of the winners under the run's policy (objective, covariance, "
        "bounds; a turnover penalty or cap against the previous run's weights for the same "
        "universe and policy): weights.parquet, and optimization.json with the policy, its "
        "hash and the previous run used."
    ),
)
def portfolio_weights(
    context: dg.AssetExecutionContext,
    config: OptimizationConfig,
    returns_matrix: Artifact,
    selected_winners: Artifact,
    run_snapshot: Artifact,
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
    policy = policy_from_config(
        SelectionParams(**selected_winners.payload["parameters"]),
        config,
        backtest_config_of(context.run.run_config),
    )
    as_of = selected_winners.payload["as_of"]
    universe = run_snapshot.payload.get("universe")
    previous = None
    if not policy.optimization.controls_turnover:
        note = "no turnover penalty or cap: the previous weights are not used"
    else:
        previous = find_previous_run(settings.runs_dir, as_of, universe, policy.hash)
        if previous is None:
            note = (
                f"no earlier sealed run of this policy on universe {universe!r} before "
                f"{as_of}: no turnover term (bought from cash)"
            )
        else:
            note = f"turnover against run {previous.run_id} (as of {previous.as_of})"
    winners = [w["symbol"] for w in selected_winners.payload["winners"]]
    frame = weights_frame(matrix, winners, policy, previous.weights if previous else None)
    schema = weights_schema(
        max_weight=policy.optimization.max_weight, min_weight=policy.optimization.min_weight
    )
    result = check_result_from_cases(
        frame, validate(schema, frame), extra={"weight_sum": float(frame["weight"].sum())}
    )
    turnover = turnover_between(dict(frame.iter_rows()), previous.weights) if previous else None
    params = {
        **policy.to_dict(),
        "policy_hash": policy.hash,
        "previous_run_id": previous.run_id if previous else None,
        "previous": previous.record() if previous else None,
        "previous_note": note,
        "turnover_vs_previous": turnover,
    }
    table = "\n".join(f"| {s} | {w:.4f} |" for s, w in frame.iter_rows())
    yield dg.Output(
        Artifact(frame, files={"optimization.json": json_bytes(params)}),
        metadata={
            "objective": policy.optimization.objective,
            "covariance": policy.optimization.covariance,
            "symbols": frame.height,
            "max_weight_held": float(frame["weight"].max()) if frame.height else 0.0,
            "policy_hash": policy.hash,
            "previous_run_id": previous.run_id if previous else "none",
            "turnover_control": note,
            **({"turnover_vs_previous": turnover} if turnover is not None else {}),
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
        policy_hash=policy.hash,
        previous_run_id=previous.run_id if previous else None,
        checks={"weights_l4": bool(result.passed)},
    )
    if result.passed:  # the run's policy becomes a model version (registered in the worker)
        register_policy(context, params, as_of=as_of)
