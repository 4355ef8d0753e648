"""The selection policy: one object that owns every parameter of selection, optimisation
and rebalancing, and the policy walk-forward.

A `Policy` (in the spirit of skfolio's estimators and cvxportfolio's policies) is a frozen
value made of `SelectionParams` (which names), `OptimizationParams` (how they are
weighted, turnover control included) and `RebalanceParams` (when the walk-forward trades
and what it costs). It is the one thing the daily run (`portfolio_weights`), the backtest
and the registered MLflow model use: each builds it once (`Policy.from_dict` on a run's
`optimization.json`, or `policy_from_config` from the run config) and passes it whole,
so no parameter is copied by hand from one function to the next.

`to_dict()` / `from_dict()` round-trip exactly (what `optimization.json` and the MLflow
model store); `hash` is the sha256 of the canonical JSON of `to_dict()`, which names the
policy: the daily run takes its previous weights from the latest earlier run of the same
universe *and the same policy hash*.

Backtesting today's winners over the past would leak today's knowledge into the past
(the winners were picked with returns the backtest then "earns"). Instead the whole
policy runs at each rebalance date t on the rows <= t: selection picks the winners (with
the feature-store term of the score, from the ratings as of t, as the daily run scores
them), the optimiser weights them (penalising or capping turnover against the weights
held at t), and the positions are held until the next rebalance.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from quant_assets.alpha.backtest import BacktestResult, walk_forward
from quant_assets.alpha.optimize import optimize_weights
from quant_assets.alpha.params import OptimizationParams, RebalanceParams
from quant_assets.alpha.selection import Selection, SelectionParams, select_winners

__all__ = [
    "OptimizationParams",
    "Policy",
    "RebalanceParams",
    "SelectionParams",
    "policy_walk_forward",
    "turnover_between",
    "walk_forward_start",
    "weights_frame",
]

SECTIONS = ("selection", "optimization", "rebalance")


@dataclass(frozen=True)
class Policy:
    """Selection, optimisation and rebalancing parameters: the whole investment policy.

    selection: eligibility, score, clustering, winners (its periods_per_year is the
        policy's annualisation, 252 or 365 for an all-crypto panel).
    optimization: objective, covariance, bounds, risk-free rate, lookback, turnover
        penalty and cap.
    rebalance: walk-forward frequency, cost_bps and window_days.
    """

    selection: SelectionParams = field(default_factory=SelectionParams)
    optimization: OptimizationParams = field(default_factory=OptimizationParams)
    rebalance: RebalanceParams = field(default_factory=RebalanceParams)

    def __post_init__(self) -> None:
        for name, kind in (
            ("selection", SelectionParams),
            ("optimization", OptimizationParams),
            ("rebalance", RebalanceParams),
        ):
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"Policy.{name} must be a {kind.__name__}")

    # -- identity ----------------------------------------------------------------------
    @property
    def periods_per_year(self) -> int:
        return self.selection.periods_per_year

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """{"selection": {...}, "optimization": {...}, "rebalance": {...}}, JSON-ready."""
        return {
            "selection": asdict(self.selection),
            "optimization": asdict(self.optimization),
            "rebalance": asdict(self.rebalance),
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Policy:
        """The policy of `to_dict()` output, or of a document holding it (a run's
        `optimization.json`: other top-level keys are ignored). A document from before
        the policy object (selection and optimization only) gets the default rebalance
        and no turnover cap."""
        missing = [s for s in ("selection", "optimization") if s not in document]
        if missing:
            raise ValueError(f"a policy document needs {missing}; got keys {sorted(document)}")
        return cls(
            selection=SelectionParams(**document["selection"]),
            optimization=OptimizationParams(**document["optimization"]),
            rebalance=RebalanceParams(**(document.get("rebalance") or {})),
        )

    @property
    def hash(self) -> str:
        """sha256 of the canonical JSON of `to_dict()` (sorted keys, no spaces)."""
        canonical = json.dumps(
            self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    # -- what it does --------------------------------------------------------------------
    def select(
        self,
        returns: np.ndarray,
        symbols: list[str],
        quality: dict[str, float] | None = None,
        flagged: set[str] | None = None,
        features: dict[str, float | None] | None = None,
    ) -> Selection:
        """The winners on (T, N) returns ending at the as-of row (`select_winners`);
        `features`: symbol -> feature-store rating as of that row (the score's feature term)."""
        return select_winners(returns, symbols, self.selection, quality=quality, flagged=flagged, features=features)

    def weights(
        self,
        returns: pl.DataFrame,
        symbols: list[str],
        previous: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        """The optimiser on the last `optimization.lookback` rows of `symbols`.

        previous: the weights held (symbol -> weight; names outside `symbols` are sold and
        count in the turnover). None: no turnover control.
        """
        window = returns.select(symbols).tail(self.optimization.lookback)
        return optimize_weights(
            window, self.optimization, previous, periods_per_year=self.periods_per_year
        )

    def walk_forward(
        self,
        returns: np.ndarray,
        dates: np.ndarray,
        symbols: list[str],
        quality: dict[str, float] | None = None,
        features: np.ndarray | None = None,
    ) -> BacktestResult:
        """`policy_walk_forward(returns, dates, symbols, self, quality, features)`."""
        return policy_walk_forward(returns, dates, symbols, self, quality, features)


def walk_forward_start(n_rows: int, policy: Policy) -> int:
    """The first row of a (n_rows, N) returns matrix the policy walk-forward reads: the
    last `rebalance.window_days` rows after a warm-up of the longer lookback. A caller
    reading features for the walk-forward needs them from this row's date on."""
    warmup = max(policy.optimization.lookback, policy.selection.lookback)
    return max(0, n_rows - policy.rebalance.window_days - warmup)


def policy_walk_forward(
    returns: np.ndarray,
    dates: np.ndarray,
    symbols: list[str],
    policy: Policy,
    quality: dict[str, float] | None = None,
    features: np.ndarray | None = None,
) -> BacktestResult:
    """Walk-forward of the whole policy over the last `policy.rebalance.window_days` rows
    (after a warm-up of the lookbacks, from `walk_forward_start`).

    returns: (T, N) daily simple returns (NaN where a symbol has no bar); dates: (T,).
    features: (T, N) feature-store ratings aligned with `returns`: row t holds each
        symbol's rating as of dates[t] (NaN: no rating, a feature term of 0, as in the
        daily run). Required when `policy.selection.feature_weight > 0`, ignored at 0.
        Only row t is read at rebalance t (rows before `walk_forward_start` never), so
        the selection at t sees features up to t only.
    At each rebalance t the selection runs on rows <= t and the ratings as of t, then the
    optimiser on the winners with the turnover penalty or cap against the weights held at
    t. The benchmark is equal weight over every symbol with enough history at each
    rebalance.
    """
    selection, optimization = policy.selection, policy.optimization
    ratings = _checked_features(features, returns.shape, selection.feature_weight)
    first = walk_forward_start(returns.shape[0], policy)
    matrix = returns[first:]
    days = dates[first:]
    index = {s: j for j, s in enumerate(symbols)}

    def select(t: int, eligible: np.ndarray) -> np.ndarray:
        # Only rows <= t are visible here: walk_forward passes the rebalance row.
        as_of_t = None if ratings is None else _ratings_row(ratings[first + t], symbols)
        chosen = policy.select(matrix[: t + 1], symbols, quality, features=as_of_t)
        mask = np.zeros(len(symbols), dtype=bool)
        for name in chosen.symbols:
            mask[index[name]] = True
        return mask & eligible

    return walk_forward(
        matrix,
        days,
        symbols,
        optimization,
        policy.rebalance,
        select=select,
        min_history=min(selection.min_history, optimization.lookback),
        periods_per_year=policy.periods_per_year,
    )


def _checked_features(
    features: np.ndarray | None, shape: tuple[int, ...], feature_weight: float
) -> np.ndarray | None:
    if feature_weight == 0:
        return None  # the policy selects without the feature store: nothing to read
    if features is None:
        raise ValueError(
            f"the policy scores with feature_weight {feature_weight} > 0: pass `features`, "
            "the (T, N) ratings as of each row's date (NaN where none), or use a policy "
            "with feature_weight 0"
        )
    ratings = np.asarray(features, dtype=float)
    if ratings.shape != tuple(shape):
        raise ValueError(
            f"features have shape {ratings.shape}; they must align with the returns {tuple(shape)}"
        )
    return ratings


def _ratings_row(row: np.ndarray, symbols: list[str]) -> dict[str, float | None]:
    """symbol -> rating as `select_winners` takes it (None: no rating, feature term 0)."""
    return {s: (float(v) if np.isfinite(v) else None) for s, v in zip(symbols, row, strict=True)}


def weights_frame(
    returns: pl.DataFrame,
    symbols: list[str],
    policy: Policy,
    previous: Mapping[str, float] | None = None,
) -> pl.DataFrame:
    """`weights.parquet`: `policy.weights(returns, symbols, previous)` as (symbol, weight)
    sorted by symbol."""
    weights = policy.weights(returns, symbols, previous)
    return pl.DataFrame(
        {"symbol": list(weights), "weight": [float(w) for w in weights.values()]},
        schema={"symbol": pl.String, "weight": pl.Float64},
    ).sort("symbol")


def turnover_between(weights: Mapping[str, float], previous: Mapping[str, float]) -> float:
    """sum_i |w_i - previous_i| over every name in either (a name missing counts as 0)."""
    names = set(weights) | set(previous)
    return float(sum(abs(weights.get(s, 0.0) - previous.get(s, 0.0)) for s in sorted(names)))
