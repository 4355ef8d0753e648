"""The `selection-policy` model registry: each alpha run's policy as an MLflow pyfunc model.

A policy is the run's selection and optimisation parameters (`optimization.json`):
`predict(returns)` applies `select_winners` then `optimize_weights` to a returns frame,
exactly as the `selected_winners` and `portfolio_weights` assets do, and returns weights.

- `log_policy` (worker, during `portfolio_weights`): logs the model in the run's MLflow
  run from code (`policy_model.py`, MLflow's models-from-code: no pickle) and registers
  a new version of `selection-policy`.
- `rank_policy` (worker, after `backtest`): tags the version with its out-of-sample
  metrics and moves the aliases: `champion` on the best Sharpe, `challenger` on the
  newest other ranked version. A version whose backtest did not finish has no Sharpe and
  holds no alias.
- `policy_report` (the `quant champion` command): the two aliased versions side by side.

`log_policy` and `rank_policy` run in the tracking worker (`MlflowTracking.submit`), off
the run's critical path.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

MODEL_NAME = "selection-policy"
CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_CODE = Path(__file__).with_name("policy_model.py")
REPORTED_METRICS = (
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "annual_return",
    "annual_volatility",
    "annual_turnover",
)


# -- the policy ------------------------------------------------------------------------
def policy_weights(returns: pl.DataFrame, parameters: dict[str, Any]) -> pl.DataFrame:
    """Weights (symbol, weight) the policy gives a dates x symbols returns frame.

    `parameters` is a run's `optimization.json`: {"selection": SelectionParams fields,
    "optimization": OptimizationConfig fields}. Every column but `date` is a symbol's daily
    simple returns (NaN where it had no bar); data-quality filtering is the caller's.
    """
    from quant_assets.alpha.optimize import optimize_weights
    from quant_assets.alpha.returns import returns_array
    from quant_assets.alpha.selection import SelectionParams, select_winners

    if "date" not in returns.columns:
        returns = returns.with_row_index("date")
    values, _, symbols = returns_array(returns)
    selection_params = SelectionParams(**parameters["selection"])
    selection = select_winners(values, symbols, selection_params)
    optimization = parameters["optimization"]
    window = returns.select(selection.symbols).tail(optimization["lookback"])
    weights = optimize_weights(
        window,
        objective=optimization["objective"],
        covariance=optimization["covariance"],
        max_weight=optimization["max_weight"],
        min_weight=optimization["min_weight"],
        risk_free_rate=optimization["risk_free_rate"],
        turnover_penalty=optimization["turnover_penalty"],
        periods_per_year=selection_params.periods_per_year,
    )
    return pl.DataFrame(
        {"symbol": list(weights), "weight": [float(w) for w in weights.values()]},
        schema={"symbol": pl.String, "weight": pl.Float64},
    ).sort("symbol")


def choose_aliases(ranked: Iterable[tuple[int, float]]) -> tuple[int | None, int | None]:
    """(champion, challenger) versions from (version, Sharpe) pairs.

    Champion: the best Sharpe (the newer version on a tie). Challenger: the newest version
    other than the champion. Non-finite Sharpe ratios are not ranked.
    """
    usable = [(v, s) for v, s in ranked if s is not None and math.isfinite(s)]
    if not usable:
        return None, None
    champion = max(usable, key=lambda vs: (vs[1], vs[0]))[0]
    others = [v for v, _ in usable if v != champion]
    return champion, (max(others) if others else None)


# -- worker side (MlflowTracking.submit) -----------------------------------------------
def log_policy(run: Any, parameters: dict[str, Any], as_of: str) -> None:
    """Log the policy as a pyfunc model in `run` and register it as a new version."""
    import mlflow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no signature: the symbols change from run to run
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=str(MODEL_CODE),
            model_config=parameters,
            pip_requirements=["quant-lakehouse"],
        )
    version = mlflow.register_model(
        info.model_uri,
        MODEL_NAME,
        tags={"mlflow_run_id": run.run_id, "as_of": as_of},
    )
    run.state["policy_version"] = int(version.version)


def rank_policy(run: Any, metrics: dict[str, Any]) -> None:
    """Tag the run's version with its backtest metrics, then move champion and challenger."""
    version = run.state.get("policy_version")
    if version is None:
        return
    client = run.client
    for key in REPORTED_METRICS:
        value = metrics.get(key)
        if value is not None and math.isfinite(float(value)):
            client.set_model_version_tag(MODEL_NAME, str(version), key, repr(float(value)))
    update_aliases(client)


def update_aliases(client: Any, name: str = MODEL_NAME) -> tuple[int | None, int | None]:
    ranked = []
    for version in client.search_model_versions(f"name='{name}'"):
        try:
            ranked.append((int(version.version), float(version.tags["sharpe"])))
        except (KeyError, ValueError):
            continue
    champion, challenger = choose_aliases(ranked)
    if champion is not None:
        client.set_registered_model_alias(name, CHAMPION, str(champion))
    if challenger is not None:
        client.set_registered_model_alias(name, CHALLENGER, str(challenger))
    elif champion is not None:
        _delete_alias(client, name, CHALLENGER)
    return champion, challenger


def _delete_alias(client: Any, name: str, alias: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # there was none
        client.delete_registered_model_alias(name, alias)


# -- `quant champion` ------------------------------------------------------------------
def policy_report(tracking_uri: str, name: str = MODEL_NAME) -> dict[str, Any]:
    """The champion and challenger versions: metrics, parameters, run and as-of date."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from quant_resources.errors import QuantError

    client = MlflowClient(tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise QuantError(
            f"no model '{name}' is registered at {tracking_uri}: run the alpha cycle first "
            "(quant alpha), or point QUANT_MLFLOW_TRACKING_URI at the tracking store"
        ) from None
    report: dict[str, Any] = {"model": name, "tracking_uri": tracking_uri, "versions": 0}
    report["versions"] = len(client.search_model_versions(f"name='{name}'"))
    for alias in (CHAMPION, CHALLENGER):
        try:
            version = client.get_model_version_by_alias(name, alias)
        except MlflowException:
            report[alias] = None
            continue
        model = policy_parameters(client, version.source)
        report[alias] = {
            "version": int(version.version),
            "mlflow_run_id": version.run_id or version.tags.get("mlflow_run_id"),
            "dagster_run_id": _dagster_run_id(client, version.run_id),
            "as_of": version.tags.get("as_of"),
            "metrics": {
                k: float(version.tags[k]) for k in REPORTED_METRICS if k in version.tags
            },
            "parameters": model,
        }
    return report


def policy_parameters(client: Any, model_uri: str) -> dict[str, Any]:
    """The policy parameters (the pyfunc `model_config`) of a registered version's model."""
    from mlflow.models import Model

    try:
        logged = client.get_logged_model(model_uri.removeprefix("models:/"))
        flavor = Model.load(logged.artifact_location).flavors["python_function"]
        return dict(flavor.get("config") or {})
    except Exception:  # noqa: BLE001 - a report shows what it can
        return {}


def _dagster_run_id(client: Any, mlflow_run_id: str | None) -> str | None:
    if not mlflow_run_id:
        return None
    try:
        return client.get_run(mlflow_run_id).data.tags.get("dagster_run_id")
    except Exception:  # noqa: BLE001
        return None


def parameter_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> dict[str, tuple]:
    """{"optimization.objective": (a value, b value), ...} for every leaf that differs."""
    out: dict[str, tuple] = {}
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out.update(parameter_differences(x, y, f"{prefix}{key}."))
        elif x != y:
            out[f"{prefix}{key}"] = (x, y)
    return out
