"""Minimum variance, the workhorse objective: `MinVarianceProblem`, solved and certified.

Each solve tries the exact active-set method first (warm-started from the previous answer,
or cold from every name free, or from "keep the holdings" under a turnover penalty); when
no seed gives an answer that passes the KKT certificate, or the free block is singular, a
cvxpy solver takes over and its answer is polished by the same active-set method, which
makes the final weights exact. The walk-forward keeps one problem across rebalances, so
both the warm start and the DPP-compiled cvxpy program are reused.

A turnover cap is met through its Lagrange multiplier: the capped problem's answer is the
penalised problem's answer for the penalty plus the cap's multiplier, found by Newton
steps on that multiplier (turnover falls continuously and piecewise linearly as the
penalty grows; the slope of each piece is exact), each step an exact, certified solve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from quant_assets.alpha.covariance import CovarianceEstimate
from quant_assets.alpha.optimize._active_set import (
    ACTIVE_SET_TOL,
    KKT_ACCEPT_TOL,
    KKT_EXACT_TOL,
    ActiveSet,
    active_set_min_variance,
    guess_active_set,
    min_variance_kkt_residual,
    turnover_slope,
)
from quant_assets.alpha.optimize._bounds import check_bounds, finalize_weights
from quant_assets.alpha.optimize._convex import (
    DEFAULT_SOLVERS,
    MinVarianceProgram,
    dense_min_variance_problem,
    solve_with_fallback,
)
from quant_assets.alpha.optimize._errors import InfeasiblePortfolioError
from quant_assets.alpha.optimize._inputs import PERIODS_PER_YEAR, scale_covariance
from quant_assets.alpha.params import OptimizationParams

CAP_TOL = 1e-9  # a capped answer's turnover lies in [cap - CAP_TOL, cap] when the cap binds


@dataclass
class SolveInfo:
    """What the last `MinVarianceProblem.solve` did: solver used and KKT residual.

    cap_multiplier: the turnover cap's Lagrange multiplier (annual-variance units, added to
    the penalty) when the cap binds, else 0; cap_solves: penalised solves the cap took.
    """

    solver: str = ""
    kkt_residual: float = float("nan")
    polished: bool = False
    cap_multiplier: float = 0.0
    cap_solves: int = 0


class MinVarianceProblem:
    """Long-only minimum-variance problem, compiled once and re-solved (cvxpy DPP).

        minimise   w' S w + turnover_penalty * ||w - w_prev||_1
        subject to 1'w = 1,  min_weight <= w_i <= max_weight for active names,  w_i = 0 else,
                   ||w - w_prev||_1 <= turnover_cap (when set and something is held)

    with S = periods_per_year * Sigma_daily (so turnover_penalty is in annual-variance units
    per unit of turnover sum_i |w_i - w_prev_i|). The solver sees Sigma scaled to unit mean
    variance and the penalty scaled alike, which leaves the minimiser unchanged. Every
    answer is polished to the exact minimiser of its active set and must pass the KKT
    check `min_variance_kkt_residual`.

    Active set first: before calling a solver, block principal pivoting
    (`active_set_min_variance`) starts from the names that sat on a bound in the previous
    answer (warm start; month to month this converges in 2-4 linear solves) or, on a first
    solve, from every name free (cold start, ~5-15 solves); under a turnover penalty it also
    tries "keep the current holdings" (hold start). Its answer is kept only if it passes the
    same KKT check (relative residual <= 1e-9); otherwise, or when the free block is
    singular (sample covariance with fewer dates than names), the cvxpy problem is solved
    (`solve_with_fallback`: Clarabel, then OSQP, then SCS) and polished the same way.
    `info.solver` says which path produced the weights; both give the same minimiser (it
    is unique when Sigma is positive definite).

    Turnover cap: turnover counts every name of the (n,) holdings, active or not (an
    inactive name held is sold whatever happens). When the penalised answer trades more
    than the cap, the answer is the penalised problem's for penalty + lambda, lambda >= 0
    the smallest multiplier whose turnover is within the cap (to CAP_TOL), found by
    safeguarded Newton steps (2-4 penalised solves); `info.cap_multiplier` holds lambda.
    From cash (no holdings) the cap does not apply. A cap below the least turnover the
    bounds allow (`least_turnover`: names no longer eligible must be sold, the rest must
    sum to 1) raises InfeasiblePortfolioError before any solve.

    Args:
        n_assets: number of names n.
        params: the bounds and the turnover control (objective "min_variance"); default
            OptimizationParams(): no cap, no floor, no turnover control.
        factor_rows: rows of the covariance factor; default n_assets (dense form).
        periods_per_year: annualisation of the daily covariance for the penalty.
        solvers: cvxpy solver names, tried in order.
        active_set_first: try block principal pivoting before the convex solver.
    """

    def __init__(
        self,
        n_assets: int,
        params: OptimizationParams | None = None,
        *,
        factor_rows: int | None = None,
        periods_per_year: int = PERIODS_PER_YEAR,
        solvers: Sequence[str] = DEFAULT_SOLVERS,
        active_set_first: bool = True,
    ) -> None:
        params = OptimizationParams() if params is None else params
        if params.objective != "min_variance":
            raise ValueError(
                f"MinVarianceProblem solves objective='min_variance', got {params.objective!r}"
            )
        check_bounds("min_variance", n_assets, params.max_weight, params.min_weight)
        self.n_assets = n_assets
        self.params = params
        self.max_weight = params.max_weight
        self.min_weight = params.min_weight
        self.turnover_penalty = params.turnover_penalty
        self.turnover_cap = params.turnover_cap
        self.periods_per_year = periods_per_year
        self.solvers = tuple(solvers)
        self.factor_rows = n_assets if factor_rows is None else int(factor_rows)
        self.is_dpp = self.factor_rows < n_assets
        self.info = SolveInfo()
        self.active_set_first = active_set_first
        self._last_weights: np.ndarray | None = None
        self._program = (
            MinVarianceProgram(n_assets, self.factor_rows, params.controls_turnover)
            if self.is_dpp
            else None
        )

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
            previous_weights: (n_assets,) current holdings for the turnover penalty and cap.
            active: (n_assets,) boolean mask of names that may be held; default all.

        Raises:
            InfeasiblePortfolioError: the active names cannot satisfy the bounds, or the
                turnover cap is below the least turnover the bounds allow.
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
        scaled, scale = scale_covariance(covariance)
        to_scaled = 1.0 / (self.periods_per_year * scale)  # annual-variance units -> solver's
        penalty = self.turnover_penalty * to_scaled

        if m == 1:
            weights = np.zeros(n)
            weights[mask] = 1.0
            self.info = SolveInfo(solver="closed form", kkt_residual=0.0, polished=True)
            self._check_cap(weights, previous)
            return weights

        weights = self._solve_penalised(scaled, mask, previous, penalty)
        cap = self.turnover_cap
        if cap is None or not previous.sum() > 0.0:  # from cash the cap does not apply
            return weights
        if _turnover(weights, previous) <= cap:
            return weights
        return self._solve_capped(scaled, mask, previous, penalty, to_scaled, weights)

    def _check_cap(self, weights: np.ndarray, previous: np.ndarray) -> None:
        cap = self.turnover_cap
        if cap is not None and previous.sum() > 0.0 and _turnover(weights, previous) > cap:
            raise InfeasiblePortfolioError(
                f"min_variance: turnover_cap={cap:g} cannot be met: the only portfolio the "
                f"bounds allow trades {_turnover(weights, previous):.6g}"
            )

    def _solve_capped(
        self,
        scaled: CovarianceEstimate,
        mask: np.ndarray,
        previous: np.ndarray,
        penalty: float,
        to_scaled: float,
        uncapped: np.ndarray,
    ) -> np.ndarray:
        """The capped answer: the penalised answer for penalty + lambda, lambda the cap's
        multiplier (the smallest lambda whose turnover is within the cap).

        Turnover T(lambda) of the penalised minimiser is continuous, non-increasing and
        piecewise linear in lambda (affine while the active set stays the same), and
        reaches its floor, the least turnover the bounds allow, at a finite lambda (an
        exact penalty). So: check the floor first (a cap below it is infeasible), bracket
        the root, then take Newton steps on the exact slope of the current piece
        (`turnover_slope`), bisecting when a step leaves the bracket."""
        cap = float(self.turnover_cap)
        n_upper = np.where(mask, 1.0 if self.max_weight is None else self.max_weight, 0.0)
        n_lower = np.where(mask, self.min_weight, 0.0)
        floor = least_turnover(previous, n_lower, n_upper)
        if cap < floor - 1e-12:
            raise InfeasiblePortfolioError(
                f"min_variance: turnover_cap={cap:g} cannot be met: the least turnover the "
                f"bounds allow from these holdings is {floor:.6g} (names that are no longer "
                f"eligible must be sold, the rest must sum to 1 within the bounds)"
            )
        # A cap at the floor (within CAP_TOL) is met on the floor's plateau: aim at the
        # floor itself and allow rounding above it.
        target, slack = (cap, 0.0) if cap >= floor + CAP_TOL else (max(cap, floor), 1e-12)
        lower, upper = n_lower[mask], n_upper[mask]
        solves = 0

        def evaluate(extra: float) -> tuple[float, float, tuple[np.ndarray, SolveInfo]]:
            nonlocal solves
            solves += 1
            weights = self._solve_penalised(scaled, mask, previous, penalty + extra)
            slope = turnover_slope(scaled, weights[mask], lower, upper, previous[mask])
            return _turnover(weights, previous) - target, slope, (weights, self.info)

        lo, f_lo = 0.0, _turnover(uncapped, previous) - target
        slope_lo = turnover_slope(scaled, uncapped[mask], lower, upper, previous[mask])
        # Bracket: a Newton step from the uncapped answer, else the gradient's size, grown
        # until the turnover fits.
        step = -f_lo / slope_lo if slope_lo < 0.0 else 0.0
        hi = (
            step
            if step > 0.0
            else max(float(np.max(np.abs(2.0 * scaled.times(uncapped[mask])))), 1e-12)
        )
        f_hi, slope_hi, answer = evaluate(hi)
        while f_hi > slack:
            if hi > 1e12:
                raise InfeasiblePortfolioError(
                    f"min_variance: turnover_cap={cap:g} could not be met (turnover "
                    f"{f_hi + target:.6g} at the largest multiplier tried)"
                )
            lo, f_lo, slope_lo = hi, f_hi, slope_hi
            hi = hi * 8.0 if step <= 0.0 else hi * 2.0
            f_hi, slope_hi, answer = evaluate(hi)
        for _ in range(200):
            if -CAP_TOL <= f_hi <= slack or hi - lo <= 1e-14 * hi:
                break
            # A Newton step on hi's piece, else on lo's, else bisection.
            guess = math.nan
            if slope_hi < 0.0:
                guess = hi - f_hi / slope_hi
            if not lo < guess < hi and slope_lo < 0.0:
                guess = lo - f_lo / slope_lo
            if not lo < guess < hi:
                guess = math.sqrt(lo * hi) if lo > 0.0 and hi > 100.0 * lo else 0.5 * (lo + hi)
            f_guess, slope_guess, guessed = evaluate(guess)
            if f_guess > slack:
                lo, f_lo, slope_lo = guess, f_guess, slope_guess
            else:
                hi, f_hi, slope_hi, answer = guess, f_guess, slope_guess, guessed
        weights, info = answer
        self.info = info
        self.info.cap_multiplier = hi / to_scaled
        self.info.cap_solves = solves + 1
        self._last_weights = weights
        return weights

    def _solve_penalised(
        self,
        scaled: CovarianceEstimate,
        mask: np.ndarray,
        previous: np.ndarray,
        penalty: float,
    ) -> np.ndarray:
        """The exact minimiser of w'Sw + penalty ||w - previous||_1 over the bounds (scaled
        units), zeros for inactive names; active set first, then cvxpy polished."""
        n = self.n_assets
        m = int(mask.sum())
        upper_value = 1.0 if self.max_weight is None else self.max_weight
        lower = np.full(m, self.min_weight)
        upper = np.full(m, upper_value)
        prev_active = previous[mask]

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
            guess = guess_active_set(w, lower, upper, prev_active, penalty, duals)
            polished = active_set_min_variance(scaled, guess, lower, upper, prev_active, penalty)
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

        if self._program is not None:
            self._program.set_parameters(
                scaled, mask, previous, penalty, self.min_weight, self.max_weight
            )
            program = self._program
            problem, variable, constraints = program.problem, program.weights, program.constraints
        else:
            problem, variable, constraints = dense_min_variance_problem(
                scaled, prev_active, penalty, self.min_weight, self.max_weight
            )
        result, solver = solve_with_fallback(
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
        seeds: list[tuple[str, ActiveSet]] = []
        if self._last_weights is not None:
            # Names new to the active set start on their lower bound; pivoting frees them
            # if their multipliers say so. Under a penalty, free names keep the side of
            # their holdings that the previous answer traded towards.
            last = self._last_weights[mask]
            at_lower = last <= lower + ACTIVE_SET_TOL
            at_upper = (last >= upper - ACTIVE_SET_TOL) & ~at_lower
            sign = np.where(last >= previous, 1.0, -1.0) if penalty > 0 else np.zeros(m)
            seeds.append(("active-set (warm start)", ActiveSet(at_lower, at_upper, none, sign)))
        else:
            sign = np.where(1.0 / m >= previous, 1.0, -1.0) if penalty > 0 else np.zeros(m)
            seeds.append(("active-set (cold start)", ActiveSet(none, none, none, sign)))
        if penalty > 0:
            # A heavy penalty makes "keep the holdings" optimal: start from no trade. When
            # they cannot all be kept (names sold, so the rest sums below 1, or a bound
            # moved) every name starts on its holding or the bound it breaks, and the
            # pivoting frees the cheapest names to trade (`active_set_min_variance`).
            at_lower = previous <= lower + ACTIVE_SET_TOL
            at_upper = (previous >= upper - ACTIVE_SET_TOL) & ~at_lower
            hold = ActiveSet(at_lower, at_upper, ~(at_lower | at_upper), np.zeros(m))
            # Try it first when the last answer was a hold: a penalty that binds tends to
            # keep binding, and a failed seed costs up to `max_rounds` linear solves.
            position = 0 if self.info.solver == "active-set (hold start)" else len(seeds)
            seeds.insert(position, ("active-set (hold start)", hold))
        for label, guess in seeds:
            polished = active_set_min_variance(scaled, guess, lower, upper, previous, penalty)
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


def _turnover(weights: np.ndarray, previous: np.ndarray) -> float:
    return float(np.abs(weights - previous).sum())


def least_turnover(previous: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """min sum |w - previous| over 1'w = 1, lower <= w <= upper (assumed feasible): move
    every holding into its bounds, then buy or sell the budget's remainder (any name with
    room can take it at one unit of turnover per unit)."""
    kept = np.clip(previous, lower, upper)
    return float(np.abs(previous - kept).sum() + abs(1.0 - kept.sum()))
