"""cvxpy for the optimiser: the lazy import, the solvers, the min-variance programs and the
solve-with-fallback loop.

The min-variance problem has two cvxpy forms: `MinVarianceProgram`, compiled once with the
covariance factor, the bounds and the holdings as DPP parameters (the walk-forward re-solves
it at every rebalance and switches ineligible names off through their bounds), and
`dense_min_variance_problem`, built with constant data (for a single solve, compiling
parameters costs more than it saves). Both take the covariance scaled to unit mean
variance. `solve_with_fallback` tries the solvers in order (Clarabel, then OSQP, then SCS)
and returns the first answer the caller's certificate accepts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from quant_assets.alpha.covariance import CovarianceEstimate
from quant_assets.alpha.optimize._errors import SolverError


class _LazyCvxpy:
    """`cp.<name>` imports cvxpy on first use: importing it costs about a second, which
    every `quant data` paid through the definitions without ever solving a problem."""

    def __getattr__(self, name: str):
        import cvxpy

        return getattr(cvxpy, name)


cp = _LazyCvxpy()

logger = logging.getLogger(__name__)

DEFAULT_SOLVERS: tuple[str, ...] = ("CLARABEL", "OSQP", "SCS")

# Options on the scaled problem (unit mean variance). The active-set polish makes the final
# answer exact, so a solver only has to identify which names sit on a bound.
SOLVER_OPTIONS: dict[str, dict[str, Any]] = {
    "CLARABEL": {},
    "OSQP": {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iter": 200_000, "polish": True},
    "SCS": {"eps_abs": 1e-8, "eps_rel": 1e-8, "max_iters": 200_000},
}


def variance_expression(scaled: CovarianceEstimate, variable: cp.Variable) -> cp.Expression:
    """x' Sigma x for a cvxpy variable x of shape (n,): sums of squares in factor form when
    the factor has fewer rows than names, else a quadratic form on the dense matrix."""
    if scaled.factor.shape[0] < scaled.n_assets:
        return cp.sum_squares(scaled.factor @ variable) + cp.sum_squares(
            cp.multiply(np.sqrt(scaled.diagonal), variable)
        )
    return cp.quad_form(variable, cp.psd_wrap(scaled.matrix()))


def dense_min_variance_problem(
    scaled: CovarianceEstimate,
    previous: np.ndarray,
    penalty: float,
    min_weight: float,
    max_weight: float | None,
) -> tuple[cp.Problem, cp.Variable, dict[str, cp.Constraint]]:
    """A one-off min-variance problem on constant data, its weight variable (m,) and its
    bound (and trade) constraints by name, whose duals seed the active-set polish.

        minimise   w' S w + penalty * ||w - previous||_1
        subject to 1'w = 1,  min_weight <= w <= max_weight

    Args:
        scaled: S, the covariance of the m active names scaled to unit mean variance.
        previous: (m,) holdings, used when penalty > 0.
        penalty: turnover penalty in the units of S.
    """
    w = cp.Variable(scaled.n_assets, name="weights")
    risk = variance_expression(scaled, w)
    upper = 1.0 if max_weight is None else max_weight
    constraints = {"lower": w >= min_weight, "upper": w <= upper}
    if penalty > 0.0:
        trade = cp.Variable(scaled.n_assets, nonneg=True, name="trade")
        constraints["buy"] = trade >= w - previous
        constraints["sell"] = trade >= previous - w
        risk = risk + penalty * cp.sum(trade)
    problem = cp.Problem(cp.Minimize(risk), [cp.sum(w) == 1, *constraints.values()])
    return problem, w, constraints


class MinVarianceProgram:
    """The min-variance problem over n names compiled once (cvxpy DPP) and re-solved.

        minimise   ||F w||^2 + ||d * w||^2 + penalty * sum(trade)
        subject to 1'w = 1,  lower <= w <= upper,  trade >= |w - previous|

    with F (factor_rows, n), d, lower, upper, previous and penalty as parameters: a name
    outside the active set gets lower = upper = 0. The trade epigraph exists only when
    `penalised`.

    Attributes:
        problem: the cvxpy problem.
        weights: its (n,) weight variable.
        constraints: the bound (and trade) constraints by name, for their duals.
    """

    def __init__(self, n_assets: int, factor_rows: int, penalised: bool) -> None:
        n, k = n_assets, factor_rows
        self.n_assets, self.factor_rows, self.penalised = n_assets, factor_rows, penalised
        self.weights = cp.Variable(n, name="weights")
        self._factor = cp.Parameter((k, n), name="factor")
        self._diag_sqrt = cp.Parameter(n, nonneg=True, name="diag_sqrt")
        self._lower = cp.Parameter(n, nonneg=True, name="lower")
        self._upper = cp.Parameter(n, nonneg=True, name="upper")
        risk = cp.sum_squares(self._factor @ self.weights) + cp.sum_squares(
            cp.multiply(self._diag_sqrt, self.weights)
        )
        self.constraints = {
            "lower": self.weights >= self._lower,
            "upper": self.weights <= self._upper,
        }
        if penalised:
            # penalty * norm1(w - prev) with both as parameters is not DPP; an epigraph
            # variable makes the penalty multiply a parameter-free expression.
            self._previous = cp.Parameter(n, name="previous")
            self._penalty = cp.Parameter(nonneg=True, name="penalty")
            trade = cp.Variable(n, nonneg=True, name="trade")
            self.constraints["buy"] = trade >= self.weights - self._previous
            self.constraints["sell"] = trade >= self._previous - self.weights
            risk = risk + self._penalty * cp.sum(trade)
        constraints = [cp.sum(self.weights) == 1, *self.constraints.values()]
        self.problem = cp.Problem(cp.Minimize(risk), constraints)
        assert self.problem.is_dpp()

    def set_parameters(
        self,
        scaled: CovarianceEstimate,
        mask: np.ndarray,
        previous: np.ndarray,
        penalty: float,
        min_weight: float,
        max_weight: float | None,
    ) -> None:
        """Load the scaled covariance of the active names `mask` (n,), the holdings (n,)
        and the scaled penalty; inactive names are held at zero by their bounds."""
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
        upper_value = 1.0 if max_weight is None else max_weight
        self._factor.value = factor
        self._diag_sqrt.value = diag_sqrt
        self._lower.value = np.where(mask, min_weight, 0.0)
        self._upper.value = np.where(mask, upper_value, 0.0)
        if self.penalised:
            self._previous.value = previous
            self._penalty.value = penalty


def solve_with_fallback(
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
