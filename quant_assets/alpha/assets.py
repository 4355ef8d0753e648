"""Alpha-cycle assets (group `alpha`, daily partitions): snapshot -> returns -> selection
-> weights -> backtest.

Lakehouse data arrives only as inputs loaded by `ReadOnlyLakehouseIOManager`; every
output goes through `RunArtifactIOManager` into `data/runs/{run_id}/`. No asset here
asks for the read-write lakehouse or a market-data source, so the cycle runs offline.
Each stage appends its line, and each contract validation its own, to `audit.jsonl`.
"""

import base64
import datetime as dt
import time
from typing import Any, Literal

import dagster as dg
import numpy as np
import polars as pl
import pydantic

from quant_assets.alpha.audit import append_audit
from quant_assets.alpha.backtest import plot_equity_curve, plot_weights
from quant_assets.alpha.policy import policy_walk_forward, weights_frame
from quant_assets.alpha.returns import build_returns_matrix, panel_calendars, returns_array
from quant_assets.alpha.selection import SelectionParams, select_winners
from quant_assets.alpha.snapshot import (
    fingerprint,
    git_revision,
    plan_snapshot,
    read_snapshot_files,
)
from quant_assets.contracts import (
    check_result_from_cases,
    enforce,
    returns_schema,
    selection_schema,
    validate,
    weights_schema,
)
from quant_assets.mlops.dvc import recorded_lakehouse_md5
from quant_assets.mlops.tracking import mirror_audit, rank_policy, register_policy
from quant_assets.partitions import window_dates
from quant_resources.io_managers import Artifact, LakehouseView, check_run_folder_writable
from quant_resources.schema import ts_to_date_expr
from quant_resources.settings import PROJECT_ROOT, Settings

OWNERS = ["team:quant-research"]
OBJECTIVE = Literal["min_variance", "max_sharpe", "risk_parity", "hrp", "equal_weight"]


class SnapshotConfig(dg.Config):
    stale_tolerance_days: int = pydantic.Field(
        default=4,
        ge=0,
        description="a candidate whose file ends earlier than as-of minus this is stale",
    )


class SelectionConfig(dg.Config):
    lookback: int = pydantic.Field(
        default=252, ge=20, description="rows of the returns matrix scored"
    )
    skip: int = pydantic.Field(
        default=21, ge=0, description="most recent rows left out of the momentum"
    )
    min_history: int = pydantic.Field(
        default=200, ge=2, description="finite returns needed in the lookback"
    )
    min_quality: float = pydantic.Field(
        default=0.8, ge=0.0, le=1.0, description="minimum catalog data-quality score"
    )
    n_clusters: int = pydantic.Field(default=8, ge=1)
    per_cluster: int = pydantic.Field(default=2, ge=1)
    n_winners: int = pydantic.Field(default=12, ge=1)
    max_relaxations: int = pydantic.Field(default=3, ge=0)

    def params(self, periods_per_year: int) -> SelectionParams:
        return SelectionParams(**self.model_dump(), periods_per_year=periods_per_year)


class OptimizationConfig(dg.Config):
    objective: OBJECTIVE = "min_variance"
    covariance: Literal["sample", "ledoit_wolf"] = "ledoit_wolf"
    max_weight: float | None = pydantic.Field(
        default=0.25, gt=0.0, le=1.0, description="cap per symbol; null for none"
    )
    min_weight: float = pydantic.Field(default=0.0, ge=0.0, lt=1.0)
    risk_free_rate: float = pydantic.Field(default=0.0, description="annual, decimal")
    turnover_penalty: float = pydantic.Field(default=0.0, ge=0.0)
    lookback: int = pydantic.Field(
        default=252, ge=20, description="rows used to estimate the covariance"
    )


class BacktestConfig(dg.Config):
    window_days: int = pydantic.Field(
        default=756, ge=60, description="rows of the out-of-sample window"
    )
    rebalance: Literal["weekly", "monthly", "quarterly"] = "monthly"
    cost_bps: float = pydantic.Field(default=10.0, ge=0.0)


def _run_dir(settings: Settings, run_id: str):
    return settings.layout.run_dir(run_id)  # the folder RunArtifactIOManager writes


def _png_markdown(png: bytes, title: str) -> dg.MetadataValue:
    encoded = base64.b64encode(png).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")


def _periods_per_year(matrix: pl.DataFrame) -> int:
    dates = matrix["date"]
    return 365 if dates.len() and (dates.dt.weekday() > 5).any() else 252


def _audit(settings: Settings, context, stage: str, started: float, **fields: Any) -> dict:
    partition = context.partition_key if context.has_partition_key else None
    record = {
        "stage": stage,
        "asset_key": context.asset_key.to_user_string(),
        "partition": partition,
        "run_id": context.run_id,
        "duration_s": round(time.perf_counter() - started, 4),
        **fields,
    }
    run_dir = _run_dir(settings, context.run_id)
    check_run_folder_writable(run_dir, context.run_id)
    line = append_audit(run_dir, record)
    mirror_audit(context, line, run_dir)
    return line


def _audit_contract(
    settings: Settings, context, contract: str, result: dg.AssetCheckResult
) -> None:
    metadata = {k: getattr(v, "value", v) for k, v in (result.metadata or {}).items()}
    run_dir = _run_dir(settings, context.run_id)
    check_run_folder_writable(run_dir, context.run_id)
    line = append_audit(
        run_dir,
        {
            "stage": "contract",
            "contract": contract,
            "asset_key": context.asset_key.to_user_string(),
            "partition": context.partition_key if context.has_partition_key else None,
            "run_id": context.run_id,
            "passed": bool(result.passed),
            "failures": metadata.get("failures", 0),
            "rows_checked": metadata.get("rows_checked"),
        },
    )
    mirror_audit(context, line, run_dir)


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


def build_alpha_assets(settings: Settings, partitions_def: dg.PartitionsDefinition) -> list:
    lake_in = {"input_manager_key": "lakehouse_reader"}

    @dg.asset(
        partitions_def=partitions_def,
        group_name="alpha",
        ins={"ohlcv": dg.AssetIn(**lake_in), "candidates": dg.AssetIn(**lake_in)},
        io_manager_key="run_artifacts",
        metadata={"artifact": "manifest.json"},
        kinds={"python", "parquet"},
        owners=OWNERS,
        code_version="1",
        required_resource_keys={"mlflow"},  # audit lines mirrored to MLflow
        description=(
            "Copies each candidate's lakehouse file into data/runs/{run_id}/data/ and writes "
            "manifest.json (file sha256s and rows, lakehouse fingerprint, Delta, git and DVC "
            "versions). Fails fast listing every missing or stale candidate."
        ),
    )
    def run_snapshot(
        context: dg.AssetExecutionContext,
        config: SnapshotConfig,
        ohlcv: LakehouseView,
        candidates: LakehouseView,
    ) -> Artifact:
        started = time.perf_counter()
        _, as_of = window_dates(context)
        plan = plan_snapshot(ohlcv, as_of, config.stale_tolerance_days)
        contents, described = read_snapshot_files(plan)
        delta_version = _feature_version(ohlcv)
        manifest = {
            "run_id": context.run_id,
            "as_of": as_of.isoformat(),
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "parameters": {"snapshot": config.model_dump()},
            "universe": candidates.candidates().get("universe"),
            "files": described,
            "excluded": plan.excluded,
            "lakehouse_fingerprint": fingerprint(described),
            "feature_store_version": delta_version,
            "git_revision": git_revision(PROJECT_ROOT),
            # The DVC version the run read: dvc.lock's, when the files it used are that version.
            "dvc_lakehouse_md5": recorded_lakehouse_md5(
                ohlcv.data_dir, {f"ohlcv/{n}": b for n, b in contents.items()}
            ),
        }
        context.add_output_metadata(
            {
                "files": len(described),
                "excluded": len(plan.excluded),
                "rows": sum(d["rows"] for d in described.values()),
                "lakehouse_fingerprint": manifest["lakehouse_fingerprint"],
                "feature_store_version": delta_version if delta_version is not None else -1,
            }
        )
        _audit(
            settings,
            context,
            "run_snapshot",
            started,
            rows_in=len(plan.files),
            rows_out=len(described),
            excluded=len(plan.excluded),
        )
        return Artifact(manifest, files={f"data/{name}": data for name, data in contents.items()})

    @dg.asset(
        partitions_def=partitions_def,
        group_name="alpha",
        io_manager_key="run_artifacts",
        metadata={"artifact": "returns_matrix.parquet"},
        kinds={"polars", "parquet"},
        owners=OWNERS,
        code_version="1",
        required_resource_keys={"mlflow"},  # audit lines mirrored to MLflow
        check_specs=[
            dg.AssetCheckSpec(
                "returns_l1",
                asset="returns_matrix",
                blocking=True,
                description=(
                    "L1: finite or NaN where no bar; no return above "
                    f"+{settings.toxic_threshold * 100:g}% (the toxic threshold); no forward fill."
                ),
            )
        ],
        description=(
            "Dates x symbols simple close-to-close returns from the snapshot: NaN before each "
            "symbol's first bar and on missing sessions, never forward-filled, never truncated "
            "to the youngest symbol. Written as returns_matrix.parquet."
        ),
    )
    def returns_matrix(context: dg.AssetExecutionContext, run_snapshot: Artifact):
        started = time.perf_counter()
        manifest = run_snapshot.payload
        as_of = dt.date.fromisoformat(manifest["as_of"])
        data_dir = run_snapshot.run_dir / "data"
        closes = {
            d["symbol"]: pl.read_parquet(data_dir / name, columns=["timestamp", "close"])
            for name, d in manifest["files"].items()
        }
        calendars = panel_calendars(manifest["files"].values())
        matrix = build_returns_matrix(closes, calendars=calendars, end=as_of)
        symbols = [c for c in matrix.columns if c != "date"]
        cases = validate(returns_schema(symbols, settings.toxic_threshold), matrix)
        filled = _forward_fill_cases(matrix, closes)
        result = check_result_from_cases(matrix, cases, extra={"forward_filled_values": filled})
        if filled:
            result = dg.AssetCheckResult(
                passed=False, metadata={**(result.metadata or {}), "forward_filled_values": filled}
            )
        values = matrix.select(symbols).to_numpy() if symbols else np.zeros((0, 0))
        nan_density = float(np.isnan(values).mean()) if values.size else 0.0
        yield dg.Output(
            Artifact(matrix),
            metadata={
                "dates": matrix.height,
                "symbols": len(symbols),
                "nan_density": nan_density,
                "first_date": str(matrix["date"].min()),
                "last_date": str(matrix["date"].max()),
                "calendar": "+".join(calendars) or "24/7",
            },
        )
        yield dg.AssetCheckResult(
            check_name="returns_l1", passed=result.passed, metadata=result.metadata
        )
        _audit_contract(settings, context, "L1_returns", result)
        _audit(
            settings,
            context,
            "returns_matrix",
            started,
            rows_in=len(closes),
            rows_out=matrix.height,
            nan_density=nan_density,
            checks={"returns_l1": bool(result.passed)},
        )

    @dg.asset(
        partitions_def=partitions_def,
        group_name="alpha",
        io_manager_key="run_artifacts",
        metadata={"artifact": "selection.json"},
        kinds={"python", "json"},
        owners=OWNERS,
        code_version="1",
        required_resource_keys={"mlflow"},  # audit lines mirrored to MLflow
        check_specs=[
            dg.AssetCheckSpec(
                "selection_l3",
                asset="selected_winners",
                blocking=True,
                description="L3: unique snapshot symbols, finite scores.",
            )
        ],
        description=(
            "Eligibility (history, data quality), risk-adjusted momentum skipping the last "
            "month, hierarchical clustering on return correlation, top k per cluster, with a "
            "relaxation loop. selection.json holds winners, parameters and a content hash."
        ),
    )
    def selected_winners(
        context: dg.AssetExecutionContext,
        config: SelectionConfig,
        returns_matrix: Artifact,
        run_snapshot: Artifact,
    ):
        started = time.perf_counter()
        matrix = returns_matrix.payload
        manifest = run_snapshot.payload
        values, _, symbols = returns_array(matrix)
        quality = {
            d["symbol"]: float(d.get("data_quality_score") or 0.0)
            for d in manifest["files"].values()
        }
        params = config.params(_periods_per_year(matrix))
        selection = select_winners(values, symbols, params, quality=quality)
        document = selection.document(manifest["as_of"])
        winners = _winners_frame(document)
        snapshot_symbols = [d["symbol"] for d in manifest["files"].values()]
        result = check_result_from_cases(winners, validate(selection_schema(snapshot_symbols), winners))
        table = "\n".join(
            f"| {w['symbol']} | {w['score']:.3f} | {w['cluster']} |" for w in document["winners"]
        )
        yield dg.Output(
            Artifact(document),
            metadata={
                "winners": len(document["winners"]),
                "eligible": document["eligible"],
                "candidates": document["candidates"],
                "relaxations": len(document["relaxations"]),
                "hash": document["hash"],
                "table": dg.MetadataValue.md(
                    "| symbol | score | cluster |\n|---|---|---|\n" + table
                ),
            },
        )
        yield dg.AssetCheckResult(
            check_name="selection_l3", passed=result.passed, metadata=result.metadata
        )
        _audit_contract(settings, context, "L3_selection", result)
        _audit(
            settings,
            context,
            "selected_winners",
            started,
            rows_in=len(symbols),
            rows_out=len(document["winners"]),
            eligible=document["eligible"],
            hash=document["hash"],
            parameters=document["parameters"],
            checks={"selection_l3": bool(result.passed)},
        )

    @dg.asset(
        partitions_def=partitions_def,
        group_name="alpha",
        io_manager_key="run_artifacts",
        metadata={"artifact": "weights.parquet"},
        kinds={"cvxpy", "parquet"},
        owners=OWNERS,
        code_version="1",
        required_resource_keys={"mlflow"},  # audit lines mirrored to MLflow
        check_specs=[
            dg.AssetCheckSpec(
                "weights_l4",
                asset="portfolio_weights",
                blocking=True,
                description="L4: finite, long-only, sum to 1 within 1e-6, caps respected.",
            )
        ],
        description="Portfolio weights of the winners from cvxpy (objective and covariance in run config): weights.parquet.",
    )
    def portfolio_weights(
        context: dg.AssetExecutionContext,
        config: OptimizationConfig,
        returns_matrix: Artifact,
        selected_winners: Artifact,
    ):
        started = time.perf_counter()
        matrix = returns_matrix.payload
        # L3 again on the selection as read back: a re-execution reads it from the parent
        # run's folder, which is checked here rather than trusted.
        enforce(
            selection_schema([c for c in matrix.columns if c != "date"]),
            _winners_frame(selected_winners.payload),
            f"the selection read from {selected_winners.run_dir}",
        )
        winners = [w["symbol"] for w in selected_winners.payload["winners"]]
        frame = weights_frame(matrix, winners, config.model_dump(), _periods_per_year(matrix))
        schema = weights_schema(max_weight=config.max_weight, min_weight=config.min_weight)
        result = check_result_from_cases(
            frame, validate(schema, frame), extra={"weight_sum": float(frame["weight"].sum())}
        )
        params = {
            "optimization": config.model_dump(),
            "selection": selected_winners.payload["parameters"],
        }
        table = "\n".join(f"| {s} | {w:.4f} |" for s, w in frame.iter_rows())
        yield dg.Output(
            Artifact(frame, files={"optimization.json": _json_bytes(params)}),
            metadata={
                "objective": config.objective,
                "covariance": config.covariance,
                "symbols": frame.height,
                "max_weight_held": float(frame["weight"].max()) if frame.height else 0.0,
                "weights": dg.MetadataValue.md("| symbol | weight |\n|---|---|\n" + table),
            },
        )
        yield dg.AssetCheckResult(
            check_name="weights_l4", passed=result.passed, metadata=result.metadata
        )
        _audit_contract(settings, context, "L4_weights", result)
        _audit(
            settings,
            context,
            "portfolio_weights",
            started,
            rows_in=len(winners),
            rows_out=frame.height,
            parameters=config.model_dump(),
            checks={"weights_l4": bool(result.passed)},
        )
        if result.passed:  # the run's policy becomes a model version (registered in the worker)
            register_policy(context, params, as_of=selected_winners.payload["as_of"])

    @dg.asset(
        partitions_def=partitions_def,
        group_name="alpha",
        io_manager_key="run_artifacts",
        metadata={"artifact": "backtest.json"},
        kinds={"cvxpy", "json"},
        owners=OWNERS,
        code_version="1",
        required_resource_keys={"mlflow"},  # audit lines mirrored to MLflow
        description=(
            "Walk-forward backtest of the whole policy (selection then optimisation at each "
            "rebalance, using only data up to it), net of costs, against equal weight. "
            "backtest.json, equity_curve.png, weights.png."
        ),
    )
    def backtest(
        context: dg.AssetExecutionContext,
        config: BacktestConfig,
        returns_matrix: Artifact,
        selected_winners: Artifact,
        portfolio_weights: Artifact,
        run_snapshot: Artifact,
    ) -> Artifact:
        started = time.perf_counter()
        matrix = returns_matrix.payload
        params = _read_json(portfolio_weights.run_dir / "optimization.json")
        optimization = params["optimization"]
        selection_params = SelectionParams(**params["selection"])
        quality = {
            d["symbol"]: float(d.get("data_quality_score") or 0.0)
            for d in run_snapshot.payload["files"].values()
        }
        values, dates, symbols = returns_array(matrix)
        result = policy_walk_forward(
            values,
            dates,
            symbols,
            selection=selection_params,
            quality=quality,
            window_days=config.window_days,
            rebalance=config.rebalance,
            cost_bps=config.cost_bps,
            objective=optimization["objective"],
            covariance=optimization["covariance"],
            max_weight=optimization["max_weight"],
            min_weight=optimization["min_weight"],
            risk_free_rate=optimization["risk_free_rate"],
            lookback=optimization["lookback"],
            periods_per_year=_periods_per_year(matrix),
        )
        document = result.to_dict()
        document["as_of"] = run_snapshot.payload["as_of"]
        document["config"] = config.model_dump()
        equity_png = _plot_bytes(plot_equity_curve, result)
        weights_png = _plot_bytes(plot_weights, result)
        metrics = {k: v for k, v in document["metrics"].items() if v is not None}
        context.add_output_metadata(
            {
                **{f"metric_{k}": float(v) for k, v in metrics.items()},
                "rebalances": len(result.rebalances),
                "days": len(result.dates),
                "equity_curve": _png_markdown(equity_png, "equity curve"),
                "weights_plot": _png_markdown(weights_png, "weights"),
            }
        )
        _audit(
            settings,
            context,
            "backtest",
            started,
            rows_in=int(values.shape[0]),
            rows_out=len(result.dates),
            metrics=metrics,
            rebalances=len(result.rebalances),
        )
        rank_policy(context, metrics)  # champion/challenger by out-of-sample Sharpe
        return Artifact(
            document, files={"equity_curve.png": equity_png, "weights.png": weights_png}
        )

    return [run_snapshot, returns_matrix, selected_winners, portfolio_weights, backtest]


def _winners_frame(document: dict[str, Any]) -> pl.DataFrame:
    """The winners of a selection.json document as a frame of the L3 contract's columns."""
    return pl.DataFrame(
        document["winners"],
        schema={
            "symbol": pl.String,
            "score": pl.Float64,
            "momentum": pl.Float64,
            "volatility": pl.Float64,
            "cluster": pl.Int64,
        },
    )


def _feature_version(view: LakehouseView) -> int | None:
    if not (view.features_table / "_delta_log").exists():
        return None
    try:
        from quant_assets.features.store import current_version

        return current_version(view.features_table)
    except Exception:  # a feature store that cannot be read must not stop the snapshot
        return None


def _forward_fill_cases(matrix: pl.DataFrame, closes: dict[str, pl.DataFrame]) -> int:
    """Values in the matrix where the symbol has no bar: a forward fill would put them there."""
    bad = 0
    for symbol, bars in closes.items():
        days = bars.select(ts_to_date_expr().alias("date"))
        present = matrix.select("date", symbol).filter(pl.col(symbol).is_not_nan())
        bad += present.join(days, on="date", how="anti").height
    return bad


def _json_bytes(obj: Any) -> bytes:
    import json

    return (json.dumps(obj, sort_keys=True, indent=2, allow_nan=False) + "\n").encode()


def _read_json(path) -> Any:
    import json

    return json.loads(path.read_text(encoding="utf-8"))


def _plot_bytes(plotter, result) -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "plot.png"
        plotter(result, path)
        return path.read_bytes()


CONFIG_CLASSES: dict[str, type[dg.Config]] = {
    "run_snapshot": SnapshotConfig,
    "selected_winners": SelectionConfig,
    "portfolio_weights": OptimizationConfig,
    "backtest": BacktestConfig,
}


def validate_alpha_run_config(run_config: dict[str, Any]) -> None:
    """Check run config against the alpha configs before a run starts.

    Dagster checks names and types when a run is launched, but value constraints
    (a negative max weight, zero winners) only when the step builds its config; this
    catches them up front with one clear error.
    """
    from quant_resources.errors import ConfigError

    problems = []
    for op, section in (run_config.get("ops") or {}).items():
        config_class = CONFIG_CLASSES.get(op)
        if config_class is None:
            problems.append(
                f"ops.{op}: not an alpha asset with config (known: {', '.join(CONFIG_CLASSES)})"
            )
            continue
        try:
            config_class(**(section or {}).get("config", {}))
        except pydantic.ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"])
                problems.append(f"ops.{op}.config.{field}: {err['msg']} (got {err.get('input')!r})")
    if problems:
        raise ConfigError("invalid alpha run config: " + "; ".join(problems))
