"""The code location: the asset graph of `quant_assets.defs` (loaded whole by Dagster's
loader), bound to the settings, with the resources chosen in one place.

`dagster dev -w workspace.yaml` loads `defs` lazily (the `@dg.definitions` function), so
nothing reads the environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

# Re-exported for the entry points (the CLI, the runner, tests): nothing else imports defs.
from quant_assets.defs.names import ALPHA_JOB, AUDIT_JOB, DATA_JOB, REPAIR_JOB, RESTORE_ASSET  # noqa: F401
from quant_assets.partitions import daily_partitions
from quant_resources.compute import compute_for
from quant_resources.io_managers import ReadOnlyLakehouseIOManager, RunArtifactIOManager
from quant_resources.lakehouse import Lakehouse
from quant_resources.progress import LOGGERS
from quant_resources.runtime import offline_environment
from quant_resources.settings import Settings, get_settings
from quant_resources.sources import source_from_settings
from quant_resources.tracking import MlflowTracking
from quant_resources.tracking.resource import artifact_location_for, tracking_uri_for

# Shared attributes, applied once over the specs rather than on every decorator.
OWNERS_BY_GROUP = {
    "data": ["team:data-platform"],
    "maintenance": ["team:data-platform"],
    "alpha": ["team:quant-research"],
}
CODE_VERSION = "1"


def build_resources(settings: Settings) -> dict[str, object]:
    return {
        # The settings assets read (thresholds, universe, folders), as a resource: the
        # assets are module-level, so nothing closes over them.
        "settings": dg.ResourceDefinition.hardcoded_resource(settings, "the quant-lakehouse Settings"),
        "source": source_from_settings(settings),
        "lakehouse": Lakehouse(data_dir=str(settings.data_dir), locks=settings.locks),
        # Where ingestion's symbol shards run: this process, or a Dask cluster (QUANT_COMPUTE).
        "compute": compute_for(settings.compute, settings.dask_scheduler),
        # The alpha side: read-only lakehouse inputs, outputs into data/runs/{run_id}/.
        "lakehouse_reader": ReadOnlyLakehouseIOManager(data_dir=str(settings.data_dir)),
        "run_artifacts": RunArtifactIOManager(runs_dir=str(settings.runs_dir), runs_url=settings.runs_url),
        # MLflow through dagster-mlflow, queued to a background worker (quant_resources/tracking).
        "mlflow": _tracking(settings),
    }


def _tracking(settings: Settings) -> MlflowTracking:
    from quant_assets.defs.automation.jobs import TRACKED_JOBS
    from quant_assets.mlops.tracking import tracking_tags

    uri = tracking_uri_for(settings)
    return MlflowTracking(
        tracking_uri=uri,
        artifact_location=artifact_location_for(uri, settings.mlflow_artifacts_url),
        tracked_jobs=TRACKED_JOBS,
        tags=tracking_tags(),
    )


def bind(assets: list[Any], settings: Settings) -> list[Any]:
    """The one factory: the partitions' start date is the settings' history start (a
    partition before it would have no data), descriptions name the thresholds in force,
    and owners and code version are set by group."""
    partitions = daily_partitions(settings)
    fields = {
        "{universe}": settings.universe,
        "{toxic_pct}": f"{settings.toxic_threshold * 100:g}",
        "{gap_days}": str(settings.gap_threshold_days),
    }

    def apply(spec: dg.AssetSpec) -> dg.AssetSpec:
        description = spec.description or ""
        for placeholder, value in fields.items():
            description = description.replace(placeholder, value)
        return spec.replace_attributes(
            partitions_def=partitions if spec.partitions_def is not None else None,
            description=description,
            owners=spec.owners or OWNERS_BY_GROUP.get(spec.group_name or "", []),
            code_version=spec.code_version or CODE_VERSION,
        )

    return dg.map_asset_specs(apply, assets)


def build_definitions(settings: Settings) -> dg.Definitions:
    import quant_assets.defs

    # The project root is where the package lives: a checkout, or site-packages for an
    # installed wheel (which has no pyproject.toml for Dagster to find).
    root = Path(quant_assets.defs.__file__).resolve().parents[2]
    loaded = dg.load_defs(defs_root=quant_assets.defs, project_root=root)
    return dg.Definitions(
        assets=bind(list(loaded.assets or []), settings),
        asset_checks=list(loaded.asset_checks or []),
        jobs=list(loaded.jobs or []),
        schedules=list(loaded.schedules or []),
        sensors=list(loaded.sensors or []),
        resources=build_resources(settings),
        # The CLI asks for its progress and log-file loggers in the run config; a run
        # launched from the UI configures none and gets Dagster's console logger.
        loggers=LOGGERS,
        # Steps of one run share a process: a process per step costs seconds each on 2 cores
        # (a 10-day backfill from the UI: ~100 s instead of ~9 s), and the cycles are
        # sequential pipelines anyway.
        executor=dg.in_process_executor,
    )


def validate_alpha_run_config(run_config: dict[str, Any]) -> None:
    """The alpha run config checked before a run starts (`defs/alpha/config.py`)."""
    from quant_assets.defs.alpha.config import validate_alpha_run_config as validate

    validate(run_config)


@dg.definitions
def defs() -> dg.Definitions:
    # Telemetry off and batched event writes in the code server and the run workers; the
    # instance itself was made ready by `quant ui`, which started them.
    offline_environment()
    return build_definitions(get_settings())
