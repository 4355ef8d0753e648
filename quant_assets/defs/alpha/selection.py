"""`selected_winners`: the selection engine on the returns matrix and the feature store,
with the L3 check.

The feature term of the score is the `rating` of `tv_technicals_1d`, read read-only (an
input through `lakehouse_reader`, so the graph shows the edge) at the Delta version the
snapshot pinned (`manifest.json["feature_store_version"]`, time travel) and as of the
partition day: each snapshot symbol's latest row dated in [D - 14 days, D]. The rows read
are stored in the run folder as `features.parquet`, so the run folder alone reproduces
the selection.
"""

import datetime as dt
import io
import time
from typing import Any

import dagster as dg
import polars as pl

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
from quant_assets.features.store import AS_OF_WINDOW_DAYS, read_features_as_of
from quant_assets.partitions import DAILY
from quant_resources.errors import QuantError
from quant_resources.io_managers import Artifact, LakehouseView
from quant_resources.layout import FEATURE_TABLE
from quant_resources.settings import Settings

FEATURE_COLUMN = "rating"
FEATURES_FILE = "features.parquet"


@dg.asset(
    partitions_def=DAILY,
    group_name="alpha",
    io_manager_key="run_artifacts",
    ins={"tv_technicals_1d": dg.AssetIn(input_manager_key="lakehouse_reader")},
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
        "month plus feature_weight x the tv_technicals_1d rating as of the day (read at "
        "the Delta version the snapshot pinned, stored as features.parquet), hierarchical "
        "clustering on return correlation, top k per cluster, with a relaxation loop. "
        "selection.json holds winners, parameters and a content hash."
    ),
)
def selected_winners(
    context: dg.AssetExecutionContext,
    config: SelectionConfig,
    returns_matrix: Artifact,
    run_snapshot: Artifact,
    tv_technicals_1d: LakehouseView,
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
    files: dict[str, bytes] = {}
    features, source = None, None
    if params.feature_weight > 0:
        rows = pinned_features(tv_technicals_1d, manifest, symbols)
        features = dict(zip(rows["symbol"], rows[FEATURE_COLUMN], strict=True))
        source = feature_source(manifest, symbols, features)
        files[FEATURES_FILE] = parquet_bytes(rows)
    selection = select_winners(values, symbols, params, quality=quality, features=features)
    selection.features = source
    document = selection.document(manifest["as_of"])
    winners = winners_frame(document)
    snapshot_symbols = [d["symbol"] for d in manifest["files"].values()]
    result = check_result_from_cases(winners, validate(selection_schema(snapshot_symbols), winners))
    table = "\n".join(
        f"| {w['symbol']} | {w['score']:.3f} | {w['cluster']} |" for w in document["winners"]
    )
    feature_metadata = {
        "feature_store_version": manifest.get("feature_store_version") if source else -1,
        "feature_rows": source["rows"] if source else 0,
        "feature_missing": len(source["missing"]) if source else 0,
    }
    yield dg.Output(
        Artifact(document, files=files),
        metadata={
            **feature_metadata,
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
        features=source,
        checks={"selection_l3": bool(result.passed)},
    )


def pinned_features(view: LakehouseView, manifest: dict[str, Any], symbols: list[str]) -> pl.DataFrame:
    """The feature rows of the run's symbols as of its day, at the version the snapshot pinned."""
    day = dt.date.fromisoformat(manifest["as_of"])
    table = view.features_table
    version = manifest.get("feature_store_version")
    if version is None:
        raise QuantError(
            f"selected_winners for {day}: the snapshot found no feature table at {table} "
            f"(manifest.json of run {manifest.get('run_id')} records no feature_store_version); "
            f"run the data cycle for {day} (quant data --date {day}), or select without "
            "features (feature_weight: 0)"
        )
    rows = read_features_as_of(table, version, day, symbols)
    if rows.height == 0:
        start = day - dt.timedelta(days=AS_OF_WINDOW_DAYS)
        raise QuantError(
            f"selected_winners for {day}: {table} at Delta version {version} has no row dated "
            f"{start}..{day} for any of the {len(symbols)} snapshot symbol(s) "
            f"({', '.join(symbols[:5])}{', ...' if len(symbols) > 5 else ''}); run the data "
            f"cycle for {day} (quant data --date {day}), or select without features "
            "(feature_weight: 0)"
        )
    return rows


def feature_source(
    manifest: dict[str, Any], symbols: list[str], features: dict[str, float | None]
) -> dict[str, Any]:
    """selection.json's `features`: what the feature term was read from. The Delta version
    is the manifest's; it is not hashed, so a run reproduced from features.parquet on a
    rebuilt table hashes the same."""
    return {
        "table": FEATURE_TABLE,
        "column": FEATURE_COLUMN,
        "as_of": manifest["as_of"],
        "window_days": AS_OF_WINDOW_DAYS,
        "file": FEATURES_FILE,
        "rows": len(features),
        # No row in the window, or a null rating (warm-up): feature term 0.
        "missing": sorted(s for s in symbols if features.get(s) is None),
    }


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()
