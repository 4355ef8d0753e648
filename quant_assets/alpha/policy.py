"""The policy walk-forward: at every rebalance, select then optimise with data up to it.

Backtesting today's winners over the past would leak today's knowledge into the past
(the winners were picked with returns the backtest then "earns"). Instead the whole
policy runs at each rebalance date t on the rows <= t: selection picks the winners,
the optimiser weights them, and the positions are held until the next rebalance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from quant_assets.alpha.backtest import BacktestResult, walk_forward
from quant_assets.alpha.optimize import optimize_weights
from quant_assets.alpha.selection import SelectionParams, select_winners


def policy_walk_forward(
    returns: np.ndarray,
    dates: np.ndarray,
    symbols: list[str],
    *,
    selection: SelectionParams,
    quality: dict[str, float] | None = None,
    window_days: int = 756,
    rebalance: str = "monthly",
    cost_bps: float = 10.0,
    objective: str = "min_variance",
    covariance: str = "ledoit_wolf",
    max_weight: float | None = None,
    min_weight: float = 0.0,
    risk_free_rate: float = 0.0,
    lookback: int = 252,
    periods_per_year: int = 252,
) -> BacktestResult:
    """Walk-forward over the last `window_days` rows (after a warm-up of the lookbacks).

    returns: (T, N) daily simple returns (NaN where a symbol has no bar); dates: (T,).
    The benchmark is equal weight over every symbol with enough history at each rebalance.
    """
    warmup = max(lookback, selection.lookback)
    first = max(0, returns.shape[0] - window_days - warmup)
    matrix = returns[first:]
    days = dates[first:]
    index = {s: j for j, s in enumerate(symbols)}
    history = min(selection.min_history, lookback)

    def select(t: int, eligible: np.ndarray) -> np.ndarray:
        # Only rows <= t are visible here: walk_forward passes the rebalance row.
        chosen = select_winners(matrix[: t + 1], symbols, selection, quality=quality)
        mask = np.zeros(len(symbols), dtype=bool)
        for name in chosen.symbols:
            mask[index[name]] = True
        return mask & eligible

    return walk_forward(
        matrix,
        days,
        symbols,
        rebalance=rebalance,
        lookback_days=lookback,
        objective=objective,
        covariance=covariance,
        max_weight=max_weight,
        cost_bps=cost_bps,
        min_history=history,
        min_weight=min_weight,
        risk_free_rate=risk_free_rate,
        periods_per_year=periods_per_year,
        select=select,
    )


def weights_frame(
    returns: pl.DataFrame,
    symbols: list[str],
    optimization: Mapping[str, Any],
    periods_per_year: int,
) -> pl.DataFrame:
    """`weights.parquet`: the optimiser on the last `optimization["lookback"]` rows of `symbols`.

    `optimization` holds the OptimizationConfig fields (a run's `optimization.json`).
    Returns (symbol, weight) sorted by symbol.
    """
    window = returns.select(symbols).tail(optimization["lookback"])
    weights = optimize_weights(
        window,
        objective=optimization["objective"],
        covariance=optimization["covariance"],
        max_weight=optimization["max_weight"],
        min_weight=optimization["min_weight"],
        risk_free_rate=optimization["risk_free_rate"],
        turnover_penalty=optimization["turnover_penalty"],
        periods_per_year=periods_per_year,
    )
    return pl.DataFrame(
        {"symbol": list(weights), "weight": [float(w) for w in weights.values()]},
        schema={"symbol": pl.String, "weight": pl.Float64},
    ).sort("symbol")
