"""Maximum Sharpe ratio: the long-only tangency portfolio within the weight bounds.

Solved by cvxpy on the homogenised convex form (a minimum-variance problem over y = k w
with mu'y = 1), and polished to the closed form Sigma_FF^-1 mu_F on the names it holds when
no bound (and no turnover cap) binds. `best_excess_return` rejects, before any solve,
bounds under which no portfolio beats the risk-free rate. A turnover cap stays linear in
the homogenised form: sum |y - k w_prev| <= cap k. A turnover penalty does not (it would
be k * penalty * ||w - w_prev||_1, not convex in (y, k)), so max_sharpe takes a cap only.
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
from quant_assets.alpha.optimize._errors import InfeasiblePortfolioError, SolverError
from quant_assets.alpha.optimize._inputs import scale_covariance
from quant_assets.alpha.params import OptimizationParams


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
    params: OptimizationParams | None = None,
    previous: np.ndarray | None = None,
    solvers: Sequence[str] = DEFAULT_SOLVERS,
) -> tuple[np.ndarray, str]:
    """Long-only tangency portfolio: maximise mu'w / sqrt(w' Sigma w) over the bounds.

    Homogenised convex form (Cornuejols & Tutuncu): with y = k w, k > 0,
        minimise y' Sigma y  subject to  mu'y = 1,  y >= 0,
                 min_weight * 1'y <= y <= max_weight * 1'y,
                 sum |y - k w_prev| <= turnover_cap * k   (when a cap is set and held),
    then w = y / 1'y. mu is rescaled to max |mu| = 1 and Sigma to unit mean variance (the
    minimiser direction is unchanged). Without binding bounds or cap the answer is
    polished to the closed form w_F proportional to Sigma_FF^-1 mu_F on the names it holds.

    Args:
        covariance: Sigma, daily units.
        expected_excess: (n,) expected excess returns (any consistent units, e.g. annual).
        params: bounds and turnover_cap (objective "max_sharpe"; a turnover_penalty is
            refused by OptimizationParams); default no bounds.
        previous: (n,) holdings for the cap; the cap does not apply from cash.

    Raises:
        InfeasiblePortfolioError: no portfolio within the bounds (and the cap) has a
            positive excess return.
    """
    params = OptimizationParams(objective="max_sharpe") if params is None else params
    max_weight, min_weight = params.max_weight, params.min_weight
    mu = np.asarray(expected_excess, dtype=float)
    n = mu.shape[0]
    best = best_excess_return(mu, max_weight, min_weight)
    if not best > 0.0:
        raise InfeasiblePortfolioError(
            f"max_sharpe: no portfolio within the bounds (min_weight={min_weight}, "
            f"max_weight={max_weight}) has an expected return above the risk-free rate "
            f"(best excess {best:.4g}); use objective='min_variance' or lower risk_free_rate"
        )
    held = np.zeros(n) if previous is None else np.asarray(previous, dtype=float)
    cap = params.turnover_cap if held.sum() > 0.0 else None
    scaled, _ = scale_covariance(covariance)
    mu_scaled = mu / np.max(np.abs(mu))
    y = cp.Variable(n, name="scaled_weights")
    risk = variance_expression(scaled, y)
    constraints = [mu_scaled @ y == 1, y >= 0]
    if (max_weight is not None and max_weight < 1.0) or min_weight > 0.0 or cap is not None:
        # The scale k = 1'y as its own variable keeps each bound row sparse (y_i <= u k);
        # writing u * sum(y) would put a dense n x n block into the constraint matrix.
        scale = cp.Variable(nonneg=True, name="scale")
        constraints.append(cp.sum(y) == scale)
        if max_weight is not None and max_weight < 1.0:
            constraints.append(y <= max_weight * scale)
        if min_weight > 0.0:
            constraints.append(y >= min_weight * scale)
        if cap is not None:
            trade = cp.Variable(n, nonneg=True, name="scaled_trade")
            constraints += [
                trade >= y - scale * held,
                trade >= scale * held - y,
                cp.sum(trade) <= cap * scale,
            ]
    problem = cp.Problem(cp.Minimize(risk), constraints)

    def accept(value: np.ndarray) -> tuple[np.ndarray, float, bool]:
        total = value.sum()
        if not total > 0:
            return np.full(n, 1.0 / n), np.inf, False
        w = finalize_weights(value / total, max_weight, min_weight)
        polished = _polish_tangency(scaled, mu_scaled, w, max_weight, min_weight)
        if polished is not None and (cap is None or _turnover(polished, held) <= cap):
            return polished, 0.0, True
        if cap is not None:
            w = _within_cap(w, held, cap, max_weight, min_weight)
            excess = max(_turnover(w, held) - cap, 0.0)
            return w, excess, excess <= 1e-9
        return w, 0.0, True

    try:
        return solve_with_fallback(problem, y, solvers, "max_sharpe", accept)
    except SolverError as exc:
        if cap is not None and "infeasible" in str(exc):
            raise InfeasiblePortfolioError(
                f"max_sharpe: no portfolio within turnover_cap={cap:g} of the holdings has a "
                f"positive expected excess return within the bounds; raise turnover_cap or "
                f"use objective='min_variance'"
            ) from exc
        raise


def _turnover(weights: np.ndarray, previous: np.ndarray) -> float:
    return float(np.abs(weights - previous).sum())


def _within_cap(
    weights: np.ndarray,
    previous: np.ndarray,
    cap: float,
    max_weight: float | None,
    min_weight: float,
) -> np.ndarray:
    """Solver noise can leave the turnover a hair above the cap; when the holdings are
    themselves a feasible portfolio, step back towards them (a convex combination of two
    feasible portfolios is feasible) until the cap holds exactly."""
    traded = _turnover(weights, previous)
    upper = 1.0 if max_weight is None else max_weight
    holdings_feasible = (
        abs(previous.sum() - 1.0) <= 1e-12
        and previous.min() >= min_weight - 1e-12
        and previous.max() <= upper + 1e-12
    )
    if traded <= cap or not holdings_feasible:
        return weights
    return previous + (cap / traded) * (weights - previous)


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
