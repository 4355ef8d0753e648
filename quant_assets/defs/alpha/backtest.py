"""`backtest`: the whole policy walked forward, net of costs.

The policy is the one `portfolio_weights` recorded in optimization.json, with this
asset's config as its rebalance part (the same values in a normal run; a re-execution of
the backtest alone may change them, and `policy_hash` in backtest.json then differs from
the weights').
"""

import dataclasses
import time

import dagster as dg

from quant_assets.alpha.backtest import plot_equity_curve, plot_weights
from quant_assets.alpha.policy import Policy, policy_walk_forward
from quant_assets.alpha.returns import returns_array
from quant_assets.defs.alpha._common import (
    audit,
    plot_bytes,
    png_markdown,
    read_json,
)
from quant_assets.defs.alpha.config import BacktestConfig
from quant_assets.mlops.tracking import rank_policy
from quant_assets.partitions import DAILY
from quant_resources.io_managers import Artifact
from quant_resources.settings import Settings


@dg.asset(
    partitions_def=DAILY,
    group_name="alpha",
    io_manager_key="run_artifacts",
    metadata={"artifact": "backtest.json"},
    kinds={"cvxpy", "json"},
    required_resource_keys={"mlflow", "settings"},  # audit lines mirrored to MLflow
    description=(
        "Walk-forward backtest of the whole policy (selection then optimisation at each "
        "rebalance, using only data up to it, turnover penalised or capped against the "
        "weights held), net of costs, against equal weight. "
        "backtest.json, equity_curve.png, weights.png."
    ),
)
def backtest(
    context: dg.AssetExecutionContext,
    config: BacktestConfig,
    returns_matrix: Artifact,
    selected_winners: Artifact,
    portfolio_weights: Artifact,
    run_snapshot: Artifact,
) -> Artifact:
    settings: Settings = context.resources.settings
    started = time.perf_counter()
    matrix = returns_matrix.payload
    recorded = read_json(portfolio_weights.run_dir / "optimization.json")
    policy = dataclasses.replace(Policy.from_dict(recorded), rebalance=config.params())
    quality = {
        d["symbol"]: float(d.get("data_quality_score") or 0.0)
        for d in run_snapshot.payload["files"].values()
    }
    values, dates, symbols = returns_array(matrix)
    result = policy_walk_forward(values, dates, symbols, policy, quality)
    document = result.to_dict()
    document["as_of"] = run_snapshot.payload["as_of"]
    document["config"] = config.model_dump()
    document["policy_hash"] = policy.hash
    same_policy = policy.hash == recorded.get("policy_hash")
    equity_png = plot_bytes(plot_equity_curve, result)
    weights_png = plot_bytes(plot_weights, result)
    metrics = {k: v for k, v in document["metrics"].items() if v is not None}
    context.add_output_metadata(
        {
            **{f"metric_{k}": float(v) for k, v in metrics.items()},
            "rebalances": len(result.rebalances),
            "days": len(result.dates),
            "policy_hash": policy.hash,
            "policy_matches_weights": same_policy,
            "equity_curve": png_markdown(equity_png, "equity curve"),
            "weights_plot": png_markdown(weights_png, "weights"),
        }
    )
    audit(
        settings,
        context,
        "backtest",
        started,
        rows_in=int(values.shape[0]),
        rows_out=len(result.dates),
        metrics=metrics,
        rebalances=len(result.rebalances),
    )
    rank_policy(context, metrics)  # champion/challenger by out-of-sample Sharpe
    return Artifact(
        document, files={"equity_curve.png": equity_png, "weights.png": weights_png}
    )
