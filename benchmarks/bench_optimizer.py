"""Minimum variance: ours against skfolio and PyPortfolioOpt, and the walk-forward timing.

Run from the repository root (skfolio and PyPortfolioOpt come from the `bench` extra):

    .venv/bin/python benchmarks/bench_optimizer.py [--repeats 3] [--blas-threads N]
    .venv/bin/python benchmarks/bench_optimizer.py --walk-forward-only [--policy]

`--walk-forward-only` skips the single-solve comparison (no bench extra needed) and times
the 10-year monthly walk-forward only: the default policy's optimiser (no turnover
control), then with a turnover penalty and with a turnover cap. `--policy` adds the whole
policy walk-forward at 1000 symbols (selection, then optimisation, at each rebalance).

One run, same synthetic returns for every library: a 10-factor model with 1000 symbols and
1500 daily observations (seed 7). Each library estimates the sample covariance from the
returns itself and solves long-only minimum variance; wall times are the best of
`--repeats` runs (cvxpy compilation included for everyone). The reference answer is ours
(certified by its KKT residual); for each peer the table shows the largest absolute weight
difference and the peer's relative excess variance over ours.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from quant_assets.alpha.backtest import walk_forward
from quant_assets.alpha.covariance import ledoit_wolf_covariance, sample_covariance
from quant_assets.alpha.optimize import MinVarianceProblem, OptimizationParams, optimize_weights
from quant_assets.alpha.policy import Policy, RebalanceParams, policy_walk_forward
from quant_assets.alpha.selection import SelectionParams

SEED = 7
N_SYMBOLS = 1000
N_OBSERVATIONS = 1500
N_FACTORS = 10


def factor_returns(n_obs: int, n_symbols: int, seed: int, young_share: float = 0.0) -> np.ndarray:
    """Daily returns r = B f + e: (n_obs, n_symbols), ~1-3 % daily vol, optional late starts.

    With young_share > 0 that share of symbols gets NaN before a random genesis row in the
    first half of the sample, like the Alpha cycle's returns panel.
    """
    rng = np.random.default_rng(seed)
    loadings = rng.normal(1.0, 0.5, (n_symbols, N_FACTORS)) * np.r_[1.0, np.full(9, 0.4)]
    factors = rng.normal(0.0003, 0.006, (n_obs, N_FACTORS))
    idio_vol = rng.uniform(0.008, 0.025, n_symbols)
    returns = factors @ loadings.T + rng.normal(0.0, 1.0, (n_obs, n_symbols)) * idio_vol
    if young_share > 0:
        young = rng.random(n_symbols) < young_share
        genesis = rng.integers(1, n_obs // 2, n_symbols)
        for j in np.flatnonzero(young):
            returns[: genesis[j], j] = np.nan
    return returns


def best_time(run: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def ours(returns: np.ndarray) -> np.ndarray:
    weights = optimize_weights(returns, OptimizationParams(covariance="sample"))
    return np.array(list(weights.values()))


def ours_convex_only(returns: np.ndarray) -> np.ndarray:
    # The fallback path on its own: cvxpy + Clarabel on the scaled problem, then polish.
    problem = MinVarianceProblem(returns.shape[1], active_set_first=False, solvers=("CLARABEL",))
    return problem.solve(sample_covariance(returns))


def dpp_resolve_seconds(n_symbols: int, lookback: int, windows: int) -> float:
    """Mean seconds per re-solve of the DPP-compiled problem (Clarabel, no active-set start)."""
    panel = factor_returns(lookback + 21 * windows, n_symbols, SEED + 1)
    problem = MinVarianceProblem(
        n_symbols, factor_rows=lookback, active_set_first=False, solvers=("CLARABEL",)
    )
    problem.solve(ledoit_wolf_covariance(panel[:lookback]))  # compiles
    start = time.perf_counter()
    for w in range(1, windows + 1):
        problem.solve(ledoit_wolf_covariance(panel[21 * w : 21 * w + lookback]))
    return (time.perf_counter() - start) / windows


def skfolio_min_variance(returns: np.ndarray) -> np.ndarray:
    from skfolio import RiskMeasure
    from skfolio.optimization import MeanRisk, ObjectiveFunction

    model = MeanRisk(
        objective_function=ObjectiveFunction.MINIMIZE_RISK, risk_measure=RiskMeasure.VARIANCE
    )
    return np.asarray(model.fit(returns).weights_)


def pypfopt_min_volatility(returns: np.ndarray, solver: str | None = None) -> np.ndarray:
    import pandas as pd
    from pypfopt import EfficientFrontier, risk_models

    frame = pd.DataFrame(returns)
    covariance = risk_models.sample_cov(frame, returns_data=True)
    frontier = EfficientFrontier(None, covariance, weight_bounds=(0, 1), solver=solver)
    weights = frontier.min_volatility()
    pypfopt_min_volatility.solver_name = frontier._opt.solver_stats.solver_name
    return np.array([weights[c] for c in frame.columns])


def walk_forward_timings(repeats: int, policy: bool) -> None:
    """The 10-year monthly walk-forward at 250 and 1000 symbols (best of `repeats`)."""
    print(
        "\nwalk-forward: min_variance, ledoit_wolf, monthly, 252-day lookback, 10 bps; "
        "10 years out of sample (2520 days) after a 252-day warm-up; 30 % of symbols "
        "listed late"
    )
    print(
        f"{'symbols':>8s} {'turnover control':>22s} {'time s':>7s} {'rebalances':>10s} {'active-set share':>16s}"
    )
    rows_total = 252 + 2520
    dates = np.arange(np.datetime64("2014-01-06"), np.datetime64("2026-12-31"))
    dates = dates[np.is_busday(dates)][:rows_total]
    cases = [
        (250, "none", OptimizationParams()),
        (1000, "none", OptimizationParams()),
        (1000, "turnover_penalty 0.001", OptimizationParams(turnover_penalty=0.001)),
        (1000, "turnover_cap 0.5", OptimizationParams(turnover_cap=0.5)),
    ]
    for n_symbols, label, params in cases:
        panel = factor_returns(rows_total, n_symbols, SEED + n_symbols, young_share=0.3)
        symbols = [f"S{j:04d}" for j in range(n_symbols)]
        elapsed, result = best_time(
            lambda p=panel, s=symbols, o=params: walk_forward(p, dates, s, o), repeats
        )
        share = np.mean([r.method.startswith("active-set") for r in result.rebalances])
        print(
            f"{n_symbols:8d} {label:>22s} {elapsed:7.2f} {len(result.rebalances):10d} {share:16.0%}"
        )
    if policy:
        n_symbols = 1000
        panel = factor_returns(rows_total, n_symbols, SEED + n_symbols, young_share=0.3)
        symbols = [f"S{j:04d}" for j in range(n_symbols)]
        whole = Policy(
            SelectionParams(),
            OptimizationParams(max_weight=0.25),
            RebalanceParams(window_days=2520),
        )
        # Ratings as of each day (the feature-store term the policy scores with).
        ratings = np.random.default_rng(SEED).uniform(-1.0, 1.0, panel.shape)
        elapsed, result = best_time(
            lambda: policy_walk_forward(panel, dates, symbols, whole, features=ratings), repeats
        )
        print(
            f"policy walk-forward (selection of 12 among {n_symbols}, then min_variance, at "
            f"each of {len(result.rebalances)} rebalances): {elapsed:.2f} s"
        )
    seconds = dpp_resolve_seconds(1000, 252, windows=3)
    print(
        f"DPP fallback (1000 symbols, 252-row factor, Clarabel): {seconds:.2f} s per "
        f"re-solve, i.e. ~{120 * seconds:.0f} s if all 120 rebalances needed it"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--blas-threads", type=int, default=None, help="limit BLAS threads for every library"
    )
    parser.add_argument("--skip-backtest", action="store_true")
    parser.add_argument(
        "--walk-forward-only", action="store_true", help="skip the single-solve comparison"
    )
    parser.add_argument(
        "--policy", action="store_true", help="also time the whole policy walk-forward"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")

    limits = threadpool_limits(args.blas_threads, user_api="blas") if args.blas_threads else None
    blas = ", ".join(f"{i['internal_api']} x{i['num_threads']}" for i in threadpool_info())
    if args.walk_forward_only:
        print(f"BLAS {blas}; best of {args.repeats}")
        walk_forward_timings(args.repeats, args.policy)
        return
    returns = factor_returns(N_OBSERVATIONS, N_SYMBOLS, SEED)
    sigma = np.cov(returns, rowvar=False)
    print(
        f"min variance, long-only, sample covariance: {N_SYMBOLS} symbols x {N_OBSERVATIONS} "
        f"days, seed {SEED}; BLAS {blas}; best of {args.repeats}"
    )

    ours_time, reference = best_time(lambda: ours(returns), args.repeats)
    rows = [("ours: optimize_weights (auto)", ours_time, reference)]
    convex_time, convex = best_time(lambda: ours_convex_only(returns), args.repeats)
    rows.append(("ours: cvxpy/Clarabel path only", convex_time, convex))
    peers = [
        ("skfolio MeanRisk (Clarabel)", lambda: skfolio_min_variance(returns)),
        ("PyPortfolioOpt, default solver", lambda: pypfopt_min_volatility(returns)),
        ("PyPortfolioOpt, CLARABEL", lambda: pypfopt_min_volatility(returns, "CLARABEL")),
    ]
    for name, run in peers:
        elapsed, weights = best_time(run, args.repeats)
        if name.endswith("default solver"):
            name = f"{name} ({pypfopt_min_volatility.solver_name})"
        rows.append((name, elapsed, weights))

    reference_variance = float(reference @ sigma @ reference)
    fastest_peer = min(elapsed for _, elapsed, _ in rows[2:])
    print(f"{'method':38s} {'time s':>7s} {'max |dw|':>9s} {'excess var':>10s} {'x ours':>9s}")
    for name, elapsed, weights in rows:
        gap = float(np.max(np.abs(weights - reference)))
        excess = float(weights @ sigma @ weights) / reference_variance - 1.0
        print(f"{name:38s} {elapsed:7.3f} {gap:9.1e} {excess:10.1e} {elapsed / ours_time:9.2f}")
    print(
        f"fastest peer / ours: auto {fastest_peer / ours_time:.2f}x, "
        f"cvxpy/Clarabel path {fastest_peer / convex_time:.2f}x (> 1: ours is faster)"
    )

    if not args.skip_backtest:
        walk_forward_timings(args.repeats, args.policy)
    if limits is not None:
        limits.restore_original_limits()


if __name__ == "__main__":
    main()
