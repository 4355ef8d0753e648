"""Minimum variance, the workhorse objective: `MinVarianceProblem`, solved and certified.

Each solve tries the exact active-set method first (warm-started from the previous answer,
or cold from every name free, or from "keep the holdings" under a turnover penalty); when
no seed gives an answer that passes the KKT certificate, or the free block is singular, a
cvxpy solver takes over and its answer is polished by the same active-set method, which
makes the final weights exact. The walk-forward keeps one problem across rebalances, so
both the warm start and the DPP-compiled cvxpy program are reused.
"""

from __future__ import annotations

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
)
from quant_assets.alpha.optimize._bounds import check_bounds, finalize_weights
from quant_assets.alpha.optimize._convex import (
    DEFAULT_SOLVERS,
    MinVarianceProgram,
    dense_min_variance_problem,
    solve_with_fallback,
)
from quant_assets.alpha.optimize._inputs import PERIODS_PER_YEAR, scale_covariance


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
    (`active_set_min_variance`) starts from the names that sat on a bound in the previous
    answer (warm start; month to month this converges in 2-4 linear solves) or, on a first
    solve, from every name free (cold start, ~5-15 solves); under a turnover penalty it also
    tries "keep the current holdings" (hold start). Its answer is kept only if it passes the
    same KKT check (relative residual <= 1e-9); otherwise, or when the free block is
    singular (sample covariance with fewer dates than names), the cvxpy problem is solved
    (`solve_with_fallback`: Clarabel, then OSQP, then SCS) and polished the same way.
    `info.solver` says which path produced the weights; both give the same minimiser (it
    is unique when Sigma is positive definite).

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
        self._program = (
            MinVarianceProgram(n_assets, self.factor_rows, self.turnover_penalty > 0.0)
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
        scaled, scale = scale_covariance(covariance)
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
        holdings_feasible = (
            abs(previous.sum() - 1.0) <= 1e-9
            and np.all(previous >= lower - 1e-12)
            and np.all(previous <= upper + 1e-12)
        )
        if penalty > 0 and holdings_feasible:
            # A heavy penalty makes "keep the holdings" optimal: start from no trade.
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
