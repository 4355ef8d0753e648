"""Performance metrics of a daily return series.

All functions take a 1-D array r_1..r_T of periodic simple returns (daily by default,
P = 252 periods per year; use 365 for 24/7 crypto) and return a float. Undefined values
(zero volatility, no drawdown) are NaN; `finite_or_none` turns them into JSON nulls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

PERIODS_PER_YEAR = 252


def _series(returns: Sequence[float] | np.ndarray) -> np.ndarray:
    r = np.asarray(returns, dtype=float)
    if r.ndim != 1:
        raise ValueError(f"returns must be a 1-D series, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("returns contain NaN or inf; metrics need a complete series")
    return r


def equity_curve(returns: Sequence[float] | np.ndarray) -> np.ndarray:
    """E_t = prod_{s <= t} (1 + r_s), shape (T,), starting from E_0 = 1 (not included)."""
    return np.cumprod(1.0 + _series(returns))


def annual_return(
    returns: Sequence[float] | np.ndarray, periods_per_year: int = PERIODS_PER_YEAR
) -> float:
    """Geometric (compound) annual return: E_T^(P / T) - 1."""
    r = _series(returns)
    if r.size == 0:
        return math.nan
    growth = float(np.prod(1.0 + r))
    if growth <= 0.0:
        return -1.0
    return growth ** (periods_per_year / r.size) - 1.0


def annual_volatility(
    returns: Sequence[float] | np.ndarray, periods_per_year: int = PERIODS_PER_YEAR
) -> float:
    """sqrt(P) * std(r), sample standard deviation (ddof = 1)."""
    r = _series(returns)
    if r.size < 2:
        return math.nan
    return float(np.std(r, ddof=1) * math.sqrt(periods_per_year))


def sharpe_ratio(
    returns: Sequence[float] | np.ndarray,
    risk_free_rate: float = 0.0,
    periods_per_year: int = PERIODS_PER_YEAR,
) -> float:
    """Annualised Sharpe ratio sqrt(P) * mean(r - rf / P) / std(r, ddof = 1).

    `risk_free_rate` is annual (decimal), spread evenly over the P periods.
    """
    r = _series(returns)
    if r.size < 2:
        return math.nan
    std = float(np.std(r, ddof=1))
    if std == 0.0:
        return math.nan
    return float(np.mean(r - risk_free_rate / periods_per_year) / std * math.sqrt(periods_per_year))


def sortino_ratio(
    returns: Sequence[float] | np.ndarray,
    risk_free_rate: float = 0.0,
    periods_per_year: int = PERIODS_PER_YEAR,
) -> float:
    """Annualised Sortino ratio sqrt(P) * mean(x) / sqrt(mean(min(x, 0)^2)), x = r - rf / P.

    The downside deviation averages over all T periods (not only the losing ones).
    """
    r = _series(returns)
    if r.size < 2:
        return math.nan
    excess = r - risk_free_rate / periods_per_year
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2)))
    if downside == 0.0:
        return math.nan
    return float(np.mean(excess) / downside * math.sqrt(periods_per_year))


def max_drawdown(returns: Sequence[float] | np.ndarray) -> float:
    """Largest peak-to-trough loss max_t (1 - E_t / max_{s <= t} E_s), as a positive fraction.

    The running peak starts at E_0 = 1, so a loss on the first day counts.
    """
    equity = equity_curve(returns)
    if equity.size == 0:
        return math.nan
    peaks = np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]
    return float(np.max(1.0 - equity / peaks))


def calmar_ratio(
    returns: Sequence[float] | np.ndarray, periods_per_year: int = PERIODS_PER_YEAR
) -> float:
    """annual_return / max_drawdown (NaN when there is no drawdown)."""
    drawdown = max_drawdown(returns)
    if not drawdown > 0.0:
        return math.nan
    return annual_return(returns, periods_per_year) / drawdown


def hit_rate(returns: Sequence[float] | np.ndarray) -> float:
    """Fraction of periods with a strictly positive return."""
    r = _series(returns)
    if r.size == 0:
        return math.nan
    return float(np.mean(r > 0.0))


def turnover(previous_weights: np.ndarray, new_weights: np.ndarray) -> float:
    """Traded fraction of the portfolio sum_i |w_new_i - w_prev_i| (buys plus sells).

    Both arrays cover the same names; a name not held has weight 0. Going from cash into
    a fully invested portfolio is a turnover of 1.
    """
    return float(np.sum(np.abs(np.asarray(new_weights) - np.asarray(previous_weights))))


def performance_summary(
    returns: Sequence[float] | np.ndarray,
    turnovers: Sequence[float] | np.ndarray = (),
    risk_free_rate: float = 0.0,
    periods_per_year: int = PERIODS_PER_YEAR,
) -> dict[str, float]:
    """Every metric of one return series, plus turnover per year.

    `annual_turnover` = sum of the rebalance turnovers / (T / P) years.
    """
    r = _series(returns)
    years = r.size / periods_per_year
    total_turnover = float(np.sum(turnovers)) if len(turnovers) else 0.0
    return {
        "annual_return": annual_return(r, periods_per_year),
        "annual_volatility": annual_volatility(r, periods_per_year),
        "sharpe": sharpe_ratio(r, risk_free_rate, periods_per_year),
        "sortino": sortino_ratio(r, risk_free_rate, periods_per_year),
        "max_drawdown": max_drawdown(r),
        "calmar": calmar_ratio(r, periods_per_year),
        "hit_rate": hit_rate(r),
        "total_return": float(np.prod(1.0 + r) - 1.0) if r.size else math.nan,
        "annual_turnover": total_turnover / years if years > 0 else math.nan,
        "n_periods": float(r.size),
    }


def finite_or_none(value: float) -> float | None:
    """float(value) if finite, else None (JSON null): backtest.json holds no NaN/Infinity."""
    value = float(value)
    return value if math.isfinite(value) else None
