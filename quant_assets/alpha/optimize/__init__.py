"""Portfolio weights for the Alpha cycle: one entry point, five long-only objectives.

`optimize_weights(returns, params, previous_weights)` turns a dates x symbols frame of
daily simple returns into a dict symbol -> weight; `solve_objective` does the same from a
covariance already estimated (the walk-forward's entry). Both take the optimisation part
of the policy as one `OptimizationParams` (objective, covariance, bounds, risk-free rate,
turnover penalty and cap). This module owns the dispatch and the public names; each job
lives in one private module:

* `_inputs`: returns table -> (T, n) matrix, NaN policy, holdings vector (and the cap left
  once names outside the problem are sold), expected excess returns, covariance scaled to
  unit mean variance (what every solver sees).
* `_bounds`: feasibility of the weight bounds, and the final clip-and-renormalise.
* `_errors`: InfeasiblePortfolioError, InsufficientHistoryError, SolverError.
* `_active_set`: the exact min-variance solver (block principal pivoting, warm-startable)
  and the KKT certificate `min_variance_kkt_residual` every min-variance answer must pass.
* `_convex`: the lazy cvxpy import `cp` (a data-only command never imports cvxpy), the
  solver list, the DPP-compiled and the one-off min-variance programs, and the
  solve-with-fallback loop (Clarabel, then OSQP, then SCS).
* `_min_variance`: `MinVarianceProblem`, the workhorse: active set first, cvxpy fallback
  polished by the active set, every answer certified; the turnover penalty, and the cap
  through its multiplier.
* `_max_sharpe`: the tangency portfolio on the homogenised convex problem (a turnover cap
  is a linear constraint there; a penalty is not convex there and is refused).
* `_risk_parity`: risk budgeting by Newton's method on its log-barrier form.
* `_equal_weight`: 1/n. HRP lives in `quant_assets/alpha/hrp.py`.

Turnover control by objective (checked when `OptimizationParams` is built):

| objective | turnover_penalty | turnover_cap |
|---|---|---|
| min_variance | L1 term in the objective | constraint, met through its multiplier |
| max_sharpe | refused (not convex in the homogenised form) | linear constraint |
| risk_parity, hrp, equal_weight | refused | refused |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from quant_assets.alpha.covariance import (
    CovarianceEstimate,
    estimate_covariance,
)
from quant_assets.alpha.hrp import hrp_weights
from quant_assets.alpha.optimize._active_set import (
    ACTIVE_SET_TOL,
    KKT_ACCEPT_TOL,
    KKT_EXACT_TOL,
    min_variance_kkt_residual,
)
from quant_assets.alpha.optimize._bounds import check_bounds, finalize_weights
from quant_assets.alpha.optimize._convex import DEFAULT_SOLVERS, SOLVER_OPTIONS, cp
from quant_assets.alpha.optimize._equal_weight import equal_weights
from quant_assets.alpha.optimize._errors import (
    InfeasiblePortfolioError,
    InsufficientHistoryError,
    SolverError,
)
from quant_assets.alpha.optimize._inputs import (
    DATE_COLUMNS,
    PERIODS_PER_YEAR,
    cap_after_sales,
    complete_history,
    expected_excess_returns,
    previous_holdings,
    previous_vector,
    returns_to_matrix,
)
from quant_assets.alpha.optimize._max_sharpe import best_excess_return, max_sharpe_weights
from quant_assets.alpha.optimize._min_variance import MinVarianceProblem, SolveInfo
from quant_assets.alpha.optimize._risk_parity import risk_contributions, risk_parity_weights
from quant_assets.alpha.params import OBJECTIVES, OptimizationParams

__all__ = [
    "ACTIVE_SET_TOL",
    "DATE_COLUMNS",
    "DEFAULT_SOLVERS",
    "KKT_ACCEPT_TOL",
    "KKT_EXACT_TOL",
    "OBJECTIVES",
    "PERIODS_PER_YEAR",
    "SOLVER_OPTIONS",
    "InfeasiblePortfolioError",
    "InsufficientHistoryError",
    "MinVarianceProblem",
    "OptimizationParams",
    "SolveInfo",
    "SolverError",
    "best_excess_return",
    "cap_after_sales",
    "check_bounds",
    "complete_history",
    "cp",
    "expected_excess_returns",
    "finalize_weights",
    "max_sharpe_weights",
    "min_variance_kkt_residual",
    "optimize_weights",
    "previous_holdings",
    "previous_vector",
    "returns_to_matrix",
    "risk_contributions",
    "risk_parity_weights",
    "solve_objective",
]


def solve_objective(
    params: OptimizationParams,
    covariance: CovarianceEstimate,
    *,
    expected_excess: np.ndarray | None = None,
    previous: np.ndarray | None = None,
    periods_per_year: int = PERIODS_PER_YEAR,
    solvers: Sequence[str] = DEFAULT_SOLVERS,
) -> tuple[np.ndarray, str]:
    """Weights (n,) for `params.objective` on an already estimated covariance, and the
    method used.

    previous: (n,) holdings of these names for the turnover penalty and cap; the cap
    counts these names only (spend on names outside the problem first, `cap_after_sales`).
    A one-off min_variance problem is built with constant data (no DPP parameters: for a
    single solve, compiling parameters costs more than it saves).
    """
    n = covariance.n_assets
    objective = params.objective
    check_bounds(objective, n, params.max_weight, params.min_weight)
    if objective == "equal_weight":
        return equal_weights(n), "closed form"
    if objective == "min_variance":
        problem = MinVarianceProblem(n, params, periods_per_year=periods_per_year, solvers=solvers)
        weights = problem.solve(covariance, previous)
        return weights, problem.info.solver
    if objective == "max_sharpe":
        if expected_excess is None:
            raise ValueError("max_sharpe needs expected_excess returns")
        return max_sharpe_weights(covariance, expected_excess, params, previous, solvers)
    if objective == "risk_parity":
        weights = risk_parity_weights(
            covariance.matrix(), None, params.max_weight, params.min_weight
        )
        return weights, "newton"
    if objective == "hrp":
        weights = hrp_weights(
            covariance.matrix(), max_weight=params.max_weight, min_weight=params.min_weight
        )
        return weights, "hrp"
    raise ValueError(f"unknown objective {objective!r}; choose one of {list(OBJECTIVES)}")


def optimize_weights(
    returns: Any,
    params: OptimizationParams | None = None,
    previous_weights: Mapping[str, float] | Sequence[float] | np.ndarray | None = None,
    *,
    min_observations: int = 20,
    periods_per_year: int = PERIODS_PER_YEAR,
    solvers: Sequence[str] = DEFAULT_SOLVERS,
    blas_threads: int | None = 1,
) -> dict[str, float]:
    """Long-only portfolio weights from a table of daily simple returns.

    Args:
        returns: polars/pandas DataFrame (rows = dates, columns = symbols; a "date" or
            "timestamp" column is ignored) or a (T, n) NumPy array (symbols "0", "1", ...).
            Every row is used (`params.lookback` is the caller's window: `Policy.weights`
            and the walk-forward cut it). NaN policy: every symbol needs at least
            `min_observations` returns (else InsufficientHistoryError naming them); then
            rows with any NaN are dropped (listwise deletion), so the estimate uses the
            dates all symbols share. With leading NaN before a young symbol's genesis this
            is the window since the youngest symbol's genesis. Pairwise-complete estimates
            are avoided on purpose: they need not be positive semidefinite.
        params: objective ("min_variance", "max_sharpe", "risk_parity", "hrp",
            "equal_weight"), covariance ("ledoit_wolf", well conditioned even when symbols
            outnumber dates, or "sample"), max_weight (None: no cap), min_weight (>= 0),
            risk_free_rate (annual, decimal; max_sharpe only, compared with the annualised
            mean return periods_per_year * mean(r)), turnover_penalty (min_variance: adds
            turnover_penalty * ||w - previous||_1 to the annualised variance
            w' (periods_per_year Sigma) w) and turnover_cap (min_variance, max_sharpe:
            ||w - previous||_1 <= cap). Default OptimizationParams().
        previous_weights: current holdings, a dict symbol -> weight (names missing from
            `returns` are sold whatever happens and use up part of the cap) or an (n,)
            array. None, or nothing held: no turnover control (from cash every answer
            trades the whole book).
        min_observations: minimum returns per symbol and complete rows overall.
        periods_per_year: 252 for business-day data, 365 for 24/7 crypto.
        solvers: cvxpy solvers to try in order.
        blas_threads: BLAS threads during the call (None leaves the setting alone). One is
            the default because on a busy 2-core machine OpenBLAS threads waiting for each
            other made the dense factorisations up to 10x slower (1000 symbols: 1.34 s with
            2 threads vs 0.22 s with 1, benchmarks/bench_optimizer.py).

    Returns:
        dict symbol -> weight in input column order; weights >= min_weight, <= max_weight
        (within 1e-12), summing to 1 within 1e-12; with a cap and holdings,
        sum |w - previous| <= turnover_cap (names outside `returns` included).

    Raises:
        InfeasiblePortfolioError: the bounds admit no portfolio (checked before any solve),
            max_sharpe has no portfolio with positive excess return, or the turnover cap
            is below the least turnover the bounds allow.
        InsufficientHistoryError: too few observations.
        SolverError: no solver succeeded.
    """
    params = OptimizationParams() if params is None else params
    matrix, symbols = returns_to_matrix(returns)
    check_bounds(params.objective, len(symbols), params.max_weight, params.min_weight)
    if params.objective == "equal_weight":
        weights = equal_weights(len(symbols))
        return {s: float(w) for s, w in zip(symbols, weights, strict=True)}
    previous, sold = previous_holdings(previous_weights, symbols)
    params = cap_after_sales(params, previous, sold)
    # threadpool_limits applies on construction and restores on exit.
    limits = nullcontext() if blas_threads is None else threadpool_limits(blas_threads, "blas")
    with limits:
        history = complete_history(matrix, symbols, max(int(min_observations), 2))
        estimate = estimate_covariance(history, params.covariance)
        if params.objective in ("risk_parity", "hrp"):
            zero = np.flatnonzero(estimate.variances() <= 0.0)
            if zero.size:
                raise ValueError(
                    f"{params.objective} needs a positive variance for every symbol; "
                    f"{[symbols[j] for j in zero]} have constant returns; drop them"
                )
        weights, _ = solve_objective(
            params,
            estimate,
            expected_excess=expected_excess_returns(
                history, params.risk_free_rate, periods_per_year
            ),
            previous=previous,
            periods_per_year=periods_per_year,
            solvers=solvers,
        )
    return {s: float(w) for s, w in zip(symbols, weights, strict=True)}
