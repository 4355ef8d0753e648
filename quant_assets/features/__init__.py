"""Technical-indicator feature store: indicators (pure polars) and their Delta table."""

from quant_assets.features.indicators import (
    FEATURE_COLUMNS,
    FEATURE_SCHEMA,
    FIRST_VALID_ROW,
    WARMUP_BARS,
    FeaturesSchema,
    compute_indicators,
    rating_expression,
)
from quant_assets.features.store import (
    PARTITION_COLUMN,
    FeatureStoreError,
    FeatureTableNotFoundError,
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
    "PARTITION_COLUMN",
    "FeatureStoreError",
    "FeatureTableNotFoundError",
    "FeaturesSchema",
    "UpdateResult",
    "compute_indicators",
    "rating_expression",
    "current_version",
    "read_features",
    "update_features",
    "warmup_start",
    "write_features",
]
