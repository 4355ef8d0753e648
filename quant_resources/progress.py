"""Progress of a run as a person at the terminal sees it, and the run's log file.

The CLI runs jobs in its own process (`execute_in_process`), so it watches them through
two Dagster loggers it asks for in the run config:

- `quant_progress` follows the steps (start, materialisation, success, failure) and
  drives a `Reporter`: a rich progress bar per step on a terminal, one line per step
  elsewhere (CI, a pipe);
- `quant_file` writes Dagster's whole event stream to `$DAGSTER_HOME/logs/quant.log`.

Assets report work inside a step (symbols ingested, days written) with `advance`; with
no reporter installed (the UI's run workers, tests) it costs a dictionary look-up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import dagster as dg

_lock = threading.Lock()
_reporter: Reporter | None = None

PROGRESS_LOGGER = "quant_progress"
FILE_LOGGER = "quant_file"

# What a step reports when it ends, from its materialisation's metadata.
_DONE_FIGURES = {
    "candidates": ("days_written", "days"),
    "ohlcv": ("symbols", "symbols"),
    "tv_technicals_1d": ("rows_written", "rows"),
    "gap_repair": ("gaps_healed", "gaps healed"),
    "data_audit": ("files", "files"),
}


def advance(step: str, done: int, total: int | None = None, unit: str = "") -> None:
    """Report `done` units of work (of `total`) finished in `step`. Thread-safe."""
    reporter = _reporter
    if reporter is not None:
        reporter.update(step, done, total, unit)


@contextlib.contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    """Install `reporter` for the runs made inside this block (one at a time)."""
    global _reporter
    with _lock:
        previous, _reporter = _reporter, reporter
    try:
        with reporter:
            yield reporter
    finally:
        with _lock:
            _reporter = previous


class Reporter:
    """Bars on a terminal, a line per finished step otherwise."""

    def __init__(self, title: str = "", stream: TextIO | None = None, bars: bool | None = None):
        self.stream = stream or sys.stdout
        self.bars = self.stream.isatty() if bars is None else bars
        self.title = title
        self._progress = None
        self._tasks: dict[str, Any] = {}
        self._started: dict[str, float] = {}
        self._figures: dict[str, str] = {}
        self._check_steps: set[str] = set()
        self._materialized: set[str] = set()
        self._guard = threading.Lock()

    def __enter__(self) -> Reporter:
        if self.bars:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("  {task.description:<18}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def step_started(self, step: str) -> None:
        with self._guard:
            self._started[step] = time.perf_counter()
            if self._progress is not None:
                self._tasks[step] = self._progress.add_task(step, total=None, unit="")

    def update(self, step: str, done: int, total: int | None, unit: str) -> None:
        with self._guard:
            if self._progress is not None:
                task = self._tasks.get(step)
                if task is None:
                    task = self._tasks[step] = self._progress.add_task(step, total=total, unit=unit)
                self._progress.update(task, completed=done, total=total, unit=unit)

    def materialized(self, step: str, metadata: dict[str, Any]) -> None:
        with self._guard:
            self._materialized.add(step)
        key, unit = _DONE_FIGURES.get(step, ("", ""))
        value = metadata.get(key)
        value = getattr(value, "value", value)
        if isinstance(value, int):
            with self._guard:
                self._figures[step] = f"{value} {unit}"
                if self._progress is not None and step in self._tasks:
                    self._progress.update(self._tasks[step], total=value, completed=value, unit=unit)

    def checked(self, step: str) -> None:
        """`step` evaluated asset checks: if it materialised nothing, it is a check step,
        whose line is shown only when it fails."""
        with self._guard:
            self._check_steps.add(step)

    def step_finished(self, step: str, ok: bool, reason: str = "") -> None:
        with self._guard:
            if ok and step in self._check_steps and step not in self._materialized:
                self._started.pop(step, None)
                task = self._tasks.pop(step, None)
                if self._progress is not None and task is not None:
                    self._progress.remove_task(task)
                return
            seconds = time.perf_counter() - self._started.pop(step, time.perf_counter())
            figure = self._figures.pop(step, "")
            if self._progress is not None:
                task = self._tasks.get(step)
                if task is not None:
                    current = next((t for t in self._progress.tasks if t.id == task), None)
                    if ok and current is not None and current.total is None:
                        self._progress.update(task, total=1, completed=1)
                    if not ok:
                        self._progress.update(task, description=f"{step} FAILED")
                return
            status = "done" if ok else "FAILED"
            extra = f" ({figure})" if figure and ok else (f": {reason}" if reason else "")
            print(f"  {step}: {status} in {seconds:.1f}s{extra}", file=self.stream, flush=True)


class _StepHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        reporter = _reporter
        meta = getattr(record, "dagster_meta", None)
        if reporter is None or not meta:
            return
        event = meta.get("dagster_event")
        step = meta.get("step_key")
        if event is None or not step:
            return
        try:
            if event.event_type == dg.DagsterEventType.STEP_START:
                reporter.step_started(step)
            elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                reporter.checked(step)
            elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
                reporter.materialized(step, dict(event.event_specific_data.materialization.metadata))
            elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
                reporter.step_finished(step, True)
            elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
                error = event.event_specific_data.error
                reporter.step_finished(step, False, (error.message or "").strip().splitlines()[0] if error else "")
        except Exception:  # progress must never break a run
            pass


@dg.logger(description="Step progress for the quant CLI (bars on a terminal, a line per step elsewhere).")
def progress_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    log = logging.Logger(PROGRESS_LOGGER, level=logging.DEBUG)
    log.addHandler(_StepHandler())
    return log


def log_file() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or ".dagster") / "logs" / "quant.log"


_file_handlers: dict[Path, logging.Handler] = {}


def _file_handler(path: Path) -> logging.Handler:
    """One open handler per log file and process (a logger is made for every run)."""
    with _lock:
        handler = _file_handlers.get(path)
        if handler is None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                handler = logging.FileHandler(path, encoding="utf-8")
            except OSError:  # a convenience only: the events are in the instance anyway
                handler = logging.NullHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            _file_handlers[path] = handler
        return handler


@dg.logger(description="Dagster's event stream, appended to $DAGSTER_HOME/logs/quant.log.")
def file_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    log = logging.Logger(FILE_LOGGER, level=logging.DEBUG)
    log.addHandler(_file_handler(log_file().absolute()))
    return log


def quiet_python_logging() -> None:
    """Send Python's logging and warnings (database retries, alembic, MLflow) to the log
    file instead of the terminal; the CLI prints its own summary and one-line errors."""
    handler = _file_handler(log_file().absolute())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    for name in ("mlflow", "alembic", "dagster", "dagster_postgres"):
        named = logging.getLogger(name)
        for existing in list(named.handlers):
            named.removeHandler(existing)
        named.propagate = True


LOGGERS = {PROGRESS_LOGGER: progress_logger, FILE_LOGGER: file_logger, "console": dg.colored_console_logger}


def run_loggers_config(verbose: bool) -> dict[str, Any]:
    """The run config's `loggers`: progress and the log file; the console only when verbose."""
    config: dict[str, Any] = {PROGRESS_LOGGER: {}, FILE_LOGGER: {}}
    if verbose:
        config["console"] = {"config": {"log_level": "DEBUG"}}
    return config
