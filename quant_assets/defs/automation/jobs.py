"""The four jobs. The instance's run queue lets one run that writes the lakehouse run at a
time and a few alpha days at once (`quant/lane`, quant_resources/instance.py)."""

import dagster as dg
from dagster_mlflow import end_mlflow_on_run_finished

from quant_assets.defs.alpha.hooks import seal_finished_run
from quant_assets.defs.names import ALPHA_JOB, AUDIT_JOB, DATA_JOB, REPAIR_JOB, RESTORE_ASSET
from quant_assets.mlops.tracking import audit_step_and_end_tracking
from quant_resources.instance import LANE_TAG

WRITES_LAKEHOUSE = {LANE_TAG: "lakehouse"}
# The jobs that open an MLflow run (their `cycle` tag); each carries dagster-mlflow's end
# hook (the data and maintenance jobs through `audit_step_and_end_tracking`, which also
# writes their audit.jsonl).
TRACKED_JOBS = {DATA_JOB: "data", ALPHA_JOB: "alpha", REPAIR_JOB: "repair", AUDIT_JOB: "audit"}

data_cycle = dg.define_asset_job(
    DATA_JOB,
    # lakehouse_restore first: the lakehouse version dvc.lock records, before anything reads it.
    selection=dg.AssetSelection.groups("data") | dg.AssetSelection.assets(RESTORE_ASSET),
    description="The data cycle for a day or a range: candidates, ohlcv, features, with their checks.",
    tags=WRITES_LAKEHOUSE,
    hooks={audit_step_and_end_tracking},
)
alpha_cycle = dg.define_asset_job(
    ALPHA_JOB,
    selection=dg.AssetSelection.groups("alpha"),
    description="The alpha cycle for a day: snapshot, returns, selection, weights, backtest.",
    tags={LANE_TAG: "alpha"},
    hooks={end_mlflow_on_run_finished, seal_finished_run},
)
gap_repair_job = dg.define_asset_job(
    REPAIR_JOB,
    selection=["gap_repair"],
    description="Targeted re-fetch of gaps.",
    hooks={audit_step_and_end_tracking},
    tags=WRITES_LAKEHOUSE,
)
data_audit_job = dg.define_asset_job(
    AUDIT_JOB,
    selection=["data_audit"],
    description="Re-validate the whole lakehouse.",
    hooks={audit_step_and_end_tracking},
    tags=WRITES_LAKEHOUSE,  # it quarantines unreadable files
)
