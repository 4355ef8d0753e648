"""The optimiser's errors: infeasible bounds, too little history, every solver failed.

Each is a `QuantError` (so the CLI prints it as one line) and a built-in error type (so
callers that catch ValueError or RuntimeError keep working).
"""

from __future__ import annotations

from quant_resources.errors import QuantError


class InfeasiblePortfolioError(QuantError, ValueError):
    """The bounds or the data admit no portfolio for the requested objective."""


class InsufficientHistoryError(QuantError, ValueError):
    """Some symbols have too few return observations to estimate a covariance."""


class SolverError(QuantError, RuntimeError):
    """Every installed solver failed on a portfolio problem."""
