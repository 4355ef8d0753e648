"""`gap_repair` (weekly) and `data_audit` (on demand and weekly).

Both depend on `ohlcv` (the repair rewrites its files, the audit reads them) over all of
its partitions: they are unpartitioned and act on the lakehouse as a whole, so their jobs
run without a partition, whatever days `ohlcv` has materialised.
"""

from typing import Any

import dagster as dg

from quant_assets.data.maintenance import audit_lakehouse, repair_gaps
from quant_assets.data.quality_report import quality_markdown, quality_view
from quant_resources.lakehouse import Lakehouse
from quant_resources.settings import Settings
from quant_resources.sources.base import MarketDataSource

# An edge in the lineage, not a load: the assets read and write the lakehouse through the
# `lakehouse` resource, and a non-argument dep loads nothing.
ON_OHLCV = [dg.AssetDep("ohlcv", partition_mapping=dg.AllPartitionMapping())]


def _md_list(rows: list[dict], limit: int = 50) -> dg.MetadataValue:
    return dg.MetadataValue.md("\n".join(f"- {r}" for r in rows[:limit]) or "none")


@dg.asset(
    group_name="maintenance",
    deps=ON_OHLCV,
    kinds={"polars", "parquet"},
    description=(
        "Re-fetches only the windows of recorded gaps (over {gap_days} sessions) and any file the "
        "audit quarantined; reports gaps healed and gaps still open (real halts, annotated)."
    ),
)
def gap_repair(
    context: dg.AssetExecutionContext,
    settings: dg.ResourceParam[Settings],
    source: MarketDataSource,
    lakehouse: Lakehouse,
) -> dg.MaterializeResult:
    report = repair_gaps(source=source, lakehouse=lakehouse, settings=settings, progress=context.log.info)
    metadata: dict[str, Any] = dict(report.summary())
    metadata["healed"] = _md_list(report.healed)
    metadata["still_open"] = _md_list(report.still_open)
    if report.failed:
        metadata["failed_symbols"] = _md_list(report.failed)
    context.log.info(f"gap repair: {report.summary()}")
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name="maintenance",
    deps=ON_OHLCV,
    kinds={"polars", "json"},
    description=(
        "Re-validates every lakehouse file against L0 and the toxic threshold (+{toxic_pct}%), "
        "reconciles the catalog with the files, quarantines unreadable files, reports drift "
        "since the last audit."
    ),
    check_specs=[dg.AssetCheckSpec("lakehouse_clean", asset="data_audit", description="The audit found nothing to fix.")],
)
def data_audit(
    context: dg.AssetExecutionContext, settings: dg.ResourceParam[Settings], lakehouse: Lakehouse
) -> dg.MaterializeResult:
    report = audit_lakehouse(lakehouse=lakehouse, settings=settings)
    summary = report.summary()
    context.log.info(f"audit: {summary}")
    metadata: dict[str, Any] = dict(summary)
    for name in ("quarantined", "contract_failures", "toxic", "catalog_mismatches"):
        rows = getattr(report, name)
        if rows:
            metadata[name + "_list"] = _md_list(rows)
    # Asset metadata, not the result's: the audit.jsonl line and MLflow keep to figures.
    context.add_asset_metadata(
        {"quality_report": dg.MetadataValue.md(quality_markdown(quality_view(lakehouse.read_catalog())))}
    )
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[dg.AssetCheckResult(check_name="lakehouse_clean", passed=report.clean, metadata=dict(summary))],
    )
