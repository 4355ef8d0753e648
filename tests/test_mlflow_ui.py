"""The MLflow UI as a user meets it: `quant mlflow-ui` on a loopback port over the tracking
store of a real `quant backfill` and `quant alpha`, looked at in Debian's headless Chromium
driven by Playwright for Python: the run list, then one alpha run with its metrics.

What the pages show is compared with what the tracking store holds (MlflowClient), and
every request leaving the server is refused and counted: the UI works offline.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient
from ui_helpers import (
    VIEWPORT,
    clean_env,
    free_port,
    http_get,
    refuse_outside,
    start_server,
    stop,
    wait_until_ready,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

BIN = Path(sys.executable).parent
START = dt.date(2024, 6, 1)  # 13 months: enough history for the alpha cycle's 200-day minimum
AS_OF = dt.date(2025, 6, 30)
EXPERIMENT = "quant-lakehouse"
TIMEOUT_MS = 45_000
SHOWN_METRICS = ("backtest/metrics/sharpe", "backtest/metrics/max_drawdown", "backtest/metrics/annual_return")


@dataclass
class MlflowUi:
    url: str
    process: subprocess.Popen
    experiment_id: str
    runs: dict[str, object]  # cycle tag (data, alpha) -> the MLflow run as the store holds it

    def runs_page(self) -> str:
        # The experiment's run list in the "Model training" view (MLflow 3 opens GenAI's).
        return f"{self.url}/#/experiments/{self.experiment_id}/runs?workflowType=machine_learning"


def _quant(*args: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(BIN / "quant"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"quant {' '.join(args)}:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def mlflow_ui(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_ui")
    env = clean_env(
        DAGSTER_HOME=str(root / "dagster_home"),
        QUANT_DATA_DIR=str(root / "data"),
        QUANT_HISTORY_START=START.isoformat(),
        QUANT_UNIVERSE="small",
        QUANT_SYNTHETIC_SYMBOLS="30",
    )
    data = _quant("backfill", "--start", START.isoformat(), "--end", AS_OF.isoformat(), cwd=root, env=env)
    alpha = _quant("alpha", "--date", AS_OF.isoformat(), cwd=root, env=env)
    dagster_runs = {
        "data": re.search(r"data cycle \S+: run ([0-9a-f-]{36})", data).group(1),
        "alpha": re.search(r"alpha cycle \S+: run ([0-9a-f-]{36})", alpha).group(1),
    }

    client = MlflowClient(f"sqlite:///{root / 'data' / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, "the runs were not tracked"
    runs = {}
    for cycle, dagster_run_id in dagster_runs.items():
        (run,) = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.dagster_run_id = '{dagster_run_id}'"
        )
        assert run.info.status == "FINISHED", (cycle, run.info.status)
        runs[cycle] = run

    port = free_port()
    log = root / "mlflow_ui.log"
    command = [str(BIN / "quant"), "mlflow-ui", "--host", "127.0.0.1", "--port", str(port)]
    process = start_server(command, root, env, log)
    url = f"http://127.0.0.1:{port}"

    def serves_the_experiment() -> bool:
        answer = json.loads(http_get(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}"))
        return answer["experiment"]["experiment_id"] == experiment.experiment_id

    try:
        wait_until_ready(process, serves_the_experiment, log, "quant mlflow-ui", timeout=120)
        yield MlflowUi(url, process, experiment.experiment_id, runs)
    finally:
        stop(process)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


def _expect_text(page, *wanted: str) -> str:
    from playwright.sync_api import expect

    body = page.locator("body")
    for text in wanted:
        expect(body).to_contain_text(text, timeout=TIMEOUT_MS)
    return body.inner_text()


def test_the_run_list_shows_the_data_and_the_alpha_run(mlflow_ui, page):
    from playwright.sync_api import expect

    refused = refuse_outside(page, mlflow_ui.url)
    page.goto(mlflow_ui.runs_page())
    _expect_text(page, EXPERIMENT, "Run Name")
    for run in mlflow_ui.runs.values():
        expect(page.get_by_role("link", name=run.info.run_name, exact=True)).to_be_visible()
    _expect_text(page, f"{len(mlflow_ui.runs)} matching runs")
    assert refused == []


def test_an_alpha_run_shows_its_tags_and_backtest_metrics(mlflow_ui, page):
    from playwright.sync_api import expect

    alpha = mlflow_ui.runs["alpha"]
    refused = refuse_outside(page, mlflow_ui.url)
    page.goto(mlflow_ui.runs_page())
    page.get_by_role("link", name=alpha.info.run_name, exact=True).click()  # as a user would
    expect(page).to_have_url(re.compile(f"/runs/{alpha.info.run_id}"))
    text = _expect_text(page, alpha.info.run_id, "Finished", f"Metrics ({len(alpha.data.metrics)})")
    # The tags that tie the MLflow run to its Dagster run and partition.
    assert alpha.data.tags["dagster_run_id"] in text
    assert f"partition: {AS_OF.isoformat()}" in re.sub(r"\s*:\s*", ": ", text)

    search = page.get_by_placeholder("Search metrics")
    for metric in SHOWN_METRICS:
        search.fill(metric)
        row = page.get_by_role("row").filter(has=page.get_by_text(metric, exact=True))
        expect(row).to_have_count(1)
        shown = float(row.get_by_role("cell").nth(1).inner_text())
        assert math.isclose(shown, alpha.data.metrics[metric], rel_tol=1e-6), metric
    assert refused == []
