"""The exact min-variance solver and its certificate: block principal pivoting on the
active set, and the KKT residual that every min-variance answer must pass.

`active_set_min_variance` finds the exact minimiser of

    w' S w + penalty * ||w - previous||_1,   1'w = 1,   lower <= w <= upper

from a guessed set of names on a bound (or on their previous weight), with exact linear
solves on the free names (Woodbury when the covariance is a short factor). It usually
converges in a few steps, cold or warm-started from the previous rebalance, and polishes a
convex solver's answer whose active set `guess_active_set` reads off the duals.
`min_variance_kkt_residual` certifies any answer, whoever produced it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from quant_assets.alpha.covariance import CovarianceEstimate

ACTIVE_SET_TOL = 1e-7  # a weight this close to a bound (or to its previous value) is on it
KKT_EXACT_TOL = 1e-9  # relative KKT residual accepted without question (polished answers)
KKT_ACCEPT_TOL = 1e-3  # relative KKT residual accepted from an unpolished solver answer


@dataclass
class ActiveSet:
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
    active_set: ActiveSet | None = None,
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


def guess_active_set(
    w: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    previous: np.ndarray,
    penalty: float,
    duals: dict[str, np.ndarray | None],
) -> ActiveSet:
    """Names on a bound (or on their previous weight) in a convex solver's answer w (m,);
    `duals` holds the (m,) duals of its "lower", "upper", "buy" and "sell" constraints."""

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
    return ActiveSet(at_lower, at_upper, at_previous, sign)


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


def active_set_min_variance(
    covariance: CovarianceEstimate,
    active_set: ActiveSet,
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
    in Kim & Park 2011), which cannot cycle. Under a penalty, when every name ends up
    fixed but the budget (or the multipliers) disagree, the cheapest name to raise and/or
    the dearest to lower is freed and pivoting goes on (holdings that cannot all be kept,
    e.g. names sold, start there). Returns None when S_FF is singular or the rounds run
    out; the callers then use a convex solver.
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
            gradient = 2.0 * covariance.times(w)
            nu_low, nu_high = _multiplier_ranges(
                gradient, w, previous, penalty, at_lower, at_upper, at_previous
            )
            slack = 1e-11 * max(float(np.max(np.abs(gradient))), 1e-300)
            budget_gap = 1.0 - float(w.sum())
            if abs(budget_gap) <= 1e-12 and np.max(nu_low) <= np.min(nu_high) + slack:
                return w
            if penalty <= 0.0:
                return None
            # Under a penalty (holdings that cannot all be kept: names sold, bounds) free
            # the cheapest name to raise and/or the dearest to lower, by their multiplier
            # ranges, and pivot on: near "keep what can be kept" this is what converges.
            can_rise = movable & ~at_upper & np.isfinite(nu_high)
            can_fall = movable & ~at_lower & np.isfinite(nu_low)
            freed = np.zeros_like(movable)
            if budget_gap > 1e-12 or (abs(budget_gap) <= 1e-12 and can_rise.any()):
                if not can_rise.any():
                    return None
                up = int(np.flatnonzero(can_rise)[np.argmin(nu_high[can_rise])])
                freed[up] = True
                sign[up] = 1.0 if w[up] >= previous[up] else -1.0
            if budget_gap < -1e-12 or (abs(budget_gap) <= 1e-12 and can_fall.any()):
                if not can_fall.any():
                    return None
                down = int(np.flatnonzero(can_fall)[np.argmax(nu_low[can_fall])])
                if not freed[down]:
                    freed[down] = True
                    sign[down] = -1.0 if w[down] <= previous[down] else 1.0
            if abs(budget_gap) <= 1e-12 and int(freed.sum()) < 2:
                return None  # a budget that holds needs two names to trade against
            at_lower, at_upper, at_previous = (
                at_lower & ~freed,
                at_upper & ~freed,
                at_previous & ~freed,
            )
            continue
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


def turnover_slope(
    covariance: CovarianceEstimate,
    weights: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    previous: np.ndarray,
) -> float:
    """d/d(penalty) of the turnover sum |w - previous| of a penalised minimiser, on the
    piece where its active set stays as it is (<= 0; 0 when it cannot move).

    With the fixed names fixed, the free names F (inside their bounds, off their previous
    weight, trading in direction s_F) satisfy 2 S_FF w_F + penalty s_F = nu 1 - 2 S_FB w_B
    and 1'w_F = const, so dw_F = (dnu x1 - x2) / 2 with S_FF [x1 x2] = [1 s_F] and
    dnu = 1'x2 / 1'x1; the turnover moves by s_F'dw_F. Turnover is piecewise linear in the
    penalty, so a Newton step on this slope lands on the cap in one step once on the
    right piece.
    """
    w = np.asarray(weights, dtype=float)
    free = np.flatnonzero(
        (w > lower + ACTIVE_SET_TOL)
        & (w < upper - ACTIVE_SET_TOL)
        & (np.abs(w - previous) > ACTIVE_SET_TOL)
    )
    if free.size < 2:
        return 0.0
    direction = np.sign(w[free] - previous[free])
    solved = _solve_on_subset(covariance, free, np.column_stack([np.ones(free.size), direction]))
    if solved is None:
        return 0.0
    dnu = solved[:, 1].sum() / solved[:, 0].sum()
    dw = 0.5 * (dnu * solved[:, 0] - solved[:, 1])
    return float(min(direction @ dw, 0.0))
