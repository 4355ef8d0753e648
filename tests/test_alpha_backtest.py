"""Metrics and the walk-forward backtest: hand-computed series, no look-ahead, costs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from quant_assets.alpha.backtest import (
    plot_equity_curve,
    plot_weights,
    rebalance_indices,
    walk_forward,
)
from quant_assets.alpha.metrics import (
    annual_return,
    annual_volatility,
    calmar_ratio,
    hit_rate,
    max_drawdown,
    performance_summary,
    sharpe_ratio,
    sortino_ratio,
    turnover,
)
from quant_assets.alpha.params import OptimizationParams, RebalanceParams


def business_days(start: str, count: int) -> np.ndarray:
    days = np.arange(np.datetime64(start), np.datetime64(start) + 2 * count + 10)
    return days[np.is_busday(days)][:count]


def panel(n_obs: int, n_symbols: int, seed: int, young: dict[int, int] | None = None):
    """Factor-model daily returns (n_obs, n_symbols); `young` maps column -> genesis row."""
    rng = np.random.default_rng(seed)
    market = rng.normal(0.0004, 0.01, (n_obs, 1))
    returns = market * rng.uniform(0.5, 1.5, n_symbols) + rng.normal(
        0.0, 1.0, (n_obs, n_symbols)
    ) * rng.uniform(0.005, 0.02, n_symbols)
    for column, genesis in (young or {}).items():
        returns[:genesis, column] = np.nan
    return returns


# ---------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------


def test_metrics_of_a_hand_made_series():
    r = [0.1, -0.2, 0.125]  # equity 1.1, 0.88, 0.99
    mean = (0.1 - 0.2 + 0.125) / 3
    std = math.sqrt(((0.1 - mean) ** 2 + (-0.2 - mean) ** 2 + (0.125 - mean) ** 2) / 2)
    downside = math.sqrt((0.0 + 0.2**2 + 0.0) / 3)
    growth = 1.1 * 0.8 * 1.125

    assert max_drawdown(r) == pytest.approx(0.2, abs=1e-15)
    assert sharpe_ratio(r) == pytest.approx(mean / std * math.sqrt(252), rel=1e-12)
    assert sharpe_ratio(r, risk_free_rate=0.0252) == pytest.approx(
        (mean - 0.0001) / std * math.sqrt(252), rel=1e-12
    )
    assert sortino_ratio(r) == pytest.approx(mean / downside * math.sqrt(252), rel=1e-12)
    assert annual_return(r) == pytest.approx(growth ** (252 / 3) - 1, rel=1e-12)
    assert annual_volatility(r) == pytest.approx(std * math.sqrt(252), rel=1e-12)
    assert calmar_ratio(r) == pytest.approx((growth ** (252 / 3) - 1) / 0.2, rel=1e-12)
    assert hit_rate(r) == pytest.approx(2 / 3)
    assert turnover(np.array([0.5, 0.5, 0.0]), np.array([0.2, 0.5, 0.3])) == pytest.approx(0.6)


def test_drawdown_counts_a_loss_on_the_first_day_and_none_when_rising():
    assert max_drawdown([-0.1, 0.05]) == pytest.approx(0.1)
    summary = performance_summary([0.01, 0.02, 0.0])
    assert summary["max_drawdown"] == 0.0
    assert math.isnan(summary["calmar"])


# ---------------------------------------------------------------------------------------
# Walk-forward mechanics
# ---------------------------------------------------------------------------------------


def test_monthly_rebalance_is_the_last_trading_day_of_each_month():
    days = business_days("2024-01-25", 30)  # to early March
    indices = rebalance_indices(days, "monthly")
    assert [str(days[i]) for i in indices] == ["2024-01-31", "2024-02-29"]


def test_buy_and_hold_between_rebalances_by_hand():
    returns = np.array(
        [
            [0.00, 0.00],
            [0.00, 0.00],
            [0.01, 0.03],  # rebalance (row 2): buy 50/50 from cash at the close
            [0.10, -0.10],
            [0.00, 0.10],
            [0.02, -0.02],  # rebalance (row 5) at the close, after this day's drift
            [0.05, 0.05],
        ]
    )
    result = walk_forward(
        returns,
        business_days("2024-03-01", 7),
        ["A", "B"],
        OptimizationParams(objective="equal_weight", lookback=2),
        RebalanceParams(frequency=3, cost_bps=10.0),
    )

    values = np.array([0.5 * 1.1, 0.5 * 0.9])  # after row 3
    day4 = (values @ [0.0, 0.1]) / values.sum()
    values = values * [1.0, 1.1]  # after row 4
    day5 = (values @ [0.02, -0.02]) / values.sum()
    values = values * [1.02, 0.98]  # after row 5, before trading
    drifted = values / values.sum()
    turnover_5 = abs(0.5 - drifted[0]) + abs(0.5 - drifted[1])
    expected = [-0.001 * 1.0, 0.0, day4, day5 - 0.001 * turnover_5, 0.05]

    np.testing.assert_allclose(result.portfolio_returns, expected, atol=1e-15)
    assert [str(d) for d in result.dates] == [str(d) for d in business_days("2024-03-01", 7)[2:]]
    assert [r.turnover for r in result.rebalances] == pytest.approx([1.0, turnover_5])
    np.testing.assert_allclose(result.equity, np.cumprod(1 + np.array(expected)), rtol=1e-14)
    # The benchmark is equal weight too, so it must coincide here.
    np.testing.assert_allclose(result.benchmark_returns, expected, atol=1e-15)


@pytest.mark.parametrize("objective", ["min_variance", "max_sharpe"])
def test_no_look_ahead(objective):
    n_obs, n_symbols = 520, 25
    returns = panel(n_obs, n_symbols, seed=1, young={3: 200, 7: 330})
    days = business_days("2020-01-01", n_obs)
    symbols = [f"S{j}" for j in range(n_symbols)]
    params = OptimizationParams(lookback=120, objective=objective, max_weight=0.3)
    original = walk_forward(returns, days, symbols, params)
    schedule = rebalance_indices(days, "monthly")

    # Cut exactly on rebalance dates: even one day of look-ahead would change those weights.
    for cut in (schedule[schedule >= 300][0], schedule[schedule >= 430][0]):
        altered = returns.copy()
        rng = np.random.default_rng(int(cut))
        altered[cut + 1 :] = rng.normal(0.0, 0.2, altered[cut + 1 :].shape)  # another future
        changed = walk_forward(altered, days, symbols, params)

        past = [r for r in original.rebalances if r.date <= days[cut]]
        past_changed = [r for r in changed.rebalances if r.date <= days[cut]]
        assert past[-1].date == days[cut] and len(past) == len(past_changed)
        for before, after in zip(past, past_changed, strict=True):
            assert before.date == after.date
            np.testing.assert_array_equal(before.weights, after.weights)
        seen = original.dates <= days[cut]
        np.testing.assert_array_equal(
            original.portfolio_returns[seen], changed.portfolio_returns[seen]
        )
        future = [r for r in original.rebalances if r.date > days[cut]]
        future_changed = [r for r in changed.rebalances if r.date > days[cut]]
        assert any(  # the check has teeth: later rebalances do see the new data
            not np.array_equal(a.weights, b.weights)
            for a, b in zip(future, future_changed, strict=False)
        )


def test_transaction_costs_reduce_rebalance_day_returns_by_cost_times_turnover():
    returns = panel(400, 12, seed=2)
    days = business_days("2021-01-01", 400)
    symbols = [f"S{j}" for j in range(12)]
    params = OptimizationParams(lookback=100)
    free = walk_forward(returns, days, symbols, params, RebalanceParams(cost_bps=0.0))
    costly = walk_forward(returns, days, symbols, params, RebalanceParams(cost_bps=25.0))

    difference = free.portfolio_returns - costly.portfolio_returns
    rebalance_rows = np.isin(free.dates, [r.date for r in free.rebalances])
    turnovers = np.array([r.turnover for r in free.rebalances])
    assert turnovers.min() > 0
    np.testing.assert_allclose(difference[rebalance_rows], 25e-4 * turnovers, rtol=0, atol=1e-15)
    assert np.all(difference[~rebalance_rows] == 0.0)
    for a, b in zip(free.rebalances, costly.rebalances, strict=True):
        np.testing.assert_array_equal(a.weights, b.weights)
    assert costly.metrics["annual_return"] < free.metrics["annual_return"]


def test_young_symbols_join_only_with_enough_history():
    returns = panel(300, 6, seed=3, young={5: 150})
    days = business_days("2022-01-03", 300)
    result = walk_forward(
        returns, days, list("ABCDEF"), OptimizationParams(lookback=60), min_history=40
    )

    for record in result.rebalances:
        row = int(np.flatnonzero(days == record.date)[0])
        has_history = row - 150 + 1 >= 40  # returns from row 150 on, 40 of them needed
        assert record.n_eligible == (6 if has_history else 5)
        if not has_history:
            assert record.weights[5] == 0.0
    assert any(r.weights[5] > 0 for r in result.rebalances)
    assert all(r.weights.sum() == pytest.approx(1.0, abs=1e-9) for r in result.rebalances)


def test_infeasible_rebalances_are_skipped_and_recorded():
    returns = panel(300, 5, seed=4, young={3: 120, 4: 120})
    days = business_days("2022-01-03", 300)
    result = walk_forward(
        returns, days, list("ABCDE"), OptimizationParams(lookback=60, max_weight=0.3)
    )

    assert result.skipped, "3 eligible names cannot hold 0.3 each and sum to 1"
    assert all("max_weight=0.3" in reason for _, reason in result.skipped)
    assert max(d for d, _ in result.skipped) < min(r.date for r in result.rebalances)
    assert all(r.n_eligible >= 4 for r in result.rebalances)
    assert all(r.weights.max() <= 0.3 + 1e-8 for r in result.rebalances)


@pytest.mark.parametrize("objective", ["risk_parity", "hrp", "equal_weight"])
def test_other_objectives_run_end_to_end(objective):
    returns = panel(300, 8, seed=5)
    result = walk_forward(
        returns,
        business_days("2022-01-03", 300),
        list("ABCDEFGH"),
        OptimizationParams(lookback=80, objective=objective, max_weight=0.2),
    )
    assert len(result.rebalances) >= 9 and not result.skipped
    assert all(r.weights.max() <= 0.2 + 1e-8 for r in result.rebalances)
    assert np.all(np.isfinite(result.equity))


def test_to_dict_is_strict_json_with_the_daily_series():
    returns = panel(250, 5, seed=6)
    result = walk_forward(
        returns, business_days("2023-01-02", 250), list("VWXYZ"), OptimizationParams(lookback=60)
    )

    document = json.loads(json.dumps(result.to_dict(), allow_nan=False))

    assert set(document) >= {"params", "metrics", "benchmark_metrics", "rebalances", "daily"}
    assert len(document["daily"]["equity"]) == len(result.dates)
    assert document["daily"]["date"][0] == str(result.rebalances[0].date)
    first = document["rebalances"][0]
    assert sum(first["weights"].values()) == pytest.approx(1.0, abs=1e-9)
    assert document["metrics"]["sharpe"] == pytest.approx(result.metrics["sharpe"])


def test_plots_write_png_files_without_changing_the_backend(tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    returns = panel(250, 5, seed=7)
    result = walk_forward(
        returns, business_days("2023-01-02", 250), list("VWXYZ"), OptimizationParams(lookback=60)
    )

    equity = plot_equity_curve(result, tmp_path / "equity.png")
    weights = plot_weights(result, tmp_path / "weights.png")

    for path in (equity, weights):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == backend


def test_turnover_penalty_lowers_turnover_and_a_heavy_one_stops_trading():
    returns = panel(400, 15, seed=8)
    days = business_days("2021-01-01", 400)
    symbols = [f"S{j}" for j in range(15)]
    turnovers = []
    for penalty in (0.0, 0.001, 1.0):
        params = OptimizationParams(lookback=100, turnover_penalty=penalty)
        result = walk_forward(returns, days, symbols, params)
        turnovers.append(sum(r.turnover for r in result.rebalances[1:]))
    assert turnovers[0] > turnovers[1] > turnovers[2]
    assert turnovers[2] == pytest.approx(0.0, abs=1e-12)  # only the initial purchase
    with pytest.raises(ValueError, match="turnover_penalty is only supported"):
        OptimizationParams(objective="hrp", turnover_penalty=0.1)
