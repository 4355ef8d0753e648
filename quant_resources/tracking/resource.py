"""`MlflowTracking`: the `mlflow` resource of the tracked jobs, wrapping dagster-mlflow.

dagster-mlflow's `mlflow_tracking` resource opens one MLflow run per Dagster run and its
`end_mlflow_on_run_finished` hook ends it. Used as it is, it would break two rules of this
project, so this resource wraps it:

- **failure tolerance**: it opens the MLflow run while Dagster initialises resources, so
  an unreachable tracking URI or a locked database fails the Dagster run;
- **never in the way**: every call is synchronous on the run's thread (about 9 s to create
  a sqlite store, 0.3-4 s to log a model), so logging would slow every step.

Here the resource only queues calls. The worker (`worker.py`, a forked child process on
Linux) opens the MLflow run with dagster-mlflow's resource, applies the calls in order and
reports its first failure, which becomes one warning in the run's log. The hook keeps its
contract: it calls `end_run`, which queues the end (and the artifact uploads) after
everything sent before. The resource's teardown waits for the worker to finish the session
(`flush_timeout_s` at most), so nothing is lost when the process exits.

Only runs of `tracked_jobs` (the jobs that carry the hook) open an MLflow run, and a run
tagged `quant/tracking=off` opens none; elsewhere every method is a no-op.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
from pydantic import Field, PrivateAttr

from quant_resources.run_tags import RANGE_END, RANGE_START
from quant_resources.tracking import worker as worker_module
from quant_resources.tracking.ledger import audit_entries

TRACKING_TAG = "quant/tracking"  # a run tagged quant/tracking=off opens no MLflow run


class MlflowTracking(dg.ConfigurableResource):
    """MLflow tracking for the runs of `tracked_jobs`; calls never block, fail or steer a run."""

    tracking_uri: str = Field(default="", description="MLflow tracking URI; empty turns tracking off")
    artifact_location: str | None = Field(
        default=None, description="artifact root of a new experiment (set for sqlite stores)"
    )
    experiment_name: str = "quant-lakehouse"
    tracked_jobs: dict[str, str] = Field(
        default_factory=dict, description="job name -> `cycle` tag; other jobs are not tracked"
    )
    tags: dict[str, str] = Field(default_factory=dict, description="tags of every MLflow run")
    flush_timeout_s: float = Field(default=120.0, description="longest wait for the worker at run end")
    http_timeout_s: int = Field(default=10, description="per request, for an http tracking URI")
    http_max_retries: int = Field(default=1, description="per request, for an http tracking URI")

    _session: _Session | None = PrivateAttr(default=None)

    # -- lifecycle ---------------------------------------------------------------------
    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run = context.dagster_run
        if (
            not self.tracking_uri
            or run is None
            or run.job_name not in self.tracked_jobs
            or run.tags.get(TRACKING_TAG) == "off"
        ):
            return
        tags = {
            **self.tags,
            "cycle": self.tracked_jobs[run.job_name],
            "partition": partition_of(run.tags),
            "dagster_job": run.job_name,
        }
        try:
            session = _Session(context.log, self.experiment_name, self.tracking_uri)
        except Exception as exc:  # noqa: BLE001 - e.g. fork refused: the run goes on untracked
            _Session.warn_unavailable(context.log, self.tracking_uri, f"the tracking worker did not start: {exc}")
            return
        self._session = session
        session.artifact_location = self.artifact_location
        self._session.send(
            worker_module.OPEN,
            {
                "tracking_uri": self.tracking_uri,
                "artifact_location": self.artifact_location,
                "experiment_name": self.experiment_name,
                "job_name": run.job_name,
                "dagster_run_id": run.run_id,
                "tags": tags,
                "env": {
                    "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.http_timeout_s),
                    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.http_max_retries),
                    **object_store_env(os.environ),
                },
            },
        )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._session is not None:
            self._session.close(self.flush_timeout_s)

    @property
    def active(self) -> bool:
        """True when this run opens an MLflow run (it may still fail in the worker)."""
        return self._session is not None

    # -- calls (queued, never raise) ---------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        self._send_log(metrics=dict(metrics), step=step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._send_log(params={k: v if isinstance(v, str) else str(v) for k, v in params.items()})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._send_log(tags={k: str(v) for k, v in tags.items()})

    def log_audit(self, record: Mapping[str, Any]) -> None:
        """Mirror one `audit.jsonl` line: its metrics and params in one batch (`ledger.py`)."""
        if self._session is not None:
            try:
                metrics, params = audit_entries(record)
            except Exception as exc:  # noqa: BLE001 - a line that cannot be mapped is not a failed run
                self._session.fail(f"audit line not mirrored: {exc!r}")
                return
            self._send_log(metrics=metrics, params=params)

    def log_files(
        self,
        folder: os.PathLike | str,
        names: Iterable[str],
        artifact_path: str | None = None,
        growing: Iterable[str] = (),
    ) -> None:
        """Upload these files of `folder` as artifacts: each once it exists (files written once,
        atomically), those in `growing` (appended to) when the run ends. Repeats are ignored."""
        if self._session is not None:
            self._session.send(
                worker_module.ARTIFACTS,
                {"folder": str(folder), "names": list(names), "artifact_path": artifact_path, "growing": list(growing)},
            )

    def submit(self, function: Callable[..., Any], **kwargs: Any) -> None:
        """Run `function` in the worker as `function(tracked_run, **kwargs)`.

        For work that needs the MLflow run, such as registering a model. The caller hands
        the function itself over (this package never names a function of `quant_assets`);
        it travels to the worker process by pickle, so it must be a module-level function
        and kwargs picklable. A failure is reported like any tracking failure.
        """
        if self._session is not None:
            try:
                pickle.dumps(function)
            except Exception as exc:  # noqa: BLE001 - e.g. a lambda or a nested function
                self._session.fail(f"call not queued: {function!r} cannot reach the worker: {exc!r}")
                return
            self._session.send(worker_module.CALL, {"function": function, "kwargs": kwargs})

    def end_run(self, status: str | None = None) -> None:
        """Called by dagster-mlflow's `end_mlflow_on_run_finished` hook."""
        if self._session is not None:
            self._session.send(worker_module.END, {"status": status})

    def _send_log(self, **payload: Any) -> None:
        if self._session is not None and any(payload.get(k) for k in ("metrics", "params", "tags")):
            self._session.send(worker_module.LOG, payload)


def tracker_of(context: Any) -> MlflowTracking:
    """The run's tracker, or an inactive one when the op was not given `mlflow`."""
    tracker = getattr(context.resources, "mlflow", None)
    return tracker if isinstance(tracker, MlflowTracking) else _OFF


_OFF = MlflowTracking()


def partition_of(tags: Mapping[str, str]) -> str:
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    if RANGE_START in tags and RANGE_END in tags:
        return f"{tags[RANGE_START]}..{tags[RANGE_END]}"
    return ""


def redact(uri: str) -> str:
    """The URI without credentials, for log messages."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


class _Session:
    """The parent's side of one session: sends calls, turns the first failure into a warning."""

    def __init__(self, log: Any, experiment_name: str, tracking_uri: str):
        self.id = uuid.uuid4().hex
        self.log = log
        self.experiment_name = experiment_name
        self.tracking_uri = tracking_uri
        self.worker = _Worker.get()
        self.mlflow_run_id: str | None = None
        self.artifact_location: str | None = None
        self.failure: str | None = None
        self.warned = False
        self.closed = False
        self._lock = threading.Lock()

    def send(self, op: str, payload: dict[str, Any]) -> None:
        """Queue one call; never raises (a failure becomes the session's one warning)."""
        try:
            self._absorb(self.worker.replies_for(self.id))
            if self.closed or (self.failure and op != worker_module.END):
                return
            self.worker.send((self.id, op, payload))
        except Exception as exc:  # noqa: BLE001
            self.fail(f"{op} not queued: {exc!r}")

    def fail(self, reason: str) -> None:
        self._warn(reason)

    def close(self, timeout_s: float) -> None:
        if self.closed:
            return
        try:
            self.worker.send((self.id, worker_module.CLOSE, {}))
        except Exception as exc:  # noqa: BLE001
            self.fail(f"close not queued: {exc!r}")
            self.closed = True
            return
        deadline = time.monotonic() + timeout_s
        while not self.closed:
            alive = self.worker.alive()  # before reading: a reply sent before exiting still counts
            remaining = deadline - time.monotonic()
            self._absorb(self.worker.replies_for(self.id, wait_s=max(0.0, min(remaining, 0.5))))
            if self.closed:
                break
            if not alive:
                self._warn("the tracking worker exited")
                break
            if remaining <= 0:
                self._warn(f"it did not finish within {timeout_s:.0f}s (flush_timeout_s)")
                break
        self.closed = True
        if self.mlflow_run_id and not self.failure:
            self.log.info(
                f"MLflow run {self.mlflow_run_id} in experiment '{self.experiment_name}' "
                f"at {redact(self.tracking_uri)}"
            )

    def _absorb(self, replies: list[tuple[str, dict[str, Any]]]) -> None:
        for kind, payload in replies:
            if kind == "opened":
                self.mlflow_run_id = payload["mlflow_run_id"]
                self._check_artifact_uri(payload.get("artifact_uri"))
            elif kind == "error":
                self._warn(f"{payload['op']} failed: {payload['message']}")
            elif kind == "closed":
                self.closed = True

    def _check_artifact_uri(self, artifact_uri: str | None) -> None:
        """An experiment keeps the artifact location it was created with: say so when the
        one asked for now (QUANT_MLFLOW_ARTIFACTS_URL) is not where this run's artifacts go."""
        wanted = self.artifact_location and self.artifact_location.removeprefix("file://").rstrip("/")
        if wanted and artifact_uri and not artifact_uri.removeprefix("file://").startswith(wanted + "/"):
            self.log.warning(
                f"MLflow artifacts of this run go to {artifact_uri}, not under {wanted}: experiment "
                f"'{self.experiment_name}' keeps the artifact location it was created with; the setting "
                "applies to a new tracking store or experiment (docs/deployment.md, 'Object storage')"
            )

    def _warn(self, reason: str) -> None:
        with self._lock:
            self.failure = self.failure or reason
            if self.warned:
                return
            self.warned = True
        self.warn_unavailable(self.log, self.tracking_uri, reason)

    @staticmethod
    def warn_unavailable(log: Any, tracking_uri: str, reason: str) -> None:
        log.warning(
            f"MLflow tracking unavailable at {redact(tracking_uri)} ({reason}); the run "
            "continues without it and its audit.jsonl still holds every stage. Check the "
            "tracking URI (QUANT_MLFLOW_TRACKING_URI) or whether another process locks the "
            "database."
        )


class _Worker:
    """The process-wide tracking worker and the replies it sent, by session."""

    _instances: dict[int, _Worker] = {}
    _instances_lock = threading.Lock()

    def __init__(self) -> None:
        self._inbox: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self._lock = threading.Lock()
        if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("fork")
            self.commands: Any = context.Queue()
            self.replies: Any = context.Queue()
            self.runner: Any = context.Process(
                target=worker_module.serve,
                args=(self.commands, self.replies, os.getpid()),
                name="quant-mlflow-worker",
                daemon=True,
            )
        else:
            self.commands = queue.Queue()
            self.replies = queue.Queue()
            self.runner = threading.Thread(
                target=worker_module.serve,
                args=(self.commands, self.replies, None),
                name="quant-mlflow-worker",
                daemon=True,
            )
        # Objects that exist now are the parent's: frozen, the child's garbage collector never
        # touches them, so their memory pages stay shared instead of being copied.
        gc.freeze()
        try:
            self.runner.start()
        finally:
            gc.unfreeze()

    @classmethod
    def get(cls) -> _Worker:
        with cls._instances_lock:
            current = cls._instances.get(os.getpid())
            if current is None or not current.alive():
                current = cls._instances[os.getpid()] = cls()
            return current

    def alive(self) -> bool:
        return self.runner.is_alive()

    def send(self, message: tuple[str, str, dict[str, Any]]) -> None:
        self.commands.put(message)

    def replies_for(self, session_id: str, wait_s: float = 0.0) -> list[tuple[str, dict[str, Any]]]:
        """This session's replies so far; waits up to `wait_s` for one when there is none."""
        with self._lock:
            self._drain(block=False)
            mine = self._inbox.pop(session_id, [])
            if mine or wait_s <= 0:
                return mine
            self._drain(block=True, wait_s=wait_s)
            return self._inbox.pop(session_id, [])

    def _drain(self, block: bool, wait_s: float = 0.0) -> None:
        try:
            message = self.replies.get(timeout=wait_s) if block else self.replies.get_nowait()
        except (queue.Empty, EOFError, OSError):
            return
        while True:
            session_id, kind, payload = message
            self._inbox.setdefault(session_id, []).append((kind, payload))
            try:
                message = self.replies.get_nowait()
            except (queue.Empty, EOFError, OSError):
                return


def object_store_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The S3 settings of this process for the tracking worker (a child forked earlier
    has the environment of its fork): AWS_* and MLFLOW_S3_*, and MLflow's S3 endpoint
    from AWS_ENDPOINT_URL when it has none of its own."""
    env = {k: v for k, v in environ.items() if k.startswith(("AWS_", "MLFLOW_S3_"))}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint and "MLFLOW_S3_ENDPOINT_URL" not in env:
        env["MLFLOW_S3_ENDPOINT_URL"] = endpoint
    return env


def tracking_uri_for(settings) -> str:
    """The tracking store of these settings (`Settings.tracking_uri`)."""
    return settings.tracking_uri


def artifact_location_for(tracking_uri: str, artifacts_url: str | None = None) -> str | None:
    """Where a new experiment keeps its artifacts: `artifacts_url` when given
    (QUANT_MLFLOW_ARTIFACTS_URL, e.g. `s3://bucket/mlflow`), else `artifacts/` beside a
    sqlite store, else None (the tracking server decides)."""
    if artifacts_url:
        return artifacts_url.rstrip("/")
    store = worker_module.sqlite_store_path(tracking_uri)
    return str(store.parent / "artifacts") if store is not None else None
