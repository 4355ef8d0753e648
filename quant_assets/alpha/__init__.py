"""Numerical core of the Alpha cycle: covariance, portfolio optimisation, walk-forward backtest.

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
    OBJECTIVES,
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

__all__ = [
    "OBJECTIVES",
    "BacktestResult",
    "CovarianceEstimate",
    "InfeasiblePortfolioError",
    "InsufficientHistoryError",
    "MinVarianceProblem",
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
    "returns_to_matrix",
    "risk_contributions",
    "risk_parity_weights",
    "sample_covariance",
    "walk_forward",
]
