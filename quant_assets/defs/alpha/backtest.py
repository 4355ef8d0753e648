"""`backtest`: the whole policy walked forward, net of costs.

The policy is the one `portfolio_weights` recorded in optimization.json, with this
asset's config as its rebalance part (the same values in a normal run; a re-execution of
the backtest alone may change them, and `policy_hash` in backtest.json then differs from
the weights').

The selection at each rebalance t scores as the daily run does: momentum plus
`feature_weight` x each symbol's `tv_technicals_1d` rating as of t (its latest row dated
in [t - 14 days, t]). The ratings come from one read of the table at the Delta version the
snapshot pinned (`manifest.json["feature_store_version"]`, time travel, through
`lakehouse_reader`): the `rating` of the snapshot's symbols dated from the walk-forward's
first row's date - 14 days to D. Those rows are stored as `backtest_features.parquet`, so
the run folder alone reproduces the backtest. `feature_weight: 0` reads nothing.
"""

import dataclasses
import datetime as dt
import time
from typing import Any

import dagster as dg
import numpy as np
import polars as pl

from quant_assets.alpha.backtest import plot_equity_curve, plot_weights
from quant_assets.alpha.policy import Policy, policy_walk_forward, walk_forward_start
from quant_assets.alpha.returns import returns_array
from quant_assets.defs.alpha._common import (
    audit,
    plot_bytes,
    png_markdown,
    read_json,
)
from quant_assets.defs.alpha.config import BacktestConfig
from quant_assets.defs.alpha.selection import FEATURE_COLUMN, parquet_bytes
from quant_assets.features.store import AS_OF_WINDOW_DAYS, as_of_matrix, read_features
from quant_assets.mlops.tracking import rank_policy
from quant_assets.partitions import DAILY
from quant_resources.errors import QuantError
from quant_resources.io_managers import Artifact, LakehouseView
from quant_resources.layout import FEATURE_TABLE
from quant_resources.settings import Settings

BACKTEST_FEATURES_FILE = "backtest_features.parquet"


@dg.asset(
    partitions_def=DAILY,
    group_name="alpha",
    io_manager_key="run_artifacts",
    ins={"tv_technicals_1d": dg.AssetIn(input_manager_key="lakehouse_reader")},
    metadata={"artifact": "backtest.json"},
    kinds={"cvxpy", "json"},
    required_resource_keys={"mlflow", "settings"},  # audit lines mirrored to MLflow
    description=(
        "Walk-forward backtest of the whole policy (selection, with the tv_technicals_1d "
        "rating as of each rebalance read at the Delta version the snapshot pinned and "
        "stored as backtest_features.parquet, then optimisation at each "
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
    tv_technicals_1d: LakehouseView,
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
    files: dict[str, bytes] = {}
    features, source = None, None
    if policy.selection.feature_weight > 0:
        rows, window = walk_forward_features(
            tv_technicals_1d, run_snapshot.payload, dates, symbols, policy
        )
        features = as_of_matrix(rows, dates, symbols, FEATURE_COLUMN, AS_OF_WINDOW_DAYS)
        files[BACKTEST_FEATURES_FILE] = parquet_bytes(rows)
    result = policy_walk_forward(values, dates, symbols, policy, quality, features)
    if features is not None:
        source = feature_source(rows, window, features, dates, symbols, result.rebalances)
    document = result.to_dict()
    document["as_of"] = run_snapshot.payload["as_of"]
    if source is not None:
        document["features"] = source
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
            "feature_store_version": (
                run_snapshot.payload.get("feature_store_version") if source else -1
            ),
            "feature_rows": source["rows"] if source else 0,
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
        features=source,
    )
    rank_policy(context, metrics)  # champion/challenger by out-of-sample Sharpe
    files.update({"equity_curve.png": equity_png, "weights.png": weights_png})
    return Artifact(document, files=files)


def walk_forward_features(
    view: LakehouseView,
    manifest: dict[str, Any],
    dates: np.ndarray,
    symbols: list[str],
    policy: Policy,
) -> tuple[pl.DataFrame, tuple[dt.date, dt.date]]:
    """(symbol, date, rating) rows the walk-forward's as-of lookups need, in one read, and
    the (start, end) dates read.

    At the Delta version the snapshot pinned, for the snapshot's symbols, dated from the
    walk-forward's first row's date - AS_OF_WINDOW_DAYS to the as-of day: every rebalance
    t's window [t - 14 days, t] lies inside, and nothing after the as-of day is read.
    """
    day = dt.date.fromisoformat(manifest["as_of"])
    table = view.features_table
    version = manifest.get("feature_store_version")
    if version is None:
        raise QuantError(
            f"backtest for {day}: the snapshot found no feature table at {table} (manifest.json "
            f"of run {manifest.get('run_id')} records no feature_store_version), and the "
            f"policy scores with feature_weight {policy.selection.feature_weight}; run the data "
            f"cycle for {day} (quant data --date {day}), or select without features "
            "(feature_weight: 0)"
        )
    first = (
        dates[walk_forward_start(len(dates), policy)].astype("datetime64[D]").item()
        if len(dates)
        else day
    )
    start = first - dt.timedelta(days=AS_OF_WINDOW_DAYS)
    rows = read_features(
        table, version=version, symbols=sorted(set(symbols)), start=start, end=day,
        columns=[FEATURE_COLUMN],
    )
    if rows.height == 0:
        raise QuantError(
            f"backtest for {day}: {table} at Delta version {version} has no row dated "
            f"{start}..{day} for any of the {len(symbols)} snapshot symbol(s) "
            f"({', '.join(symbols[:5])}{', ...' if len(symbols) > 5 else ''}); run the data "
            f"cycle for {day} (quant data --date {day}), or select without features "
            "(feature_weight: 0)"
        )
    return rows, (start, day)


def feature_source(
    rows: pl.DataFrame,
    window: tuple[dt.date, dt.date],
    features: np.ndarray,
    dates: np.ndarray,
    symbols: list[str],
    rebalances: list[Any],
) -> dict[str, Any]:
    """backtest.json's `features`: what the feature term was read from, and per rebalance
    how many symbols had no rating (feature term 0). No Delta version (the manifest has
    it): a re-run on a table rebuilt from the stored rows gives the same bytes."""
    row_of = {d: i for i, d in enumerate(dates.astype("datetime64[D]"))}
    missing = {}
    for record in rebalances:
        date = np.datetime64(record.date, "D")
        count = int(np.isnan(features[row_of[date]]).sum())
        if count:
            missing[str(date)] = count
    return {
        "table": FEATURE_TABLE,
        "column": FEATURE_COLUMN,
        "window_days": AS_OF_WINDOW_DAYS,
        "file": BACKTEST_FEATURES_FILE,
        # The rows read: `column` of the run's symbols dated start..end (inclusive).
        "start": window[0].isoformat(),
        "end": window[1].isoformat(),
        "rows": rows.height,
        "symbols": len(symbols),
        # Rebalance date -> symbols without a rating as of it (feature term 0).
        "missing": missing,
    }
