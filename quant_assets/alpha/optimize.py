"""Portfolio weights for the Alpha cycle: one entry point, five long-only objectives.

`optimize_weights(returns, objective=...)` turns a dates x symbols frame of daily simple
returns into a dict symbol -> weight.

Minimum variance, the workhorse, is solved and then certified:

* scaling: the covariance is divided by its mean variance before any solver sees it. Raw
  daily covariances (~1e-4) sit near the solvers' absolute tolerances, so a solver can
  report "optimal" far from the optimum (OSQP stops at about twice the true minimum
  variance). The scaled problem has the same minimiser.
* active set first: block principal pivoting (exact linear solves on the free names,
  Woodbury when the covariance is a short factor) usually finds the optimum in a few
  steps, cold or warm-started from the previous rebalance.
* cvxpy fallback: otherwise cvxpy solves the problem (Clarabel, then OSQP, then SCS; the
  walk-forward reuses one DPP-compiled problem) and its answer seeds the active set,
  which makes the final weights exact.
* certificate: `min_variance_kkt_residual` checks the KKT conditions of every answer; a
  solver whose answer fails is logged and the next one is tried.

Maximum Sharpe uses cvxpy on the homogenised problem; risk parity uses Newton's method on
its log-barrier form; HRP lives in `hrp.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.optimize import brentq
from threadpoolctl import threadpool_limits

from quant_assets.alpha.covariance import (
    COVARIANCE_METHODS,
    CovarianceEstimate,
    estimate_covariance,
)
from quant_assets.alpha.hrp import cap_weights, hrp_weights
from quant_resources.errors import QuantError


class _LazyCvxpy:
    """`cp.<name>` imports cvxpy on first use: importing it costs about a second, which
    every `quant data` paid through the definitions without ever solving a problem."""

    def __getattr__(self, name: str):
        import cvxpy

        return getattr(cvxpy, name)


cp = _LazyCvxpy()

logger = logging.getLogger(__name__)

OBJECTIVES: tuple[str, ...] = ("min_variance", "max_sharpe", "risk_parity", "hrp", "equal_weight")
PERIODS_PER_YEAR = 252
DATE_COLUMNS: tuple[str, ...] = ("date", "timestamp")
DEFAULT_SOLVERS: tuple[str, ...] = ("CLARABEL", "OSQP", "SCS")

# Options on the scaled problem (unit mean variance). The active-set polish makes the final
# answer exact, so a solver only has to identify which names sit on a bound.
SOLVER_OPTIONS: dict[str, dict[str, Any]] = {
    "CLARABEL": {},
    "OSQP": {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iter": 200_000, "polish": True},
    "SCS": {"eps_abs": 1e-8, "eps_rel": 1e-8, "max_iters": 200_000},
}

ACTIVE_SET_TOL = 1e-7  # a weight this close to a bound (or to its previous value) is on it
KKT_EXACT_TOL = 1e-9  # relative KKT residual accepted without question (polished answers)
KKT_ACCEPT_TOL = 1e-3  # relative KKT residual accepted from an unpolished solver answer


class InfeasiblePortfolioError(QuantError, ValueError):
    """The bounds or the data admit no portfolio for the requested objective."""


class InsufficientHistoryError(QuantError, ValueError):
    """Some symbols have too few return observations to estimate a covariance."""


class SolverError(QuantError, RuntimeError):
    """Every installed solver failed on a portfolio problem."""


# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------


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


def check_bounds(
    objective: str, n_assets: int, max_weight: float | None, min_weight: float
) -> None:
    """Raise InfeasiblePortfolioError when no fully invested portfolio fits the bounds."""
    if n_assets < 1:
        raise InfeasiblePortfolioError(f"{objective}: no symbols to allocate to")
    if not np.isfinite(min_weight) or min_weight < 0.0:
        raise InfeasiblePortfolioError(
            f"{objective}: min_weight={min_weight} is negative; portfolios are long-only, "
            f"use min_weight >= 0"
        )
    if max_weight is not None:
        if not np.isfinite(max_weight) or max_weight <= 0.0:
            raise InfeasiblePortfolioError(f"{objective}: max_weight={max_weight} must be > 0")
        if max_weight < min_weight:
            raise InfeasiblePortfolioError(
                f"{objective}: max_weight={max_weight} is below min_weight={min_weight}"
            )
        if max_weight * n_assets < 1.0 - 1e-12:
            raise InfeasiblePortfolioError(
                f"{objective}: max_weight={max_weight} x {n_assets} symbols = "
                f"{max_weight * n_assets:.6g} < 1, so the weights cannot sum to 1; raise "
                f"max_weight to at least {1.0 / n_assets:.6g} or select more symbols"
            )
    if min_weight * n_assets > 1.0 + 1e-12:
        raise InfeasiblePortfolioError(
            f"{objective}: min_weight={min_weight} x {n_assets} symbols = "
            f"{min_weight * n_assets:.6g} > 1, so the weights cannot sum to 1; lower "
            f"min_weight to at most {1.0 / n_assets:.6g} or select fewer symbols"
        )


def _previous_vector(
    previous_weights: Mapping[str, float] | Sequence[float] | np.ndarray | None,
    symbols: Sequence[str],
) -> np.ndarray:
    if previous_weights is None:
        return np.zeros(len(symbols))
    if isinstance(previous_weights, Mapping):
        # Symbols absent from the mapping are not held; held symbols absent from `symbols`
        # are sold whatever the new weights are, a constant the optimiser can ignore.
        return np.array([float(previous_weights.get(s, 0.0)) for s in symbols])
    vector = np.asarray(previous_weights, dtype=float)
    if vector.shape != (len(symbols),):
        raise ValueError(
            f"previous_weights has shape {vector.shape}; expected ({len(symbols)},) or a "
            f"dict symbol -> weight"
        )
    return vector


def finalize_weights(
    weights: np.ndarray, max_weight: float | None, min_weight: float
) -> np.ndarray:
    """Clip solver noise (tiny negatives, cap overshoots) and renormalise to sum 1.

    The result lies in [min_weight, max_weight] exactly and sums to 1 within 1e-12.
    """
    w = np.asarray(weights, dtype=float)
    upper = 1.0 if max_weight is None else max_weight
    w = np.clip(np.nan_to_num(w, nan=0.0), min_weight, upper)
    if abs(w.sum() - 1.0) <= 1e-15:
        return w
    return cap_weights(w, max_weight, min_weight)


# ---------------------------------------------------------------------------------------
# Solving with fallback
# ---------------------------------------------------------------------------------------


def _solve_with_fallback(
    problem: cp.Problem,
    variable: cp.Variable,
    solvers: Sequence[str],
    label: str,
    accept: Any = None,
) -> tuple[np.ndarray, str]:
    """Solve `problem` with the first solver whose answer is optimal and accepted.

    `accept(value) -> (weights, residual, ok)` post-processes and certifies an answer;
    a rejected answer is logged and the next solver is tried. The best rejected answer is
    returned (with a warning) only if no solver produced an accepted one and its residual
    is below 1e-2; otherwise SolverError.
    """
    installed = set(cp.installed_solvers())
    failures: list[str] = []
    best: tuple[float, np.ndarray, str] | None = None
    for position, name in enumerate(solvers):
        if name not in installed:
            continue
        try:
            problem.solve(solver=name, **SOLVER_OPTIONS.get(name, {}))
        except (cp.SolverError, ArithmeticError, ValueError) as exc:
            failures.append(f"{name}: {exc}")
            logger.warning("%s: solver %s failed (%s)", label, name, exc)
            continue
        if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or variable.value is None:
            failures.append(f"{name}: status {problem.status}")
            logger.warning("%s: solver %s returned status %s", label, name, problem.status)
            continue
        value = np.asarray(variable.value, dtype=float).copy()
        if accept is None:
            ok, result, residual = True, value, 0.0
        else:
            result, residual, ok = accept(value)
        if ok:
            if position > 0 or failures:
                logger.warning("%s: solved with fallback solver %s", label, name)
            return result, name
        failures.append(f"{name}: KKT residual {residual:.2e}")
        logger.warning(
            "%s: solver %s answer failed the optimality check (KKT residual %.2e)",
            label,
            name,
            residual,
        )
        if best is None or residual < best[0]:
            best = (residual, result, name)
    if best is not None and best[0] < 1e-2:
        logger.warning(
            "%s: using the best uncertified answer (%s, KKT residual %.2e)", label, best[2], best[0]
        )
        return best[1], best[2]
    raise SolverError(
        f"{label}: no installed solver produced an optimal portfolio ({'; '.join(failures)}); "
        f"check the returns for constant or duplicated columns"
    )


# ---------------------------------------------------------------------------------------
# Minimum variance
# ---------------------------------------------------------------------------------------


@dataclass
class _ActiveSet:
    """Which names sit on a bound (or on their previous weight) in a min-variance answer."""

    at_lower: np.ndarray
    at_upper: np.ndarray
    at_previous: np.ndarray
    sign: np.ndarray  # sign(w - previous) for the free names when penalised


def _multiplier_ranges(
    gradient: np.ndarray,
    w: np.ndarray,
    previous: np.ndarray | None,
    penalty: float,
    at_lower: np.ndarray,
    at_upper: np.ndarray,
    at_previous: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    # Name i is stationary for the budget multiplier nu iff
    #   nu in gradient_i + penalty * d|w_i - previous_i| + (normal cone of its bounds):
    # a point for a free name, an interval on its previous weight, a half-line on a bound.
    low_sub = np.zeros_like(w)
    high_sub = np.zeros_like(w)
    if penalty > 0.0 and previous is not None:
        sign = np.sign(w - previous)
        on_previous = at_previous | (sign == 0)
        low_sub = np.where(on_previous, -penalty, penalty * sign)
        high_sub = np.where(on_previous, penalty, penalty * sign)
    nu_low = np.where(at_lower, -np.inf, gradient + low_sub)
    nu_high = np.where(at_upper, np.inf, gradient + high_sub)
    return nu_low, nu_high


def min_variance_kkt_residual(
    covariance: CovarianceEstimate,
    weights: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    previous: np.ndarray | None = None,
    penalty: float = 0.0,
    tol: float = ACTIVE_SET_TOL,
    active_set: _ActiveSet | None = None,
) -> float:
    """Relative KKT residual of min w'Sw + penalty ||w - previous||_1, 1'w = 1, lower <= w <= upper.

    Each name i allows a range of budget multipliers nu for which 0 lies in
    2 (S w)_i + penalty * d|w_i - previous_i| - nu + N_[lower_i, upper_i](w_i):
    a point for a free name, a half-line for a name on a bound. The weights are optimal iff
    the ranges intersect (and they are feasible); the residual is the gap between the
    highest lower end and the lowest upper end, divided by max_i |2 (S w)_i|, plus any
    bound or budget violation. Zero (up to rounding) means optimal.

    Args:
        covariance: Sigma (any units; the residual is scale-free).
        weights, lower, upper: (n,) arrays.
        previous: (n,) previous weights, used only when penalty > 0.
        penalty: L1 turnover penalty in the units of Sigma.
        tol: distance at which a weight counts as on a bound or on its previous value.
        active_set: names known to be on a bound (e.g. read off a solver's duals), for
            answers that approach their bounds without reaching them.
    """
    w = np.asarray(weights, dtype=float)
    gradient = 2.0 * covariance.times(w)
    at_lower, at_upper = w <= lower + tol, w >= upper - tol
    at_previous = np.zeros(w.shape, dtype=bool)
    if penalty > 0.0 and previous is not None:
        at_previous = np.abs(w - previous) <= tol
    if active_set is not None:
        at_lower = at_lower | active_set.at_lower
        at_upper = at_upper | active_set.at_upper
        at_previous = at_previous | active_set.at_previous
    w_sided = np.where(at_previous, previous, w) if previous is not None else w
    nu_low, nu_high = _multiplier_ranges(
        gradient, w_sided, previous, penalty, at_lower, at_upper, at_previous
    )
    gap = float(np.max(nu_low) - np.min(nu_high))
    scale = float(np.max(np.abs(gradient))) or 1.0
    infeasible = max(
        abs(float(w.sum()) - 1.0),
        float(np.max(lower - w, initial=0.0)),
        float(np.max(w - upper, initial=0.0)),
    )
    return max(gap, 0.0) / scale + infeasible


def _guess_active_set(
    w: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    previous: np.ndarray,
    penalty: float,
    duals: dict[str, np.ndarray | None],
) -> _ActiveSet:
    # An interior-point answer approaches a bound without reaching it; complementarity
    # (slack * dual ~ 0) tells which side won: the bound is active when its dual exceeds
    # the slack. Without duals, fall back to a distance test.
    def active(slack: np.ndarray, dual: np.ndarray | None) -> np.ndarray:
        hit = slack <= ACTIVE_SET_TOL
        if dual is not None:
            hit |= np.asarray(dual, dtype=float) > slack
        return hit

    at_lower = active(w - lower, duals.get("lower"))
    at_upper = active(upper - w, duals.get("upper")) & ~at_lower
    at_previous = np.zeros_like(at_lower)
    sign = np.zeros_like(w)
    if penalty > 0.0:
        buy, sell = duals.get("buy"), duals.get("sell")
        dual = None if buy is None or sell is None else np.minimum(buy, sell)
        at_previous = active(np.abs(w - previous), dual) & ~(at_lower | at_upper)
        sign = np.sign(w - previous)
    return _ActiveSet(at_lower, at_upper, at_previous, sign)


def _solve_on_subset(
    covariance: CovarianceEstimate, subset: np.ndarray, rhs: np.ndarray
) -> np.ndarray | None:
    """Solve Sigma[subset, subset] x = rhs, or None if that block is singular.

    With a positive diagonal D and fewer factor rows k than names m, the Woodbury identity
    (D + F'F)^-1 = D^-1 - D^-1 F' (I + F D^-1 F')^-1 F D^-1 needs only a k x k Cholesky
    factor: O(k^2 m) instead of O(m^3).
    """
    factor = covariance.factor[:, subset]
    diagonal = covariance.diagonal[subset]
    k, m = factor.shape
    try:
        if k < m and np.all(diagonal > 0.0):
            scaled = factor / diagonal
            inner = scaled @ factor.T
            inner[np.diag_indices_from(inner)] += 1.0
            chol = cho_factor(inner, lower=True)
            first = rhs / diagonal[:, None]
            return first - (scaled.T @ cho_solve(chol, factor @ first))
        block = factor.T @ factor
        block[np.diag_indices_from(block)] += diagonal
        return cho_solve(cho_factor(block, lower=True), rhs)
    except np.linalg.LinAlgError:
        return None


def _active_set_min_variance(
    covariance: CovarianceEstimate,
    active_set: _ActiveSet,
    lower: np.ndarray,
    upper: np.ndarray,
    previous: np.ndarray,
    penalty: float,
    max_rounds: int = 60,
) -> np.ndarray | None:
    """Exact minimiser by block principal pivoting from a guessed active set.

    Given the fixed names B (on a bound, or on their previous weight when penalised) the
    free names F solve the linear KKT system
        2 S_FF w_F + 2 S_FB w_B + penalty * sign_F = nu 1,   1'w_F = 1 - 1'w_B
    (one Cholesky factor of S_FF, or of a k x k matrix via Woodbury). The answer is optimal
    iff every free name is inside its bounds (and on its side of the previous weight) and
    every fixed name accepts nu in its multiplier range. Otherwise all violators switch
    sides at once (block principal pivoting, Judice & Pires 1994); when that stops reducing
    the number of violators for 3 rounds, only the last violator switches (Murty's rule, as
    in Kim & Park 2011), which cannot cycle. Returns None when S_FF is singular or the
    rounds run out; the callers then use a convex solver.
    """
    at_lower = active_set.at_lower.copy()
    at_upper = active_set.at_upper.copy() & ~at_lower
    at_previous = active_set.at_previous.copy() & ~(at_lower | at_upper)
    sign = active_set.sign.copy()
    movable = lower < upper
    best_count, patience = np.inf, 3
    for _ in range(max_rounds):
        fixed = at_lower | at_upper | at_previous
        free = np.flatnonzero(~fixed)
        w = np.where(at_lower, lower, np.where(at_upper, upper, 0.0))
        w = np.where(at_previous, previous, w)
        if free.size == 0:
            # Every name pinned (typically all on their previous weight under a heavy
            # penalty): optimal iff the budget holds and the multiplier ranges intersect.
            if abs(w.sum() - 1.0) > 1e-12:
                return None
            gradient = 2.0 * covariance.times(w)
            nu_low, nu_high = _multiplier_ranges(
                gradient, w, previous, penalty, at_lower, at_upper, at_previous
            )
            slack = 1e-11 * max(float(np.max(np.abs(gradient))), 1e-300)
            return w if np.max(nu_low) <= np.min(nu_high) + slack else None
        linear = covariance.times(w)[free] + 0.5 * penalty * sign[free]
        solved = _solve_on_subset(covariance, free, np.column_stack([np.ones(free.size), linear]))
        if solved is None:
            return None  # singular on the free set (e.g. sample covariance with T < n)
        nu_half = (1.0 - w.sum() + solved[:, 1].sum()) / solved[:, 0].sum()
        w[free] = nu_half * solved[:, 0] - solved[:, 1]
        nu = 2.0 * nu_half

        # Primal side: free names inside their bounds and on the side of their previous
        # weight that the penalty's sign assumed.
        is_free = ~fixed
        too_low = is_free & (w < lower - 1e-13)
        too_high = is_free & (w > upper + 1e-13)
        crossed = np.zeros_like(is_free)
        if penalty > 0.0:
            crossed = is_free & (np.sign(w - previous) * sign < 0) & ~(too_low | too_high)
        # Dual side: fixed names accept nu in their multiplier range.
        gradient = 2.0 * covariance.times(w)
        nu_low, nu_high = _multiplier_ranges(
            gradient, w, previous, penalty, at_lower, at_upper, at_previous
        )
        tol = 1e-11 * max(float(np.max(np.abs(gradient))), 1e-300)
        rises = fixed & movable & (nu > nu_high + tol)
        falls = fixed & movable & (nu < nu_low - tol)

        violators = too_low | too_high | crossed | rises | falls
        count = int(violators.sum())
        if count == 0:
            return np.clip(w, lower, upper)
        if count < best_count:
            best_count, patience = count, 3
        elif patience > 0:
            patience -= 1
        else:
            only = np.zeros_like(violators)
            only[np.flatnonzero(violators)[-1]] = True
            too_low, too_high, crossed = too_low & only, too_high & only, crossed & only
            rises, falls = rises & only, falls & only
        if penalty > 0.0:
            # A freed name moves up (rises) or down (falls); the penalty's sign is the side
            # of its previous weight it moves into.
            up_sign = np.where(at_previous | (previous <= w), 1.0, -1.0)
            down_sign = np.where(at_previous | (previous >= w), -1.0, 1.0)
            sign = np.where(rises, up_sign, np.where(falls, down_sign, sign))
        at_lower = (at_lower & ~rises) | too_low
        at_upper = (at_upper & ~falls) | too_high
        at_previous = (at_previous & ~(rises | falls)) | crossed
    return None


def _scaled(covariance: CovarianceEstimate) -> tuple[CovarianceEstimate, float]:
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


@dataclass
class SolveInfo:
    """What the last `MinVarianceProblem.solve` did: solver used and KKT residual."""

    solver: str = ""
    kkt_residual: float = float("nan")
    polished: bool = False


class MinVarianceProblem:
    """Long-only minimum-variance problem, compiled once and re-solved (cvxpy DPP).

        minimise   w' S w + turnover_penalty * ||w - w_prev||_1
        subject to 1'w = 1,  min_weight <= w_i <= max_weight for active names,  w_i = 0 else

    with S = periods_per_year * Sigma_daily (so turnover_penalty is in annual-variance units
    per unit of turnover sum_i |w_i - w_prev_i|). The solver sees Sigma scaled to unit mean
    variance and the penalty scaled alike, which leaves the minimiser unchanged. Every
    answer is polished to the exact minimiser of its active set and must pass the KKT
    check `min_variance_kkt_residual`.

    Active set first: before calling a solver, block principal pivoting
    (`_active_set_min_variance`) starts from the names that sat on a bound in the previous
    answer (warm start; month to month this converges in 2-4 linear solves) or, on a first
    solve, from every name free (cold start, ~5-15 solves); under a turnover penalty it also
    tries "keep the current holdings" (hold start). Its answer is kept only if it passes the
    same KKT check (relative residual <= 1e-9); otherwise, or when the free block is
    singular (sample covariance with fewer dates than names), the cvxpy problem is solved
    as described above. `info.solver` says which path produced the weights; both give the
    same minimiser (it is unique when Sigma is positive definite).

    Args:
        n_assets: number of names n.
        max_weight: cap per name, None for no cap.
        min_weight: floor per active name, >= 0.
        turnover_penalty: L1 penalty on ||w - previous_weights||_1 (annual-variance units).
        factor_rows: rows of the covariance factor; default n_assets (dense form).
        periods_per_year: annualisation of the daily covariance for the penalty.
        solvers: cvxpy solver names, tried in order.
        active_set_first: try block principal pivoting before the convex solver.
    """

    def __init__(
        self,
        n_assets: int,
        max_weight: float | None = None,
        min_weight: float = 0.0,
        turnover_penalty: float = 0.0,
        *,
        factor_rows: int | None = None,
        periods_per_year: int = PERIODS_PER_YEAR,
        solvers: Sequence[str] = DEFAULT_SOLVERS,
        active_set_first: bool = True,
    ) -> None:
        check_bounds("min_variance", n_assets, max_weight, min_weight)
        if turnover_penalty < 0 or not np.isfinite(turnover_penalty):
            raise ValueError(f"turnover_penalty={turnover_penalty} must be finite and >= 0")
        self.n_assets = n_assets
        self.max_weight = max_weight
        self.min_weight = float(min_weight)
        self.turnover_penalty = float(turnover_penalty)
        self.periods_per_year = periods_per_year
        self.solvers = tuple(solvers)
        self.factor_rows = n_assets if factor_rows is None else int(factor_rows)
        self.is_dpp = self.factor_rows < n_assets
        self.info = SolveInfo()
        self.active_set_first = active_set_first
        self._last_weights: np.ndarray | None = None
        if self.is_dpp:
            self._build_dpp()

    def _build_dpp(self) -> None:
        n, k = self.n_assets, self.factor_rows
        self._w = cp.Variable(n, name="weights")
        self._factor = cp.Parameter((k, n), name="factor")
        self._diag_sqrt = cp.Parameter(n, nonneg=True, name="diag_sqrt")
        self._lower = cp.Parameter(n, nonneg=True, name="lower")
        self._upper = cp.Parameter(n, nonneg=True, name="upper")
        risk = cp.sum_squares(self._factor @ self._w) + cp.sum_squares(
            cp.multiply(self._diag_sqrt, self._w)
        )
        self._constraints = {"lower": self._w >= self._lower, "upper": self._w <= self._upper}
        if self.turnover_penalty > 0.0:
            # penalty * norm1(w - prev) with both as parameters is not DPP; an epigraph
            # variable makes the penalty multiply a parameter-free expression.
            self._previous = cp.Parameter(n, name="previous")
            self._penalty = cp.Parameter(nonneg=True, name="penalty")
            trade = cp.Variable(n, nonneg=True, name="trade")
            self._constraints["buy"] = trade >= self._w - self._previous
            self._constraints["sell"] = trade >= self._previous - self._w
            risk = risk + self._penalty * cp.sum(trade)
        constraints = [cp.sum(self._w) == 1, *self._constraints.values()]
        self._problem = cp.Problem(cp.Minimize(risk), constraints)
        assert self._problem.is_dpp()

    def solve(
        self,
        covariance: CovarianceEstimate | np.ndarray,
        previous_weights: np.ndarray | None = None,
        active: np.ndarray | None = None,
    ) -> np.ndarray:
        """Minimum-variance weights, shape (n_assets,), zeros for inactive names.

        Args:
            covariance: covariance of the active names (daily units), a CovarianceEstimate
                or a dense (m, m) matrix, m = number of active names.
            previous_weights: (n_assets,) current holdings for the turnover penalty.
            active: (n_assets,) boolean mask of names that may be held; default all.

        Raises:
            InfeasiblePortfolioError: the active names cannot satisfy the bounds.
            SolverError: every solver failed.
        """
        n = self.n_assets
        mask = np.ones(n, dtype=bool) if active is None else np.asarray(active, dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"active must have shape ({n},), got {mask.shape}")
        m = int(mask.sum())
        check_bounds("min_variance", m, self.max_weight, self.min_weight)
        if not isinstance(covariance, CovarianceEstimate):
            covariance = CovarianceEstimate.from_matrix(covariance)
        if covariance.n_assets != m:
            raise ValueError(
                f"covariance covers {covariance.n_assets} names but {m} are active; pass the "
                f"covariance of the active names only"
            )
        previous = np.zeros(n) if previous_weights is None else np.asarray(previous_weights)
        if previous.shape != (n,):
            raise ValueError(f"previous_weights must have shape ({n},), got {previous.shape}")
        scaled, scale = _scaled(covariance)
        penalty = self.turnover_penalty / (self.periods_per_year * scale)
        upper_value = 1.0 if self.max_weight is None else self.max_weight
        lower = np.full(m, self.min_weight)
        upper = np.full(m, upper_value)
        prev_active = previous[mask]

        if m == 1:
            weights = np.zeros(n)
            weights[mask] = 1.0
            self.info = SolveInfo(solver="closed form", kkt_residual=0.0, polished=True)
            return weights

        warm = self._active_set_solution(scaled, mask, lower, upper, prev_active, penalty)
        if warm is not None:
            return warm

        def accept(value: np.ndarray) -> tuple[np.ndarray, float, bool]:
            on_active = (lambda x: x[mask]) if value.shape[0] == n else (lambda x: x)
            w = finalize_weights(on_active(value), self.max_weight, self.min_weight)
            duals = {
                key: None if c.dual_value is None else on_active(np.asarray(c.dual_value))
                for key, c in constraints.items()
            }
            guess = _guess_active_set(w, lower, upper, prev_active, penalty, duals)
            polished = _active_set_min_variance(scaled, guess, lower, upper, prev_active, penalty)
            if polished is not None:
                polished = finalize_weights(polished, self.max_weight, self.min_weight)
                residual = min_variance_kkt_residual(
                    scaled, polished, lower, upper, prev_active, penalty
                )
                if residual <= KKT_EXACT_TOL:
                    self.info = SolveInfo(kkt_residual=residual, polished=True)
                    return polished, residual, True
            residual = min_variance_kkt_residual(
                scaled, w, lower, upper, prev_active, penalty, active_set=guess
            )
            self.info = SolveInfo(kkt_residual=residual, polished=False)
            return w, residual, residual <= KKT_ACCEPT_TOL

        if self.is_dpp:
            self._set_parameters(scaled, mask, previous, penalty)
            problem, variable, constraints = self._problem, self._w, self._constraints
        else:
            problem, variable, constraints = self._dense_problem(scaled, prev_active, penalty)
        result, solver = _solve_with_fallback(
            problem, variable, self.solvers, "min_variance", accept
        )
        self.info.solver = solver
        weights = np.zeros(n)
        weights[mask] = result
        self._last_weights = weights
        return weights

    def _active_set_solution(
        self,
        scaled: CovarianceEstimate,
        mask: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
        previous: np.ndarray,
        penalty: float,
    ) -> np.ndarray | None:
        if not self.active_set_first:
            return None
        m = int(mask.sum())
        none = np.zeros(m, dtype=bool)
        seeds: list[tuple[str, _ActiveSet]] = []
        if self._last_weights is not None:
            # Names new to the active set start on their lower bound; pivoting frees them
            # if their multipliers say so. Under a penalty, free names keep the side of
            # their holdings that the previous answer traded towards.
            last = self._last_weights[mask]
            at_lower = last <= lower + ACTIVE_SET_TOL
            at_upper = (last >= upper - ACTIVE_SET_TOL) & ~at_lower
            sign = np.where(last >= previous, 1.0, -1.0) if penalty > 0 else np.zeros(m)
            seeds.append(("active-set (warm start)", _ActiveSet(at_lower, at_upper, none, sign)))
        else:
            sign = np.where(1.0 / m >= previous, 1.0, -1.0) if penalty > 0 else np.zeros(m)
            seeds.append(("active-set (cold start)", _ActiveSet(none, none, none, sign)))
        holdings_feasible = (
            abs(previous.sum() - 1.0) <= 1e-9
            and np.all(previous >= lower - 1e-12)
            and np.all(previous <= upper + 1e-12)
        )
        if penalty > 0 and holdings_feasible:
            # A heavy penalty makes "keep the holdings" optimal: start from no trade.
            at_lower = previous <= lower + ACTIVE_SET_TOL
            at_upper = (previous >= upper - ACTIVE_SET_TOL) & ~at_lower
            hold = _ActiveSet(at_lower, at_upper, ~(at_lower | at_upper), np.zeros(m))
            # Try it first when the last answer was a hold: a penalty that binds tends to
            # keep binding, and a failed seed costs up to `max_rounds` linear solves.
            position = 0 if self.info.solver == "active-set (hold start)" else len(seeds)
            seeds.insert(position, ("active-set (hold start)", hold))
        for label, guess in seeds:
            polished = _active_set_min_variance(scaled, guess, lower, upper, previous, penalty)
            if polished is None:
                continue
            polished = finalize_weights(polished, self.max_weight, self.min_weight)
            residual = min_variance_kkt_residual(scaled, polished, lower, upper, previous, penalty)
            if residual > KKT_EXACT_TOL:
                continue
            self.info = SolveInfo(solver=label, kkt_residual=residual, polished=True)
            weights = np.zeros(self.n_assets)
            weights[mask] = polished
            self._last_weights = weights
            return weights
        return None

    def _set_parameters(
        self, scaled: CovarianceEstimate, mask: np.ndarray, previous: np.ndarray, penalty: float
    ) -> None:
        k, n = self.factor_rows, self.n_assets
        rows = scaled.factor.shape[0]
        if rows > k:
            raise ValueError(
                f"the covariance factor has {rows} rows but the problem was built with "
                f"factor_rows={k}; build MinVarianceProblem with factor_rows >= the lookback"
            )
        factor = np.zeros((k, n))
        factor[:rows, mask] = scaled.factor
        diag_sqrt = np.ones(n)  # inactive names: any positive curvature, their bounds are 0
        diag_sqrt[mask] = np.sqrt(scaled.diagonal)
        upper_value = 1.0 if self.max_weight is None else self.max_weight
        self._factor.value = factor
        self._diag_sqrt.value = diag_sqrt
        self._lower.value = np.where(mask, self.min_weight, 0.0)
        self._upper.value = np.where(mask, upper_value, 0.0)
        if self.turnover_penalty > 0.0:
            self._previous.value = previous
            self._penalty.value = penalty

    def _dense_problem(
        self, scaled: CovarianceEstimate, previous: np.ndarray, penalty: float
    ) -> tuple[cp.Problem, cp.Variable, dict[str, cp.Constraint]]:
        m = scaled.n_assets
        w = cp.Variable(m, name="weights")
        if scaled.factor.shape[0] < m:
            risk = cp.sum_squares(scaled.factor @ w) + cp.sum_squares(
                cp.multiply(np.sqrt(scaled.diagonal), w)
            )
        else:
            risk = cp.quad_form(w, cp.psd_wrap(scaled.matrix()))
        upper = 1.0 if self.max_weight is None else self.max_weight
        constraints = {"lower": w >= self.min_weight, "upper": w <= upper}
        if penalty > 0.0:
            trade = cp.Variable(m, nonneg=True, name="trade")
            constraints["buy"] = trade >= w - previous
            constraints["sell"] = trade >= previous - w
            risk = risk + penalty * cp.sum(trade)
        problem = cp.Problem(cp.Minimize(risk), [cp.sum(w) == 1, *constraints.values()])
        return problem, w, constraints


# ---------------------------------------------------------------------------------------
# Maximum Sharpe ratio
# ---------------------------------------------------------------------------------------


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
    scaled, _ = _scaled(covariance)
    mu_scaled = mu / np.max(np.abs(mu))
    y = cp.Variable(n, name="scaled_weights")
    if scaled.factor.shape[0] < n:
        risk = cp.sum_squares(scaled.factor @ y) + cp.sum_squares(
            cp.multiply(np.sqrt(scaled.diagonal), y)
        )
    else:
        risk = cp.quad_form(y, cp.psd_wrap(scaled.matrix()))
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

    return _solve_with_fallback(problem, y, solvers, "max_sharpe", accept)


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


# ---------------------------------------------------------------------------------------
# Risk parity
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------


def expected_excess_returns(
    returns: np.ndarray, risk_free_rate: float, periods_per_year: int = PERIODS_PER_YEAR
) -> np.ndarray:
    """Annual expected excess return per symbol: periods_per_year * mean(r) - risk_free_rate.

    Args:
        returns: (T, n) daily simple returns, no NaN.
        risk_free_rate: annual rate as a decimal (0.04 = 4 % a year).
    """
    return periods_per_year * returns.mean(axis=0) - risk_free_rate


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
        return np.full(n, 1.0 / n), "closed form"
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
        return dict(zip(symbols, [1.0 / len(symbols)] * len(symbols), strict=True))
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
        previous_weights=_previous_vector(previous_weights, symbols),
        turnover_penalty=turnover_penalty,
        periods_per_year=periods_per_year,
        solvers=solvers,
    )
    return weights
