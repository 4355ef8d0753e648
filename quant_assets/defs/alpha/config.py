"""The alpha cycle's run config: one class per asset that takes config, the one function
that turns it into the run's `Policy`, and the check of a whole run config before a run
starts.

The config classes are the run-config surface (the UI's form, `quant alpha` overrides,
a recorded run's config); their field names stay as they were so recorded runs still
reproduce. Everything downstream takes the `Policy` they build (`policy_from_config`).
"""

from collections.abc import Mapping
from typing import Any, Literal

import dagster as dg
import pydantic

from quant_assets.alpha.params import OptimizationParams, RebalanceParams
from quant_assets.alpha.policy import Policy
from quant_assets.alpha.selection import SelectionParams

OBJECTIVE = Literal["min_variance", "max_sharpe", "risk_parity", "hrp", "equal_weight"]


class SnapshotConfig(dg.Config):
    stale_tolerance_days: int = pydantic.Field(
        default=4,
        ge=0,
        description="a candidate whose file ends earlier than as-of minus this is stale",
    )
    feature_version: int | None = pydantic.Field(
        default=None,
        ge=0,
        description=(
            "the Delta version of tv_technicals_1d the run reads (time travel); null: the "
            "version current when the snapshot is taken. `quant reproduce` sets the recorded one"
        ),
    )

    def recorded(self) -> dict:
        """manifest.json's parameters: the pin is recorded as `feature_store_version`."""
        return self.model_dump(exclude={"feature_version"})


class SelectionConfig(dg.Config):
    lookback: int = pydantic.Field(
        default=252, ge=20, description="rows of the returns matrix scored"
    )
    skip: int = pydantic.Field(
        default=21, ge=0, description="most recent rows left out of the momentum"
    )
    min_history: int = pydantic.Field(
        default=200, ge=2, description="finite returns needed in the lookback"
    )
    min_quality: float = pydantic.Field(
        default=0.8, ge=0.0, le=1.0, description="minimum catalog data-quality score"
    )
    n_clusters: int = pydantic.Field(default=8, ge=1)
    per_cluster: int = pydantic.Field(default=2, ge=1)
    n_winners: int = pydantic.Field(default=12, ge=1)
    max_relaxations: int = pydantic.Field(default=3, ge=0)
    feature_weight: float = pydantic.Field(
        default=0.5,
        ge=0.0,
        allow_inf_nan=False,
        description=(
            "weight of the tv_technicals_1d rating (in [-1, 1]) added to the risk-adjusted "
            "momentum score; 0 selects without the feature store"
        ),
    )

    def params(self, periods_per_year: int) -> SelectionParams:
        return SelectionParams(**self.model_dump(), periods_per_year=periods_per_year)


class OptimizationConfig(dg.Config):
    objective: OBJECTIVE = "min_variance"
    covariance: Literal["sample", "ledoit_wolf"] = "ledoit_wolf"
    max_weight: float | None = pydantic.Field(
        default=0.25, gt=0.0, le=1.0, description="cap per symbol; null for none"
    )
    min_weight: float = pydantic.Field(default=0.0, ge=0.0, lt=1.0)
    risk_free_rate: float = pydantic.Field(default=0.0, description="annual, decimal")
    turnover_penalty: float = pydantic.Field(
        default=0.0,
        ge=0.0,
        description=(
            "min_variance: adds this x sum |w - w_prev| (annual-variance units) against the "
            "previous run's weights for the same universe and policy"
        ),
    )
    lookback: int = pydantic.Field(
        default=252, ge=20, description="rows used to estimate the covariance"
    )
    turnover_cap: float | None = pydantic.Field(
        default=None,
        ge=0.0,
        description=(
            "min_variance, max_sharpe: sum |w - w_prev| at most this against the previous "
            "run's weights; null for no cap"
        ),
    )

    def params(self) -> OptimizationParams:
        return OptimizationParams(**self.model_dump())


class BacktestConfig(dg.Config):
    window_days: int = pydantic.Field(
        default=756, ge=60, description="rows of the out-of-sample window"
    )
    rebalance: Literal["weekly", "monthly", "quarterly"] = "monthly"
    cost_bps: float = pydantic.Field(default=10.0, ge=0.0)

    def params(self) -> RebalanceParams:
        return RebalanceParams(
            frequency=self.rebalance, cost_bps=self.cost_bps, window_days=self.window_days
        )


def policy_from_config(
    selection: SelectionParams, optimization: OptimizationConfig, backtest: BacktestConfig
) -> Policy:
    """The run's policy. `selection` is what the selection ran with (selection.json's
    parameters, or `SelectionConfig.params(periods_per_year)`); raises ValueError for a
    combination no objective supports (e.g. a turnover penalty with hrp)."""
    return Policy(selection, optimization.params(), backtest.params())


def backtest_config_of(run_config: Mapping[str, Any]) -> BacktestConfig:
    """The backtest section of a run config (defaults where it has none): the rebalance
    part of the policy, which `portfolio_weights` records with the rest."""
    section = ((run_config.get("ops") or {}).get("backtest") or {}).get("config") or {}
    return BacktestConfig(**section)


CONFIG_CLASSES: dict[str, type[dg.Config]] = {
    "run_snapshot": SnapshotConfig,
    "selected_winners": SelectionConfig,
    "portfolio_weights": OptimizationConfig,
    "backtest": BacktestConfig,
}


def validate_alpha_run_config(run_config: dict[str, Any]) -> None:
    """Check run config against the alpha configs before a run starts.

    Dagster checks names and types when a run is launched, but value constraints
    (a negative max weight, zero winners) only when the step builds its config; this
    catches them up front with one clear error.
    """
    from quant_resources.errors import ConfigError

    problems = []
    built: dict[str, Any] = {}
    for op, section in (run_config.get("ops") or {}).items():
        config_class = CONFIG_CLASSES.get(op)
        if config_class is None:
            problems.append(
                f"ops.{op}: not an alpha asset with config (known: {', '.join(CONFIG_CLASSES)})"
            )
            continue
        try:
            built[op] = config_class(**((section or {}).get("config") or {}))
        except pydantic.ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"])
                problems.append(f"ops.{op}.config.{field}: {err['msg']} (got {err.get('input')!r})")
    if not problems:
        # The sections together: the policy refuses combinations (a turnover penalty with
        # an objective that cannot take one) that no single section can see.
        try:
            selection = built.get("selected_winners", SelectionConfig()).params(252)
        except ValueError as exc:
            problems.append(f"ops.selected_winners.config: {exc}")
        else:
            try:
                policy_from_config(
                    selection,
                    built.get("portfolio_weights", OptimizationConfig()),
                    built.get("backtest", BacktestConfig()),
                )
            except ValueError as exc:
                problems.append(f"ops.portfolio_weights.config: {exc}")
    if problems:
        raise ConfigError("invalid alpha run config: " + "; ".join(problems))
