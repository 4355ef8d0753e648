"""Numerical core of the Alpha cycle: covariance, portfolio optimisation, walk-forward
backtest, and the `Policy` that owns every parameter of selection, optimisation and
rebalancing.

Pure functions on NumPy arrays and data frames; no Dagster, no I/O besides the plots.
"""

from quant_assets.alpha.backtest import (
    BacktestResult,
    RebalanceRecord,
    plot_equity_curve,
    plot_weights,
    walk_forward,
)
from quant_assets.alpha.covariance import (
    CovarianceEstimate,
    estimate_covariance,
    ledoit_wolf_covariance,
    ledoit_wolf_shrinkage,
    sample_covariance,
)
from quant_assets.alpha.hrp import cap_weights, hrp_weights
from quant_assets.alpha.metrics import performance_summary
from quant_assets.alpha.optimize import (
    InfeasiblePortfolioError,
    InsufficientHistoryError,
    MinVarianceProblem,
    SolverError,
    max_sharpe_weights,
    min_variance_kkt_residual,
    optimize_weights,
    returns_to_matrix,
    risk_contributions,
    risk_parity_weights,
)
from quant_assets.alpha.params import OBJECTIVES, OptimizationParams, RebalanceParams
from quant_assets.alpha.policy import Policy, policy_walk_forward, weights_frame

__all__ = [
    "OBJECTIVES",
    "BacktestResult",
    "CovarianceEstimate",
    "InfeasiblePortfolioError",
    "InsufficientHistoryError",
    "MinVarianceProblem",
    "OptimizationParams",
    "Policy",
    "RebalanceParams",
    "RebalanceRecord",
    "SolverError",
    "cap_weights",
    "estimate_covariance",
    "hrp_weights",
    "ledoit_wolf_covariance",
    "ledoit_wolf_shrinkage",
    "max_sharpe_weights",
    "min_variance_kkt_residual",
    "optimize_weights",
    "performance_summary",
    "plot_equity_curve",
    "plot_weights",
    "policy_walk_forward",
    "returns_to_matrix",
    "risk_contributions",
    "risk_parity_weights",
    "sample_covariance",
    "walk_forward",
    "weights_frame",
]
