"""The Dagster UI as a user meets it: the web server on a loopback port over a lakehouse
made by a real `quant backfill`, asked through its GraphQL endpoint, then looked at in
Debian's headless Chromium (driven over the DevTools protocol).

`QUANT_UPDATE_SCREENSHOTS=1` also copies the asset-graph screenshot to
docs/ui_asset_graph.png (the README's picture); normal runs never touch tracked files.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from quant_resources.instance import EmbeddedPostgres

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HISTORY_DAYS = 14
# Read at collection: the autouse fixture of conftest clears every QUANT_* variable per test.
UPDATE_SCREENSHOTS = os.environ.get("QUANT_UPDATE_SCREENSHOTS") == "1"

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
}
CHECKS = {
    "ohlcv": {"ohlcv_schema", "ohlcv_toxic_free", "ohlcv_gaps", "ohlcv_freshness"},
    "tv_technicals_1d": {"features_l2"},
    "returns_matrix": {"returns_l1"},
    "selected_winners": {"selection_l3"},
    "portfolio_weights": {"weights_l4"},
    "data_audit": {"lakehouse_clean"},
}
SCHEDULES = {"data_cycle_daily", "gap_repair_weekly", "data_audit_weekly"}
SENSORS = {"alpha_after_data"}

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
]

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


def _default_signals() -> None:
    # `env --default-signal=INT,TERM setsid ...`: whatever pytest ignores, a plain kill works.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(process: subprocess.Popen, timeout: float = 30.0) -> bool:
    """A plain SIGTERM to our own PID; True when it and its whole session ended on their own.

    Only when they did not is the process group we created (pgid == pid) killed.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    while _group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    clean = process.poll() is not None and not _group_alive(process.pid)
    if not clean:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    return clean


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUANT_", "DAGSTER_"))}
    env.update(
        {
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "DO_NOT_TRACK": "true",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
    )
    env.update(extra)
    return env


@dataclass
class UiServer:
    url: str
    process: subprocess.Popen
    log: Path
    start: dt.date
    end: dt.date
    run_id: str
    data_dir: Path

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

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _wait_until_ready(server: UiServer, timeout: float = 90.0) -> None:
    """The server answers and the code location has loaded (a repository is listed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(
                f"the web server exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            data = server.graphql(
                "{ repositoriesOrError { __typename ... on RepositoryConnection { nodes { name } } } }"
            )
            if data["repositoriesOrError"].get("nodes"):
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.5)
    pytest.fail(f"the web server was not ready within {timeout:.0f}s:\n{server.log_tail()}")


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    """`quant backfill` over two weeks, then `dagster-webserver -w workspace.yaml` on it."""
    root = tmp_path_factory.mktemp("ui")
    today = dt.datetime.now(dt.UTC).date()
    start, end = today - dt.timedelta(days=HISTORY_DAYS), today - dt.timedelta(days=1)
    env = _env(
        DAGSTER_HOME=str(root / "dagster_home"),
        QUANT_DATA_DIR=str(root / "data"),
        QUANT_HISTORY_START=start.isoformat(),
        QUANT_UNIVERSE="small",
        QUANT_SYNTHETIC_SYMBOLS="30",
    )
    backfill = subprocess.run(
        [str(BIN / "quant"), "backfill", "--start", start.isoformat(), "--end", end.isoformat()],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert backfill.returncode == 0, backfill.stderr[-3000:]
    run_id = re.search(r"data cycle \S+: run ([0-9a-f-]{36})", backfill.stdout).group(1)

    # The web server reads the instance from the embedded PostgreSQL of DAGSTER_HOME: this
    # test process is its user while the server runs (`quant ui` does the same for itself).
    embedded = EmbeddedPostgres(root / "dagster_home")
    embedded.url()
    port = _free_port()
    log = root / "webserver.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                str(BIN / "dagster-webserver"),
                "-w",
                str(ROOT / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=root,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_default_signals,
        )
    server = UiServer(f"http://127.0.0.1:{port}", process, log, start, end, run_id, root / "data")
    try:
        _wait_until_ready(server)
        yield server
    finally:
        _stop(process)
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


# ----------------------------------------------------------------------- the browser


class DevTools:
    """The few Chrome DevTools Protocol calls the test needs, over one page's websocket."""

    def __init__(self, websocket_url: str):
        from websockets.sync.client import connect

        self._socket = connect(websocket_url, max_size=None, open_timeout=20)
        self._ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:  # events arrive in between; only our answer matters
            message = json.loads(self._socket.recv(timeout=60))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(
            base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        )
        return path

    def close(self) -> None:
        self._socket.close()


# Clicks "Skip" in the community dialog when one is open; says whether it did.
DISMISS_NUX = """
(() => {
  const skip = [...document.querySelectorAll('[role=dialog] button, .bp5-dialog button, button')]
    .find(b => b.innerText.trim() === 'Skip' && document.body.innerText.includes('Dagster community'));
  if (skip) { skip.click(); return true; }
  return false;
})()
"""


def _chromium() -> str | None:
    return (
        shutil.which("chromium")
        or (os.path.exists("/usr/bin/chromium") and "/usr/bin/chromium")
        or None
    )


@pytest.fixture
def browser(tmp_path):
    binary = _chromium()
    if binary is None:
        reason = (
            "Debian's chromium is not installed (apt-get install -y chromium); .ci/run installs it"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path))
    process = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "chromium.log").open("wb"),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_default_signals,
    )
    tools = None
    try:
        active = profile / "DevToolsActivePort"  # Chromium writes its chosen port here
        deadline = time.monotonic() + 30
        while not (active.exists() and len(active.read_text().splitlines()) >= 2):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "Chromium did not start: "
                    + (tmp_path / "chromium.log").read_text(errors="replace")[-2000:]
                )
            time.sleep(0.1)
        port = active.read_text().splitlines()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            targets = json.load(response)
        tools = DevTools(next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"))
        tools.call(
            "Emulation.setDeviceMetricsOverride",
            width=1600,
            height=1000,
            deviceScaleFactor=1,
            mobile=False,
        )
        yield tools
    finally:
        if tools is not None:
            tools.close()
        _stop(process, timeout=10)


def _wait_for(tools: DevTools, wanted: list[str], timeout: float = 45.0) -> str:
    """Page text once every wanted string shows, dismissing the community dialog on the way."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        tools.evaluate(DISMISS_NUX)
        text = tools.text()
        if all(w in text for w in wanted) and "Dagster community" not in text:
            return text
        time.sleep(0.5)
    missing = [w for w in wanted if w not in text]
    pytest.fail(f"not rendered within {timeout:.0f}s: {missing}\npage text:\n{text[:3000]}")


@pytest.mark.browser
def test_chromium_renders_the_asset_graph_and_the_ohlcv_page(ui_server, browser, tmp_path):
    browser.call("Page.enable")
    browser.call("Page.navigate", url=f"{ui_server.url}/asset-groups")
    _wait_for(browser, ["Global asset lineage", "data", "alpha", "maintenance"])
    # The lineage opens with groups collapsed; Alt+E is its "expand all groups" shortcut.
    for kind in ("rawKeyDown", "keyUp"):
        browser.call(
            "Input.dispatchKeyEvent",
            type=kind,
            modifiers=1,
            key="e",
            code="KeyE",
            windowsVirtualKeyCode=69,
        )
    _wait_for(browser, list(ASSETS))
    time.sleep(1.5)  # let the graph finish its zoom-to-fit before the picture
    graph_png = browser.screenshot(tmp_path / "asset_graph.png")
    assert graph_png.stat().st_size > 20_000  # a rendered graph, not a blank page
    if UPDATE_SCREENSHOTS:
        shutil.copyfile(graph_png, ROOT / "docs" / "ui_asset_graph.png")

    browser.call("Page.navigate", url=f"{ui_server.url}/assets/ohlcv")
    window = f"{ui_server.start.isoformat()}..{ui_server.end.isoformat()}"
    text = _wait_for(
        browser,
        [
            "ohlcv",
            "Latest materialization",
            ui_server.end.isoformat(),
            window,
            "Latest check results",
        ],
    )
    # The metadata of the latest materialisation is on the page: the window and the ingest counts.
    assert "rows_fetched" in text and "quality_score_median" in text
    assert str(ui_server.data_dir / "lakehouse" / "ohlcv") in text  # where the files are
    assert "data_cycle" in text and "data-platform" in text  # its job and owner
    asset_png = browser.screenshot(tmp_path / "ohlcv_asset.png")
    assert asset_png.stat().st_size > 20_000


def test_a_plain_kill_stops_the_server_and_its_children(ui_server):
    """Last in this module: it stops the shared server the way a user's `kill PID` would."""
    members = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _pgid(int(p.name)) == ui_server.process.pid
    ]
    assert len(members) >= 2, "expected the web server and its code server in one session"
    assert _stop(ui_server.process), (
        f"processes of the server outlived a plain kill:\n{ui_server.log_tail()}"
    )


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
