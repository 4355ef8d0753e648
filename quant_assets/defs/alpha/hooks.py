"""`seal_finished_run`: the alpha job's success hook that seals the run folder."""

import dagster as dg


@dg.success_hook(required_resource_keys={"run_artifacts"})
def seal_finished_run(context: dg.HookContext) -> None:
    """Make the run folder read-only once every step the run planned has succeeded.

    A hook, not the IO manager or the last asset: only the run knows it is over. The last
    asset's own output is stored after its body returns, the IO manager sees one output at
    a time, and a re-execution of some steps (or a failed step) must not seal early or at
    all. A failed run keeps its folder writable for nobody but itself: its id never runs
    again, and a re-execution writes into a folder of its own.
    """
    from dagster._core.execution.stats import StepEventStatus  # the status of a step's stats

    instance = context.instance
    run = instance.get_run_by_id(context.run_id)
    if run is None or run.execution_plan_snapshot_id is None:
        return
    planned = set(instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id).step_keys_to_execute)
    succeeded = {
        s.step_key for s in instance.get_run_step_stats(context.run_id) if s.status == StepEventStatus.SUCCESS
    }
    if planned <= succeeded | {context.step_key}:
        context.resources.run_artifacts.seal(context.run_id)
        context.resources.run_artifacts.archive(context.run_id, context.log, context.instance)
