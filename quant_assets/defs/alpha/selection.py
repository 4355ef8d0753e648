"""`selected_winners`: the selection engine on the returns matrix, with the L3 check."""

import time

import dagster as dg

from quant_assets.alpha.returns import returns_array
from quant_assets.alpha.selection import select_winners
from quant_assets.contracts import (
    check_result_from_cases,
    selection_schema,
    validate,
)
from quant_assets.defs.alpha._common import (
    audit,
    audit_contract,
    periods_per_year,
    winners_frame,
)
from quant_assets.defs.alpha.config import SelectionConfig
from quant_assets.partitions import DAILY
from quant_resources.io_managers import Artifact
from quant_resources.settings import Settings


@dg.asset(
    partitions_def=DAILY,
    group_name="alpha",
    io_manager_key="run_artifacts",
    metadata={"artifact": "selection.json"},
    kinds={"python", "json"},
    required_resource_keys={"mlflow", "settings"},  # audit lines mirrored to MLflow
    check_specs=[
        dg.AssetCheckSpec(
            "selection_l3",
            asset="selected_winners",
            blocking=True,
            description="L3: unique snapshot symbols, finite scores.",
        )
    ],
    description=(
        "Eligibility (history, data quality), risk-adjusted momentum skipping the last "
        "month, hierarchical clustering on return correlation, top k per cluster, with a "
        "relaxation loop. selection.json holds winners, parameters and a content hash."
    ),
)
def selected_winners(
    context: dg.AssetExecutionContext,
    config: SelectionConfig,
    returns_matrix: Artifact,
    run_snapshot: Artifact,
):
    settings: Settings = context.resources.settings
    started = time.perf_counter()
    matrix = returns_matrix.payload
    manifest = run_snapshot.payload
    values, _, symbols = returns_array(matrix)
    quality = {
        d["symbol"]: float(d.get("data_quality_score") or 0.0)
        for d in manifest["files"].values()
    }
    params = config.params(periods_per_year(matrix))
    selection = select_winners(values, symbols, params, quality=quality)
    document = selection.document(manifest["as_of"])
    winners = winners_frame(document)
    snapshot_symbols = [d["symbol"] for d in manifest["files"].values()]
    result = check_result_from_cases(winners, validate(selection_schema(snapshot_symbols), winners))
    table = "\n".join(
        f"| {w['symbol']} | {w['score']:.3f} | {w['cluster']} |" for w in document["winners"]
    )
    yield dg.Output(
        Artifact(document),
        metadata={
            "winners": len(document["winners"]),
            "eligible": document["eligible"],
            "candidates": document["candidates"],
            "relaxations": len(document["relaxations"]),
            "hash": document["hash"],
            "table": dg.MetadataValue.md(
                "| symbol | score | cluster |\n|---|---|---|\n" + table
            ),
        },
    )
    yield dg.AssetCheckResult(
        check_name="selection_l3", passed=result.passed, metadata=result.metadata
    )
    audit_contract(settings, context, "L3_selection", result)
    audit(
        settings,
        context,
        "selected_winners",
        started,
        rows_in=len(symbols),
        rows_out=len(document["winners"]),
        eligible=document["eligible"],
        hash=document["hash"],
        parameters=document["parameters"],
        checks={"selection_l3": bool(result.passed)},
    )
