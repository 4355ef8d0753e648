"""Walk-forward backtest of the Alpha cycle's optimiser, with costs and a benchmark.

At the close of each rebalance date t the optimiser sees only returns up to and including
t; the new weights earn returns from t + 1 and drift with prices until the next rebalance.
Transaction costs of cost_bps basis points per unit of turnover are charged on the
rebalance date. The benchmark is an equal-weight portfolio over every symbol with enough
history (the optimiser's eligible set unless a `select` hook narrows it), rebalanced on
the same dates under the same cost model.

The optimiser's parameters come as one `OptimizationParams` and the trading schedule and
costs as one `RebalanceParams` (the two halves of a `policy.Policy` that the walk-forward
needs; `policy.policy_walk_forward` adds the selection). At each rebalance the turnover
penalty and cap apply against the weights held then (the last target, drifted).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from quant_assets.alpha.covariance import estimate_covariance
from quant_assets.alpha.metrics import (
    PERIODS_PER_YEAR,
    finite_or_none,
    performance_summary,
)
from quant_assets.alpha.optimize import (
    DEFAULT_SOLVERS,
    InfeasiblePortfolioError,
    MinVarianceProblem,
    SolverError,
    cap_after_sales,
    check_bounds,
    expected_excess_returns,
    solve_objective,
)
from quant_assets.alpha.params import REBALANCE_FREQUENCIES, OptimizationParams, RebalanceParams

logger = logging.getLogger(__name__)

__all__ = [
    "REBALANCE_FREQUENCIES",
    "BacktestResult",
    "RebalanceRecord",
    "as_dates",
    "plot_equity_curve",
    "plot_weights",
    "rebalance_indices",
    "walk_forward",
]

SelectHook = Callable[[int, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RebalanceRecord:
    """One executed rebalance, decided at the close of `date`.

    weights: (N,) target weights over all symbols (0 for names not held).
    turnover: sum_i |w_target_i - w_drifted_i| (1.0 for the first purchase from cash).
    cost: cost_bps / 1e4 * turnover, subtracted from that day's portfolio return.
    """

    date: np.datetime64
    weights: np.ndarray
    turnover: float
    cost: float
    benchmark_turnover: float
    benchmark_cost: float
    n_eligible: int
    n_observations: int
    method: str


@dataclass(frozen=True)
class BacktestResult:
    """Out-of-sample daily series from the first executed rebalance to the last date.

    dates, portfolio_returns, benchmark_returns, equity, benchmark_equity: (D,) arrays;
    returns are net of costs, equity starts from 1 before the first date.
    """

    symbols: list[str]
    dates: np.ndarray
    portfolio_returns: np.ndarray
    benchmark_returns: np.ndarray
    equity: np.ndarray
    benchmark_equity: np.ndarray
    rebalances: list[RebalanceRecord]
    skipped: list[tuple[np.datetime64, str]]
    metrics: dict[str, float]
    benchmark_metrics: dict[str, float]
    params: dict[str, Any] = field(default_factory=dict)

    def weights_matrix(self) -> np.ndarray:
        """Target weights per rebalance, shape (R, N) in `symbols` order."""
        if not self.rebalances:
            return np.zeros((0, len(self.symbols)))
        return np.vstack([r.weights for r in self.rebalances])

    def weights_history(self) -> list[dict[str, Any]]:
        """Per rebalance: ISO date and {symbol: weight} for the names held (weight > 0)."""
        history = []
        for record in self.rebalances:
            held = np.flatnonzero(record.weights > 0.0)
            history.append(
                {
                    "date": str(record.date),
                    "weights": {self.symbols[j]: float(record.weights[j]) for j in held},
                }
            )
        return history

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for backtest.json: only finite floats (undefined -> null)."""

        def floats(values: np.ndarray) -> list[float | None]:
            return [finite_or_none(v) for v in values]

        rebalances = []
        for entry, record in zip(self.weights_history(), self.rebalances, strict=True):
            rebalances.append(
                {
                    **entry,
                    "turnover": finite_or_none(record.turnover),
                    "cost": finite_or_none(record.cost),
                    "benchmark_turnover": finite_or_none(record.benchmark_turnover),
                    "n_eligible": record.n_eligible,
                    "n_observations": record.n_observations,
                    "method": record.method,
                }
            )
        return {
            "params": {k: _jsonable(v) for k, v in self.params.items()},
            "symbols": list(self.symbols),
            "metrics": {k: finite_or_none(v) for k, v in self.metrics.items()},
            "benchmark_metrics": {k: finite_or_none(v) for k, v in self.benchmark_metrics.items()},
            "rebalances": rebalances,
            "skipped_rebalances": [{"date": str(d), "reason": why} for d, why in self.skipped],
            "daily": {
                "date": [str(d) for d in self.dates],
                "portfolio_return": floats(self.portfolio_returns),
                "benchmark_return": floats(self.benchmark_returns),
                "equity": floats(self.equity),
                "benchmark_equity": floats(self.benchmark_equity),
            },
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return finite_or_none(float(value))
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def as_dates(dates: Any, length: int) -> np.ndarray:
    """Dates as a strictly increasing datetime64[D] array of the given length.

    Accepts datetime.date/datetime objects, ISO strings, numpy datetime64 or a polars/pandas
    date series. Integers are refused: convert epoch seconds first
    (np.asarray(ts, dtype="datetime64[s]")).
    """
    raw = np.asarray(dates)
    if raw.dtype.kind in "iuf":
        raise TypeError(
            "dates are numbers; convert epoch seconds with np.asarray(ts, dtype='datetime64[s]')"
        )
    days = raw.astype("datetime64[D]")
    if days.shape != (length,):
        raise ValueError(f"got {days.shape[0] if days.ndim else 0} dates for {length} return rows")
    if length > 1 and not np.all(days[1:] > days[:-1]):
        bad = int(np.flatnonzero(days[1:] <= days[:-1])[0])
        raise ValueError(
            f"dates must be strictly increasing; {days[bad]} is followed by {days[bad + 1]}"
        )
    return days


def rebalance_indices(dates: np.ndarray, rebalance: str | int) -> np.ndarray:
    """Row indices of the last date of each period (never the final row: nothing follows it).

    rebalance: "weekly" (Monday-Sunday weeks), "monthly", "quarterly", or a positive int k
    (every k rows, starting at row k - 1).
    """
    n = dates.shape[0]
    if isinstance(rebalance, int | np.integer) and not isinstance(rebalance, bool):
        if rebalance < 1:
            raise ValueError(f"rebalance every {rebalance} rows: must be >= 1")
        return np.arange(int(rebalance) - 1, n - 1, int(rebalance))
    if rebalance == "monthly":
        period = dates.astype("datetime64[M]").astype(np.int64)
    elif rebalance == "quarterly":
        period = dates.astype("datetime64[M]").astype(np.int64) // 3
    elif rebalance == "weekly":
        # 1970-01-01 was a Thursday; shifting by 3 days starts weeks on Monday.
        period = (dates.astype(np.int64) + 3) // 7
    else:
        raise ValueError(
            f"unknown rebalance {rebalance!r}; choose one of {list(REBALANCE_FREQUENCIES)} or an "
            f"integer number of rows"
        )
    return np.flatnonzero(period[:-1] != period[1:])


def _hold(
    returns: np.ndarray, start: int, stop: int, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Gross daily returns of buy-and-hold `weights` over rows start..stop-1, and end weights.

    A missing return (NaN) counts as 0: the position keeps its last value.
    """
    held = np.flatnonzero(weights)
    if stop <= start:
        return np.zeros(0), weights
    if held.size == 0 or weights.sum() <= 0:
        return np.zeros(stop - start), weights
    period = np.nan_to_num(returns[start:stop, held], nan=0.0)
    values = np.cumprod(1.0 + period, axis=0) * weights[held]
    totals = values.sum(axis=1)
    previous = np.concatenate([[weights[held].sum()], totals[:-1]])
    daily = totals / previous - 1.0
    end = np.zeros_like(weights)
    if totals[-1] > 0:
        end[held] = values[-1] / totals[-1]
    return daily, end


def walk_forward(
    returns: np.ndarray,
    dates: Any,
    symbols: Sequence[str],
    optimization: OptimizationParams | None = None,
    rebalance: RebalanceParams | None = None,
    *,
    select: SelectHook | None = None,
    min_history: int | None = None,
    periods_per_year: int = PERIODS_PER_YEAR,
    solvers: Sequence[str] = DEFAULT_SOLVERS,
    blas_threads: int | None = 1,
) -> BacktestResult:
    """Walk-forward backtest with periodic rebalancing and no look-ahead.

    At each rebalance row t (last row of each period):
      1. Eligible symbols: returns finite on all of the `min_history` rows ending at t.
      2. Estimation sample: the `optimization.lookback` rows ending at t, restricted to the
         rows where every eligible symbol has a return (at least `min_history` rows).
      3. Weights from `optimization` on that sample (the same objectives, covariance
         estimators and turnover control as `optimize_weights`), the turnover penalty
         and cap measured against the holdings at t (the last target, drifted; names no
         longer eligible are sold and count in the turnover); min_variance reuses one
         MinVarianceProblem across rebalances: the previous answer warm-starts the
         active-set method, and the DPP-compiled cvxpy fallback switches ineligible
         names off through their bounds instead of being rebuilt when the eligible set
         changes.
      4. Trade at the close of t: turnover = sum |w_new - w_drifted|, cost =
         cost_bps / 1e4 * turnover, subtracted from the return of day t.
    Between rebalances the positions drift with returns (buy and hold); a missing return
    of a held name counts as 0. A rebalance is skipped (positions held, reason recorded)
    when no symbol is eligible, the bounds are infeasible for the eligible count, the
    turnover cap cannot be met, or the objective has no solution (e.g. max_sharpe with no
    positive expected excess return). The output starts on the first executed rebalance
    date (return = -cost of the initial purchase from cash; the cap does not apply to it).

    Args:
        returns: (T, N) daily simple returns, NaN before a symbol's genesis (or in gaps).
        dates: T strictly increasing dates.
        symbols: N unique names.
        optimization: objective, covariance, bounds, risk-free rate, lookback (rows in
            the estimation window) and turnover control; default OptimizationParams().
        rebalance: frequency ("monthly", "weekly", "quarterly" or every k rows) and
            cost_bps (per unit of turnover); its window_days is the policy walk-forward's
            (this function walks every row). Default RebalanceParams().
        select: optional policy hook `select(t, eligible) -> mask`: given the rebalance row
            t and the (N,) mask of symbols with enough history, the (N,) mask of symbols to
            hold. It must look only at rows <= t. The benchmark stays equal weight over
            every eligible symbol.
        min_history: rows of history a symbol needs; default optimization.lookback.
        periods_per_year: annualisation for metrics and the optimiser.
        solvers: cvxpy solvers to try in order.
        blas_threads: BLAS threads while the backtest runs (None leaves the setting alone).
            The loop does thousands of small (lookback x lookback) factorisations, which
            gain nothing from threads; on a busy 2-core machine OpenBLAS threads waiting for
            each other made them up to 10x slower (1000 symbols: 41 s with 2 threads, 4.4 s
            with 1).

    Returns:
        BacktestResult with the daily series, the rebalance records and metrics of the
        portfolio and of the benchmark.
    """
    run = _Run(
        optimization=OptimizationParams() if optimization is None else optimization,
        rebalance=RebalanceParams() if rebalance is None else rebalance,
        select=select,
        min_history=min_history,
        periods_per_year=periods_per_year,
        solvers=tuple(solvers),
    )
    # threadpool_limits applies on construction and restores on exit.
    limits = nullcontext() if blas_threads is None else threadpool_limits(blas_threads, "blas")
    with limits:
        return _walk_forward(returns, dates, symbols, run)


@dataclass(frozen=True)
class _Run:
    """What one walk-forward runs with: the policy's two halves and the execution knobs."""

    optimization: OptimizationParams
    rebalance: RebalanceParams
    select: SelectHook | None
    min_history: int | None
    periods_per_year: int
    solvers: tuple[str, ...]


def _walk_forward(
    returns: np.ndarray, dates: Any, symbols: Sequence[str], run: _Run
) -> BacktestResult:
    opt, select, periods_per_year = run.optimization, run.select, run.periods_per_year
    lookback_days = opt.lookback
    matrix = np.asarray(returns, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"returns must be a (T, N) array, got shape {matrix.shape}")
    n_rows, n_symbols = matrix.shape
    names = [str(s) for s in symbols]
    if len(names) != n_symbols or len(set(names)) != n_symbols:
        raise ValueError(f"need {n_symbols} unique symbols for {n_symbols} columns")
    days = as_dates(dates, n_rows)
    history = lookback_days if run.min_history is None else int(run.min_history)
    if not 2 <= history <= lookback_days:
        raise ValueError(f"need 2 <= min_history ({history}) <= lookback_days ({lookback_days})")
    if np.isinf(matrix).any():
        raise ValueError("returns contain +-inf; fix the returns matrix upstream")
    cost_rate = run.rebalance.cost_bps / 1e4

    finite = np.isfinite(matrix)
    # Rolling count of finite returns over the last `history` rows, for eligibility.
    counts = np.cumsum(np.vstack([np.zeros((1, n_symbols)), finite]), axis=0)
    shared_problem: MinVarianceProblem | None = None

    holdings = np.zeros(n_symbols)
    bench_holdings = np.zeros(n_symbols)
    records: list[RebalanceRecord] = []
    skipped: list[tuple[np.datetime64, str]] = []
    start_row: int | None = None
    portfolio = np.zeros(n_rows)
    benchmark = np.zeros(n_rows)
    last_row = -1  # last row whose returns are accounted for

    schedule = [
        int(t) for t in rebalance_indices(days, run.rebalance.frequency) if t >= history - 1
    ]
    for t in schedule:
        # Drift the current positions up to and including day t.
        if start_row is not None:
            daily, holdings = _hold(matrix, last_row + 1, t + 1, holdings)
            portfolio[last_row + 1 : t + 1] = daily
            daily, bench_holdings = _hold(matrix, last_row + 1, t + 1, bench_holdings)
            benchmark[last_row + 1 : t + 1] = daily
            last_row = t
        history_ok = (counts[t + 1] - counts[t + 1 - history]) == history
        eligible = (
            history_ok
            if select is None
            else (np.asarray(select(t, history_ok), dtype=bool) & history_ok)
        )
        n_eligible = int(eligible.sum())
        n_benchmark = int(history_ok.sum())
        try:
            if n_eligible == 0:
                raise InfeasiblePortfolioError("no symbol has enough history")
            check_bounds(opt.objective, n_eligible, opt.max_weight, opt.min_weight)
            window = matrix[max(0, t + 1 - lookback_days) : t + 1][:, eligible]
            window = window[np.isfinite(window).all(axis=1)]
            estimate = estimate_covariance(window, opt.covariance)
            if opt.objective in ("risk_parity", "hrp") and np.any(estimate.variances() <= 0):
                raise InfeasiblePortfolioError("a symbol has constant returns in the window")
            if opt.objective == "min_variance":
                # One problem for the whole run: DPP-compiled when the lookback is shorter
                # than the universe, and either way the previous answer warm-starts the next.
                # It sees every name's holdings, so names sold count in the turnover.
                if shared_problem is None:
                    shared_problem = MinVarianceProblem(
                        n_symbols,
                        opt,
                        factor_rows=lookback_days,
                        periods_per_year=periods_per_year,
                        solvers=run.solvers,
                    )
                target = shared_problem.solve(estimate, holdings, active=eligible)
                method = shared_problem.info.solver
            else:
                held = holdings[eligible]
                params = cap_after_sales(opt, held, float(holdings[~eligible].sum()))
                weights, method = solve_objective(
                    params,
                    estimate,
                    expected_excess=expected_excess_returns(
                        window, opt.risk_free_rate, periods_per_year
                    ),
                    previous=held,
                    periods_per_year=periods_per_year,
                    solvers=run.solvers,
                )
                target = np.zeros(n_symbols)
                target[eligible] = weights
        except (InfeasiblePortfolioError, SolverError, ValueError) as exc:
            logger.warning("walk_forward: rebalance %s skipped: %s", days[t], exc)
            skipped.append((days[t], str(exc)))
            continue

        bench_target = np.where(history_ok, 1.0 / n_benchmark, 0.0)
        turnover = float(np.abs(target - holdings).sum())
        bench_turnover = float(np.abs(bench_target - bench_holdings).sum())
        if start_row is None:
            start_row = t
            last_row = t
        portfolio[t] -= cost_rate * turnover
        benchmark[t] -= cost_rate * bench_turnover
        holdings, bench_holdings = target, bench_target
        records.append(
            RebalanceRecord(
                date=days[t],
                weights=target,
                turnover=turnover,
                cost=cost_rate * turnover,
                benchmark_turnover=bench_turnover,
                benchmark_cost=cost_rate * bench_turnover,
                n_eligible=n_eligible,
                n_observations=int(window.shape[0]),
                method=method,
            )
        )

    risk_free_rate = opt.risk_free_rate
    params = {
        "rebalance": run.rebalance.frequency,
        "lookback_days": lookback_days,
        "min_history": history,
        "objective": opt.objective,
        "covariance": opt.covariance,
        "max_weight": opt.max_weight,
        "min_weight": opt.min_weight,
        "cost_bps": run.rebalance.cost_bps,
        "risk_free_rate": risk_free_rate,
        "turnover_penalty": opt.turnover_penalty,
        "turnover_cap": opt.turnover_cap,
        "periods_per_year": periods_per_year,
    }
    if start_row is None:
        empty = np.zeros(0)
        nan_metrics = performance_summary(empty, (), risk_free_rate, periods_per_year)
        return BacktestResult(
            names,
            days[:0],
            empty,
            empty,
            empty,
            empty,
            [],
            skipped,
            nan_metrics,
            dict(nan_metrics),
            params,
        )
    daily, holdings = _hold(matrix, last_row + 1, n_rows, holdings)
    portfolio[last_row + 1 :] = daily
    daily, bench_holdings = _hold(matrix, last_row + 1, n_rows, bench_holdings)
    benchmark[last_row + 1 :] = daily
    portfolio = portfolio[start_row:]
    benchmark = benchmark[start_row:]
    return BacktestResult(
        symbols=names,
        dates=days[start_row:],
        portfolio_returns=portfolio,
        benchmark_returns=benchmark,
        equity=np.cumprod(1.0 + portfolio),
        benchmark_equity=np.cumprod(1.0 + benchmark),
        rebalances=records,
        skipped=skipped,
        metrics=performance_summary(
            portfolio, [r.turnover for r in records], risk_free_rate, periods_per_year
        ),
        benchmark_metrics=performance_summary(
            benchmark, [r.benchmark_turnover for r in records], risk_free_rate, periods_per_year
        ),
        params=params,
    )


# ---------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    # An Agg canvas attached to a bare Figure: no pyplot, no global backend switch, so a
    # UI process that imports this module keeps whatever backend it uses.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def plot_equity_curve(result: BacktestResult, path: str | Path) -> Path:
    """Equity of the portfolio and the benchmark, and the portfolio drawdown, as a PNG."""
    path = Path(path)
    figure = _figure(9.0, 5.5)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    x = result.dates.astype("datetime64[D]").astype(object)
    top.plot(x, result.equity, label=f"{result.params.get('objective', 'portfolio')}", lw=1.4)
    top.plot(x, result.benchmark_equity, label="equal weight", lw=1.0, alpha=0.8)
    top.set_ylabel("equity (start = 1)")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    if result.equity.size:
        peaks = np.maximum.accumulate(np.concatenate([[1.0], result.equity]))[1:]
        bottom.fill_between(x, result.equity / peaks - 1.0, 0.0, color="tab:red", alpha=0.4)
    bottom.set_ylabel("drawdown")
    bottom.grid(alpha=0.3)
    sharpe = result.metrics.get("sharpe", math.nan)
    top.set_title(f"Walk-forward backtest (Sharpe {sharpe:.2f}, net of costs)")
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_weights(result: BacktestResult, path: str | Path, top_n: int = 12) -> Path:
    """Stacked target weights per rebalance: the top_n names by mean weight, rest as other."""
    path = Path(path)
    figure = _figure(9.0, 5.0)
    axes = figure.subplots()
    weights = result.weights_matrix()
    if weights.shape[0]:
        x = np.array([r.date for r in result.rebalances]).astype("datetime64[D]").astype(object)
        order = np.argsort(-weights.mean(axis=0))[:top_n]
        order = order[weights[:, order].max(axis=0) > 0]
        stacks = [weights[:, j] for j in order]
        labels = [result.symbols[j] for j in order]
        other = weights.sum(axis=1) - weights[:, order].sum(axis=1)
        if np.any(other > 1e-12):
            stacks.append(other)
            labels.append("other")
        from matplotlib import colormaps

        colors = colormaps["tab20"](np.arange(len(stacks)) % 20)  # 10 default colours repeat
        axes.stackplot(x, np.vstack(stacks), labels=labels, colors=colors, step="post")
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    axes.set_ylim(0.0, 1.0)
    axes.set_ylabel("weight")
    axes.set_title("Target weights at each rebalance")
    figure.tight_layout()
    figure.savefig(path)
    return path
