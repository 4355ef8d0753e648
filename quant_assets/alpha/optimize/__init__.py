"""Portfolio weights for the Alpha cycle: one entry point, five long-only objectives.

`optimize_weights(returns, objective=...)` turns a dates x symbols frame of daily simple
returns into a dict symbol -> weight; `solve_objective` does the same from a covariance
already estimated (the walk-forward's entry). This module owns the dispatch and the public
names; each job lives in one private module:

* `_inputs`: returns table -> (T, n) matrix, NaN policy, holdings vector, expected excess
  returns, covariance scaled to unit mean variance (what every solver sees).
* `_bounds`: feasibility of the weight bounds, and the final clip-and-renormalise.
* `_errors`: InfeasiblePortfolioError, InsufficientHistoryError, SolverError.
* `_active_set`: the exact min-variance solver (block principal pivoting, warm-startable)
  and the KKT certificate `min_variance_kkt_residual` every min-variance answer must pass.
* `_convex`: the lazy cvxpy import `cp` (a data-only command never imports cvxpy), the
  solver list, the DPP-compiled and the one-off min-variance programs, and the
  solve-with-fallback loop (Clarabel, then OSQP, then SCS).
* `_min_variance`: `MinVarianceProblem`, the workhorse: active set first, cvxpy fallback
  polished by the active set, every answer certified.
* `_max_sharpe`: the tangency portfolio on the homogenised convex problem.
* `_risk_parity`: risk budgeting by Newton's method on its log-barrier form.
* `_equal_weight`: 1/n. HRP lives in `quant_assets/alpha/hrp.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from quant_assets.alpha.covariance import (
    COVARIANCE_METHODS,
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
    complete_history,
    expected_excess_returns,
    previous_vector,
    returns_to_matrix,
)
from quant_assets.alpha.optimize._max_sharpe import best_excess_return, max_sharpe_weights
from quant_assets.alpha.optimize._min_variance import MinVarianceProblem, SolveInfo
from quant_assets.alpha.optimize._risk_parity import risk_contributions, risk_parity_weights

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
    "SolveInfo",
    "SolverError",
    "best_excess_return",
    "check_bounds",
    "complete_history",
    "cp",
    "expected_excess_returns",
    "finalize_weights",
    "max_sharpe_weights",
    "min_variance_kkt_residual",
    "optimize_weights",
    "returns_to_matrix",
    "risk_contributions",
    "risk_parity_weights",
    "solve_objective",
]

OBJECTIVES: tuple[str, ...] = ("min_variance", "max_sharpe", "risk_parity", "hrp", "equal_weight")


def solve_objective(
    objective: str,
    covariance: CovarianceEstimate,
    *,
    expected_excess: np.ndarray | None = None,
    max_weight: float | None = None,
    min_weight: float = 0.0,
    previous_weights: np.ndarray | None = None,
    turnover_penalty: float = 0.0,
    periods_per_year: int = PERIODS_PER_YEAR,
    solvers: Sequence[str] = DEFAULT_SOLVERS,
) -> tuple[np.ndarray, str]:
    """Weights (n,) for one objective on an already estimated covariance, and the method used.

    A one-off min_variance problem is built with constant data (no DPP parameters: for a
    single solve, compiling parameters costs more than it saves).
    """
    n = covariance.n_assets
    check_bounds(objective, n, max_weight, min_weight)
    if turnover_penalty > 0.0 and objective != "min_variance":
        raise ValueError(
            f"turnover_penalty is only supported for objective='min_variance', got {objective!r}"
        )
    if objective == "equal_weight":
        return equal_weights(n), "closed form"
    if objective == "min_variance":
        problem = MinVarianceProblem(
            n,
            max_weight,
            min_weight,
            turnover_penalty,
            periods_per_year=periods_per_year,
            solvers=solvers,
        )
        weights = problem.solve(covariance, previous_weights)
        return weights, problem.info.solver
    if objective == "max_sharpe":
        if expected_excess is None:
            raise ValueError("max_sharpe needs expected_excess returns")
        return max_sharpe_weights(covariance, expected_excess, max_weight, min_weight, solvers)
    if objective == "risk_parity":
        return risk_parity_weights(covariance.matrix(), None, max_weight, min_weight), "newton"
    if objective == "hrp":
        return hrp_weights(covariance.matrix(), max_weight=max_weight, min_weight=min_weight), "hrp"
    raise ValueError(f"unknown objective {objective!r}; choose one of {list(OBJECTIVES)}")


def optimize_weights(
    returns: Any,
    objective: str = "min_variance",
    covariance: str = "ledoit_wolf",
    max_weight: float | None = None,
    min_weight: float = 0.0,
    risk_free_rate: float = 0.0,
    previous_weights: Mapping[str, float] | Sequence[float] | np.ndarray | None = None,
    turnover_penalty: float = 0.0,
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
            NaN policy: every symbol needs at least `min_observations` returns (else
            InsufficientHistoryError naming them); then rows with any NaN are dropped
            (listwise deletion), so the estimate uses the dates all symbols share. With
            leading NaN before a young symbol's genesis this is the window since the
            youngest symbol's genesis. Pairwise-complete estimates are avoided on purpose:
            they need not be positive semidefinite.
        objective: "min_variance", "max_sharpe", "risk_parity", "hrp" or "equal_weight".
        covariance: "ledoit_wolf" (default; well conditioned even when symbols outnumber
            dates) or "sample".
        max_weight: cap per symbol (e.g. 0.1), None for no cap.
        min_weight: floor per symbol, >= 0 (long-only).
        risk_free_rate: annual, decimal (0.04 = 4 %); max_sharpe only, compared with the
            annualised mean return periods_per_year * mean(r).
        previous_weights: current holdings (dict symbol -> weight or an (n,) array), used
            with turnover_penalty.
        turnover_penalty: min_variance only: adds turnover_penalty * ||w - previous||_1 to
            the annualised variance w' (periods_per_year Sigma) w.
        min_observations: minimum returns per symbol and complete rows overall.
        periods_per_year: 252 for business-day data, 365 for 24/7 crypto.
        solvers: cvxpy solvers to try in order.
        blas_threads: BLAS threads during the call (None leaves the setting alone). One is
            the default because on a busy 2-core machine OpenBLAS threads waiting for each
            other made the dense factorisations up to 10x slower (1000 symbols: 1.34 s with
            2 threads vs 0.22 s with 1, benchmarks/bench_optimizer.py).

    Returns:
        dict symbol -> weight in input column order; weights >= min_weight, <= max_weight
        (within 1e-12), summing to 1 within 1e-12.

    Raises:
        InfeasiblePortfolioError: the bounds admit no portfolio (checked before any solve),
            or max_sharpe has no portfolio with positive excess return.
        InsufficientHistoryError: too few observations.
        SolverError: no solver succeeded.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {list(OBJECTIVES)}")
    if covariance not in COVARIANCE_METHODS:
        raise ValueError(
            f"unknown covariance {covariance!r}; choose one of {list(COVARIANCE_METHODS)}"
        )
    if turnover_penalty > 0.0 and objective != "min_variance":
        raise ValueError(
            f"turnover_penalty is only supported for objective='min_variance', got {objective!r}"
        )
    matrix, symbols = returns_to_matrix(returns)
    check_bounds(objective, len(symbols), max_weight, min_weight)
    if objective == "equal_weight":
        weights = equal_weights(len(symbols))
        return {s: float(w) for s, w in zip(symbols, weights, strict=True)}
    # threadpool_limits applies on construction and restores on exit.
    limits = nullcontext() if blas_threads is None else threadpool_limits(blas_threads, "blas")
    with limits:
        weights = _optimize_matrix(
            matrix,
            symbols,
            objective,
            covariance,
            max_weight,
            min_weight,
            risk_free_rate,
            previous_weights,
            turnover_penalty,
            min_observations,
            periods_per_year,
            solvers,
        )
    return {s: float(w) for s, w in zip(symbols, weights, strict=True)}


def _optimize_matrix(
    matrix: np.ndarray,
    symbols: list[str],
    objective: str,
    covariance: str,
    max_weight: float | None,
    min_weight: float,
    risk_free_rate: float,
    previous_weights: Mapping[str, float] | Sequence[float] | np.ndarray | None,
    turnover_penalty: float,
    min_observations: int,
    periods_per_year: int,
    solvers: Sequence[str],
) -> np.ndarray:
    history = complete_history(matrix, symbols, max(int(min_observations), 2))
    estimate = estimate_covariance(history, covariance)
    if objective in ("risk_parity", "hrp"):
        zero = np.flatnonzero(estimate.variances() <= 0.0)
        if zero.size:
            raise ValueError(
                f"{objective} needs a positive variance for every symbol; "
                f"{[symbols[j] for j in zero]} have constant returns; drop them"
            )
    weights, _ = solve_objective(
        objective,
        estimate,
        expected_excess=expected_excess_returns(history, risk_free_rate, periods_per_year),
        max_weight=max_weight,
        min_weight=min_weight,
        previous_weights=previous_vector(previous_weights, symbols),
        turnover_penalty=turnover_penalty,
        periods_per_year=periods_per_year,
        solvers=solvers,
    )
    return weights
