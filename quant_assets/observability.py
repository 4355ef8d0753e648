"""What the two cycles send to MLflow, in one place; the assets call these one-liners.

- Alpha cycle: every `audit.jsonl` line is mirrored as metrics and params
  (`quant_resources.tracking.ledger`), the run folder's files are uploaded when the run
  ends, and the selection policy is registered (`quant_assets.registry`).
- Data cycle: ingestion counts, rows dropped, gaps, the lakehouse's NaN density and the
  data-quality score distribution, at the end of `ohlcv`.

All of it goes through the run's `MlflowTracking`, which queues and never blocks.
"""

from __future__ import annotations

import datetime as dt
import statistics
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from quant_assets.data.calendar import sessions_between
from quant_resources.settings import PROJECT_ROOT
from quant_resources.tracking import MlflowTracking, numeric_entries, tracker_of

ALPHA_ARTIFACTS = (
    "manifest.json",
    "selection.json",
    "optimization.json",
    "weights.parquet",
    "backtest.json",
    "equity_curve.png",
    "weights.png",
    "audit.jsonl",
)
INGEST_COUNTS = (
    "symbols",
    "ingested",
    "skipped",
    "not_listed",
    "failed",
    "rows_fetched",
    "rows_new",
    "toxic_rows_dropped",
    "duplicates_dropped",
    "invalid_rows_dropped",
    "level_shifts_flagged",
    "gaps",
    "bars_outside_window_ignored",
)


def tracking_tags() -> dict[str, str]:
    """Tags of every MLflow run: the package version and the git commit of this checkout."""
    from quant_assets.alpha.snapshot import git_revision

    try:
        version = importlib_metadata.version("quant-lakehouse")
    except importlib_metadata.PackageNotFoundError:
        version = "unknown"
    return {"code_version": version, "git_revision": git_revision(PROJECT_ROOT) or "unknown"}


# -- alpha cycle -----------------------------------------------------------------------
def mirror_audit(context: Any, line: dict[str, Any], run_dir: Path) -> None:
    """Send one audit line to MLflow, and the run folder's files as they appear."""
    tracker = tracker_of(context)
    if tracker.active:
        tracker.log_audit(line)
        tracker.log_files(run_dir, ALPHA_ARTIFACTS, growing=("audit.jsonl",))


def register_policy(context: Any, parameters: dict[str, Any], as_of: str) -> None:
    """Log the run's selection+optimisation policy as a model version (in the worker)."""
    tracker_of(context).submit(
        "quant_assets.registry:log_policy", parameters=parameters, as_of=as_of
    )


def rank_policy(context: Any, metrics: dict[str, Any]) -> None:
    """Record the backtest's out-of-sample metrics on the version and move the aliases."""
    tracker_of(context).submit("quant_assets.registry:rank_policy", metrics=metrics)


# -- data cycle ------------------------------------------------------------------------
def log_data_cycle(tracker: MlflowTracking, metadata: dict[str, Any], catalog: dict[str, Any]) -> None:
    if tracker.active:
        metrics, params = data_cycle_entries(metadata, catalog)
        tracker.log_metrics(metrics)
        tracker.log_params(params)


def data_cycle_entries(
    metadata: dict[str, Any], catalog: dict[str, Any]
) -> tuple[dict[str, float], dict[str, str]]:
    """Metrics of one `ohlcv` materialisation: `ingest/*` counts of the run, `lakehouse/*`
    state after it (NaN density, quality score distribution)."""
    counts = {k: metadata[k] for k in INGEST_COUNTS if k in metadata}
    metrics = numeric_entries(counts, prefix="ingest/")
    scores = [float(e["data_quality_score"]) for e in catalog["symbols"].values()]
    metrics["lakehouse/symbols"] = float(len(catalog["symbols"]))
    metrics["lakehouse/nan_density"] = lakehouse_nan_density(catalog)
    if scores:
        metrics.update(
            {
                "lakehouse/quality_min": min(scores),
                "lakehouse/quality_p10": float(np.percentile(scores, 10)),
                "lakehouse/quality_p25": float(np.percentile(scores, 25)),
                "lakehouse/quality_median": float(statistics.median(scores)),
                "lakehouse/quality_mean": float(np.mean(scores)),
                "lakehouse/quality_max": max(scores),
                "lakehouse/quality_below_0_8": float(sum(s < 0.8 for s in scores)),
            }
        )
    params = {"ingest/window": str(metadata.get("window", ""))}
    return metrics, params


def lakehouse_nan_density(catalog: dict[str, Any]) -> float:
    """Share of missing bars: 1 - rows held / sessions expected, over each symbol's own
    span in the catalog (its first to last bar, on its calendar)."""
    expected = held = 0
    for entry in catalog["symbols"].values():
        if not entry.get("start_date") or not entry.get("end_date"):
            continue
        first = dt.date.fromisoformat(entry["start_date"])
        last = dt.date.fromisoformat(entry["end_date"])
        sessions = sessions_between(first, last, entry.get("calendar", "24/7"))
        expected += sessions
        held += min(int(entry.get("rows", 0)), sessions)
    return 1.0 - held / expected if expected else 0.0
