"""What the browser tests share: servers on free loopback ports, stopped by a plain kill,
and Debian's headless Chromium driven by Playwright for Python.

Playwright is pointed at /usr/bin/chromium (`executable_path`): no `playwright install`, no
browser download. When Chromium is missing the browser tests fail on CI (`.ci/run`
installs it, so missing there is a broken setup) and skip elsewhere with a reason that
`make test` prints (`-rs`), next to the Makefile's own warning line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; the Makefile checks the same path
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1600, "height": 1000}
MISSING_CHROMIUM = (
    f"BROWSER TESTS NOT RUN: {CHROMIUM} is missing (apt-get install -y chromium; .ci/run "
    "installs it)"
)


def default_signals() -> None:
    # `env --default-signal=INT,TERM setsid ...`: whatever pytest ignores, a plain kill works.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(process: subprocess.Popen, timeout: float = 30.0) -> bool:
    """A plain SIGTERM to our own PID; True when it and its whole session ended on their own.

    Only when they did not is the process group we created (pgid == pid) killed.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    while group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    clean = process.poll() is not None and not group_alive(process.pid)
    if not clean:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    return clean


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without project settings, telemetry off, plus `extra`."""
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


def start_server(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """A server in a session of its own (pgid == pid), output to `log`."""
    with log.open("wb") as sink:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=default_signals,
        )


def wait_until_ready(
    process: subprocess.Popen,
    ready: Callable[[], bool],
    log: Path,
    what: str,
    timeout: float = 120.0,
) -> None:
    """Poll `ready()` until it is true; fail with the server's log when it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log_tail(log)}")
        try:
            if ready():
                return
        except (OSError, urllib.error.URLError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    pytest.fail(f"{what} was not ready within {timeout:.0f}s:\n{log_tail(log)}")


def log_tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def http_get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


@contextlib.contextmanager
def chromium() -> Iterator:
    """Debian's headless Chromium under Playwright: yields the Browser."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(MISSING_CHROMIUM)
        pytest.skip(MISSING_CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


def image_loaded(locator) -> bool:
    """An <img> that the browser decoded: complete, with a real size."""
    return bool(locator.evaluate("img => img.complete && img.naturalWidth > 100 && img.naturalHeight > 100"))


def refuse_outside(page, origin: str) -> list[str]:
    """Abort every request of `page` that leaves `origin` (or a data: URI); returns the list
    the refused URLs are appended to, for a test to assert that the UI stayed offline."""
    refused: list[str] = []

    def route(route) -> None:
        url = route.request.url
        if url.startswith((origin, "data:", "blob:")):
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    page.route("**/*", route)
    return refused
