"""Hierarchical risk parity (Lopez de Prado, 2016) and proportional weight capping.

HRP needs no matrix inversion: it clusters symbols by correlation distance, orders them
so that similar symbols sit next to each other (quasi-diagonalisation) and splits the
budget top-down between the two halves of each cluster in inverse proportion to their
variances (recursive bisection).
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform


def cap_weights(
    weights: np.ndarray, max_weight: float | None = None, min_weight: float = 0.0
) -> np.ndarray:
    """Clip weights to [min_weight, max_weight] and redistribute proportionally.

    Returns w_i = clip(c * v_i, min_weight, max_weight) with the single multiplier c > 0
    that makes the weights sum to 1: clipped names sit at their bound, every other name
    keeps its weight relative to the others. This is the fixed point of "clip, then hand
    the excess to the unclipped names pro rata". Names with v_i = 0 stay at min_weight.

    Args:
        weights: (n,) non-negative weights (any positive sum).
        max_weight: cap per name, or None for no cap.
        min_weight: floor per name, >= 0.

    Returns:
        (n,) weights summing to 1 within 1e-12 and inside the bounds.

    Raises:
        ValueError: if the bounds cannot hold a fully invested portfolio (n * max_weight < 1,
            n * min_weight > 1) or no name has positive weight.
    """
    v = np.clip(np.asarray(weights, dtype=float), 0.0, None)
    n = v.shape[0]
    upper = 1.0 if max_weight is None else float(max_weight)
    lower = float(min_weight)
    if n * upper < 1.0 - 1e-12 or n * lower > 1.0 + 1e-12 or lower > upper:
        raise ValueError(
            f"cannot cap {n} weights to [{lower}, {upper}]: a fully invested portfolio needs "
            f"n * min_weight <= 1 <= n * max_weight"
        )
    if not np.any(v > 0):
        raise ValueError("cannot cap weights: every weight is zero")

    def total(c: float) -> float:
        return float(np.clip(c * v, lower, upper).sum())

    positive = v > 0
    # At c -> infinity every positive name hits its cap; if that is still below 1, no
    # multiplier works and the remaining mass goes to the zero-weight names additively.
    if upper * positive.sum() + lower * (~positive).sum() < 1.0 - 1e-12:
        w = np.where(positive, upper, lower)
        slack = upper - w
        return w + slack * (1.0 - w.sum()) / slack.sum()
    lo_c, hi_c = 0.0, 1.0
    for _ in range(2200):  # reachable (checked above): doubling ends before 2**2200
        if total(hi_c) >= 1.0:
            break
        hi_c *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo_c + hi_c)
        if total(mid) < 1.0:
            lo_c = mid
        else:
            hi_c = mid
        if hi_c - lo_c <= 1e-15 * hi_c:
            break
    # Finish exactly: with the clipped set fixed, c solves a linear equation.
    scaled = hi_c * v
    at_upper = scaled >= upper
    at_lower = scaled <= lower
    free = ~(at_upper | at_lower)
    w = np.where(at_upper, upper, np.where(at_lower, lower, scaled))
    if free.any():
        fixed_mass = w[~free].sum()
        w[free] = v[free] * (1.0 - fixed_mass) / v[free].sum()
        w = np.clip(w, lower, upper)
    return w


def correlation_distance(covariance: np.ndarray) -> np.ndarray:
    """d_ij = sqrt((1 - rho_ij) / 2) in [0, 1], shape (n, n), zero diagonal."""
    std = np.sqrt(np.diag(covariance))
    corr = covariance / np.outer(std, std)
    distance = np.sqrt(np.clip(0.5 * (1.0 - corr), 0.0, 1.0))
    np.fill_diagonal(distance, 0.0)
    return 0.5 * (distance + distance.T)


def quasi_diagonal_order(covariance: np.ndarray, linkage_method: str = "single") -> np.ndarray:
    """Leaf order of the correlation-distance dendrogram, shape (n,) of column indices.

    scipy's `leaves_list` walks the dendrogram left to right, which is exactly the order
    produced by Lopez de Prado's recursive `getQuasiDiag`.
    """
    n = covariance.shape[0]
    if n <= 2:
        return np.arange(n)
    condensed = squareform(correlation_distance(covariance), checks=False)
    return leaves_list(linkage(condensed, method=linkage_method))


def _cluster_variance(covariance: np.ndarray, members: np.ndarray) -> float:
    # Variance of the inverse-variance portfolio of the cluster: the HRP cluster risk.
    sub = covariance[np.ix_(members, members)]
    ivp = 1.0 / np.diag(sub)
    ivp /= ivp.sum()
    return float(ivp @ sub @ ivp)


def hrp_weights(
    covariance: np.ndarray,
    *,
    max_weight: float | None = None,
    min_weight: float = 0.0,
    linkage_method: str = "single",
) -> np.ndarray:
    """Hierarchical risk parity weights.

    1. Distance d_ij = sqrt((1 - rho_ij) / 2); scipy `linkage` (single by default).
    2. Quasi-diagonalisation: order the symbols by the dendrogram leaves.
    3. Recursive bisection: split each ordered cluster into halves L and R, with
       V_X the variance of X's inverse-variance portfolio; scale L by
       alpha = 1 - V_L / (V_L + V_R) and R by 1 - alpha.
    4. Bounds: `cap_weights` clips to [min_weight, max_weight] and redistributes pro rata.

    With a diagonal covariance the result is the inverse-variance portfolio
    w_i = (1 / s_i^2) / sum_j (1 / s_j^2) for any ordering.

    Args:
        covariance: (n, n) covariance matrix with positive diagonal (any units).
        max_weight, min_weight: bounds per name.
        linkage_method: any scipy hierarchical linkage method ("single", "ward", ...).

    Returns:
        (n,) long-only weights summing to 1.
    """
    sigma = np.asarray(covariance, dtype=float)
    n = sigma.shape[0]
    if np.any(np.diag(sigma) <= 0):
        bad = np.flatnonzero(np.diag(sigma) <= 0).tolist()
        raise ValueError(
            f"hrp needs a positive variance for every symbol; columns {bad} have zero variance"
        )
    order = quasi_diagonal_order(sigma, linkage_method)
    weights = np.ones(n)
    clusters = [order]
    while clusters:
        next_clusters = []
        for cluster in clusters:
            if len(cluster) < 2:
                continue
            half = len(cluster) // 2
            left, right = cluster[:half], cluster[half:]
            var_left = _cluster_variance(sigma, left)
            var_right = _cluster_variance(sigma, right)
            alpha = 1.0 - var_left / (var_left + var_right)
            weights[left] *= alpha
            weights[right] *= 1.0 - alpha
            next_clusters.extend([left, right])
        clusters = next_clusters
    weights /= weights.sum()
    if max_weight is None and min_weight <= 0.0:
        return weights
    return cap_weights(weights, max_weight, min_weight)
