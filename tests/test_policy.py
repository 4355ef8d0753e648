"""The policy object and turnover control: round trip and hash, a penalty and a cap that
work against given previous weights (hand-computed answers), the policy walk-forward
without look-ahead and trading from the weights it holds, and the daily run trading from
the previous run of the same policy (never a later one) through the real alpha job."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json

import dagster as dg
import numpy as np
import polars as pl
import pytest
from helpers import run_data_job

from quant_assets.alpha.backtest import rebalance_indices, walk_forward
from quant_assets.alpha.covariance import sample_covariance
from quant_assets.alpha.optimize import (
    InfeasiblePortfolioError,
    MinVarianceProblem,
    min_variance_kkt_residual,
    optimize_weights,
)
from quant_assets.alpha.params import OptimizationParams, RebalanceParams
from quant_assets.alpha.policy import Policy, policy_walk_forward, turnover_between
from quant_assets.alpha.runs import find_previous_run, restore_previous_run
from quant_assets.alpha.selection import SelectionParams
from quant_assets.definitions import ALPHA_JOB, build_definitions, validate_alpha_run_config
from quant_resources.errors import ConfigError
from quant_resources.settings import Settings

# ---------------------------------------------------------------------------------------
# Hand-made data
# ---------------------------------------------------------------------------------------


def exact_sample(cov: np.ndarray, n_obs: int, seed: int) -> np.ndarray:
    """Zero-mean returns whose (ddof=1) sample covariance is exactly `cov`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n_obs, cov.shape[0]))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False)).T)
    return z @ np.linalg.cholesky(cov).T


# Two uncorrelated names, daily variances 1e-4 and 3e-4: in annual units (x 252)
# a = 0.0252, b = 0.0756. Minimum variance holds A at b / (a + b) = 0.75.
A_VAR, B_VAR = 1e-4, 3e-4
ANNUAL_A, ANNUAL_B = 252 * A_VAR, 252 * B_VAR
TWO = exact_sample(np.diag([A_VAR, B_VAR]), 300, seed=1)
HELD = {"A": 0.5, "B": 0.5}


def two_names(params: OptimizationParams, previous=HELD) -> np.ndarray:
    frame = pl.DataFrame(TWO, schema=["A", "B"])
    weights = optimize_weights(frame, params, previous)
    return np.array([weights["A"], weights["B"]])


def business_days(start: str, count: int) -> np.ndarray:
    days = np.arange(np.datetime64(start), np.datetime64(start) + 2 * count + 10)
    return days[np.is_busday(days)][:count]


def panel(n_obs: int, n_symbols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    market = rng.normal(0.0004, 0.01, (n_obs, 1))
    drift = np.linspace(-0.0005, 0.0008, n_symbols)
    return (
        market * rng.uniform(0.5, 1.5, n_symbols)
        + rng.normal(0.0, 1.0, (n_obs, n_symbols)) * rng.uniform(0.005, 0.02, n_symbols)
        + drift
    )


SMALL_SELECTION = SelectionParams(
    lookback=60, skip=5, min_history=40, min_quality=0.0, n_clusters=3, per_cluster=3, n_winners=6
)


# ---------------------------------------------------------------------------------------
# The policy object
# ---------------------------------------------------------------------------------------


def test_policy_round_trips_through_json_and_its_hash_is_the_canonical_sha256():
    policy = Policy(
        SelectionParams(lookback=120, skip=10, min_history=100, n_winners=8, periods_per_year=365),
        OptimizationParams(
            objective="min_variance", max_weight=0.3, turnover_penalty=0.002, turnover_cap=0.4
        ),
        RebalanceParams(frequency="weekly", cost_bps=5.0, window_days=500),
    )
    document = json.loads(json.dumps(policy.to_dict()))

    assert Policy.from_dict(document) == policy
    assert Policy.from_dict(document).hash == policy.hash
    canonical = json.dumps(policy.to_dict(), sort_keys=True, separators=(",", ":"))
    assert policy.hash == hashlib.sha256(canonical.encode()).hexdigest()
    assert policy.periods_per_year == 365
    # Every part names the policy; an int where a float is meant does not.
    assert (
        dataclasses.replace(policy, rebalance=RebalanceParams("monthly", 5.0, 500)).hash
        != policy.hash
    )
    tighter = dataclasses.replace(policy.optimization, turnover_cap=0.3)
    assert dataclasses.replace(policy, optimization=tighter).hash != policy.hash
    assert OptimizationParams(turnover_penalty=1) == OptimizationParams(turnover_penalty=1.0)
    assert (
        Policy(optimization=OptimizationParams(max_weight=1)).hash
        == Policy(optimization=OptimizationParams(max_weight=1.0)).hash
    )


def test_a_document_from_before_the_policy_object_loads_with_default_rebalancing():
    legacy = {
        "selection": dataclasses.asdict(SelectionParams()),
        "optimization": {
            "objective": "min_variance",
            "covariance": "ledoit_wolf",
            "max_weight": 0.25,
            "min_weight": 0.0,
            "risk_free_rate": 0.0,
            "turnover_penalty": 0.0,
            "lookback": 252,
        },
    }
    policy = Policy.from_dict(legacy)
    assert policy.rebalance == RebalanceParams() and policy.optimization.turnover_cap is None
    with pytest.raises(ValueError, match="needs"):
        Policy.from_dict({"selection": legacy["selection"]})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"objective": "hrp", "turnover_penalty": 0.1}, "turnover_penalty is only supported"),
        ({"objective": "max_sharpe", "turnover_penalty": 0.1}, "use turnover_cap with max_sharpe"),
        ({"objective": "risk_parity", "turnover_cap": 0.2}, "turnover_cap is only supported"),
        ({"objective": "equal_weight", "turnover_cap": 0.2}, "turnover_cap is only supported"),
        ({"turnover_penalty": -1.0}, "must be finite and >= 0"),
        ({"covariance": "oas"}, "unknown covariance"),
    ],
)
def test_unsupported_turnover_combinations_fail_when_the_policy_is_built(fields, message):
    with pytest.raises(ValueError, match=message):
        OptimizationParams(**fields)


def test_the_run_config_check_sees_the_policy_across_sections():
    validate_alpha_run_config({"ops": {"portfolio_weights": {"config": {"turnover_cap": 0.3}}}})
    with pytest.raises(
        ConfigError, match=r"ops\.portfolio_weights\.config: turnover_penalty is only"
    ):
        validate_alpha_run_config(
            {
                "ops": {
                    "portfolio_weights": {"config": {"objective": "hrp", "turnover_penalty": 0.01}}
                }
            }
        )


# ---------------------------------------------------------------------------------------
# Turnover against given previous weights (hand-computed)
# ---------------------------------------------------------------------------------------


def test_a_positive_penalty_lowers_turnover_to_the_hand_computed_answer():
    # Stationarity with A bought and B sold: 2 a w_A + p = nu = 2 b w_B - p, so
    # w_A = (b - p) / (a + b) while that stays >= 0.5, i.e. p <= (b - a) / 2 = 0.0252.
    free = two_names(OptimizationParams(covariance="sample"))
    penalised = two_names(OptimizationParams(covariance="sample", turnover_penalty=0.01))
    held = np.array([0.5, 0.5])

    np.testing.assert_allclose(free, [0.75, 0.25], atol=1e-12)
    expected = (ANNUAL_B - 0.01) / (ANNUAL_A + ANNUAL_B)
    np.testing.assert_allclose(penalised, [expected, 1.0 - expected], atol=1e-12)
    assert np.abs(penalised - held).sum() < np.abs(free - held).sum()
    assert np.abs(penalised - held).sum() == pytest.approx(
        (ANNUAL_B - ANNUAL_A - 0.02) / (ANNUAL_A + ANNUAL_B), abs=1e-12
    )


def test_a_large_penalty_returns_the_previous_weights_exactly():
    held = two_names(OptimizationParams(covariance="sample", turnover_penalty=0.05))
    assert held.tolist() == [0.5, 0.5]  # past p = 0.0252 not trading is optimal


def test_without_previous_weights_the_penalty_changes_nothing():
    # From cash the penalty is a constant (every answer buys the whole book).
    np.testing.assert_array_equal(
        two_names(OptimizationParams(covariance="sample", turnover_penalty=0.01), previous=None),
        two_names(OptimizationParams(covariance="sample"), previous=None),
    )


def test_the_cap_holds_and_binds_where_the_hand_computation_says():
    # Turnover from (0.5, 0.5) is 2 (w_A - 0.5) and the variance falls all the way to
    # w_A = 0.75, so a cap of 0.2 stops at w_A = 0.6 exactly.
    capped = two_names(OptimizationParams(covariance="sample", turnover_cap=0.2))
    np.testing.assert_allclose(capped, [0.6, 0.4], atol=1e-9)
    assert np.abs(capped - 0.5).sum() <= 0.2
    # A cap that does not bind leaves the minimum-variance answer alone.
    np.testing.assert_allclose(
        two_names(OptimizationParams(covariance="sample", turnover_cap=0.8)),
        [0.75, 0.25],
        atol=1e-12,
    )


def test_the_cap_counts_names_sold_out_of_the_universe():
    # C was held at 0.2 and is no longer a candidate: selling it uses 0.2 of the cap.
    previous = {"A": 0.4, "B": 0.4, "C": 0.2}
    weights = two_names(OptimizationParams(covariance="sample", turnover_cap=0.5), previous)
    traded = turnover_between({"A": weights[0], "B": weights[1]}, previous)
    assert traded <= 0.5 + 1e-12 and traded == pytest.approx(0.5, abs=1e-9)
    with pytest.raises(InfeasiblePortfolioError, match="turnover_cap=0.1 cannot be met"):
        two_names(OptimizationParams(covariance="sample", turnover_cap=0.1), previous)


def test_a_cap_below_the_turnover_the_selection_forces_fails_naming_the_least():
    # E (held at 0.2) is no longer eligible: it must be sold and 0.2 bought elsewhere, so
    # no answer trades less than 0.4.
    x = panel(300, 4, seed=9)
    held = np.full(5, 0.2)
    active = np.array([True, True, True, True, False])
    estimate = sample_covariance(x)
    with pytest.raises(
        InfeasiblePortfolioError, match="least turnover the bounds allow .* is 0.4 "
    ):
        MinVarianceProblem(5, OptimizationParams(turnover_cap=0.39)).solve(estimate, held, active)
    problem = MinVarianceProblem(5, OptimizationParams(turnover_cap=0.41))
    weights = problem.solve(estimate, held, active)
    assert weights[4] == 0.0 and 0.41 - 1e-9 <= np.abs(weights - held).sum() <= 0.41
    assert problem.info.cap_solves <= 6
    # A cap exactly at the least turnover is met on that floor.
    at_floor = MinVarianceProblem(5, OptimizationParams(turnover_cap=0.4))
    weights = at_floor.solve(estimate, held, active)
    assert np.abs(weights - held).sum() == pytest.approx(0.4, abs=1e-12)
    assert at_floor.info.cap_solves <= 20


def test_a_binding_cap_is_the_certified_optimum_of_penalty_plus_its_multiplier():
    rng = np.random.default_rng(3)
    x = panel(300, 20, seed=3)
    estimate = sample_covariance(x)
    previous = rng.dirichlet(np.ones(20))
    previous = np.minimum(previous, 0.2)
    previous /= previous.sum()
    free = MinVarianceProblem(20, OptimizationParams(max_weight=0.2)).solve(estimate, previous)
    problem = MinVarianceProblem(20, OptimizationParams(max_weight=0.2, turnover_cap=0.3))
    capped = problem.solve(estimate, previous)

    assert np.abs(free - previous).sum() > 0.3  # the cap binds
    assert 0.3 - 1e-9 <= np.abs(capped - previous).sum() <= 0.3
    multiplier = problem.info.cap_multiplier
    assert multiplier > 0
    residual = min_variance_kkt_residual(
        estimate, capped, np.zeros(20), np.full(20, 0.2), previous, multiplier / 252
    )
    assert residual < 1e-8
    # No portfolio on the segment to the free answer within the cap does better.
    sigma = estimate.matrix()
    on_segment = previous + 0.3 / np.abs(free - previous).sum() * (free - previous)
    assert capped @ sigma @ capped <= (on_segment @ sigma @ on_segment) * (1 + 1e-8)


def test_max_sharpe_takes_a_cap():
    x = panel(400, 8, seed=4) + np.linspace(0.0, 0.001, 8)
    frame = pl.DataFrame(x, schema=[f"S{j}" for j in range(8)])
    held = {f"S{j}": 0.125 for j in range(8)}
    free = optimize_weights(frame, OptimizationParams(objective="max_sharpe", max_weight=0.4), held)
    capped = optimize_weights(
        frame, OptimizationParams(objective="max_sharpe", max_weight=0.4, turnover_cap=0.25), held
    )
    assert turnover_between(free, held) > 0.25
    assert turnover_between(capped, held) <= 0.25 + 1e-9
    assert sum(capped.values()) == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------------------------------
# The policy walk-forward
# ---------------------------------------------------------------------------------------


def walk_policy(returns, days, symbols, optimization: OptimizationParams):
    # Turnover tests: momentum only (the feature term has tests of its own below).
    selection = dataclasses.replace(SMALL_SELECTION, feature_weight=0.0)
    policy = Policy(selection, optimization, RebalanceParams(window_days=10_000))
    return policy_walk_forward(returns, days, symbols, policy)


def test_the_policy_walk_forward_applies_the_penalty_it_is_given():
    returns = panel(420, 15, seed=5)
    days = business_days("2021-01-04", 420)
    symbols = [f"S{j:02d}" for j in range(15)]
    turnovers = {}
    for penalty in (0.0, 0.002):
        result = walk_policy(
            returns, days, symbols, OptimizationParams(lookback=60, turnover_penalty=penalty)
        )
        assert len(result.rebalances) >= 15 and not result.skipped
        turnovers[penalty] = sum(r.turnover for r in result.rebalances[1:])
        assert result.params["turnover_penalty"] == penalty
    assert turnovers[0.002] < turnovers[0.0]


def test_the_walk_forward_trades_from_the_drifted_weights_it_holds():
    # Every name selected and a penalty too heavy to trade: after the first purchase the
    # target must be the drifted holdings themselves (turnover 0). Were the penalty taken
    # against the last target instead, every rebalance would trade the drift back.
    returns = panel(300, 6, seed=6)
    days = business_days("2022-01-03", 300)
    result = walk_forward(
        returns, days, list("ABCDEF"), OptimizationParams(lookback=60, turnover_penalty=10.0)
    )
    assert len(result.rebalances) >= 10
    assert result.rebalances[0].turnover == pytest.approx(1.0)
    assert max(r.turnover for r in result.rebalances[1:]) < 1e-12
    assert not np.allclose(result.rebalances[1].weights, result.rebalances[0].weights, atol=1e-6)


def test_the_walk_forward_respects_the_cap_at_every_rebalance():
    returns = panel(400, 10, seed=7)
    days = business_days("2021-01-04", 400)
    symbols = [f"S{j}" for j in range(10)]
    free = walk_forward(returns, days, symbols, OptimizationParams(lookback=60))
    capped = walk_forward(returns, days, symbols, OptimizationParams(lookback=60, turnover_cap=0.1))
    assert max(r.turnover for r in free.rebalances[1:]) > 0.1
    assert capped.rebalances[0].turnover == pytest.approx(1.0)  # from cash: no cap
    assert max(r.turnover for r in capped.rebalances[1:]) <= 0.1 + 1e-12
    assert not capped.skipped


def test_nothing_after_a_rebalance_changes_what_the_policy_chose_at_it():
    returns = panel(460, 15, seed=8)
    days = business_days("2021-01-04", 460)
    symbols = [f"S{j:02d}" for j in range(15)]
    optimization = OptimizationParams(lookback=60, max_weight=0.4, turnover_penalty=0.001)
    original = walk_policy(returns, days, symbols, optimization)
    schedule = rebalance_indices(days, "monthly")

    for cut in (schedule[schedule >= 200][0], schedule[schedule >= 340][0]):
        altered = returns.copy()
        rng = np.random.default_rng(int(cut))
        altered[cut + 1 :] = rng.normal(0.0, 0.2, altered[cut + 1 :].shape)  # another future
        changed = walk_policy(altered, days, symbols, optimization)

        past = [r for r in original.rebalances if r.date <= days[cut]]
        past_changed = [r for r in changed.rebalances if r.date <= days[cut]]
        assert past[-1].date == days[cut] and len(past) == len(past_changed)
        for before, after in zip(past, past_changed, strict=True):
            assert before.date == after.date
            assert before.weights.tobytes() == after.weights.tobytes()
            assert before.turnover == after.turnover
        seen = original.dates <= days[cut]
        assert (
            original.portfolio_returns[seen].tobytes() == changed.portfolio_returns[seen].tobytes()
        )
        later = zip(
            [r for r in original.rebalances if r.date > days[cut]],
            [r for r in changed.rebalances if r.date > days[cut]],
            strict=False,
        )
        assert any(not np.array_equal(a.weights, b.weights) for a, b in later)  # it has teeth


# Eight names moving with one market, drifts 0, 0.0005, ..., 0.0035 a day and tiny
# idiosyncratic noise: momentum over any window ranks them S0 < S1 < ... < S7. One
# cluster, three winners, equal weight: without features the policy holds S5, S6, S7 at
# 1/3 each at every rebalance; a rating of +1 (x feature_weight 1) lifts S0 above S5.
RATED_SELECTION = SelectionParams(
    lookback=60, skip=5, min_history=40, min_quality=0.0, n_clusters=1, per_cluster=8,
    n_winners=3, feature_weight=1.0,
)
RATED_POLICY = Policy(
    RATED_SELECTION,
    OptimizationParams(objective="equal_weight", lookback=60, max_weight=0.5),
    RebalanceParams("monthly", cost_bps=0.0, window_days=10_000),
)
RATED_SYMBOLS = [f"S{j}" for j in range(8)]


def rated_panel() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(12)
    market = rng.normal(0.0, 0.01, (300, 1))
    returns = market + np.linspace(0.0, 0.0035, 8) + rng.normal(0.0, 0.0005, (300, 8))
    return returns, business_days("2022-01-03", 300)


def weights_at(result, day) -> np.ndarray:
    return next(r.weights for r in result.rebalances if r.date == day)


def test_the_walk_forward_scores_with_the_rating_as_of_each_rebalance():
    returns, days = rated_panel()
    ratings = np.zeros(returns.shape)
    base = policy_walk_forward(returns, days, RATED_SYMBOLS, RATED_POLICY, features=ratings)
    third = 1.0 / 3.0
    assert len(base.rebalances) >= 8
    for record in base.rebalances:  # hand-computed: the top three drifts, equal weight
        np.testing.assert_allclose(record.weights, [0, 0, 0, 0, 0, third, third, third], atol=1e-12)
    cut = base.rebalances[4].date
    t = int(np.flatnonzero(days == cut)[0])
    # S0 rated +1 as of that rebalance: its score gains 1 and it replaces S5, there only.
    rated = ratings.copy()
    rated[t, 0] = 1.0
    lifted = policy_walk_forward(returns, days, RATED_SYMBOLS, RATED_POLICY, features=rated)
    np.testing.assert_allclose(weights_at(lifted, cut), [third, 0, 0, 0, 0, 0, third, third], atol=1e-12)
    for before, after in zip(base.rebalances, lifted.rebalances, strict=True):
        if before.date != cut:  # rows of other dates are other days' ratings
            assert before.weights.tobytes() == after.weights.tobytes()
    # Point in time: any ratings after the rebalance change nothing at or before it.
    future = rated.copy()
    future[t + 1 :] = np.random.default_rng(3).uniform(-1.0, 1.0, future[t + 1 :].shape)
    changed = policy_walk_forward(returns, days, RATED_SYMBOLS, RATED_POLICY, features=future)
    past = [r for r in lifted.rebalances if r.date <= cut]
    past_changed = [r for r in changed.rebalances if r.date <= cut]
    assert len(past) == len(past_changed) == 5
    for before, after in zip(past, past_changed, strict=True):
        assert before.date == after.date and before.weights.tobytes() == after.weights.tobytes()
    seen = lifted.dates <= cut
    assert lifted.portfolio_returns[seen].tobytes() == changed.portfolio_returns[seen].tobytes()
    later = zip(
        [r for r in lifted.rebalances if r.date > cut],
        [r for r in changed.rebalances if r.date > cut],
        strict=True,
    )
    assert any(not np.array_equal(a.weights, b.weights) for a, b in later)  # it has teeth


def test_the_walk_forwards_selection_is_the_daily_selection_on_that_days_data():
    returns, days = rated_panel()
    ratings = np.random.default_rng(4).uniform(-1.0, 1.0, returns.shape)
    ratings[::7, 2] = np.nan  # no rating on some days: a feature term of 0, as in the daily run
    result = policy_walk_forward(returns, days, RATED_SYMBOLS, RATED_POLICY, features=ratings)
    for record in result.rebalances:
        t = int(np.flatnonzero(days == record.date)[0])
        as_of = {s: (None if np.isnan(v) else float(v)) for s, v in zip(RATED_SYMBOLS, ratings[t], strict=True)}
        daily = RATED_POLICY.select(returns[: t + 1], RATED_SYMBOLS, features=as_of)
        held = {RATED_SYMBOLS[j] for j in np.flatnonzero(record.weights > 0)}
        assert held == set(daily.symbols), record.date


def test_without_a_feature_weight_nothing_is_read_and_with_one_features_are_required():
    returns, days = rated_panel()
    momentum_only = dataclasses.replace(
        RATED_POLICY, selection=dataclasses.replace(RATED_SELECTION, feature_weight=0.0)
    )
    plain = policy_walk_forward(returns, days, RATED_SYMBOLS, momentum_only)
    ignored = policy_walk_forward(
        returns, days, RATED_SYMBOLS, momentum_only, features=np.ones(returns.shape)
    )
    assert plain.weights_matrix().tobytes() == ignored.weights_matrix().tobytes()
    with pytest.raises(ValueError, match="feature_weight 1.0 > 0: pass `features`"):
        policy_walk_forward(returns, days, RATED_SYMBOLS, RATED_POLICY)
    with pytest.raises(ValueError, match=r"shape \(300, 7\).*\(300, 8\)"):
        policy_walk_forward(returns, days, RATED_SYMBOLS, RATED_POLICY, features=np.zeros((300, 7)))


# ---------------------------------------------------------------------------------------
# The runs folder
# ---------------------------------------------------------------------------------------


def test_the_finder_takes_the_latest_earlier_run_of_the_same_universe_and_policy(tmp_path):
    def stand_in(run_id: str, as_of: str, universe="small", policy="p1", weight=0.5):
        restore_previous_run(
            tmp_path,
            {"run_id": run_id, "as_of": as_of, "weights": {"X": weight, "Y": 1 - weight}},
            universe,
            policy,
        )

    stand_in("run-a", "2025-06-01", weight=0.1)
    stand_in("run-b", "2025-06-03", weight=0.3)
    stand_in("run-c", "2025-06-05", weight=0.5)  # later than the day asked below
    stand_in("run-d", "2025-06-04", universe="large")
    stand_in("run-e", "2025-06-04", policy="p2")
    (tmp_path / "run-f").mkdir()  # unsealed, unreadable: skipped

    found = find_previous_run(tmp_path, dt.date(2025, 6, 5), "small", "p1")
    assert (found.run_id, found.as_of, found.weights) == (
        "run-b",
        "2025-06-03",
        {"X": 0.3, "Y": 0.7},
    )
    assert find_previous_run(tmp_path, "2025-06-01", "small", "p1") is None  # strictly before
    assert find_previous_run(tmp_path, "2025-06-02", "small", "p1").run_id == "run-a"
    assert find_previous_run(tmp_path / "none", "2025-06-02", "small", "p1") is None


# ---------------------------------------------------------------------------------------
# The daily run, through the real alpha job
# ---------------------------------------------------------------------------------------

AS_OF = dt.date(2025, 6, 30)
START = dt.date(2024, 1, 1)
PENALISED = {"ops": {"portfolio_weights": {"config": {"turnover_penalty": 0.5}}}}


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy")
    settings = Settings(
        data_dir=root / "data",
        history_start=START,
        synthetic_symbols=40,
        universe="small",
        freshness_hours=1e6,
    )
    assert run_data_job(settings, START, AS_OF).success
    return settings


def run_alpha(settings: Settings, day: dt.date, run_config=None) -> str:
    job = build_definitions(settings).resolve_job_def(ALPHA_JOB)
    result = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        partition_key=day.isoformat(),
        run_config=run_config or {},
        raise_on_error=False,
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result.run_id


def recorded(settings: Settings, run_id: str) -> tuple[dict, dict[str, float]]:
    folder = settings.runs_dir / run_id
    weights = pl.read_parquet(folder / "weights.parquet")
    return json.loads((folder / "optimization.json").read_text()), dict(weights.iter_rows())


@pytest.fixture(scope="module")
def chain(lakehouse):
    """Penalised runs for Thursday June 26 then Monday June 30, then (afterwards) for
    June 25 and June 27, and an unpenalised June 30."""
    days = {
        "d26": dt.date(2025, 6, 26),
        "d30": AS_OF,
        "d25": dt.date(2025, 6, 25),
        "d27": dt.date(2025, 6, 27),
    }
    runs = {name: run_alpha(lakehouse, day, PENALISED) for name, day in days.items()}
    runs["free30"] = run_alpha(lakehouse, AS_OF)
    return lakehouse, runs


def test_the_daily_run_trades_from_the_previous_run_of_its_policy(chain):
    settings, runs = chain
    first, first_weights = recorded(settings, runs["d26"])
    second, second_weights = recorded(settings, runs["d30"])

    assert first["previous_run_id"] is None and first["previous"] is None
    assert "no earlier sealed run of this policy" in first["previous_note"]
    assert second["previous_run_id"] == runs["d26"]
    assert second["previous"] == {
        "run_id": runs["d26"],
        "as_of": "2025-06-26",
        "weights": first_weights,
    }
    assert second["policy_hash"] == first["policy_hash"] == Policy.from_dict(second).hash
    assert second["optimization"]["turnover_penalty"] == 0.5
    assert second["turnover_vs_previous"] == pytest.approx(
        turnover_between(second_weights, first_weights)
    )
    # The penalty lowers the turnover against those weights compared with no penalty.
    free, free_weights = recorded(settings, runs["free30"])
    assert free["previous_run_id"] is None and "not used" in free["previous_note"]
    assert turnover_between(second_weights, first_weights) < turnover_between(
        free_weights, first_weights
    )


def test_a_run_for_an_earlier_day_never_reads_a_later_runs_weights(chain):
    settings, runs = chain
    earliest, _ = recorded(settings, runs["d25"])
    between, _ = recorded(settings, runs["d27"])
    assert earliest["previous_run_id"] is None  # d26 and d30 existed, both later
    assert between["previous_run_id"] == runs["d26"]  # not d30, sealed before it ran


def test_the_registered_policy_predicts_its_runs_weights_from_the_recorded_previous(chain):
    from quant_assets.mlops.registry import policy_weights

    settings, runs = chain
    folder = settings.runs_dir / runs["d30"]
    parameters, weights = recorded(settings, runs["d30"])
    selection = json.loads((folder / "selection.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert selection["relaxations"] == []
    eligible = [
        d["symbol"]
        for d in manifest["files"].values()
        if d["data_quality_score"] >= selection["parameters"]["min_quality"]
    ]
    returns = pl.read_parquet(folder / "returns_matrix.parquet").select("date", *sorted(eligible))
    stored = pl.read_parquet(folder / "features.parquet")  # the feature-store term it scored with
    ratings = dict(zip(stored["symbol"], stored["rating"], strict=True))
    predicted = dict(policy_weights(returns, parameters, features=ratings).iter_rows())
    assert predicted.keys() == weights.keys()
    assert list(predicted.values()) == pytest.approx(list(weights.values()), abs=1e-12)
    from_cash = dict(policy_weights(returns, parameters, previous={}, features=ratings).iter_rows())
    assert from_cash != pytest.approx(predicted, abs=1e-6)  # the previous weights matter


def test_reproduce_restores_the_previous_run_the_original_traded_from(chain):
    from quant_assets.mlops.reproduce import reproduce

    settings, runs = chain
    result = reproduce(settings, runs["d30"], instance=dg.DagsterInstance.ephemeral())
    assert result.identical, [(c.name, c.detail) for c in result.differences]


def test_the_registered_policy_refuses_to_drop_its_feature_term():
    """A policy that scores with the feature store, asked without ratings, says so instead
    of quietly choosing momentum-only winners (what the run did not trade)."""
    from quant_assets.alpha.policy import Policy
    from quant_assets.mlops.registry import policy_weights

    rng = np.random.default_rng(3)
    returns = pl.DataFrame({f"S{i}": rng.normal(0, 0.01, 300) for i in range(6)})
    parameters = Policy().to_dict()
    assert parameters["selection"]["feature_weight"] > 0
    with pytest.raises(ValueError, match="feature_weight"):
        policy_weights(returns, parameters)
