"""Equal weight, the closed-form objective and the benchmark: 1/n on every name.

It needs no covariance, so `optimize_weights` returns it before estimating one (and before
the NaN policy: a young symbol still gets its 1/n).
"""

from __future__ import annotations

import numpy as np


def equal_weights(n_assets: int) -> np.ndarray:
    """(n_assets,) weights of 1 / n_assets each."""
    return np.full(n_assets, 1.0 / n_assets)
