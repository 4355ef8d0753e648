"""The parameters of optimisation and rebalancing, as frozen values.

Together with `selection.SelectionParams` they make up a `policy.Policy`. They live here,
below the optimiser and the backtest, because both take them: `optimize_weights` and
`MinVarianceProblem` an `OptimizationParams`, the walk-forward both. Every check that
does not depend on the data (names, signs, which objectives take turnover control) runs
when a value is built, so a bad combination fails before anything is computed.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from quant_assets.alpha.covariance import COVARIANCE_METHODS

OBJECTIVES: tuple[str, ...] = ("min_variance", "max_sharpe", "risk_parity", "hrp", "equal_weight")
REBALANCE_FREQUENCIES: tuple[str, ...] = ("weekly", "monthly", "quarterly")
# Objectives that accept each kind of turnover control. The L1 penalty enters the
# min-variance problem directly; max_sharpe is solved in a homogenised form (y = k w)
# where a cap stays linear (sum |y - k w_prev| <= cap k) but a penalty on |w - w_prev|
# has no convex equivalent. risk_parity, hrp and equal_weight are not solved as a convex
# program over w at all.
TURNOVER_PENALTY_OBJECTIVES: tuple[str, ...] = ("min_variance",)
TURNOVER_CAP_OBJECTIVES: tuple[str, ...] = ("min_variance", "max_sharpe")


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class OptimizationParams:
    """How the optimiser turns the selected names' returns into weights.

    objective: "min_variance", "max_sharpe", "risk_parity", "hrp" or "equal_weight".
    covariance: "ledoit_wolf" or "sample".
    max_weight, min_weight: bounds per name (None: no cap); long-only.
    risk_free_rate: annual, decimal (max_sharpe only).
    lookback: rows of returns the covariance is estimated on (the daily run's window and
        the walk-forward's estimation window).
    turnover_penalty: adds turnover_penalty * sum_i |w_i - w_prev_i| to the annualised
        variance (min_variance only; annual-variance units per unit of turnover).
    turnover_cap: sum_i |w_i - w_prev_i| <= turnover_cap (min_variance and max_sharpe);
        None for no cap. Turnover counts every name held before, so names that leave the
        universe use up part of the cap. Neither applies from cash (no holdings): the
        first purchase is the whole book whatever the setting.
    """

    objective: str = "min_variance"
    covariance: str = "ledoit_wolf"
    max_weight: float | None = None
    min_weight: float = 0.0
    risk_free_rate: float = 0.0
    lookback: int = 252
    turnover_penalty: float = 0.0
    turnover_cap: float | None = None

    def __post_init__(self) -> None:
        # Floats stored as floats, so 1 and 1.0 give the same policy hash.
        for name in ("min_weight", "risk_free_rate", "turnover_penalty"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("max_weight", "turnover_cap"):
            object.__setattr__(self, name, _float(getattr(self, name)))
        object.__setattr__(self, "lookback", int(self.lookback))
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"unknown objective {self.objective!r}; choose one of {list(OBJECTIVES)}"
            )
        if self.covariance not in COVARIANCE_METHODS:
            raise ValueError(
                f"unknown covariance {self.covariance!r}; choose one of {list(COVARIANCE_METHODS)}"
            )
        if self.lookback < 2:
            raise ValueError(f"lookback={self.lookback} must be >= 2")
        if not math.isfinite(self.turnover_penalty) or self.turnover_penalty < 0.0:
            raise ValueError(f"turnover_penalty={self.turnover_penalty} must be finite and >= 0")
        if self.turnover_cap is not None and (
            not math.isfinite(self.turnover_cap) or self.turnover_cap < 0.0
        ):
            raise ValueError(f"turnover_cap={self.turnover_cap} must be finite and >= 0")
        if self.turnover_penalty > 0.0 and self.objective not in TURNOVER_PENALTY_OBJECTIVES:
            raise ValueError(
                f"turnover_penalty is only supported for objective='min_variance', got "
                f"{self.objective!r}; use turnover_cap with max_sharpe (risk_parity, hrp and "
                f"equal_weight take no turnover control)"
            )
        if self.turnover_cap is not None and self.objective not in TURNOVER_CAP_OBJECTIVES:
            raise ValueError(
                f"turnover_cap is only supported for objective in "
                f"{list(TURNOVER_CAP_OBJECTIVES)}, got {self.objective!r} (risk_parity, hrp "
                f"and equal_weight are not solved as a convex program over the weights)"
            )

    @property
    def controls_turnover(self) -> bool:
        """True when the previous weights change the answer (a penalty or a cap is set)."""
        return self.turnover_penalty > 0.0 or self.turnover_cap is not None


@dataclass(frozen=True)
class RebalanceParams:
    """When the walk-forward trades and what trading costs.

    frequency: "weekly", "monthly", "quarterly" or every k rows (a positive int).
    cost_bps: cost in basis points per unit of turnover.
    window_days: rows of the policy walk-forward's out-of-sample window.
    """

    frequency: str | int = "monthly"
    cost_bps: float = 10.0
    window_days: int = 756

    def __post_init__(self) -> None:
        object.__setattr__(self, "cost_bps", float(self.cost_bps))
        object.__setattr__(self, "window_days", int(self.window_days))
        frequency = self.frequency
        if isinstance(frequency, numbers.Integral) and not isinstance(frequency, bool):
            frequency = int(frequency)
            object.__setattr__(self, "frequency", frequency)
        if isinstance(frequency, bool) or not (
            frequency in REBALANCE_FREQUENCIES or (isinstance(frequency, int) and frequency >= 1)
        ):
            raise ValueError(
                f"unknown rebalance {frequency!r}; choose one of {list(REBALANCE_FREQUENCIES)} "
                f"or a positive number of rows"
            )
        if not math.isfinite(self.cost_bps) or self.cost_bps < 0.0:
            raise ValueError(f"cost_bps={self.cost_bps} must be >= 0")
        if self.window_days < 1:
            raise ValueError(f"window_days={self.window_days} must be >= 1")
