"""`run_snapshot`: the candidates' lakehouse files copied into the run folder, and the manifest."""

import datetime as dt
import time

import dagster as dg

from quant_assets.alpha.snapshot import (
    fingerprint,
    git_revision,
    plan_snapshot,
    read_snapshot_files,
)
from quant_assets.defs.alpha._common import (
    audit,
    feature_version,
)
from quant_assets.defs.alpha.config import (
    SnapshotConfig,
)
from quant_assets.mlops.dvc import recorded_lakehouse_md5
from quant_assets.partitions import DAILY, window_dates
from quant_resources.io_managers import Artifact, LakehouseView
from quant_resources.settings import PROJECT_ROOT, Settings


@dg.asset(
    partitions_def=DAILY,
    group_name="alpha",
    ins={"ohlcv": dg.AssetIn(input_manager_key="lakehouse_reader"), "candidates": dg.AssetIn(input_manager_key="lakehouse_reader")},
    io_manager_key="run_artifacts",
    metadata={"artifact": "manifest.json"},
    kinds={"python", "parquet"},
    required_resource_keys={"mlflow", "settings"},  # audit lines mirrored to MLflow
    description=(
        "Copies each candidate's bars up to the day (point in time) into data/runs/{run_id}/data/ and writes "
        "manifest.json (file sha256s and rows, lakehouse fingerprint, Delta, git and DVC "
        "versions; feature_store_version is the Delta version of tv_technicals_1d the run "
        "reads). Fails fast listing every missing or stale candidate."
    ),
)
def run_snapshot(
    context: dg.AssetExecutionContext,
    config: SnapshotConfig,
    ohlcv: LakehouseView,
    candidates: LakehouseView,
) -> Artifact:
    settings: Settings = context.resources.settings
    started = time.perf_counter()
    _, as_of = window_dates(context)
    plan = plan_snapshot(ohlcv, as_of, config.stale_tolerance_days)
    contents, described, originals = read_snapshot_files(plan)
    # The pin: selected_winners reads the feature store at exactly this version.
    delta_version = (
        config.feature_version if config.feature_version is not None else feature_version(ohlcv)
    )
    manifest = {
        "run_id": context.run_id,
        "as_of": as_of.isoformat(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "parameters": {"snapshot": config.recorded()},
        "universe": candidates.candidates().get("universe"),
        "files": described,
        "excluded": plan.excluded,
        "lakehouse_fingerprint": fingerprint(described),
        "feature_store_version": delta_version,
        "git_revision": git_revision(PROJECT_ROOT),
        # The DVC version the run read: dvc.lock's, when the files it used are that version.
        "dvc_lakehouse_md5": recorded_lakehouse_md5(
            ohlcv.data_dir, {f"ohlcv/{n}": b for n, b in originals.items()}
        ),
    }
    context.add_output_metadata(
        {
            "files": len(described),
            "excluded": len(plan.excluded),
            "rows": sum(d["rows"] for d in described.values()),
            "lakehouse_fingerprint": manifest["lakehouse_fingerprint"],
            "feature_store_version": delta_version if delta_version is not None else -1,
        }
    )
    audit(
        settings,
        context,
        "run_snapshot",
        started,
        rows_in=len(plan.files),
        rows_out=len(described),
        excluded=len(plan.excluded),
    )
    return Artifact(manifest, files={f"data/{name}": data for name, data in contents.items()})
