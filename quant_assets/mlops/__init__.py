"""MLOps of the two cycles, in one place: tracking, the model registry, DVC, reproduce.

- `tracking.py`: what the cycles send to MLflow (audit lines, data-cycle metrics, the
  run folder's files) and the `audit_step_and_end_tracking` hook of the data, repair and
  audit jobs. It goes through the `mlflow` resource, `quant_resources.tracking`
  (`MlflowTracking` and its background worker), which imports nothing of this package:
  the registry's functions are handed to `MlflowTracking.submit` as callables.
- `registry.py`: the `selection-policy` model registry (log a run's policy as a pyfunc
  model, move the champion and challenger aliases, `quant champion`'s report).
- `policy_model.py`: the pyfunc model logged from code (MLflow copies the file into the
  model); never imported by the project itself.
- `dvc.py`: DVC as a command: record, push, pull and restore lakehouse versions.
- `reproduce.py`: `quant reproduce RUN_ID`, re-run a past alpha run and compare outputs.
- `cli.py`: the `quant` commands of this package (`reproduce`, `champion`, `pull`,
  `mlflow-ui`) and the `--dvc` flag, added to the parser of `quant_assets/cli.py`.

Nothing is imported here: each module is imported by its own name.
"""
