"""Portfolio optimisation: closed forms, bounds, errors, NaN policy and input types."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from quant_assets.alpha import (
    InfeasiblePortfolioError,
    InsufficientHistoryError,
    MinVarianceProblem,
    OptimizationParams,
    SolverError,
    cap_weights,
    hrp_weights,
    ledoit_wolf_covariance,
    ledoit_wolf_shrinkage,
    min_variance_kkt_residual,
    optimize_weights,
    sample_covariance,
)


def as_array(weights: dict[str, float]) -> np.ndarray:
    return np.array(list(weights.values()))


def exact_sample(mean: np.ndarray, cov: np.ndarray, n_obs: int, seed: int) -> np.ndarray:
    """Returns whose sample mean and (ddof=1) sample covariance are exactly mean and cov."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n_obs, mean.size))
    z -= z.mean(axis=0)
    # Whiten the draw so its sample covariance is the identity, then colour it.
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False)).T)
    return mean + z @ np.linalg.cholesky(cov).T


def factor_panel(n_obs: int, n_symbols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    market = rng.normal(0.0003, 0.01, (n_obs, 1))
    beta = rng.uniform(0.5, 1.5, n_symbols)
    idio = rng.normal(0.0, 1.0, (n_obs, n_symbols)) * rng.uniform(0.005, 0.02, n_symbols)
    return market * beta + idio + 0.0002


# ---------------------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------------------


def test_min_variance_two_assets_equals_closed_form():
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 0.01, (500, 2))
    x[:, 1] = 0.4 * x[:, 0] + 1.5 * x[:, 1]
    s = np.cov(x, rowvar=False)
    expected = (s[1, 1] - s[0, 1]) / (s[0, 0] + s[1, 1] - 2 * s[0, 1])
    assert 0.0 < expected < 1.0  # no bound binds: the closed form is the answer

    weights = optimize_weights(x, OptimizationParams(objective="min_variance", covariance="sample"))

    assert weights["0"] == pytest.approx(expected, abs=1e-6)
    assert weights["1"] == pytest.approx(1.0 - expected, abs=1e-6)


@pytest.mark.parametrize("solver", ["CLARABEL", "OSQP"])
def test_convex_path_on_raw_daily_covariance_matches_unscaled_kkt_solution(solver):
    # Daily covariance entries ~1e-4: the scale at which unscaled solvers stop early.
    cov = np.diag([1.0, 1.5, 2.0, 1.2, 0.8]) * 1e-4
    cov += 0.2e-4 * (np.ones((5, 5)) - np.eye(5))
    x = exact_sample(np.zeros(5), cov, 300, seed=1)
    # KKT system of min w'Sw s.t. 1'w = 1 (no bound active): [2S 1; 1' 0][w; -nu] = [0; 1].
    kkt = np.block([[2 * cov, np.ones((5, 1))], [np.ones((1, 5)), np.zeros((1, 1))]])
    expected = np.linalg.solve(kkt, np.r_[np.zeros(5), 1.0])[:5]
    assert np.all(expected > 0)

    problem = MinVarianceProblem(5, solvers=(solver,), active_set_first=False)
    weights = problem.solve(sample_covariance(x))

    assert problem.info.solver == solver
    np.testing.assert_allclose(weights, expected, atol=1e-6)
    auto = as_array(optimize_weights(x, OptimizationParams(covariance="sample")))
    np.testing.assert_allclose(auto, expected, atol=1e-6)


def test_max_sharpe_matches_tangency_portfolio():
    daily_mean = np.array([0.10, 0.14, 0.08]) / 252
    vols = np.array([0.20, 0.30, 0.15]) / np.sqrt(252)
    corr = np.array([[1.0, 0.3, 0.2], [0.3, 1.0, 0.25], [0.2, 0.25, 1.0]])
    cov = corr * np.outer(vols, vols)
    x = exact_sample(daily_mean, cov, 400, seed=2)
    rf = 0.02
    # Tangency: w proportional to Sigma^-1 (mu - rf), with mu and rf both annual.
    raw = np.linalg.solve(cov * 252, daily_mean * 252 - rf)
    expected = raw / raw.sum()
    assert np.all(expected > 0)

    weights = optimize_weights(
        x, OptimizationParams(objective="max_sharpe", covariance="sample", risk_free_rate=rf)
    )

    np.testing.assert_allclose(as_array(weights), expected, atol=1e-6)


def test_max_sharpe_respects_cap_and_beats_equal_weight_sharpe():
    x = factor_panel(600, 8, seed=3) + np.linspace(0.0, 0.0008, 8)
    weights = as_array(
        optimize_weights(
            x, OptimizationParams(objective="max_sharpe", covariance="sample", max_weight=0.25)
        )
    )
    mu, cov = x.mean(axis=0), np.cov(x, rowvar=False)

    def sharpe(w: np.ndarray) -> float:
        return float(mu @ w / np.sqrt(w @ cov @ w))

    assert weights.max() <= 0.25 + 1e-8
    rng = np.random.default_rng(0)
    feasible = [cap_weights(rng.dirichlet(np.ones(8)), 0.25) for _ in range(300)]
    assert sharpe(weights) >= max(sharpe(w) for w in feasible)


def test_max_sharpe_without_positive_excess_return_raises():
    x = factor_panel(300, 4, seed=4) - 0.01
    with pytest.raises(InfeasiblePortfolioError, match="max_sharpe.*risk-free rate"):
        optimize_weights(x, OptimizationParams(objective="max_sharpe"))


def test_risk_parity_gives_equal_risk_contributions():
    x = factor_panel(400, 6, seed=5)
    weights = as_array(
        optimize_weights(x, OptimizationParams(objective="risk_parity", covariance="sample"))
    )
    cov = np.cov(x, rowvar=False)
    contributions = weights * (cov @ weights)

    np.testing.assert_allclose(contributions, contributions.mean(), rtol=1e-6)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)


def test_risk_parity_with_cap_equalises_the_uncapped_names():
    x = factor_panel(400, 5, seed=6)
    x[:, 0] *= 0.2  # a very quiet name: unconstrained risk parity gives it the most weight
    free_weights = as_array(
        optimize_weights(x, OptimizationParams(objective="risk_parity", covariance="sample"))
    )
    assert free_weights[0] > 0.3

    weights = as_array(
        optimize_weights(
            x, OptimizationParams(objective="risk_parity", covariance="sample", max_weight=0.3)
        )
    )
    cov = np.cov(x, rowvar=False)
    contributions = weights * (cov @ weights)

    assert weights[0] == pytest.approx(0.3, abs=1e-10)
    assert weights.max() <= 0.3 + 1e-12
    np.testing.assert_allclose(contributions[1:], contributions[1:].mean(), rtol=1e-6)
    assert contributions[0] < contributions[1:].min()


def test_hrp_two_assets_is_inverse_variance():
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 1.0, (300, 2)) * [0.01, 0.02]
    x[:, 1] += 0.3 * x[:, 0]
    variances = np.var(x, axis=0, ddof=1)
    expected = (1 / variances) / np.sum(1 / variances)

    weights = optimize_weights(x, OptimizationParams(objective="hrp", covariance="sample"))

    np.testing.assert_allclose(as_array(weights), expected, atol=1e-12)


def test_hrp_with_diagonal_covariance_is_inverse_variance_for_any_order():
    variances = np.array([4.0, 1.0, 9.0, 2.0, 0.5, 3.0])
    weights = hrp_weights(np.diag(variances))
    expected = (1 / variances) / np.sum(1 / variances)
    np.testing.assert_allclose(weights, expected, atol=1e-12)


def test_hrp_four_assets_two_clusters_by_hand():
    # Two uncorrelated pairs; inside each pair correlation 0.8. Ordering puts pairs side by
    # side; first split {0,1} | {2,3}, then each pair splits by inverse variance.
    var = np.array([1.0, 4.0, 2.0, 2.0])
    corr = np.eye(4)
    corr[0, 1] = corr[1, 0] = corr[2, 3] = corr[3, 2] = 0.8
    cov = corr * np.sqrt(np.outer(var, var))

    def ivp_variance(members: list[int]) -> float:
        sub = cov[np.ix_(members, members)]
        ivp = (1 / np.diag(sub)) / np.sum(1 / np.diag(sub))
        return float(ivp @ sub @ ivp)

    v_left, v_right = ivp_variance([0, 1]), ivp_variance([2, 3])
    alpha = 1 - v_left / (v_left + v_right)
    expected = np.array(
        [alpha * 4 / 5, alpha * 1 / 5, (1 - alpha) / 2, (1 - alpha) / 2]
    )  # inside {0, 1}: 1/var = (1, 1/4) -> (4/5, 1/5)

    np.testing.assert_allclose(hrp_weights(cov), expected, atol=1e-12)


def test_equal_weight():
    x = factor_panel(50, 4, seed=8)
    assert optimize_weights(x, OptimizationParams(objective="equal_weight")) == {
        str(i): 0.25 for i in range(4)
    }


# ---------------------------------------------------------------------------------------
# Bounds and errors
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["min_variance", "max_sharpe", "risk_parity", "hrp"])
def test_caps_and_floors_respected(objective):
    x = factor_panel(500, 12, seed=9) + np.linspace(0, 0.0006, 12)
    x[:, :3] *= 0.3  # quiet names that every objective wants to overweight

    weights = as_array(
        optimize_weights(
            x, OptimizationParams(objective=objective, max_weight=0.12, min_weight=0.04)
        )
    )

    assert weights.max() <= 0.12 + 1e-8
    assert weights.min() >= 0.04 - 1e-8
    assert weights.sum() == pytest.approx(1.0, abs=1e-9)
    assert np.isclose(weights, 0.12, atol=1e-8).any()  # the cap binds in this example


def test_min_variance_bounds_give_a_certified_optimum():
    x = factor_panel(500, 30, seed=10)
    estimate = ledoit_wolf_covariance(x)
    convex = MinVarianceProblem(
        30, OptimizationParams(max_weight=0.06, min_weight=0.01), active_set_first=False
    ).solve(estimate)
    pivoting = MinVarianceProblem(30, OptimizationParams(max_weight=0.06, min_weight=0.01)).solve(
        estimate
    )

    np.testing.assert_allclose(convex, pivoting, atol=1e-9)
    residual = min_variance_kkt_residual(estimate, convex, np.full(30, 0.01), np.full(30, 0.06))
    assert residual < 1e-9
    # Moving weight between two free names may not lower the variance (optimality).
    sigma = estimate.matrix()
    free = np.flatnonzero((convex > 0.01 + 1e-9) & (convex < 0.06 - 1e-9))
    shift = np.zeros(30)
    shift[free[0]], shift[free[1]] = 1e-4, -1e-4
    assert (convex + shift) @ sigma @ (convex + shift) >= convex @ sigma @ convex


@pytest.mark.parametrize("objective", ["min_variance", "max_sharpe", "risk_parity", "hrp"])
def test_infeasible_cap_raises_before_solving(objective):
    x = factor_panel(100, 5, seed=11)
    # solvers=() would make any solve fail with SolverError: the check must come first.
    with pytest.raises(InfeasiblePortfolioError) as error:
        optimize_weights(x, OptimizationParams(objective=objective, max_weight=0.1), solvers=())
    message = str(error.value)
    assert objective in message
    assert "max_weight=0.1" in message and "5 symbols" in message and "0.5 < 1" in message


def test_infeasible_floor_raises_with_numbers():
    x = factor_panel(100, 5, seed=12)
    with pytest.raises(InfeasiblePortfolioError, match=r"min_variance: min_weight=0.25 x 5"):
        optimize_weights(x, OptimizationParams(min_weight=0.25), solvers=())


def test_no_solver_left_raises_solver_error():
    x = factor_panel(100, 5, seed=13)
    problem = MinVarianceProblem(5, active_set_first=False, solvers=())
    with pytest.raises(SolverError, match="min_variance"):
        problem.solve(sample_covariance(x))


# ---------------------------------------------------------------------------------------
# Covariance
# ---------------------------------------------------------------------------------------


def test_ledoit_wolf_shrinkage_matches_the_paper_formula():
    rng = np.random.default_rng(14)
    x = rng.normal(size=(40, 7)) @ rng.normal(size=(7, 7))
    t, n = x.shape
    xc = x - x.mean(axis=0)
    s = xc.T @ xc / t
    m = np.trace(s) / n
    d2 = np.sum((s - m * np.eye(n)) ** 2) / n
    b2 = sum(np.sum((np.outer(row, row) - s) ** 2) for row in xc) / t**2 / n
    expected = min(b2, d2) / d2

    shrinkage, mean_var = ledoit_wolf_shrinkage(x)
    estimate = ledoit_wolf_covariance(x)

    assert shrinkage == pytest.approx(expected, rel=1e-12)
    assert mean_var == pytest.approx(m, rel=1e-12)
    np.testing.assert_allclose(
        estimate.matrix(), (1 - expected) * s + expected * m * np.eye(n), atol=1e-12
    )


def test_ledoit_wolf_is_positive_definite_with_more_symbols_than_dates():
    x = factor_panel(60, 200, seed=15)
    estimate = ledoit_wolf_covariance(x)
    assert estimate.factor.shape == (60, 200)  # factor form: no 200 x 200 matrix needed
    assert np.linalg.eigvalsh(estimate.matrix()).min() > 0
    assert np.linalg.matrix_rank(sample_covariance(x).matrix()) == 59


def test_500_symbols_250_observations():
    x = factor_panel(250, 500, seed=16)
    sigma = np.cov(x, rowvar=False)
    equal = np.full(500, 1 / 500)

    shrunk = as_array(
        optimize_weights(x, OptimizationParams(covariance="ledoit_wolf", max_weight=0.05))
    )
    assert shrunk.sum() == pytest.approx(1.0, abs=1e-9)
    assert shrunk.min() >= 0.0 and shrunk.max() <= 0.05 + 1e-8
    estimate = ledoit_wolf_covariance(x)
    residual = min_variance_kkt_residual(estimate, shrunk, np.zeros(500), np.full(500, 0.05))
    assert residual < 1e-9

    # Sample covariance of 250 dates on 500 symbols has rank 249: the answer is a valid
    # portfolio with minimal in-sample variance but not unique (documented).
    sample = as_array(optimize_weights(x, OptimizationParams(covariance="sample", max_weight=0.05)))
    assert sample.sum() == pytest.approx(1.0, abs=1e-9)
    assert sample.min() >= 0.0 and sample.max() <= 0.05 + 1e-8
    assert sample @ sigma @ sample <= shrunk @ sigma @ shrunk + 1e-12
    assert sample @ sigma @ sample < equal @ sigma @ equal


def test_risk_parity_refuses_a_singular_covariance():
    x = factor_panel(30, 60, seed=17)
    with pytest.raises(ValueError, match="ledoit_wolf"):
        optimize_weights(x, OptimizationParams(objective="risk_parity", covariance="sample"))


# ---------------------------------------------------------------------------------------
# Inputs and NaN policy
# ---------------------------------------------------------------------------------------


def test_numpy_pandas_and_polars_inputs_agree():
    x = factor_panel(300, 4, seed=18)
    names = ["BTC", "ETH", "SOL", "ADA"]
    dates = pd.date_range("2024-01-01", periods=300, freq="D")
    frame = pd.DataFrame(x, columns=names).assign(date=dates)[["date", *names]]

    from_numpy = optimize_weights(x)
    from_pandas = optimize_weights(frame)
    from_polars = optimize_weights(pl.from_pandas(frame).rename({"date": "timestamp"}))

    assert list(from_numpy) == ["0", "1", "2", "3"]
    assert list(from_pandas) == names and list(from_polars) == names
    np.testing.assert_allclose(as_array(from_pandas), as_array(from_numpy), atol=1e-12)
    np.testing.assert_allclose(as_array(from_polars), as_array(from_numpy), atol=1e-12)


def test_leading_nan_uses_the_shared_window():
    x = factor_panel(300, 4, seed=19)
    young = x.copy()
    young[:120, 2] = np.nan  # listed 120 days later than the others

    weights = optimize_weights(young)

    np.testing.assert_allclose(as_array(weights), as_array(optimize_weights(x[120:])), atol=1e-12)


def test_too_little_history_names_the_symbol():
    frame = pl.DataFrame(factor_panel(100, 3, seed=20), schema=["AAA", "BBB", "NEW"])
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) < 90).then(None).otherwise(pl.col("NEW")).alias("NEW")
    )
    with pytest.raises(InsufficientHistoryError, match=r"min_observations=20 returns: NEW \(10\)"):
        optimize_weights(frame)


def test_turnover_penalty_trades_less_and_stays_optimal():
    x = factor_panel(400, 10, seed=21)
    estimate = ledoit_wolf_covariance(x)
    previous = np.full(10, 0.1)
    free = as_array(optimize_weights(x))
    small = MinVarianceProblem(10, OptimizationParams(turnover_penalty=0.002)).solve(
        estimate, previous
    )
    huge = MinVarianceProblem(10, OptimizationParams(turnover_penalty=10.0)).solve(
        estimate, previous
    )

    assert np.abs(small - previous).sum() < np.abs(free - previous).sum()
    np.testing.assert_allclose(huge, previous, atol=1e-12)
    # Penalty 0.002 per unit turnover in annual variance = 0.002 / 252 in daily units.
    residual = min_variance_kkt_residual(
        estimate, small, np.zeros(10), np.ones(10), previous, 0.002 / 252
    )
    assert residual < 1e-9


def test_dpp_problem_is_reused_across_covariances_and_masks():
    x = factor_panel(200, 80, seed=22)
    problem = MinVarianceProblem(
        80, OptimizationParams(max_weight=0.1), factor_rows=60, active_set_first=False
    )
    assert problem.is_dpp

    for start, active in ((0, np.ones(80, bool)), (60, np.arange(80) % 3 != 0)):
        window = x[start : start + 60][:, active]
        weights = problem.solve(ledoit_wolf_covariance(window), active=active)
        reference = as_array(
            optimize_weights(window, OptimizationParams(max_weight=0.1), min_observations=60)
        )  # a fresh dense problem on the active names only
        assert np.all(weights[~active] == 0.0)
        np.testing.assert_allclose(weights[active], reference, atol=1e-9)
        assert problem.info.solver == "CLARABEL"
