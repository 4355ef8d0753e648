"""Every blocking check, made to fail on real data, stops what comes after it.

Bad rows never pass ingestion, and the alpha stages never produce a bad artifact from good
inputs, so each failure is injected where the real world would: a lakehouse file changed
on disk after the data cycle (a fault: a bad restore, a bit flip, a hand edit), or a run
folder changed after its run finished that a re-execution then reads. Each test asserts
that the steps downstream of the failed check did not start and materialised nothing, and
that the check's metadata (what the UI shows) names the offending rows.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from helpers import run_data_job

from quant_assets.alpha.audit import read_audit
from quant_assets.contracts import check_result_from_cases, validate, weights_schema
from quant_assets.definitions import ALPHA_JOB, build_definitions
from quant_assets.defs.automation.sensors import data_gate, data_readiness
from quant_assets.mlops.tracking import run_audit_dir
from quant_resources.schema import date_to_ts
from quant_resources.settings import Settings
from quant_resources.tracking import TRACKING_TAG

AS_OF = dt.date(2025, 6, 30)
UNTRACKED = {TRACKING_TAG: "off"}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A lakehouse of 40 symbols over 18 months and the instance that recorded it."""
    root = tmp_path_factory.mktemp("blocking")
    settings = Settings(
        data_dir=root / "data", history_start=dt.date(2024, 1, 1), synthetic_symbols=40,
        universe="small", freshness_hours=1e6,
    )
    instance = dg.DagsterInstance.ephemeral()
    assert run_data_job(settings, dt.date(2024, 1, 1), AS_OF, instance=instance).success
    return settings, instance


@pytest.fixture
def lake(base, tmp_path) -> Settings:
    """A copy of the lakehouse (and candidates) this test may damage."""
    settings, _ = base
    copy = settings.replace(data_dir=tmp_path / "data")
    shutil.copytree(settings.lakehouse_dir, copy.lakehouse_dir)
    shutil.copytree(settings.export_dir, copy.export_dir)
    return copy


def snapshot_symbol(settings: Settings, asset_class: str) -> str:
    """A candidate of AS_OF that the alpha snapshot takes (no level shift)."""
    candidates = json.loads((settings.export_dir / AS_OF.isoformat() / "candidates.json").read_text())
    catalog = json.loads(settings.catalog_path.read_text())
    for record in candidates["candidates"]:
        key = f"{record['exchange']}_{record['symbol']}"
        if record["asset_class"] == asset_class and not catalog["symbols"][key].get("level_shifts"):
            return key
    raise AssertionError(f"no {asset_class} candidate")


def damage(settings: Settings, key: str, day: dt.date, **columns) -> None:
    """Rewrite one bar of a lakehouse file in place: a fault, not an ingestion."""
    path = settings.ohlcv_dir / f"{key}_1d.parquet"
    bars = pl.read_parquet(path)
    on_day = pl.col("timestamp") == date_to_ts(day)
    assert bars.filter(on_day).height == 1, (key, day)
    bars.with_columns([pl.when(on_day).then(value).otherwise(pl.col(name)).alias(name) for name, value in columns.items()]).write_parquet(path)


def started_steps(result) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}


def materialised(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def check_evaluation(result, name: str):
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation, {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}


# -- L0 on the data side -------------------------------------------------------------------
@pytest.mark.parametrize(
    "check,bad_bar,named",
    [
        # high below low: the bar breaks L0
        ("ohlcv_schema", lambda close: {"high": pl.col("low") * 0.5}, "check high_ge_open_close_low on column"),
        # a close 8x the day before (high raised with it): a toxic return, L0-valid
        ("ohlcv_toxic_free", lambda close: {"close": close * 8, "high": close * 8.1}, "return 7"),
    ],
)
def test_a_bad_bar_in_the_lakehouse_fails_its_l0_check_and_blocks_features_and_alpha(base, lake, check, bad_bar, named):
    _, instance = base
    key = snapshot_symbol(lake, "equity")
    bars = pl.read_parquet(lake.ohlcv_dir / f"{key}_1d.parquet")
    close = bars.filter(pl.col("timestamp") == date_to_ts(AS_OF - dt.timedelta(days=3)))["close"][0]
    damage(lake, key, AS_OF, **bad_bar(close))
    result = run_data_job(lake, AS_OF, instance=instance)  # the file is fresh: not re-fetched
    assert not result.success
    evaluation, metadata = check_evaluation(result, check)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    listed = metadata.get("failure_cases") or metadata.get("toxic_returns")
    assert key in listed and AS_OF.isoformat() in listed and named in listed, listed
    assert "tv_technicals_1d" not in started_steps(result) | materialised(result)
    defs = build_definitions(lake)
    gate = data_gate(defs.resolve_asset_graph())
    state, why = data_readiness(instance, AS_OF.isoformat(), gate)  # the alpha sensor's answer
    assert state == "blocked" and f"ohlcv:{check}" in why and result.run_id in why
    (line,) = [x for x in read_audit(run_audit_dir(lake.data_dir, result.run_id)) if x.get("contract") == check]
    assert line["passed"] is False and key in json.dumps(line["details"])  # the run's audit.jsonl


# -- L1 on the alpha side --------------------------------------------------------------------
def test_an_infinite_return_fails_l1_and_blocks_selection_weights_and_backtest(lake):
    key = snapshot_symbol(lake, "equity")
    zero_day = dt.date(2025, 5, 14)  # a Wednesday: the close is 0, so Thursday's return is +inf
    damage(lake, key, zero_day, close=0.0, low=0.0, open=0.0)
    job = build_definitions(lake).resolve_job_def(ALPHA_JOB)
    result = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), partition_key=AS_OF.isoformat(), tags=UNTRACKED, raise_on_error=False
    )
    assert not result.success
    evaluation, metadata = check_evaluation(result, "returns_l1")
    assert not evaluation.passed and metadata["failures"] == 1
    assert f"on column {key} at date 2025-05-15" in metadata["failure_cases"] and "value inf" in metadata["failure_cases"]
    downstream = {"selected_winners", "portfolio_weights", "backtest"}
    assert not downstream & (started_steps(result) | materialised(result))
    run_dir = lake.runs_dir / result.run_id
    assert (run_dir / "returns_matrix.parquet").exists() and not (run_dir / "selection.json").exists()
    assert not (run_dir / ".finished").exists()  # a failed run is not sealed
    audit = [json.loads(x) for x in (run_dir / "audit.jsonl").read_text().splitlines()]
    assert {"contract": "L1_returns", "passed": False} in [{k: a.get(k) for k in ("contract", "passed")} for a in audit]


# -- L3 on a re-execution that reads a changed run folder ----------------------------------------
@pytest.fixture(scope="module")
def reexecution(base, tmp_path_factory):
    """A persistent instance over a lakehouse copy, and a way to run the alpha job on it
    and re-execute part of that run. One per module: Dagster keeps the definitions of a
    reconstructable job for the life of the process."""
    from alpha_reexec_job import alpha_job

    settings, _ = base
    root = tmp_path_factory.mktemp("reexecution")
    shutil.copytree(settings.lakehouse_dir, root / "data" / "lakehouse")
    shutil.copytree(settings.export_dir, root / "data" / "export")
    env = {
        "QUANT_DATA_DIR": str(root / "data"), "QUANT_HISTORY_START": "2024-01-01",
        "QUANT_SYNTHETIC_SYMBOLS": "40", "QUANT_UNIVERSE": "small", "QUANT_FRESHNESS_HOURS": "1e6",
    }
    job = dg.reconstructable(alpha_job)
    tags = {"dagster/partition": AS_OF.isoformat(), **UNTRACKED}
    with dg.instance_for_test() as instance:

        def run(parent_run_id: str | None = None, steps: list[str] | None = None):
            options = dg.ReexecutionOptions(parent_run_id, step_selection=steps) if parent_run_id else None
            with pytest.MonkeyPatch.context() as patch:  # each test starts with no QUANT_* (conftest)
                for name, value in env.items():
                    patch.setenv(name, value)
                return dg.execute_job(job, instance, reexecution_options=options, tags=tags, raise_on_error=False)

        yield root / "data" / "runs", run


@pytest.fixture
def parent_run(reexecution):
    """A finished (sealed) alpha run, and how to re-execute some of its steps."""
    runs_dir, run = reexecution
    parent = run()
    assert parent.success
    return runs_dir / parent.run_id, lambda steps: run(parent.run_id, steps)


def rewrite(path: Path, write) -> None:
    """Change a file of a sealed run folder (what a fault or a careless hand does)."""
    os.chmod(path, 0o644)
    write(path)
    os.chmod(path, 0o444)


def test_a_symbol_outside_the_snapshot_fails_l3_and_blocks_weights_and_backtest(parent_run):
    parent_dir, reexecute = parent_run
    outsider = "SYNEQ_E999"  # steady gains: the best score of any symbol, but no snapshot file

    def add_outsider(path: Path) -> None:
        matrix = pl.read_parquet(path)
        steady = 0.002 + 0.0005 * np.sin(np.arange(matrix.height))
        matrix.with_columns(pl.Series(outsider, steady)).write_parquet(path)

    rewrite(parent_dir / "returns_matrix.parquet", add_outsider)
    result = reexecute(["selected_winners", "portfolio_weights", "backtest"])
    assert not result.success
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "selection_l3")
    metadata = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
    assert not evaluation.passed and metadata["failures"] == 1
    assert f"check symbol_in_snapshot on column symbol at symbol {outsider}" in metadata["failure_cases"]
    assert not {"portfolio_weights", "backtest"} & (started_steps(result) | materialised(result))


def test_a_duplicate_in_the_selection_read_back_stops_weights_and_backtest(parent_run):
    parent_dir, reexecute = parent_run

    def duplicate_a_winner(path: Path) -> None:
        document = json.loads(path.read_text())
        document["winners"].append(dict(document["winners"][0]))
        path.write_text(json.dumps(document))

    rewrite(parent_dir / "selection.json", duplicate_a_winner)
    duplicated = json.loads((parent_dir / "selection.json").read_text())["winners"][0]["symbol"]
    result = reexecute(["portfolio_weights", "backtest"])
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = str(failure.step_failure_data.error.cause or failure.step_failure_data.error)
    assert failure.step_key == "portfolio_weights" and "contract L3_selection broken" in message
    assert f"check field_uniqueness on column symbol at symbol {duplicated}" in message
    assert not {"portfolio_weights", "backtest"} & materialised(result)
    assert "backtest" not in started_steps(result)


# -- L4 ------------------------------------------------------------------------------------------
def test_weights_that_do_not_sum_to_one_fail_l4_naming_every_row_and_the_sum():
    """No input makes the optimiser return such weights (it raises on infeasible bounds and
    non-finite returns, and renormalises), so this is the contract as `portfolio_weights`
    applies it, on a frame a bug would produce."""
    frame = pl.DataFrame({"symbol": ["SYNEQ_E001", "SYNEQ_E002", "SYNCX_C001USDT"], "weight": [0.5, 0.3, 0.1]})
    result = check_result_from_cases(
        frame, validate(weights_schema(max_weight=0.6), frame), extra={"weight_sum": float(frame["weight"].sum())}
    )
    metadata = {k: getattr(v, "value", v) for k, v in result.metadata.items()}
    assert not result.passed and metadata["failures"] == 3 and metadata["weight_sum"] == pytest.approx(0.9)
    for symbol in frame["symbol"]:
        assert f"check sum_to_one_within_1e-06 on column L4_weights at symbol {symbol}" in metadata["failure_cases"]


def test_every_check_of_the_alpha_chain_is_blocking():
    graph = build_definitions(Settings()).resolve_asset_graph()
    specs = {key.name: graph.get_check_spec(key) for key in graph.asset_check_keys}
    for name in ("ohlcv_schema", "ohlcv_toxic_free", "features_l2", "returns_l1", "selection_l3", "weights_l4"):
        assert specs[name].blocking, name
