"""Risk parity (risk budgeting): weights whose risk contributions w_i (Sigma w)_i match
the budgets, equal by default.

Newton's method on the log-barrier form (Spinu 2013) gives the unbounded answer exactly;
with bounds, names that break one are fixed on it and the rest re-solved for the barrier
weight that makes the weights sum to 1 (a 1-D root find).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.optimize import brentq

from quant_assets.alpha.optimize._bounds import finalize_weights
from quant_assets.alpha.optimize._errors import InfeasiblePortfolioError


def risk_contributions(covariance: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """RC_i = w_i (Sigma w)_i, shape (n,); they sum to the portfolio variance w'Sigma w."""
    return weights * (covariance @ weights)


def _barrier_newton(
    sigma: np.ndarray,
    budgets: np.ndarray,
    free: np.ndarray,
    fixed_weights: np.ndarray,
    lam: float,
    start: np.ndarray,
    max_iter: int = 100,
) -> np.ndarray:
    """argmin over y_F > 0 of 0.5 y'Sigma y - lam * sum_F b_i log y_i, names off F fixed.

    Damped Newton with a fraction-to-boundary step and Armijo backtracking; the objective is
    strictly convex and self-concordant on the positive orthant, so the iteration converges
    quadratically (about 7 steps from the inverse-volatility start). Stops when the Newton
    decrement g'H^-1 g falls below 1e-22, after one last full step.
    """
    y = fixed_weights.copy()
    y[free] = start
    sigma_ff = sigma[np.ix_(free, free)]
    b = lam * budgets[free]

    def objective(values: np.ndarray) -> float:
        full = y.copy()
        full[free] = values
        return 0.5 * float(full @ sigma @ full) - float(b @ np.log(values))

    for _ in range(max_iter):
        yf = y[free]
        gradient = (sigma @ y)[free] - b / yf
        hessian = sigma_ff + np.diag(b / yf**2)
        try:
            step = -cho_solve(cho_factor(hessian, lower=True), gradient)
        except np.linalg.LinAlgError as exc:
            raise ValueError(
                "risk_parity needs a positive definite covariance; use covariance='ledoit_wolf'"
            ) from exc
        decrement = float(-gradient @ step)
        shrink = step < 0
        alpha = min(1.0, 0.99 * float(np.min(-yf[shrink] / step[shrink]))) if shrink.any() else 1.0
        if decrement <= 1e-22 and alpha == 1.0:
            y[free] = yf + step  # converged: one last full step
            break
        if decrement <= 1e-8 and alpha == 1.0:
            # Quadratic-convergence region: the full step is safe, and an Armijo test would
            # only measure rounding noise in the objective.
            y[free] = yf + step
            continue
        current = objective(yf)
        for _ in range(60):
            if objective(yf + alpha * step) <= current - 0.25 * alpha * decrement:
                break
            alpha *= 0.5
        y[free] = yf + alpha * step
    return y


def risk_parity_weights(
    covariance: np.ndarray,
    budgets: np.ndarray | None = None,
    max_weight: float | None = None,
    min_weight: float = 0.0,
) -> np.ndarray:
    """Long-only risk budgeting: w_i (Sigma w)_i / w'Sigma w = b_i (equal budgets by default).

    Without binding bounds: y* = argmin_{y > 0} 0.5 y'Sigma y - sum_i b_i log y_i, solved by
    Newton's method, and w = y* / 1'y*; the first-order condition y_i (Sigma y)_i = b_i gives
    the budgets exactly (Spinu 2013, Roncalli 2013).

    With bounds: a name whose weight breaks a bound is fixed at that bound and the others
    solve the same barrier problem with the fixed names held, for the barrier weight lam
    that makes the weights sum to 1 (1-D root find). Then the free names have risk
    contributions proportional to their budgets (w_i (Sigma w)_i = lam b_i; equal by
    default), while a capped name typically contributes less and a floored name more.
    Repeated until no free name breaks a bound; all violators of a round are fixed at once
    and stay fixed (the usual iterative capping), so with interacting bounds this is a
    well-defined heuristic rather than a unique "constrained ERC" optimum.

    Args:
        covariance: (n, n) positive definite covariance (any units).
        budgets: (n,) positive risk budgets, default 1/n each.

    Returns:
        (n,) weights summing to 1.
    """
    sigma = np.asarray(covariance, dtype=float)
    n = sigma.shape[0]
    sigma = sigma / float(np.mean(np.diag(sigma)))
    b = np.full(n, 1.0 / n) if budgets is None else np.asarray(budgets, dtype=float)
    b = b / b.sum()
    try:
        np.linalg.cholesky(sigma)
    except np.linalg.LinAlgError as exc:
        raise ValueError(
            "risk_parity needs a positive definite covariance; the sample covariance of T "
            "rows on n symbols is singular when T <= n; use covariance='ledoit_wolf'"
        ) from exc
    start = 1.0 / np.sqrt(np.diag(sigma))
    start /= np.sqrt(start @ sigma @ start)
    y = _barrier_newton(sigma, b, np.arange(n), np.zeros(n), 1.0, start)
    w = y / y.sum()
    upper = 1.0 if max_weight is None else max_weight
    fixed = np.zeros(n, dtype=bool)
    fixed_values = np.zeros(n)
    for _ in range(n):
        above = ~fixed & (w > upper + 1e-12)
        below = ~fixed & (w < min_weight - 1e-12)
        if not (above.any() or below.any()):
            break
        fixed_values[above] = upper
        fixed_values[below] = min_weight
        fixed |= above | below
        free = np.flatnonzero(~fixed)
        if free.size == 0:
            w = fixed_values.copy()
            break
        target = 1.0 - fixed_values.sum()
        # Each evaluation starts Newton from the last answer, scaled to the target mass.
        last = {"free": w[free] * target / w[free].sum()}

        def mass(
            log_lam: float,
            free: np.ndarray = free,
            last: dict[str, np.ndarray] = last,
            target: float = target,
        ) -> float:
            guess = last["free"] * np.exp(0.5 * log_lam - last.get("log_lam", 0.0) * 0.5)
            solution = _barrier_newton(sigma, b, free, fixed_values, np.exp(log_lam), guess)
            last["free"], last["log_lam"] = solution[free], log_lam
            return float(solution[free].sum()) - target

        # sum of free weights grows like sqrt(lam) for large lam; bracket in log-space.
        lo, hi = -1.0, 1.0
        while mass(lo) > 0 and lo > -60:
            lo -= 4.0
        while mass(hi) < 0 and hi < 60:
            hi += 4.0
        if mass(lo) > 0 or mass(hi) < 0:
            raise InfeasiblePortfolioError(
                "risk_parity: no equal-risk allocation of the uncapped names fits the bounds "
                f"(min_weight={min_weight}, max_weight={max_weight}); relax the bounds"
            )
        log_lam = brentq(mass, lo, hi, xtol=1e-14, rtol=1e-14, maxiter=200)
        w = _barrier_newton(sigma, b, free, fixed_values, np.exp(log_lam), last["free"])
    return finalize_weights(w, max_weight, min_weight)
