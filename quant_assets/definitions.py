"""The code location: every asset, check, job, schedule and sensor, and the one place
that chooses resources from the settings.

`dagster dev -w workspace.yaml` loads `defs` lazily (the `@dg.definitions` function), so
nothing reads the environment at import time.
"""

from __future__ import annotations

import dagster as dg

from quant_assets.alpha.assets import build_alpha_assets
from quant_assets.automation import build_alpha_sensor, build_schedules, data_gate
from quant_assets.data.assets import build_data_assets
from quant_assets.data.maintenance_assets import build_maintenance_assets
from quant_assets.data.restore import RESTORE_ASSET, build_restore_asset
from quant_assets.features.assets import build_feature_assets
from quant_assets.partitions import daily_partitions
from quant_resources.instance import LANE_TAG
from quant_resources.io_managers import ReadOnlyLakehouseIOManager, RunArtifactIOManager
from quant_resources.lakehouse import Lakehouse
from quant_resources.progress import LOGGERS
from quant_resources.runtime import offline_environment
from quant_resources.settings import Settings, get_settings
from quant_resources.sources import source_from_settings
from quant_resources.tracking import MlflowTracking
from quant_resources.tracking.resource import artifact_location_for, tracking_uri_for

DATA_JOB = "data_cycle"
ALPHA_JOB = "alpha_cycle"
REPAIR_JOB = "gap_repair_job"
AUDIT_JOB = "data_audit_job"
# The instance's run queue lets one run that writes the lakehouse run at a time, and a
# few alpha days at once (quant_resources/instance.py).
WRITES_LAKEHOUSE = {LANE_TAG: "lakehouse"}
# The jobs that open an MLflow run (their `cycle` tag); each carries dagster-mlflow's end hook
# (the data and maintenance jobs through `audit_step_and_end_tracking`, which also writes
# their audit.jsonl).
TRACKED_JOBS = {DATA_JOB: "data", ALPHA_JOB: "alpha", REPAIR_JOB: "repair", AUDIT_JOB: "audit"}


def build_resources(settings: Settings) -> dict[str, object]:
    return {
        "source": source_from_settings(settings),
        "lakehouse": Lakehouse(data_dir=str(settings.data_dir), locks=settings.locks),
        # The alpha side: read-only lakehouse inputs, outputs into data/runs/{run_id}/.
        "lakehouse_reader": ReadOnlyLakehouseIOManager(data_dir=str(settings.data_dir)),
        "run_artifacts": RunArtifactIOManager(runs_dir=str(settings.runs_dir), runs_url=settings.runs_url),
        # MLflow through dagster-mlflow, queued to a background worker (quant_resources/tracking).
        "mlflow": _tracking(settings),
    }


def _tracking(settings: Settings) -> MlflowTracking:
    from quant_assets.mlops.tracking import tracking_tags

    uri = tracking_uri_for(settings)
    return MlflowTracking(
        tracking_uri=uri,
        artifact_location=artifact_location_for(uri, settings.mlflow_artifacts_url),
        tracked_jobs=TRACKED_JOBS,
        tags=tracking_tags(),
    )


def build_definitions(settings: Settings) -> dg.Definitions:
    from dagster_mlflow import end_mlflow_on_run_finished  # imports mlflow: only when building

    from quant_assets.alpha.assets import seal_finished_run
    from quant_assets.mlops.tracking import audit_step_and_end_tracking

    partitions_def = daily_partitions(settings)
    data_assets = build_data_assets(settings, partitions_def)
    ohlcv = next(a for a in data_assets if isinstance(a, dg.AssetsDefinition) and a.key == dg.AssetKey("ohlcv"))
    data_assets = data_assets + build_feature_assets(settings, partitions_def, ohlcv)
    maintenance = build_maintenance_assets(settings) + [build_restore_asset(settings)]
    alpha_assets = build_alpha_assets(settings, partitions_def)
    data_job = dg.define_asset_job(
        DATA_JOB,
        # lakehouse_restore first: the lakehouse version dvc.lock records, before anything reads it.
        selection=dg.AssetSelection.groups("data") | dg.AssetSelection.assets(RESTORE_ASSET),
        description="The data cycle for a day or a range: candidates, ohlcv, features, with their checks.",
        tags=WRITES_LAKEHOUSE,
        hooks={audit_step_and_end_tracking},
    )
    alpha_job = dg.define_asset_job(
        ALPHA_JOB,
        selection=dg.AssetSelection.groups("alpha"),
        description="The alpha cycle for a day: snapshot, returns, selection, weights, backtest.",
        tags={LANE_TAG: "alpha"},
        hooks={end_mlflow_on_run_finished, seal_finished_run},
    )
    repair_job = dg.define_asset_job(
        REPAIR_JOB,
        selection=["gap_repair"],
        description="Targeted re-fetch of gaps.",
        hooks={audit_step_and_end_tracking},
        tags=WRITES_LAKEHOUSE,
    )
    audit_job = dg.define_asset_job(
        AUDIT_JOB,
        selection=["data_audit"],
        description="Re-validate the whole lakehouse.",
        hooks={audit_step_and_end_tracking},
        tags=WRITES_LAKEHOUSE,  # it quarantines unreadable files
    )
    jobs = [data_job, alpha_job, repair_job, audit_job]
    return dg.Definitions(
        assets=[a for a in data_assets + maintenance + alpha_assets if not isinstance(a, dg.AssetChecksDefinition)],
        asset_checks=[a for a in data_assets if isinstance(a, dg.AssetChecksDefinition)],
        jobs=jobs,
        schedules=build_schedules(data_job, repair_job, audit_job),
        sensors=[build_alpha_sensor(alpha_job, partitions_def, data_gate(data_assets))],
        resources=build_resources(settings),
        # The CLI asks for its progress and log-file loggers in the run config; a run
        # launched from the UI configures none and gets Dagster's console logger.
        loggers=LOGGERS,
        # Steps of one run share a process: a process per step costs seconds each on 2 cores
        # (a 10-day backfill from the UI: ~100 s instead of ~9 s), and the cycles are
        # sequential pipelines anyway.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    # Telemetry off and batched event writes in the code server and the run workers; the
    # instance itself was made ready by `quant ui`, which started them.
    offline_environment()
    return build_definitions(get_settings())
