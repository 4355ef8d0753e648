"""What the two cycles send to MLflow, in one place; the assets call these one-liners.

- Alpha cycle: every `audit.jsonl` line is mirrored as metrics and params
  (`quant_resources.tracking.ledger`), the run folder's files are uploaded when the run
  ends, and the selection policy is registered (`quant_assets.mlops.registry`).
- Data cycle: ingestion counts, rows dropped, gaps, the lakehouse's NaN density and the
  data-quality score distribution, at the end of `ohlcv`.
- Data, repair and audit runs (`audit_step_and_end_tracking`, the hook of their jobs):
  one `audit.jsonl` line per step and per check evaluation in
  `data/export/runs/{run_id}/audit.jsonl`, mirrored to MLflow like the alpha lines (the
  repair's `gap_repair/gaps_healed`, a check's `contract/ohlcv_schema/passed`). Outside
  `data/lakehouse/` on purpose: the lakehouse is what DVC versions, and a file that
  changes on every run would make every run a new lakehouse version.

All of it goes through the run's `MlflowTracking`, which queues and never blocks.
"""

from __future__ import annotations

import datetime as dt
import statistics
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
from dagster._core.definitions.decorators.hook_decorator import event_list_hook

from quant_assets.alpha.audit import append_audit
from quant_assets.data.calendar import entry_calendar, sessions_between
from quant_assets.mlops import registry
from quant_resources.settings import PROJECT_ROOT
from quant_resources.tracking import MlflowTracking, numeric_entries, tracker_of
from quant_resources.tracking.resource import partition_of

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
    tracker_of(context).submit(registry.log_policy, parameters=parameters, as_of=as_of)


def rank_policy(context: Any, metrics: dict[str, Any]) -> None:
    """Record the backtest's out-of-sample metrics on the version and move the aliases."""
    tracker_of(context).submit(registry.rank_policy, metrics=metrics)


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
        sessions = sessions_between(first, last, entry_calendar(entry))
        expected += sessions
        held += min(int(entry.get("rows", 0)), sessions)
    return 1.0 - held / expected if expected else 0.0


# -- data, repair and audit runs: audit.jsonl written by a hook ------------------------
TEXT_LIMIT = 4000  # characters of a text metadata value kept in an audit line


def run_audit_dir(data_dir: Path | str, run_id: str) -> Path:
    """Where a data, repair or audit run writes its `audit.jsonl`: data/export/runs/{run_id}."""
    from quant_resources.layout import StorageLayout

    return StorageLayout(Path(data_dir)).data_run_dir(run_id)


def _plain(metadata: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(numbers, flags and short words, text): text (markdown lists, paths) is what a person
    reads; it goes in the audit line's `details`, not to MLflow as a parameter."""
    values: dict[str, Any] = {}
    details: dict[str, str] = {}
    for key, raw in metadata.items():
        value = getattr(raw, "value", raw)
        if _is_value(raw, value):
            values[key] = value
        else:
            details[key] = (value if isinstance(value, str) else str(value))[:TEXT_LIMIT]
    return values, details


def _is_value(raw: Any, value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float)):
        return True
    if isinstance(value, dict):  # e.g. seconds per phase
        return all(isinstance(v, (int, float)) for v in value.values())
    words = isinstance(value, str) and len(value) <= 80 and "\n" not in value
    return words and not isinstance(raw, (dg.MarkdownMetadataValue, dg.PathMetadataValue))


def step_audit_lines(context: Any, event_list: list) -> list[dict[str, Any]]:
    """The lines of one finished step: the asset it materialised, then each check it ran."""
    run = context.instance.get_run_by_id(context.run_id)
    common = {"run_id": context.run_id, "partition": partition_of(run.tags) if run else "", "job": context.job_name}
    failed = next((e for e in event_list if e.is_step_failure), None)
    status = {"status": "failure" if failed else "success"}
    if failed is not None and context.op_exception is not None:
        status["error"] = str(context.op_exception).strip().splitlines()[0][:500] if str(context.op_exception).strip() else type(context.op_exception).__name__
    lines = []
    try:
        metadata = context.op_output_metadata.get("result")
    except Exception:  # noqa: BLE001 - a step that raised captured no outputs
        metadata = None
    if isinstance(metadata, dict) and metadata:
        values, details = _plain(metadata)
        line = {"stage": context.op.name, "asset_key": context.op.name, **common, **status, **values}
        if details:
            line["details"] = details
        lines.append(line)
    for record in context.instance.all_logs(context.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        if record.step_key != context.step_key:
            continue
        evaluation = record.dagster_event.event_specific_data
        values, details = _plain(dict(evaluation.metadata))
        line = {
            "stage": "contract",
            "contract": evaluation.check_name,
            "asset_key": evaluation.asset_key.to_user_string(),
            **common,
            "passed": bool(evaluation.passed),
            "severity": evaluation.severity.value,
            **values,
        }
        if details:
            line["details"] = details
        lines.append(line)
    if not lines:  # a step that failed before it produced anything still leaves a line
        lines.append({"stage": context.op.name, **common, **status})
    return lines


def _audit_step(context: Any, event_list: list) -> None:
    run_dir = run_audit_dir(context.resources.lakehouse.data_dir, context.run_id)
    tracker = tracker_of(context)
    for line in step_audit_lines(context, event_list):
        written = append_audit(run_dir, line)
        if tracker.active:
            tracker.log_audit({k: v for k, v in written.items() if k not in ("details", "job", "error")})
    if tracker.active:
        tracker.log_files(run_dir, ["audit.jsonl"], growing=("audit.jsonl",))


# event_list_hook: not exported by dagster, but the decorator dagster-mlflow's own hook is
# built with; it hands the step's events over, so success and failure share one hook.
@event_list_hook(name="audit_step_and_end_tracking", required_resource_keys={"lakehouse", "mlflow"})
def audit_step_and_end_tracking(context: Any, event_list: list) -> dg.HookExecutionResult:
    """Hook of the data, repair and audit jobs: append the step's `audit.jsonl` lines and
    mirror them, then dagster-mlflow's end-of-run logic (one hook, so the line always
    reaches MLflow before the run's end uploads the file)."""
    from dagster_mlflow import end_mlflow_on_run_finished

    try:
        _audit_step(context, event_list)
    except Exception as exc:  # noqa: BLE001 - an audit line that cannot be written is a warning, not a failed run
        context.log.warning(f"audit.jsonl: step {context.step_key} not recorded: {exc!r}")
    finally:
        end_mlflow_on_run_finished.hook_fn(context, event_list)
    return dg.HookExecutionResult(hook_name="audit_step_and_end_tracking", is_skipped=False)
