"""The `selection-policy` model registry: each alpha run's policy as an MLflow pyfunc model.

A version is the run's `Policy` (selection, optimisation and rebalancing parameters, as
`optimization.json` records them with the policy hash and the previous run the weights
were traded from): `predict(returns)` runs `Policy.select` then `Policy.weights` on a
returns frame, exactly as the `selected_winners` and `portfolio_weights` assets do, and
returns weights. A policy with a turnover penalty or cap trades from the previous weights
the run recorded; `policy_weights(returns, parameters, previous)` (or the loaded model's
`unwrap_python_model().weights(returns, previous)`) takes other holdings.

- `log_policy` (worker, during `portfolio_weights`): saves the model from code
  (`policy_model.py`, MLflow's models-from-code: no pickle) into the run's artifacts and
  registers it as a new version of `selection-policy`.
- `rank_policy` (worker, after `backtest`): tags the version with its out-of-sample
  Sharpe ratio and moves the aliases: `champion` on the best Sharpe, `challenger` on the
  newest other ranked version. A version whose backtest did not finish has no Sharpe and
  holds no alias.
- `policy_report` (the `quant champion` command): the two aliased versions side by side.

`log_policy` and `rank_policy` run in the tracking worker (`MlflowTracking.submit`), off
the run's critical path.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
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
def policy_weights(
    returns: pl.DataFrame,
    parameters: dict[str, Any],
    previous: dict[str, float] | None = None,
    features: dict[str, float | None] | None = None,
) -> pl.DataFrame:
    """Weights (symbol, weight) the policy gives a dates x symbols returns frame.

    `parameters` is a run's `optimization.json` (`Policy.to_dict()` plus what the run
    recorded; one from before the policy object, selection and optimization only, works
    too). Every column but `date` is a symbol's daily simple returns (NaN where it had no
    bar); data-quality filtering is the caller's. `previous`: the weights held, for a
    policy with a turnover penalty or cap; default the previous weights the run traded
    from (none: from cash). `features`: symbol -> tv_technicals_1d rating as of the last
    row (a run's features.parquet), the score's feature term; None leaves it out.
    """
    from quant_assets.alpha.policy import Policy, weights_frame
    from quant_assets.alpha.returns import returns_array

    if "date" not in returns.columns:
        returns = returns.with_row_index("date")
    policy = Policy.from_dict(parameters)
    if previous is None:
        previous = (parameters.get("previous") or {}).get("weights")
    if features is None and policy.selection.feature_weight > 0:
        raise ValueError(
            f"this policy scores with the feature store (feature_weight {policy.selection.feature_weight}): "
            "pass the ratings as of the last row, predict({'returns': frame, 'features': {symbol: rating}}) "
            "(a run's features.parquet holds the ones it used)"
        )
    values, _, symbols = returns_array(returns)
    selection = policy.select(values, symbols, features=features)
    return weights_frame(returns, selection.symbols, policy, previous)


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
    """Save the policy as a pyfunc model into `run`'s artifacts (`selection-policy/`) and
    register it as a new version.

    `save_model` + `log_artifacts` rather than `log_model`: MLflow 3's `log_model` also
    copies every metric of the run onto a LoggedModel (one query per metric, 0.15-0.3 s a
    run on sqlite, and each metric's history gains a duplicate). The version points at the
    run, as `runs:/{run_id}/selection-policy`.
    """
    import mlflow

    with tempfile.TemporaryDirectory(prefix="selection-policy-") as folder:
        model_dir = Path(folder) / MODEL_NAME
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no signature: the symbols change from run to run
            mlflow.pyfunc.save_model(
                str(model_dir),
                python_model=str(MODEL_CODE),
                model_config=parameters,
                pip_requirements=["quant-lakehouse"],
            )
        run.client.log_artifacts(run.run_id, str(model_dir), MODEL_NAME)
    version = mlflow.register_model(
        f"runs:/{run.run_id}/{MODEL_NAME}", MODEL_NAME, tags={"as_of": as_of}
    )
    run.state["policy_version"] = int(version.version)


def rank_policy(run: Any, metrics: dict[str, Any]) -> None:
    """Tag the run's version with its out-of-sample Sharpe, then move champion and challenger.

    Only the Sharpe ratio is a tag (the ranking key); the version's other backtest metrics
    are the metrics of its MLflow run (`backtest/metrics/*`). With a champion in place the
    update is incremental (two reads, one or two alias writes, whatever the registry's
    size); without one, `update_aliases` ranks every version.
    """
    version = run.state.get("policy_version")
    sharpe = metrics.get("sharpe")
    if version is None or sharpe is None or not math.isfinite(float(sharpe)):
        return
    client = run.client
    client.set_model_version_tag(MODEL_NAME, str(version), "sharpe", repr(float(sharpe)))
    champion = _aliased(client, CHAMPION)
    if champion is None:
        update_aliases(client)
        return
    challenger = _aliased(client, CHALLENGER)
    new_champion, new_challenger = next_aliases(
        champion, challenger[0] if challenger else None, (version, float(sharpe))
    )
    if new_champion != champion[0]:
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, str(new_champion))
    if new_challenger is not None and (challenger is None or new_challenger != challenger[0]):
        client.set_registered_model_alias(MODEL_NAME, CHALLENGER, str(new_challenger))


def next_aliases(
    champion: tuple[int, float], challenger: int | None, new: tuple[int, float]
) -> tuple[int, int | None]:
    """`choose_aliases` after adding the newest version `new` (version, Sharpe) to a
    registry whose aliases were right: it wins on a better or equal Sharpe; the
    challenger is then the newest of the old pair, else the new version."""
    if new[1] >= champion[1]:
        previous = [v for v in (champion[0], challenger) if v is not None]
        return new[0], max(previous)
    return champion[0], new[0]


def update_aliases(client: Any, name: str = MODEL_NAME) -> tuple[int | None, int | None]:
    """Rank every version and point champion and challenger at `choose_aliases`' choice."""
    ranked = []
    for version in client.search_model_versions(f"name='{name}'"):
        try:
            ranked.append((int(version.version), float(version.tags["sharpe"])))
        except (KeyError, ValueError):
            continue
    champion, challenger = choose_aliases(ranked)
    for alias, version in ((CHAMPION, champion), (CHALLENGER, challenger)):
        if version is not None:
            client.set_registered_model_alias(name, alias, str(version))
        else:
            _delete_alias(client, name, alias)
    return champion, challenger


def _aliased(client: Any, alias: str, name: str = MODEL_NAME) -> tuple[int, float] | None:
    """(version, Sharpe) holding `alias`, or None (no such alias, or an unranked version)."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, alias)
        return int(version.version), float(version.tags["sharpe"])
    except (MlflowException, KeyError, ValueError):
        return None


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
        model = policy_parameters(client, version.run_id)
        report[alias] = {
            "version": int(version.version),
            "mlflow_run_id": version.run_id,
            "dagster_run_id": _dagster_run_id(client, version.run_id),
            "as_of": version.tags.get("as_of"),
            "metrics": _backtest_metrics(client, version.run_id),
            "parameters": model,
        }
    return report


def policy_parameters(client: Any, mlflow_run_id: str | None) -> dict[str, Any]:
    """The policy parameters (the pyfunc `model_config`) a version's run saved."""
    import yaml

    try:
        with tempfile.TemporaryDirectory() as folder:
            path = client.download_artifacts(mlflow_run_id, f"{MODEL_NAME}/MLmodel", folder)
            flavor = yaml.safe_load(Path(path).read_text())["flavors"]["python_function"]
        return dict(flavor.get("config") or {})
    except Exception:  # noqa: BLE001 - a report shows what it can
        return {}


def _backtest_metrics(client: Any, mlflow_run_id: str | None) -> dict[str, float]:
    """The out-of-sample metrics the version's run logged (`backtest/metrics/*`)."""
    try:
        logged = client.get_run(mlflow_run_id).data.metrics
    except Exception:  # noqa: BLE001
        return {}
    return {
        k: logged[f"backtest/metrics/{k}"]
        for k in REPORTED_METRICS
        if f"backtest/metrics/{k}" in logged
    }


def _dagster_run_id(client: Any, mlflow_run_id: str | None) -> str | None:
    if not mlflow_run_id:
        return None
    try:
        return client.get_run(mlflow_run_id).data.tags.get("dagster_run_id")
    except Exception:  # noqa: BLE001
        return None


def parameter_differences(
    a: dict[str, Any], b: dict[str, Any], prefix: str = ""
) -> dict[str, tuple]:
    """{"optimization.objective": (a value, b value), ...} for every leaf that differs."""
    out: dict[str, tuple] = {}
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out.update(parameter_differences(x, y, f"{prefix}{key}."))
        elif x != y:
            out[f"{prefix}{key}"] = (x, y)
    return out
