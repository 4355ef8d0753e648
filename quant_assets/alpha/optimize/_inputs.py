"""Inputs of the optimiser: a returns table becomes the arrays the solvers see.

Owns the conversion of polars/pandas/NumPy returns to a (T, n) matrix, the NaN policy
(listwise deletion, with errors naming the symbols that lack history), the previous
holdings as an (n,) vector (and what of them lies outside the problem, which a turnover
cap must pay for first), the annual expected excess returns, and the covariance
scaled to unit mean variance. Raw daily covariances (~1e-4) sit near the solvers'
absolute tolerances, so a solver can report "optimal" far from the optimum (OSQP stops
at about twice the true minimum variance); the scaled problem has the same minimiser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from quant_assets.alpha.covariance import CovarianceEstimate
from quant_assets.alpha.optimize._errors import InfeasiblePortfolioError, InsufficientHistoryError
from quant_assets.alpha.params import OptimizationParams

PERIODS_PER_YEAR = 252
DATE_COLUMNS: tuple[str, ...] = ("date", "timestamp")


def returns_to_matrix(returns: Any) -> tuple[np.ndarray, list[str]]:
    """A (T, n) float array and the n symbol names from a returns table.

    Args:
        returns: polars or pandas DataFrame (rows = dates, columns = symbols; a column named
            "date" or "timestamp" is ignored; nulls become NaN) or a 2-D NumPy array
            (symbols named "0", "1", ...).

    Returns:
        (matrix of daily simple returns with NaN for missing values, symbol names in input
        column order).
    """
    module = type(returns).__module__
    if module.startswith("polars"):
        columns = [c for c in returns.columns if c not in DATE_COLUMNS]
        frame = returns.select(columns)
        non_numeric = [c for c, dtype in frame.schema.items() if not dtype.is_numeric()]
        if non_numeric:
            raise TypeError(
                f"returns columns {non_numeric} are not numeric; pass one numeric column per "
                f"symbol plus an optional 'date' or 'timestamp' column"
            )
        matrix = frame.cast({c: float for c in columns}).to_numpy() if columns else None
    elif module.startswith("pandas"):
        columns = [c for c in returns.columns if str(c) not in DATE_COLUMNS]
        try:
            matrix = returns[columns].to_numpy(dtype=float, na_value=np.nan) if columns else None
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"returns columns must be numeric (one per symbol plus an optional 'date' or "
                f"'timestamp' column): {exc}"
            ) from exc
    elif isinstance(returns, np.ndarray):
        if returns.ndim != 2:
            raise ValueError(f"returns array must be 2-D (dates x symbols), got {returns.shape}")
        columns = [str(i) for i in range(returns.shape[1])]
        matrix = returns.astype(float)
    else:
        raise TypeError(
            f"returns must be a polars or pandas DataFrame or a 2-D numpy array, "
            f"got {type(returns).__name__}"
        )
    if matrix is None or matrix.shape[1] == 0:
        raise ValueError("returns has no symbol columns")
    return np.ascontiguousarray(matrix, dtype=float), [str(c) for c in columns]


def complete_history(
    matrix: np.ndarray, symbols: Sequence[str], min_observations: int
) -> np.ndarray:
    """Rows of `matrix` where every symbol has a return (listwise deletion), shape (T', n).

    Raises InsufficientHistoryError naming the symbols with fewer than `min_observations`
    returns, or the overlap when the complete rows are fewer than `min_observations`.
    Raises ValueError for +-inf values.
    """
    if np.isinf(matrix).any():
        bad = [symbols[j] for j in np.flatnonzero(np.isinf(matrix).any(axis=0))]
        raise ValueError(f"returns of {bad} contain +-inf; fix the returns matrix upstream")
    counts = np.isfinite(matrix).sum(axis=0)
    short = np.flatnonzero(counts < min_observations)
    if short.size:
        detail = ", ".join(f"{symbols[j]} ({counts[j]})" for j in short[:20])
        more = f" and {short.size - 20} more" if short.size > 20 else ""
        raise InsufficientHistoryError(
            f"{short.size} symbol(s) have fewer than min_observations={min_observations} "
            f"returns: {detail}{more}; drop them from the selection or lower min_observations"
        )
    complete = np.isfinite(matrix).all(axis=1)
    if complete.sum() < min_observations:
        youngest = symbols[int(np.argmin(counts))]
        raise InsufficientHistoryError(
            f"only {int(complete.sum())} dates have a return for every symbol "
            f"(min_observations={min_observations}); the overlap is limited by {youngest!r} "
            f"and by gaps; drop young symbols or lower min_observations"
        )
    return matrix[complete]


def previous_holdings(
    previous_weights: Mapping[str, float] | Sequence[float] | np.ndarray | None,
    symbols: Sequence[str],
) -> tuple[np.ndarray, float]:
    """Current holdings as an (n,) vector in `symbols` order (zeros when None), and the
    weight held in names outside `symbols` (a mapping's other keys): those are sold
    whatever the new weights are, a constant turnover the optimiser cannot change."""
    if previous_weights is None:
        return np.zeros(len(symbols)), 0.0
    if isinstance(previous_weights, Mapping):
        vector = np.array([float(previous_weights.get(s, 0.0)) for s in symbols])
        inside = set(symbols)
        sold = sum(abs(float(w)) for s, w in previous_weights.items() if s not in inside)
        return vector, float(sold)
    vector = np.asarray(previous_weights, dtype=float)
    if vector.shape != (len(symbols),):
        raise ValueError(
            f"previous_weights has shape {vector.shape}; expected ({len(symbols)},) or a "
            f"dict symbol -> weight"
        )
    return vector, 0.0


def previous_vector(
    previous_weights: Mapping[str, float] | Sequence[float] | np.ndarray | None,
    symbols: Sequence[str],
) -> np.ndarray:
    """Current holdings as an (n,) vector in `symbols` order (zeros when None)."""
    return previous_holdings(previous_weights, symbols)[0]


def cap_after_sales(
    params: OptimizationParams, previous: np.ndarray, sold: float
) -> OptimizationParams:
    """`params` with the turnover cap left for the problem's names once `sold` (weight
    held in names outside the problem, sold whatever happens) is spent.

    With nothing held inside the problem the turnover is fixed (sold + the whole new
    book): the cap is checked here and dropped. Raises InfeasiblePortfolioError when the
    forced sales alone exceed the cap.
    """
    cap = params.turnover_cap
    if cap is None or sold <= 0.0:
        return params
    forced = sold + (1.0 if not previous.sum() > 0.0 else 0.0)
    if forced > cap + 1e-12:
        raise InfeasiblePortfolioError(
            f"{params.objective}: turnover_cap={cap:g} cannot be met: selling the names no "
            f"longer in the portfolio's universe alone trades {forced:.6g}"
        )
    left = None if not previous.sum() > 0.0 else max(cap - sold, 0.0)
    return replace(params, turnover_cap=left)


def expected_excess_returns(
    returns: np.ndarray, risk_free_rate: float, periods_per_year: int = PERIODS_PER_YEAR
) -> np.ndarray:
    """Annual expected excess return per symbol: periods_per_year * mean(r) - risk_free_rate.

    Args:
        returns: (T, n) daily simple returns, no NaN.
        risk_free_rate: annual rate as a decimal (0.04 = 4 % a year).
    """
    return periods_per_year * returns.mean(axis=0) - risk_free_rate


def scale_covariance(covariance: CovarianceEstimate) -> tuple[CovarianceEstimate, float]:
    """Sigma / s with s the mean variance, and s; the minimiser of any objective here is
    unchanged, and the solvers' tolerances become relative."""
    scale = float(np.mean(covariance.variances()))
    if not np.isfinite(scale) or scale <= 0.0:
        raise ValueError(
            "the covariance has zero mean variance (every return is constant); "
            "check the returns matrix"
        )
    scaled = CovarianceEstimate(
        factor=covariance.factor / np.sqrt(scale),
        diagonal=covariance.diagonal / scale,
        method=covariance.method,
        n_observations=covariance.n_observations,
        shrinkage=covariance.shrinkage,
    )
    return scaled, scale
