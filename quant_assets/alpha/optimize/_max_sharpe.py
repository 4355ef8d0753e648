"""Maximum Sharpe ratio: the long-only tangency portfolio within the weight bounds.

Solved by cvxpy on the homogenised convex form (a minimum-variance problem over y = k w
with mu'y = 1), and polished to the closed form Sigma_FF^-1 mu_F on the names it holds when
no bound binds. `best_excess_return` rejects, before any solve, bounds under which no
portfolio beats the risk-free rate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from quant_assets.alpha.covariance import CovarianceEstimate
from quant_assets.alpha.optimize._active_set import ACTIVE_SET_TOL
from quant_assets.alpha.optimize._bounds import finalize_weights
from quant_assets.alpha.optimize._convex import (
    DEFAULT_SOLVERS,
    cp,
    solve_with_fallback,
    variance_expression,
)
from quant_assets.alpha.optimize._errors import InfeasiblePortfolioError
from quant_assets.alpha.optimize._inputs import scale_covariance


def best_excess_return(
    expected_excess: np.ndarray, max_weight: float | None, min_weight: float
) -> float:
    """max mu'w over 1'w = 1, min_weight <= w <= max_weight (greedy fractional knapsack)."""
    n = expected_excess.shape[0]
    upper = 1.0 if max_weight is None else max_weight
    w = np.full(n, min_weight)
    remaining = 1.0 - w.sum()
    for i in np.argsort(-expected_excess):
        add = min(upper - min_weight, remaining)
        w[i] += add
        remaining -= add
        if remaining <= 0:
            break
    return float(expected_excess @ w)


def max_sharpe_weights(
    covariance: CovarianceEstimate,
    expected_excess: np.ndarray,
    max_weight: float | None = None,
    min_weight: float = 0.0,
    solvers: Sequence[str] = DEFAULT_SOLVERS,
) -> tuple[np.ndarray, str]:
    """Long-only tangency portfolio: maximise mu'w / sqrt(w' Sigma w) over the bounds.

    Homogenised convex form (Cornuejols & Tutuncu): with y = k w, k > 0,
        minimise y' Sigma y  subject to  mu'y = 1,  y >= 0,
                 min_weight * 1'y <= y <= max_weight * 1'y,
    then w = y / 1'y. mu is rescaled to max |mu| = 1 and Sigma to unit mean variance (the
    minimiser direction is unchanged). Without binding bounds the answer is polished to the
    closed form w_F proportional to Sigma_FF^-1 mu_F on the names it holds.

    Args:
        covariance: Sigma, daily units.
        expected_excess: (n,) expected excess returns (any consistent units, e.g. annual).

    Raises:
        InfeasiblePortfolioError: no portfolio within the bounds has a positive excess return.
    """
    mu = np.asarray(expected_excess, dtype=float)
    n = mu.shape[0]
    best = best_excess_return(mu, max_weight, min_weight)
    if not best > 0.0:
        raise InfeasiblePortfolioError(
            f"max_sharpe: no portfolio within the bounds (min_weight={min_weight}, "
            f"max_weight={max_weight}) has an expected return above the risk-free rate "
            f"(best excess {best:.4g}); use objective='min_variance' or lower risk_free_rate"
        )
    scaled, _ = scale_covariance(covariance)
    mu_scaled = mu / np.max(np.abs(mu))
    y = cp.Variable(n, name="scaled_weights")
    risk = variance_expression(scaled, y)
    constraints = [mu_scaled @ y == 1, y >= 0]
    if (max_weight is not None and max_weight < 1.0) or min_weight > 0.0:
        # The scale k = 1'y as its own variable keeps each bound row sparse (y_i <= u k);
        # writing u * sum(y) would put a dense n x n block into the constraint matrix.
        scale = cp.Variable(nonneg=True, name="scale")
        constraints.append(cp.sum(y) == scale)
        if max_weight is not None and max_weight < 1.0:
            constraints.append(y <= max_weight * scale)
        if min_weight > 0.0:
            constraints.append(y >= min_weight * scale)
    problem = cp.Problem(cp.Minimize(risk), constraints)

    def accept(value: np.ndarray) -> tuple[np.ndarray, float, bool]:
        total = value.sum()
        if not total > 0:
            return np.full(n, 1.0 / n), np.inf, False
        w = finalize_weights(value / total, max_weight, min_weight)
        polished = _polish_tangency(scaled, mu_scaled, w, max_weight, min_weight)
        return (polished if polished is not None else w), 0.0, True

    return solve_with_fallback(problem, y, solvers, "max_sharpe", accept)


def _polish_tangency(
    scaled: CovarianceEstimate,
    mu: np.ndarray,
    weights: np.ndarray,
    max_weight: float | None,
    min_weight: float,
) -> np.ndarray | None:
    # Only when no cap or floor binds: then the held names F satisfy w_F ~ Sigma_FF^-1 mu_F,
    # and the names left out must not improve the ratio (2 (Sigma y)_i >= kappa mu_i).
    held = weights > ACTIVE_SET_TOL
    if min_weight > 0.0:
        return None
    if max_weight is not None and np.any(weights >= max_weight - ACTIVE_SET_TOL):
        return None
    free = np.flatnonzero(held)
    sigma_ff = scaled.factor[:, free].T @ scaled.factor[:, free]
    sigma_ff[np.diag_indices_from(sigma_ff)] += scaled.diagonal[free]
    try:
        direction = np.linalg.solve(sigma_ff, mu[free])
    except np.linalg.LinAlgError:
        return None
    if np.any(direction <= 0):
        return None
    y = np.zeros_like(weights)
    y[free] = direction / (mu[free] @ direction)
    kappa = 2.0 / (mu[free] @ direction)
    gradient = 2.0 * scaled.times(y) - kappa * mu
    if np.any(gradient[~held] < -1e-9 * np.max(np.abs(2.0 * scaled.times(y)))):
        return None
    w = y / y.sum()
    if max_weight is not None and np.any(w > max_weight):
        return None
    return w
