"""The Dagster UI as a user meets it: the web server on a loopback port over a lakehouse
made by a real `quant backfill` and `quant audit --html`, asked through its GraphQL
endpoint, then looked at in Debian's headless Chromium driven by Playwright for Python.

`QUANT_UPDATE_SCREENSHOTS=1` also copies the asset-graph screenshot to
docs/ui_asset_graph.png (the README's picture); normal runs never touch tracked files.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from ui_helpers import (
    VIEWPORT,
    clean_env,
    free_port,
    image_loaded,
    log_tail,
    refuse_outside,
    start_server,
    stop,
    wait_until_ready,
)

from quant_assets.data.quality_report import ALT_TEXT, quality_view, summary_line
from quant_resources.instance import EmbeddedPostgres

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HISTORY_DAYS = 14
# Read at collection: the autouse fixture of conftest clears every QUANT_* variable per test.
UPDATE_SCREENSHOTS = os.environ.get("QUANT_UPDATE_SCREENSHOTS") == "1"
TIMEOUT_MS = 45_000  # what a page gets to render on 2 busy cores

ASSETS = {
    "candidates": "data",
    "ohlcv": "data",
    "tv_technicals_1d": "data",
    "run_snapshot": "alpha",
    "returns_matrix": "alpha",
    "selected_winners": "alpha",
    "portfolio_weights": "alpha",
    "backtest": "alpha",
    "gap_repair": "maintenance",
    "data_audit": "maintenance",
    "lakehouse_restore": "maintenance",  # the data job's first step (DVC pull when behind)
}
CHECKS = {
    "ohlcv": {
        "ohlcv_schema", "ohlcv_toxic_free", "ohlcv_gaps", "ohlcv_freshness", "ohlcv_skipped_files",
    },  # fmt: skip
    "tv_technicals_1d": {"features_l2"},
    "returns_matrix": {"returns_l1"},
    "selected_winners": {"selection_l3"},
    "portfolio_weights": {"weights_l4"},
    "data_audit": {"lakehouse_clean"},
}
SCHEDULES = {"data_cycle_daily", "gap_repair_weekly", "data_audit_weekly"}
SENSORS = {"alpha_after_data"}

QUERY = """
query Everything {
  shouldShowNux
  assetNodes {
    assetKey { path }
    groupName
    partitionStats { numMaterialized numPartitions }
    assetChecksOrError { __typename ... on AssetChecks { checks { name blocking } } }
  }
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes {
        name
        assetGroups { groupName }
        schedules { name cronSchedule scheduleState { status } }
        sensors { name sensorState { status } }
      }
    }
  }
  assetOrError(assetKey: {path: ["ohlcv"]}) {
    __typename
    ... on Asset { assetMaterializations(limit: 1) { runId partition } }
  }
}
"""


@dataclass
class UiServer:
    url: str
    process: subprocess.Popen
    log: Path
    start: dt.date
    end: dt.date
    run_id: str
    data_dir: Path
    quality_page: Path

    def graphql(self, query: str) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.load(response)
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def code_location_loaded(self) -> bool:
        data = self.graphql(
            "{ repositoriesOrError { __typename ... on RepositoryConnection { nodes { name } } } }"
        )
        return bool(data["repositoriesOrError"].get("nodes"))

    def catalog(self) -> dict:
        return json.loads((self.data_dir / "lakehouse" / "catalog.json").read_text())


def _quant(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(BIN / "quant"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"quant {' '.join(args)}:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    """`quant backfill` over two weeks and `quant audit --html`, then `dagster-webserver`."""
    root = tmp_path_factory.mktemp("ui")
    today = dt.datetime.now(dt.UTC).date()
    start, end = today - dt.timedelta(days=HISTORY_DAYS), today - dt.timedelta(days=1)
    env = clean_env(
        DAGSTER_HOME=str(root / "dagster_home"),
        QUANT_DATA_DIR=str(root / "data"),
        QUANT_HISTORY_START=start.isoformat(),
        QUANT_UNIVERSE="small",
        QUANT_SYNTHETIC_SYMBOLS="30",
    )
    backfill = _quant("backfill", "--start", start.isoformat(), "--end", end.isoformat(), cwd=root, env=env)
    run_id = re.search(r"data cycle \S+: run ([0-9a-f-]{36})", backfill.stdout).group(1)
    audit = _quant("audit", "--html", "quality.html", cwd=root, env=env)
    assert f"data-quality page: {root / 'quality.html'}" in audit.stdout
    assert "base64" not in audit.stdout  # the picture is in the page, not on the terminal

    # The web server reads the instance from the embedded PostgreSQL of DAGSTER_HOME: this
    # test process is its user while the server runs (`quant ui` does the same for itself).
    embedded = EmbeddedPostgres(root / "dagster_home")
    embedded.url()
    port = free_port()
    log = root / "webserver.log"
    command = [
        str(BIN / "dagster-webserver"), "-w", str(ROOT / "workspace.yaml"),
        "-h", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip
    process = start_server(command, root, env, log)
    server = UiServer(
        f"http://127.0.0.1:{port}", process, log, start, end, run_id, root / "data",
        root / "quality.html",
    )  # fmt: skip
    try:
        wait_until_ready(process, server.code_location_loaded, log, "the web server", timeout=90)
        yield server
    finally:
        stop(process)
        embedded.release()


def test_graphql_lists_every_asset_check_schedule_and_sensor(ui_server):
    data = ui_server.graphql(QUERY)
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert {key: node["groupName"] for key, node in nodes.items()} == ASSETS
    for asset, expected in CHECKS.items():
        checks = nodes[asset]["assetChecksOrError"]
        assert checks["__typename"] == "AssetChecks", checks
        assert {c["name"] for c in checks["checks"]} == expected, asset
    blocking = {
        c["name"]
        for n in nodes.values()
        for c in n["assetChecksOrError"]["checks"]
        if c["blocking"]
    }
    assert {"ohlcv_schema", "ohlcv_toxic_free", "features_l2"} <= blocking

    # The two weeks of the backfill are materialised, and nothing else.
    days = (ui_server.end - ui_server.start).days + 1
    for asset in ("candidates", "ohlcv", "tv_technicals_1d"):
        assert nodes[asset]["partitionStats"]["numMaterialized"] == days, asset
    assert nodes["returns_matrix"]["partitionStats"]["numMaterialized"] == 0
    latest = data["assetOrError"]["assetMaterializations"]
    assert latest and latest[0]["runId"] == ui_server.run_id
    assert latest[0]["partition"] == ui_server.end.isoformat()

    (repository,) = data["repositoriesOrError"]["nodes"]
    assert {g["groupName"] for g in repository["assetGroups"]} == {"data", "alpha", "maintenance"}
    schedules = {s["name"]: s for s in repository["schedules"]}
    assert set(schedules) == SCHEDULES
    assert schedules["data_cycle_daily"]["cronSchedule"] == "0 1 * * *"
    assert {s["scheduleState"]["status"] for s in schedules.values()} == {"RUNNING"}
    sensors = {s["name"]: s for s in repository["sensors"]}
    assert (
        set(sensors) == SENSORS
        and sensors["alpha_after_data"]["sensorState"]["status"] == "RUNNING"
    )
    # dagster.yaml (nux: enabled: false) keeps the "Join the Dagster community" dialog away.
    assert data["shouldShowNux"] is False


def test_only_the_last_partition_of_a_backfill_carries_the_quality_plot(ui_server):
    """One picture per run, not one per day: a ten-year backfill would store 3653 PNGs."""
    data = ui_server.graphql(
        """{ assetOrError(assetKey: {path: ["ohlcv"]}) { ... on Asset {
             assetMaterializations(limit: 100) { partition metadataEntries { label } } } } }"""
    )
    events = data["assetOrError"]["assetMaterializations"]
    assert len(events) == (ui_server.end - ui_server.start).days + 1
    with_plot = [e["partition"] for e in events if any(m["label"] == "quality_report" for m in e["metadataEntries"])]
    assert with_plot == [ui_server.end.isoformat()]


# ----------------------------------------------------------------------- the browser


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    # The "Join the Dagster community" dialog of a first visit (dagster.yaml turns it off;
    # should it come back, it would cover what the tests look at): Skip, whenever it shows.
    page.add_locator_handler(
        page.get_by_text("Join the Dagster community"),
        lambda: page.get_by_role("button", name="Skip").click(),
    )
    yield page
    context.close()


def _expect_text(page, *wanted: str) -> str:
    from playwright.sync_api import expect

    body = page.locator("body")
    for text in wanted:
        expect(body).to_contain_text(text, timeout=TIMEOUT_MS)
    return body.inner_text()


def _open_markdown(page, label: str):
    """Click the metadata entry's [Show Markdown] and return the dialog it opens."""
    from playwright.sync_api import expect

    row = page.locator("tr", has=page.get_by_text(label, exact=True)).last
    row.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog").filter(has_text=label)
    expect(dialog).to_be_visible()
    return dialog


@pytest.mark.browser
def test_chromium_renders_the_asset_graph_and_the_ohlcv_page(ui_server, page, tmp_path):
    refused = refuse_outside(page, ui_server.url)
    page.goto(f"{ui_server.url}/asset-groups")
    _expect_text(page, "Global asset lineage", "data", "alpha", "maintenance")
    # The lineage opens with groups collapsed; Alt+E is its "expand all groups" shortcut.
    page.keyboard.press("Alt+e")
    _expect_text(page, *ASSETS)
    page.wait_for_timeout(1500)  # let the graph finish its zoom-to-fit before the picture
    graph_png = tmp_path / "asset_graph.png"
    page.screenshot(path=graph_png)
    assert graph_png.stat().st_size > 20_000  # a rendered graph, not a blank page
    if UPDATE_SCREENSHOTS:
        shutil.copyfile(graph_png, ROOT / "docs" / "ui_asset_graph.png")

    page.goto(f"{ui_server.url}/assets/ohlcv")
    window = f"{ui_server.start.isoformat()}..{ui_server.end.isoformat()}"
    text = _expect_text(
        page, "ohlcv", "Latest materialization", ui_server.end.isoformat(), window,
        "Latest check results",
    )  # fmt: skip
    # The metadata of the latest materialisation is on the page: the window and the ingest counts.
    assert "rows_fetched" in text and "quality_score_median" in text
    assert str(ui_server.data_dir / "lakehouse" / "ohlcv") in text  # where the files are
    assert "data_cycle" in text and "data-platform" in text  # its job and owner
    asset_png = tmp_path / "ohlcv_asset.png"
    page.screenshot(path=asset_png)
    assert asset_png.stat().st_size > 20_000
    assert refused == []  # the UI works offline


@pytest.mark.parametrize("asset", ["ohlcv", "data_audit"])
@pytest.mark.browser
def test_the_asset_page_shows_the_quality_plot_of_the_lakehouse(ui_server, page, asset, tmp_path):
    """The latest materialisation's `quality_report` opens as a picture the browser decoded,
    captioned with the figures of the catalog as it is on disk."""
    refused = refuse_outside(page, ui_server.url)
    page.goto(f"{ui_server.url}/assets/{asset}")
    _expect_text(page, "Latest materialization", "quality_report", "[Show Markdown]")
    dialog = _open_markdown(page, "quality_report")
    plot = dialog.get_by_role("img", name=ALT_TEXT)
    plot.wait_for()
    assert plot.get_attribute("src").startswith("data:image/png;base64,")
    assert image_loaded(plot), "the quality plot did not decode"
    width, height = plot.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert width >= 600 and height >= 600  # three panels, one above the other
    caption = summary_line(quality_view(ui_server.catalog()))
    assert caption in dialog.inner_text()
    page.screenshot(path=tmp_path / f"{asset}_quality_plot.png")
    assert refused == []


@pytest.mark.browser
def test_quant_audit_html_is_one_self_contained_page(ui_server, page):
    """`quant audit --html FILE`: opened from disk with every network request refused, the
    page shows the same picture and the figures of the catalog and the audit."""
    requested: list[str] = []

    def refuse(route):
        requested.append(route.request.url)
        route.abort()

    page.route(re.compile(r"^(https?|wss?|ftp)://"), refuse)
    page.goto(ui_server.quality_page.as_uri())
    plot = page.get_by_role("img", name=ALT_TEXT)
    assert plot.get_attribute("src").startswith("data:image/png;base64,")
    assert image_loaded(plot), "the quality plot did not decode"
    assert requested == []  # nothing outside the file itself

    view = quality_view(ui_server.catalog())
    figures = dict(
        page.locator("table").first.locator("tbody tr").evaluate_all(
            "rows => rows.map(r => [...r.cells].map(c => c.innerText))"
        )
    )
    assert figures["symbols"] == str(view.symbols)
    assert figures["open gaps"] == str(len(view.gaps))
    assert figures["quality score median"] == f"{view.score_summary()['median']:.3f}"
    for kind in ("toxic", "duplicate", "invalid"):
        assert figures[f"{kind} rows dropped"] == str(view.dropped_total(kind))
    text = page.locator("body").inner_text()
    assert "Audit" in text and "audit run" in text and "files" in text
    assert f"Lowest quality scores ({min(10, view.symbols)} of {view.symbols})" in text


def test_a_plain_kill_stops_the_server_and_its_children(ui_server):
    """Last in this module: it stops the shared server the way a user's `kill PID` would."""
    members = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _pgid(int(p.name)) == ui_server.process.pid
    ]
    assert len(members) >= 2, "expected the web server and its code server in one session"
    assert stop(ui_server.process), (
        f"processes of the server outlived a plain kill:\n{log_tail(ui_server.log)}"
    )


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
