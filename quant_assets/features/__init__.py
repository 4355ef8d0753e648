"""Technical-indicator feature store: indicators (pure polars) and their Delta table."""

from quant_assets.features.indicators import (
    FEATURE_COLUMNS,
    FEATURE_SCHEMA,
    FIRST_VALID_ROW,
    WARMUP_BARS,
    FeaturesSchema,
    compute_indicators,
)
from quant_assets.features.store import (
    FeatureStoreError,
    UpdateResult,
    current_version,
    read_features,
    update_features,
    warmup_start,
    write_features,
)

__all__ = [
    "FEATURE_COLUMNS",
    "FEATURE_SCHEMA",
    "FIRST_VALID_ROW",
    "WARMUP_BARS",
    "FeatureStoreError",
    "FeaturesSchema",
    "UpdateResult",
    "compute_indicators",
    "current_version",
    "read_features",
    "update_features",
    "warmup_start",
    "write_features",
]
