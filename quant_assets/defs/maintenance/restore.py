"""`lakehouse_restore`: the first step of every data-cycle run, which restores the lakehouse
version recorded in dvc.lock from the DVC remote before anything reads the lakehouse.

Why an asset at the head of the data job, not an op or a hook: an asset job holds no ops,
and Dagster has no run-start hook (hooks run after a step, sensors on run status run in
the daemon, after the steps may have started). `ohlcv` depends on this asset, so it
runs first in every run of `data_cycle` (a day, a range, the daily schedule, `quant
production`), shows in the UI as a step with its log and metadata (what it restored, or
why there was nothing to do), and a failure (DVC missing, the remote unreachable) stops
the run before the lakehouse is read or written. It is unpartitioned (one step per run,
whatever the range) and sits in the `maintenance` group: it acts on the lakehouse as a
whole, like gap repair and the audit.

Nothing to do costs no DVC process (`mlops.dvc.pull_plan` reads dvc.yaml, dvc.lock, the
DVC cache and the catalog): when the data folder is not the DVC project's own
(QUANT_DATA_DIR points elsewhere, as in every test), when no version is recorded, and when
the lakehouse is not behind the recorded version. DVC is called as a command from its own
environment (`make dvc-tool`), never imported.
"""

import dagster as dg

from quant_assets.defs.names import RESTORE_ASSET
from quant_assets.mlops.dvc import describe_remote, pull_lakehouse, pull_plan
from quant_resources.settings import Settings


@dg.asset(
    name=RESTORE_ASSET,
    group_name="maintenance",
    kinds={"dvc"},
    description=(
        "The lakehouse version recorded in dvc.lock, pulled from the DVC remote when "
        "data/lakehouse is missing or behind it; the first step of every data_cycle run. "
        "A no-op without a DVC call when no version is recorded, the lakehouse is current, "
        "or QUANT_DATA_DIR is not the project's data folder."
    ),
)
def lakehouse_restore(context: dg.AssetExecutionContext, settings: dg.ResourceParam[Settings]) -> dg.MaterializeResult:
    plan = pull_plan(settings.data_dir)
    version = dg.DataVersion(plan.md5) if plan.md5 else None
    if not plan.needed:
        context.log.info(f"lakehouse_restore: nothing to restore: {plan.why}")
        return dg.MaterializeResult(
            metadata={"restored": False, "reason": plan.why, "dvc_version": plan.md5 or "none"},
            data_version=version,
        )
    context.log.info(f"lakehouse_restore: dvc pull from {describe_remote(plan.remote)}: {plan.why}")
    status = pull_lakehouse(settings.data_dir)
    context.log.info(f"lakehouse_restore: restored {settings.lakehouse_dir} to {plan.md5}")
    return dg.MaterializeResult(
        metadata={
            "restored": True,
            "reason": plan.why,
            "dvc_version": plan.md5,
            "remote": describe_remote(plan.remote),
            "dvc_status": status or "up to date",
            "path": dg.MetadataValue.path(str(settings.lakehouse_dir)),
        },
        data_version=version,
    )
