"""Run tags the project reads or writes, spelled once.

The range tags are Dagster's own (a single-run backfill over [start, end] carries them,
whether the CLI or the UI launched it); the launcher tag is ours.
"""

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
PARTITION = "dagster/partition"
# The PID of the `quant` process that runs a run in-process: a run left STARTED by a
# process that is gone is marked failed by the next command (quant_assets/runner.py).
LAUNCHER_PID = "quant/launcher_pid"
