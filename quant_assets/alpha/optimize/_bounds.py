"""Weight bounds: whether a fully invested long-only portfolio fits them, and the final
clip-and-renormalise that puts every answer inside them exactly.

`check_bounds` runs before any solve, so an infeasible request fails with a message that
says which bound to move and by how much; `finalize_weights` removes solver noise (tiny
negatives, cap overshoots) from the answers of every objective.
"""

from __future__ import annotations

import numpy as np

from quant_assets.alpha.hrp import cap_weights
from quant_assets.alpha.optimize._errors import InfeasiblePortfolioError


def check_bounds(
    objective: str, n_assets: int, max_weight: float | None, min_weight: float
) -> None:
    """Raise InfeasiblePortfolioError when no fully invested portfolio fits the bounds."""
    if n_assets < 1:
        raise InfeasiblePortfolioError(f"{objective}: no symbols to allocate to")
    if not np.isfinite(min_weight) or min_weight < 0.0:
        raise InfeasiblePortfolioError(
            f"{objective}: min_weight={min_weight} is negative; portfolios are long-only, "
            f"use min_weight >= 0"
        )
    if max_weight is not None:
        if not np.isfinite(max_weight) or max_weight <= 0.0:
            raise InfeasiblePortfolioError(f"{objective}: max_weight={max_weight} must be > 0")
        if max_weight < min_weight:
            raise InfeasiblePortfolioError(
                f"{objective}: max_weight={max_weight} is below min_weight={min_weight}"
            )
        if max_weight * n_assets < 1.0 - 1e-12:
            raise InfeasiblePortfolioError(
                f"{objective}: max_weight={max_weight} x {n_assets} symbols = "
                f"{max_weight * n_assets:.6g} < 1, so the weights cannot sum to 1; raise "
                f"max_weight to at least {1.0 / n_assets:.6g} or select more symbols"
            )
    if min_weight * n_assets > 1.0 + 1e-12:
        raise InfeasiblePortfolioError(
            f"{objective}: min_weight={min_weight} x {n_assets} symbols = "
            f"{min_weight * n_assets:.6g} > 1, so the weights cannot sum to 1; lower "
            f"min_weight to at most {1.0 / n_assets:.6g} or select fewer symbols"
        )


def finalize_weights(
    weights: np.ndarray, max_weight: float | None, min_weight: float
) -> np.ndarray:
    """Clip solver noise (tiny negatives, cap overshoots) and renormalise to sum 1.

    The result lies in [min_weight, max_weight] exactly and sums to 1 within 1e-12.
    """
    w = np.asarray(weights, dtype=float)
    upper = 1.0 if max_weight is None else max_weight
    w = np.clip(np.nan_to_num(w, nan=0.0), min_weight, upper)
    if abs(w.sum() - 1.0) <= 1e-15:
        return w
    return cap_weights(w, max_weight, min_weight)
