"""The names the entry points use: the jobs and the asset at the head of the data job.
Spelled once here; a light module (no Dagster), so `quant_assets.definitions` re-exports
them without importing the graph at start-up."""

DATA_JOB = "data_cycle"
ALPHA_JOB = "alpha_cycle"
REPAIR_JOB = "gap_repair_job"
AUDIT_JOB = "data_audit_job"
RESTORE_ASSET = "lakehouse_restore"
