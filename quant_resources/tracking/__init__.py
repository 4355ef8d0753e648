"""MLflow tracking of Dagster runs, built on dagster-mlflow (see `resource.py`).

- `MlflowTracking`: the `mlflow` resource; queues calls to a background worker.
- `tracker_of(context)`: the run's tracker inside an asset, or an inactive one.
- `audit_entries(record)`: what one `audit.jsonl` line becomes in MLflow.
"""

from quant_resources.tracking.ledger import audit_entries, audit_prefix, numeric_entries
from quant_resources.tracking.resource import TRACKING_TAG, MlflowTracking, tracker_of

__all__ = [
    "TRACKING_TAG",
    "MlflowTracking",
    "audit_entries",
    "audit_prefix",
    "numeric_entries",
    "tracker_of",
]
