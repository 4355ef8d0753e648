"""The `selection-policy` registry on a real MLflow sqlite store: one version per alpha run,
`champion` on the best out-of-sample Sharpe, `challenger` on the newest other; the model
predicts the run's weights; `quant champion` reports both."""

from __future__ import annotations

import datetime as dt
import json
import random

import dagster as dg
import mlflow
import polars as pl
import pytest
from helpers import run_data_job
from mlflow import MlflowClient

from quant_assets import cli
from quant_assets.definitions import ALPHA_JOB, build_definitions
from quant_assets.mlops.registry import (
    CHALLENGER,
    CHAMPION,
    MODEL_NAME,
    choose_aliases,
    next_aliases,
)
from quant_resources.settings import Settings

AS_OF = dt.date(2025, 6, 30)
START = dt.date(2024, 1, 1)


def store_uri(settings: Settings) -> str:
    return f"sqlite:///{settings.mlflow_dir / 'mlflow.db'}"


def run_alpha(settings: Settings, objective: str, instance: dg.DagsterInstance):
    job = build_definitions(settings).resolve_job_def(ALPHA_JOB)
    result = job.execute_in_process(
        instance=instance,
        partition_key=AS_OF.isoformat(),
        run_config={"ops": {"portfolio_weights": {"config": {"objective": objective}}}},
        raise_on_error=False,
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result


def sharpe_of(settings: Settings, run_id: str) -> float:
    return json.loads((settings.runs_dir / run_id / "backtest.json").read_text())["metrics"]["sharpe"]


def version_of_run(client: MlflowClient, dagster_run_id: str) -> int:
    for version in client.search_model_versions(f"name='{MODEL_NAME}'"):
        if client.get_run(version.run_id).data.tags["dagster_run_id"] == dagster_run_id:
            return int(version.version)
    raise AssertionError(f"no version registered by run {dagster_run_id}")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Three alpha runs with different objectives, then the worst one again (so the newest
    version is never the best), on one lakehouse and one MLflow store."""
    root = tmp_path_factory.mktemp("registry")
    settings = Settings(
        data_dir=root / "data", history_start=START, synthetic_symbols=40, universe="small",
        freshness_hours=1e6,
    )
    assert run_data_job(settings, START, AS_OF).success
    instance = dg.DagsterInstance.ephemeral()
    runs = {objective: run_alpha(settings, objective, instance).run_id for objective in ("equal_weight", "max_sharpe", "min_variance")}
    sharpes = {objective: sharpe_of(settings, run_id) for objective, run_id in runs.items()}
    assert len(set(sharpes.values())) == 3, sharpes  # the test needs three different Sharpe ratios
    worst = min(sharpes, key=sharpes.get)
    again = run_alpha(settings, worst, instance).run_id
    return settings, runs, sharpes, again


def test_champion_holds_the_best_sharpe_and_challenger_the_newest_other(registry):
    settings, runs, sharpes, again = registry
    client = MlflowClient(store_uri(settings))
    versions = {objective: version_of_run(client, run_id) for objective, run_id in runs.items()}
    newest = version_of_run(client, again)
    assert len(client.search_model_versions(f"name='{MODEL_NAME}'")) == 4
    best = max(sharpes, key=sharpes.get)
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    challenger = client.get_model_version_by_alias(MODEL_NAME, CHALLENGER)
    assert int(champion.version) == versions[best] != newest
    assert int(challenger.version) == newest
    assert float(champion.tags["sharpe"]) == pytest.approx(sharpes[best])


def test_the_champion_model_predicts_the_weights_of_its_run(registry):
    settings, runs, sharpes, _ = registry
    best_run = runs[max(sharpes, key=sharpes.get)]
    run_dir = settings.runs_dir / best_run
    mlflow.set_tracking_uri(store_uri(settings))
    try:
        model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{CHAMPION}")
    finally:
        mlflow.set_tracking_uri(None)
    selection = json.loads((run_dir / "selection.json").read_text())
    assert selection["relaxations"] == []  # so quality filtering is the only eligibility input
    manifest = json.loads((run_dir / "manifest.json").read_text())
    min_quality = selection["parameters"]["min_quality"]
    eligible = [d["symbol"] for d in manifest["files"].values() if d["data_quality_score"] >= min_quality]
    returns = pl.read_parquet(run_dir / "returns_matrix.parquet").select("date", *sorted(eligible))
    # The score's feature term: the ratings the run read from the feature store.
    features = pl.read_parquet(run_dir / "features.parquet")
    ratings = dict(zip(features["symbol"], features["rating"], strict=True))
    predicted = pl.from_pandas(model.predict({"returns": returns.to_pandas(), "features": ratings})).sort("symbol")
    weights = pl.read_parquet(run_dir / "weights.parquet").sort("symbol")
    assert predicted["symbol"].to_list() == weights["symbol"].to_list()
    assert predicted["weight"].to_list() == pytest.approx(weights["weight"].to_list(), abs=1e-9)


def test_quant_champion_prints_the_champion_against_the_challenger(registry, monkeypatch, capsys):
    settings, runs, sharpes, _ = registry
    monkeypatch.setenv("QUANT_DATA_DIR", str(settings.data_dir))
    assert cli.main(["champion"]) == 0
    out = capsys.readouterr().out
    best = max(sharpes, key=sharpes.get)
    assert "champion   v" in out and f"Sharpe {sharpes[best]:.2f}" in out
    assert f"objective {best}" in out and runs[best] in out
    assert "champion - challenger: Sharpe +" in out
    assert "optimization.objective" in out  # the parameters that differ


def test_quant_champion_without_a_store_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QUANT_DATA_DIR", str(tmp_path / "data"))
    assert cli.main(["champion"]) == 2
    assert "run the alpha cycle first" in capsys.readouterr().err


def test_choose_aliases_ranks_by_sharpe_then_recency():
    assert choose_aliases([(1, 0.5), (2, 1.5), (3, 0.9)]) == (2, 3)
    assert choose_aliases([(1, 1.5), (2, 1.5)]) == (2, 1)  # a tie goes to the newer version
    assert choose_aliases([(1, 0.5), (2, float("nan")), (3, None)]) == (1, None)
    assert choose_aliases([]) == (None, None)


def test_moving_the_aliases_one_version_at_a_time_agrees_with_ranking_every_version():
    rng = random.Random(7)
    for _ in range(300):
        sharpes = [round(rng.uniform(-1.0, 2.0), 1) for _ in range(rng.randint(1, 8))]  # ties happen
        champion, challenger = None, None
        for version, sharpe in enumerate(sharpes, start=1):
            if champion is None:
                champion, challenger = choose_aliases([(version, sharpe)])
            else:
                champion, challenger = next_aliases((champion, sharpes[champion - 1]), challenger, (version, sharpe))
            assert (champion, challenger) == choose_aliases(list(enumerate(sharpes[:version], start=1)))
