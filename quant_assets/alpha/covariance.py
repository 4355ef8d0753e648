"""Covariance estimators for the Alpha cycle, kept in factor form.

Every estimator returns a `CovarianceEstimate`, which represents

    Sigma = factor.T @ factor + diag(diagonal)        (n x n, daily return units squared)

with `factor` of shape (k, n) and `diagonal` of shape (n,). For a lookback window of
T daily returns on n symbols, k = T: when symbols outnumber observations (T < n) the
optimiser works with the T x n factor and never forms the n x n matrix, which is what
makes a 1000-symbol walk-forward affordable.

Inputs are complete T x n matrices of daily simple returns (no NaN); the NaN policy of
the Alpha cycle (young symbols have leading NaN) is applied by the callers
(`optimize.returns_to_matrix` users and `backtest.walk_forward`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COVARIANCE_METHODS: tuple[str, ...] = ("sample", "ledoit_wolf")


@dataclass(frozen=True)
class CovarianceEstimate:
    """A covariance matrix Sigma = factor.T @ factor + diag(diagonal), daily units.

    Attributes:
        factor: (k, n) array. For the estimators here, k is the number of observations.
        diagonal: (n,) array of non-negative variances added on the diagonal.
        method: name of the estimator ("sample", "ledoit_wolf" or "matrix").
        n_observations: number of return rows the estimate was computed from.
        shrinkage: Ledoit-Wolf shrinkage intensity in [0, 1], None for other methods.
    """

    factor: np.ndarray
    diagonal: np.ndarray
    method: str
    n_observations: int
    shrinkage: float | None = None

    @property
    def n_assets(self) -> int:
        return int(self.diagonal.shape[0])

    def variances(self) -> np.ndarray:
        """Diagonal of Sigma, shape (n,), daily return units squared."""
        return np.einsum("ki,ki->i", self.factor, self.factor) + self.diagonal

    def matrix(self) -> np.ndarray:
        """The dense (n, n) covariance matrix."""
        sigma = self.factor.T @ self.factor
        sigma[np.diag_indices_from(sigma)] += self.diagonal
        return sigma

    def times(self, weights: np.ndarray) -> np.ndarray:
        """Sigma @ weights without forming Sigma; weights shape (n,), result shape (n,)."""
        return self.factor.T @ (self.factor @ weights) + self.diagonal * weights

    def subset(self, columns: np.ndarray) -> CovarianceEstimate:
        """The estimate restricted to `columns` (integer indices or boolean mask)."""
        return CovarianceEstimate(
            factor=self.factor[:, columns],
            diagonal=self.diagonal[columns],
            method=self.method,
            n_observations=self.n_observations,
            shrinkage=self.shrinkage,
        )

    @classmethod
    def from_matrix(cls, sigma: np.ndarray) -> CovarianceEstimate:
        """Wrap a dense symmetric PSD matrix (n, n); the factor is its upper Cholesky factor.

        A tiny diagonal jitter (1e-12 of the mean variance) is retried once for matrices that
        are PSD but singular; anything else raises ValueError.
        """
        sigma = np.asarray(sigma, dtype=float)
        if sigma.ndim != 2 or sigma.shape[0] != sigma.shape[1]:
            raise ValueError(f"covariance must be a square 2-D array, got shape {sigma.shape}")
        if not np.all(np.isfinite(sigma)):
            raise ValueError("covariance contains NaN or inf; estimate it from complete returns")
        sigma = 0.5 * (sigma + sigma.T)
        n = sigma.shape[0]
        scale = float(np.mean(np.diag(sigma))) if n else 1.0
        for jitter in (0.0, 1e-12 * max(scale, np.finfo(float).tiny)):
            try:
                lower = np.linalg.cholesky(sigma + jitter * np.eye(n))
            except np.linalg.LinAlgError:
                continue
            diagonal = np.zeros(n)
            return cls(factor=lower.T.copy(), diagonal=diagonal, method="matrix", n_observations=0)
        # Eigen-factor as the last resort: it also proves (or disproves) positive semidefiniteness.
        eigenvalues, eigenvectors = np.linalg.eigh(sigma)
        if eigenvalues.min() < -1e-10 * max(abs(eigenvalues.max()), 1e-300):
            raise ValueError(
                f"covariance is not positive semidefinite (smallest eigenvalue "
                f"{eigenvalues.min():.3e}); pass a covariance estimated from returns"
            )
        factor = np.sqrt(np.clip(eigenvalues, 0.0, None))[:, None] * eigenvectors.T
        return cls(factor=factor, diagonal=np.zeros(n), method="matrix", n_observations=0)


def _check_complete(returns: np.ndarray) -> np.ndarray:
    x = np.asarray(returns, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"returns must be a 2-D (dates x symbols) array, got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(
            f"a covariance needs at least 2 return rows, got {x.shape[0]}; use a longer window"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(
            "returns passed to a covariance estimator contain NaN or inf; drop incomplete rows "
            "first (optimize_weights and walk_forward do this for you)"
        )
    return x


def sample_covariance(returns: np.ndarray) -> CovarianceEstimate:
    """Unbiased sample covariance S = Xc' Xc / (T - 1), in factor form.

    Args:
        returns: (T, n) daily simple returns, no NaN, T >= 2.

    Returns:
        CovarianceEstimate with factor Xc / sqrt(T - 1) of shape (T, n) and a zero diagonal,
        where Xc is `returns` minus its column means. Rank is at most T - 1, so the matrix
        is singular when T <= n.
    """
    x = _check_complete(returns)
    t = x.shape[0]
    centred = x - x.mean(axis=0)
    return CovarianceEstimate(
        factor=centred / np.sqrt(t - 1),
        diagonal=np.zeros(x.shape[1]),
        method="sample",
        n_observations=t,
    )


def ledoit_wolf_shrinkage(returns: np.ndarray) -> tuple[float, float]:
    """Ledoit-Wolf (2004) shrinkage intensity towards a scaled identity.

    With Xc the column-demeaned (T, n) returns, S = Xc' Xc / T, m = tr(S) / n,
        d^2 = ||S - m I||_F^2 / n,
        b^2 = min(d^2, (sum_t ||x_t||^4 / T - ||S||_F^2) / (n T)),
        shrinkage = b^2 / d^2          (0 when d^2 = 0: S is already a scaled identity).
    ||S||_F^2 and ||x_t||^2 come from the smaller of the T x T and n x n Gram matrices, so
    this costs O(min(T, n)^2 max(T, n)).

    Args:
        returns: (T, n) daily simple returns, no NaN, T >= 2.

    Returns:
        (shrinkage in [0, 1], m = mean sample variance in daily units squared).
    """
    x = _check_complete(returns)
    t, n = x.shape
    centred = x - x.mean(axis=0)
    row_norms_sq = np.einsum("ti,ti->t", centred, centred)
    if t <= n:
        gram = centred @ centred.T
        frob_sq = float(np.sum(gram * gram)) / t**2
    else:
        s = centred.T @ centred
        frob_sq = float(np.sum(s * s)) / t**2
    mean_var = float(row_norms_sq.sum()) / (t * n)
    delta_sq = (frob_sq - n * mean_var**2) / n
    beta_sq = (float(np.sum(row_norms_sq**2)) / t - frob_sq) / (n * t)
    if delta_sq <= 0.0:
        return 0.0, mean_var
    return float(min(max(beta_sq, 0.0), delta_sq) / delta_sq), mean_var


def ledoit_wolf_covariance(returns: np.ndarray) -> CovarianceEstimate:
    """Ledoit-Wolf (2004) shrinkage estimate (1 - s) S + s m I, in factor form.

    S = Xc' Xc / T is the maximum-likelihood sample covariance (divisor T, as in the paper
    and scikit-learn), m its mean variance, s the closed-form intensity from
    `ledoit_wolf_shrinkage`. The result is positive definite whenever s > 0, including when
    symbols outnumber observations.

    Args:
        returns: (T, n) daily simple returns, no NaN, T >= 2.

    Returns:
        CovarianceEstimate with factor sqrt(1 - s) Xc / sqrt(T) (shape (T, n)) and diagonal
        s m (shape (n,)).
    """
    x = _check_complete(returns)
    t = x.shape[0]
    shrinkage, mean_var = ledoit_wolf_shrinkage(x)
    centred = x - x.mean(axis=0)
    return CovarianceEstimate(
        factor=np.sqrt(1.0 - shrinkage) * centred / np.sqrt(t),
        diagonal=np.full(x.shape[1], shrinkage * mean_var),
        method="ledoit_wolf",
        n_observations=t,
        shrinkage=shrinkage,
    )


def estimate_covariance(returns: np.ndarray, method: str = "ledoit_wolf") -> CovarianceEstimate:
    """Dispatch to `sample_covariance` or `ledoit_wolf_covariance` by name."""
    if method == "sample":
        return sample_covariance(returns)
    if method == "ledoit_wolf":
        return ledoit_wolf_covariance(returns)
    raise ValueError(f"unknown covariance {method!r}; choose one of {list(COVARIANCE_METHODS)}")
