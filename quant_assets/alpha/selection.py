"""Selection policy: eligibility, a risk-adjusted momentum score, clustering, top k per cluster.

Given the returns matrix up to the as-of date (only rows <= as-of are ever looked at):

1. **Eligibility**: at least `min_history` finite returns in the last `lookback` rows;
   data-quality score >= `min_quality`; not flagged with a level shift.
2. **Score** (risk-adjusted momentum, skipping the last month, plus the feature term):
   momentum = prod(1 + r) - 1 over rows [t - lookback + 1, t - skip], then
   score = momentum / (std(r over the lookback) * sqrt(periods_per_year))
           + feature_weight * feature,
   where `feature` is the symbol's technical `rating` in [-1, 1] from the feature store
   `tv_technicals_1d` as of the as-of day (0 for a symbol without one). Without
   `features` (None) the feature term is left out and the score is the momentum term.
3. **Clusters**: average-linkage hierarchical clustering of the eligible symbols on the
   correlation distance d = sqrt((1 - rho) / 2) over the lookback (pairwise-complete
   correlations), cut into at most `n_clusters` clusters.
4. **Winners**: the best `per_cluster` by score in each cluster, then the best
   `n_winners` of those; ties broken by symbol name, so the result is deterministic.
5. **Relaxation**: while fewer than `n_winners` symbols are eligible, lower
   `min_quality` by `relax_quality_step` and `min_history` by `relax_history_factor`,
   up to `max_relaxations` times; every step is recorded.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform


@dataclass(frozen=True)
class SelectionParams:
    lookback: int = 252
    skip: int = 21
    min_history: int = 200
    min_quality: float = 0.8
    n_clusters: int = 8
    per_cluster: int = 2
    n_winners: int = 12
    max_relaxations: int = 3
    relax_quality_step: float = 0.1
    relax_history_factor: float = 0.75
    periods_per_year: int = 252
    # Weight of the feature-store rating (in [-1, 1]) added to the risk-adjusted momentum:
    # a rating of +1 is worth `feature_weight` units of annualised momentum/volatility.
    feature_weight: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.feature_weight) and self.feature_weight >= 0.0):
            raise ValueError(f"feature_weight ({self.feature_weight}) must be finite and >= 0")
        if not 0 <= self.skip < self.lookback:
            raise ValueError(
                f"skip ({self.skip}) must be >= 0 and below lookback ({self.lookback})"
            )
        if not 2 <= self.min_history <= self.lookback:
            raise ValueError(
                f"min_history ({self.min_history}) must be in [2, lookback={self.lookback}]"
            )
        if self.n_winners < 1 or self.per_cluster < 1 or self.n_clusters < 1:
            raise ValueError("n_winners, per_cluster and n_clusters must be >= 1")
        if not 0.0 <= self.min_quality <= 1.0:
            raise ValueError(f"min_quality ({self.min_quality}) must be in [0, 1]")


@dataclass
class Selection:
    winners: list[dict[str, Any]]
    params: dict[str, Any]
    eligible: int
    candidates: int
    relaxations: list[dict[str, Any]] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    # Where the feature term came from (table, column, day, symbols without a value), set
    # by the caller that read the features; part of the hashed content when present.
    features: dict[str, Any] | None = None

    @property
    def symbols(self) -> list[str]:
        return [w["symbol"] for w in self.winners]

    def document(self, as_of: str) -> dict[str, Any]:
        """selection.json: content plus `hash`, the sha256 of the canonical content."""
        body = {
            "as_of": as_of,
            "parameters": self.params,
            "candidates": self.candidates,
            "eligible": self.eligible,
            "relaxations": self.relaxations,
            "excluded": self.excluded,
            "winners": self.winners,
        }
        if self.features is not None:
            body["features"] = self.features
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return {**body, "hash": hashlib.sha256(canonical.encode()).hexdigest()}


def _round(x: float) -> float:
    # Scores are stored rounded so that a last-bit difference between BLAS builds does not
    # change the selection hash.
    return float(f"{x:.10g}")


def _feature_value(value: float | None) -> float:
    if value is None:
        return math.nan
    value = float(value)
    return value if math.isfinite(value) else math.nan


def scores(
    window: np.ndarray, skip: int, periods_per_year: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(momentum, annualised volatility, score) per column of a (L, N) return window."""
    momentum_rows = window[: window.shape[0] - skip] if skip else window
    growth = np.where(np.isfinite(momentum_rows), 1.0 + momentum_rows, 1.0)
    momentum = np.prod(growth, axis=0) - 1.0
    counts = np.isfinite(window).sum(axis=0)
    with warnings.catch_warnings():  # columns with fewer than 2 returns give NaN, on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        volatility = np.where(counts >= 2, np.nanstd(window, axis=0, ddof=1), np.nan) * math.sqrt(periods_per_year)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(volatility > 0, momentum / volatility, np.nan)
    return momentum, volatility, score


def pairwise_correlation(window: np.ndarray) -> np.ndarray:
    """(N, N) pairwise-complete Pearson correlations of the columns of a (L, N) window.

    rho_ij uses the rows where both columns are finite; it is not finite (NaN, or +-inf
    from rounding) where undefined: fewer than 2 common rows, or no variance over them.
    The diagonal is 1 and the matrix is exactly symmetric.

    Complete columns (no NaN in the window) share every row, so their block is one
    symmetric product of the standardised columns; only the columns with a NaN need the
    pairwise sums (`_pairwise_block`). A window without NaN costs one (N x L) syrk.
    """
    n = window.shape[1]
    mask = np.isfinite(window)
    complete = mask.all(axis=0)
    full = np.flatnonzero(complete)
    partial = np.flatnonzero(~complete)
    if partial.size == 0:
        corr = _complete_block(window)
    else:
        corr = np.empty((n, n))
        filled = np.where(mask, window, 0.0)
        present = mask.astype(float)
        x_p, m_p = filled[:, partial], present[:, partial]
        corr[np.ix_(partial, partial)] = _pairwise_block(x_p, m_p)
        if full.size:
            corr[np.ix_(full, full)] = _complete_block(window[:, full])
            across = _pairwise_block(filled[:, full], None, x_p, m_p)
            corr[np.ix_(full, partial)] = across
            corr[np.ix_(partial, full)] = across.T
    np.fill_diagonal(corr, 1.0)
    return corr


def _complete_block(window: np.ndarray) -> np.ndarray:
    # Pearson over all rows: z = (x - mean) / ||x - mean||, rho = z^T z. `z.T @ z` on one
    # buffer is a syrk in NumPy (half the work of a product, exactly symmetric).
    centred = window - window.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = centred / np.sqrt(np.einsum("ij,ij->j", centred, centred))
    return z.T @ z


def _pairwise_block(
    x_a: np.ndarray,
    m_a: np.ndarray | None,
    x_b: np.ndarray | None = None,
    m_b: np.ndarray | None = None,
) -> np.ndarray:
    """Pairwise-complete correlations between the columns of a and b over their common rows.

    x: (L, k) returns with NaN replaced by 0; m: (L, k) 1.0 where present. m_a None: the
    a columns are complete (no product needed for the b side's counts and sums). b None:
    b is a (the block is symmetric; its products are syrks and its sums one product).
    """
    if x_b is None:
        counts = m_a.T @ m_a
        sums_a = x_a.T @ m_a  # sums_a[i, j] = sum of x_i over the rows where x_j is present
        sums_b = sums_a.T
        squares_a = (x_a * x_a).T @ m_a
        squares_b = squares_a.T
        products = x_a.T @ x_a
    else:
        if m_a is None:
            counts = m_b.sum(axis=0)[None, :]
            sums_b = x_b.sum(axis=0)[None, :]
            squares_b = (x_b * x_b).sum(axis=0)[None, :]
        else:
            counts = m_a.T @ m_b
            sums_b = m_a.T @ x_b
            squares_b = m_a.T @ (x_b * x_b)
        sums_a = x_a.T @ m_b
        squares_a = (x_a * x_a).T @ m_b
        products = x_a.T @ x_b
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_a = sums_a / counts
        mean_b = sums_b / counts
        cov = products / counts - mean_a * mean_b
        var_a = squares_a / counts - mean_a**2
        var_b = squares_b / counts - mean_b**2
        return cov / np.sqrt(var_a * var_b)


def correlation_clusters(window: np.ndarray, n_clusters: int) -> np.ndarray:
    """Cluster labels 1..k of the columns of a (L, N) window (pairwise-complete correlation)."""
    n = window.shape[1]
    if n == 1:
        return np.ones(1, dtype=int)
    # The condensed (upper-triangle) vector only: half the elementwise work of the matrix.
    # In place: d = sqrt((1 - rho) / 2), rho clipped to [-1, 1] and 0 where undefined
    # (1 - rho >= 0 then holds exactly, no second clip needed).
    distance = squareform(pairwise_correlation(window), checks=False)
    distance[~np.isfinite(distance)] = 0.0
    np.clip(distance, -1.0, 1.0, out=distance)
    np.subtract(1.0, distance, out=distance)
    distance /= 2.0
    np.sqrt(distance, out=distance)
    tree = linkage(distance, method="average")
    return fcluster(tree, t=min(n_clusters, n), criterion="maxclust")


def select_winners(
    returns: np.ndarray,
    symbols: list[str],
    params: SelectionParams,
    *,
    quality: dict[str, float] | None = None,
    flagged: set[str] | None = None,
    features: dict[str, float | None] | None = None,
) -> Selection:
    """Apply the policy of the module docstring to (T, N) returns ending at the as-of row.

    features: symbol -> feature value (the `rating` of `tv_technicals_1d` as of the as-of
    day); a symbol absent, None or NaN gets 0. None leaves the feature term out: the
    selection is then exactly the momentum-only one, and winners carry no `feature` key.
    """
    quality = quality or {}
    flagged = flagged or set()
    window = returns[-params.lookback :] if returns.shape[0] >= params.lookback else returns
    history = np.isfinite(window).sum(axis=0)
    momentum, volatility, score = scores(window, params.skip, params.periods_per_year)
    feature = None
    if features is not None:
        feature = np.array([_feature_value(features.get(s)) for s in symbols], dtype=float)
        score = score + params.feature_weight * np.nan_to_num(feature, nan=0.0)
    excluded: dict[str, str] = {}
    relaxations: list[dict[str, Any]] = []
    # Each symbol's tests as arrays (one pass per relaxation step, not one per symbol); the
    # first failing test, in this order, names the exclusion.
    is_flagged = np.array([s in flagged for s in symbols], dtype=bool)
    quality_of = np.array([quality.get(s, 1.0) for s in symbols], dtype=float)
    defined = np.isfinite(score)
    min_quality, min_history = params.min_quality, params.min_history
    for step in range(params.max_relaxations + 1):
        low_quality = quality_of < min_quality
        short = history < min_history
        passes = ~is_flagged & ~low_quality & ~short & defined
        eligible = np.flatnonzero(passes).tolist()
        excluded = {}
        for j in np.flatnonzero(~passes).tolist():
            symbol = symbols[j]
            if is_flagged[j]:
                excluded[symbol] = "level shift flagged in the catalog"
            elif low_quality[j]:
                excluded[symbol] = (
                    f"data quality {quality.get(symbol, 1.0):.3f} < {min_quality:.3f}"
                )
            elif short[j]:
                excluded[symbol] = f"{int(history[j])} returns in the lookback < {min_history}"
            else:
                excluded[symbol] = "score undefined (no volatility)"
        if len(eligible) >= params.n_winners or step == params.max_relaxations:
            break
        min_quality = max(0.0, round(min_quality - params.relax_quality_step, 10))
        min_history = max(2, int(min_history * params.relax_history_factor))
        relaxations.append(
            {
                "step": step + 1,
                "eligible_before": len(eligible),
                "min_quality": min_quality,
                "min_history": min_history,
            }
        )
    winners: list[dict[str, Any]] = []
    if eligible:
        labels = correlation_clusters(window[:, eligible], params.n_clusters)
        by_cluster: dict[int, list[int]] = {}
        for label, j in zip(labels, eligible, strict=True):
            by_cluster.setdefault(int(label), []).append(j)
        # Relabel clusters deterministically: by their best member's name.
        shortlisted = []
        for members in by_cluster.values():
            members.sort(key=lambda j: (-score[j], symbols[j]))
            shortlisted.extend(members[: params.per_cluster])
        shortlisted.sort(key=lambda j: (-score[j], symbols[j]))
        names = {
            int(label): min(symbols[j] for j in members) for label, members in by_cluster.items()
        }
        order = {name: i + 1 for i, name in enumerate(sorted(names.values()))}
        cluster_of = {
            j: order[names[int(label)]] for label, j in zip(labels, eligible, strict=True)
        }
        for j in sorted(shortlisted[: params.n_winners], key=lambda j: symbols[j]):
            winner = {
                "symbol": symbols[j],
                "score": _round(float(score[j])),
                "momentum": _round(float(momentum[j])),
                "volatility": _round(float(volatility[j])),
                "cluster": int(cluster_of[j]),
            }
            if feature is not None:
                winner["feature"] = None if np.isnan(feature[j]) else _round(float(feature[j]))
            winners.append(winner)
    return Selection(
        winners=winners,
        params=asdict(params),
        eligible=len(eligible),
        candidates=len(symbols),
        relaxations=relaxations,
        excluded=dict(sorted(excluded.items())),
    )
