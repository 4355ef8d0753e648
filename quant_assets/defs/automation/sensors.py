"""`alpha_after_data`: when the data cycle's assets for day D are all materialised and the
blocking checks of the run that made them passed, request the alpha job for D once (run
key and cursor); when a blocking check failed, skip with the reason, shown in the UI.

What it waits for is read from the graph it is loaded with (`data_gate`), so a renamed
asset or check cannot silently stop gating.
"""

import datetime as dt
import json
from dataclasses import dataclass

import dagster as dg

from quant_assets.defs.automation.jobs import alpha_cycle
from quant_assets.defs.names import ALPHA_JOB
from quant_resources.run_tags import PARTITION, RANGE_END, RANGE_START

LOOKBACK_DAYS = 5  # days the sensor looks back from the newest partition
CURSOR_KEEP = 60


@dataclass(frozen=True)
class DataGate:
    """What the alpha cycle of day D waits for: these assets materialised for D, and
    these blocking checks passed in the run that made them. Derived from the graph
    (`data_gate`), so a renamed asset or check cannot silently stop gating."""

    assets: tuple[dg.AssetKey, ...]
    blocking_checks: frozenset[dg.AssetCheckKey]


def data_gate(graph, group: str = "data") -> DataGate:
    """The partitioned assets of `group` and every blocking check on them, read from an
    asset graph (`Definitions.resolve_asset_graph()`, or a sensor's repository's)."""
    keys = {
        key
        for key in graph.get_all_asset_keys()
        if graph.get(key).group_name == group and graph.get(key).partitions_def is not None
    }
    blocking = {
        check_key
        for check_key in graph.asset_check_keys
        if check_key.asset_key in keys and graph.get_check_spec(check_key).blocking
    }
    return DataGate(assets=tuple(sorted(keys, key=lambda k: k.to_user_string())), blocking_checks=frozenset(blocking))


def _covers(run: dg.DagsterRun, day: str) -> bool:
    tags = run.tags
    if tags.get(PARTITION) == day:
        return True
    start, end = tags.get(RANGE_START), tags.get(RANGE_END)
    return bool(start and end and start <= day <= end)


def data_readiness(instance: dg.DagsterInstance, day: str, gate: DataGate) -> tuple[str, str]:
    """("ready" | "pending" | "blocked", why) for the alpha cycle of `day`."""
    missing = [key.to_user_string() for key in gate.assets if day not in instance.get_materialized_partitions(key)]
    if missing:
        return "pending", f"{day}: not yet materialised: {', '.join(missing)}"
    # The newest finished run covering the day that evaluated blocking checks, whatever its
    # job: the data_cycle job, a backfill, or "Materialize" in the UI (__ASSET_JOB).
    runs = instance.get_runs(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]), limit=300
    )
    for run in runs:
        if not _covers(run, day):
            continue
        evaluated, failed = False, []
        for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
            evaluation = record.dagster_event.event_specific_data
            if dg.AssetCheckKey(evaluation.asset_key, evaluation.check_name) in gate.blocking_checks:
                evaluated = True
                if not evaluation.passed:
                    failed.append(f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}")
        if not evaluated:
            continue
        if failed:
            return "blocked", f"{day}: blocking check(s) failed in run {run.run_id}: {', '.join(sorted(failed))}"
        return "ready", f"{day}: run {run.run_id} passed its blocking checks"
    return "pending", f"{day}: materialised, but no run has evaluated its blocking checks yet"


@dg.sensor(
    name="alpha_after_data",
    job=alpha_cycle,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Starts the alpha cycle for day D once the data cycle's assets for D are "
        "materialised and its blocking checks passed; once per day."
    ),
)
def alpha_after_data(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    requested: list[str] = json.loads(context.cursor) if context.cursor else []
    repository = context.repository_def
    gate = data_gate(repository.asset_graph)
    last = repository.get_job(ALPHA_JOB).partitions_def.get_last_partition_key()
    if last is None:
        return dg.SkipReason("no partition yet")
    newest = dt.date.fromisoformat(last)
    days = [(newest - dt.timedelta(days=i)).isoformat() for i in range(LOOKBACK_DAYS)][::-1]
    requests, reasons = [], []
    for day in days:
        if day in requested:
            continue
        state, why = data_readiness(context.instance, day, gate)
        if state == "ready":
            requests.append(dg.RunRequest(run_key=f"alpha_after_data:{day}", partition_key=day))
            requested.append(day)
        else:
            reasons.append(why)
    cursor = json.dumps(sorted(set(requested))[-CURSOR_KEEP:])
    if not requests:
        return dg.SensorResult(skip_reason=dg.SkipReason("; ".join(reasons[-3:]) or "alpha already requested for every recent day"), cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)
