"""What an `audit.jsonl` line becomes in MLflow: the one mapping both ledgers share.

A line `{"stage": "backtest", "rows_out": 756, "metrics": {"sharpe": 1.2}, ...}` becomes
the metrics `backtest/rows_out = 756` and `backtest/metrics/sharpe = 1.2`; a contract
line (`stage == "contract"`) is keyed by its contract, `contract/L1_returns/passed`.
Numbers and booleans (as 1.0/0.0) are metrics; strings, lists and everything under a
`parameters` key are params (JSON text, so `null` stays distinguishable from "None").
Provenance fields (`at`, `run_id`, `asset_key`, `partition`) are MLflow tags already,
and `null` values are not logged: MLflow has no missing metric.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

PROVENANCE = frozenset({"at", "stage", "contract", "asset_key", "partition", "run_id"})
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


def audit_prefix(record: Mapping[str, Any]) -> str:
    """`{stage}`, or `contract/{contract}` for a contract validation line."""
    if record.get("stage") == "contract":
        return f"contract/{record.get('contract')}"
    return str(record.get("stage"))


def audit_entries(record: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, params) of one audit line, keyed as the module docstring says."""
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    prefix = audit_prefix(record)
    for key, value in record.items():
        if key not in PROVENANCE:
            _flatten(f"{prefix}/{key}", value, metrics, params, as_param=key == "parameters")
    return metrics, params


def numeric_entries(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numbers and booleans of a (nested) mapping as metrics; the rest is ignored."""
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    for key, value in values.items():
        _flatten(f"{prefix}{key}", value, metrics, params, as_param=False)
    return metrics


def _flatten(key: str, value: Any, metrics: dict, params: dict, *, as_param: bool) -> None:
    if isinstance(value, Mapping):
        for sub, item in value.items():
            _flatten(f"{key}/{sub}", item, metrics, params, as_param=as_param)
    elif value is None and not as_param:
        return
    elif as_param or isinstance(value, (str, list, tuple)):
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        params[key] = text[:MAX_PARAM_LENGTH]
    elif isinstance(value, bool):
        metrics[key] = 1.0 if value else 0.0
    elif isinstance(value, (int, float)) and math.isfinite(value):
        metrics[key] = float(value)
