"""The tracking worker: every MLflow call of every tracked run in this process happens here.

One worker per process, started on first use: a forked child process on Linux (its own
core, so MLflow's CPU time never competes with a run for the GIL), a thread elsewhere.
Each Dagster run is a *session*. The worker opens the session's MLflow run through
dagster-mlflow's `mlflow_tracking` resource, on a thread of the session's own (MLflow's
active run is thread-local, so sessions never share one), then applies the session's
calls in the order they were sent.

The first failure of a session (tracking URI unreachable, database locked, a registry
error) is reported to the parent once; the session then drops its remaining calls
instead of retrying each one, so an outage costs one timeout, not one per call. It still
tries once to end an MLflow run it opened.

MLflow builds a new sqlite store by replaying its schema migrations (about 9 s on the
development machine); a new `mlflow.db` is therefore copied from an empty, migrated
template kept per MLflow version in the user cache (`~/.cache/quant-lakehouse/`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

OPEN, LOG, ARTIFACTS, CALL, END, CLOSE = "open", "log", "artifacts", "call", "end", "close"
MAX_BATCH = {"metrics": 1000, "params": 100}  # MLflow's limits per log_batch call


def serve(commands: Any, replies: Any, parent_pid: int | None) -> None:
    """Route each `(session_id, op, payload)` command to its session until told to stop.

    `parent_pid` is set in a child process: the worker then leaves the parent's output
    streams alone (a reader waiting for EOF on a pipe the parent shares must not wait for
    the worker too) and exits when the parent is gone.
    """
    if parent_pid is not None:
        _detach_streams()
        _quiet_loggers()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the run; the run closes us
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sessions: dict[str, _Session] = {}
    while True:
        try:
            message = commands.get(timeout=1.0)
        except queue.Empty:
            if parent_pid is not None and os.getppid() != parent_pid:
                return
            continue
        if message is None:
            return
        session_id, op, payload = message
        if op == OPEN:
            sessions[session_id] = _Session(session_id, replies)
            sessions[session_id].start()
        session = sessions.get(session_id)
        if session is None:
            continue
        session.inbox.put((op, payload))
        if op == CLOSE:
            sessions.pop(session_id, None)


class TrackedRun:
    """What a function sent with `MlflowTracking.submit` receives: the session's MLflow run.

    `client` is an `MlflowClient` on the session's tracking URI; the session's thread holds
    the run as MLflow's active run, so fluent calls (`mlflow.log_*`) land in it too.
    `state` carries values from one submitted call to a later one of the same session.
    """

    def __init__(self, tracking_uri: str, run_id: str, experiment_id: str, client: Any):
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.client = client
        self.state: dict[str, Any] = {}


class _Session(threading.Thread):
    def __init__(self, session_id: str, replies: Any):
        super().__init__(name=f"mlflow-session-{session_id[:8]}", daemon=True)
        self.session_id = session_id
        self.replies = replies
        self.inbox: queue.Queue = queue.Queue()
        self.resources = contextlib.ExitStack()
        self.mlflow_resource: Any = None
        self.tracked: TrackedRun | None = None
        self.failed = False
        self.dropped = 0
        # (folder, name) -> (artifact path, uploaded only at the end because it still grows)
        self.pending_artifacts: dict[tuple[str, str], tuple[str | None, bool]] = {}

    def run(self) -> None:
        try:
            while True:
                op, payload = self.inbox.get()
                if op == CLOSE:
                    break
                if self.failed:
                    if op == END and self.tracked is not None:
                        with contextlib.suppress(Exception):
                            self.mlflow_resource.end_run(status=payload.get("status") or "FINISHED")
                    self.dropped += 1
                    continue
                try:
                    getattr(self, f"_{op}")(payload)
                except Exception as exc:  # noqa: BLE001 - any tracking failure is reported, never raised
                    self._fail(op, exc)
        finally:
            with contextlib.suppress(Exception):
                self.resources.close()
            self._reply("closed", {"dropped": self.dropped, "mlflow_run_id": self.tracked and self.tracked.run_id})

    def _reply(self, kind: str, payload: dict[str, Any]) -> None:
        self.replies.put((self.session_id, kind, payload))

    def _fail(self, op: str, exc: BaseException) -> None:
        self.failed = True
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        message = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        self._reply("error", {"op": op, "message": message[:500]})

    def _open(self, payload: dict[str, Any]) -> None:
        import dagster as dg
        import mlflow
        from dagster._core.storage.dagster_run import DagsterRun
        from dagster_mlflow import mlflow_tracking

        for key in [k for k in os.environ if k.startswith(("AWS_", "MLFLOW_S3_")) and k not in payload["env"]]:
            del os.environ[key]  # the S3 settings are the run's process's (`object_store_env`), not an earlier run's
        os.environ.update(payload["env"])
        uri = payload["tracking_uri"]
        store = sqlite_store_path(uri)
        if store is not None:
            ensure_sqlite_store(store, payload.get("artifact_location"))
        _ensure_experiment(uri, payload["experiment_name"], payload.get("artifact_location"))
        config = {
            "experiment_name": payload["experiment_name"],
            "mlflow_tracking_uri": uri,
            "extra_tags": payload["tags"],
        }
        dagster_run = DagsterRun(job_name=payload["job_name"], run_id=payload["dagster_run_id"])
        resources = self.resources.enter_context(
            dg.build_resources(
                {"mlflow": mlflow_tracking},
                instance=_instance(),
                resource_config={"mlflow": {"config": config}},
                dagster_run=dagster_run,
            )
        )
        self.mlflow_resource = resources.mlflow
        active = mlflow.active_run()
        self.tracked = TrackedRun(
            uri, active.info.run_id, active.info.experiment_id, self.mlflow_resource.tracking_client
        )
        self._reply("opened", {"mlflow_run_id": self.tracked.run_id, "artifact_uri": active.info.artifact_uri})

    def _log(self, payload: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        step = int(payload.get("step", 0))
        metrics = [Metric(k, float(v), now, step) for k, v in payload.get("metrics", {}).items()]
        params = [Param(k, str(v)) for k, v in payload.get("params", {}).items()]
        tags = [RunTag(k, str(v)) for k, v in payload.get("tags", {}).items()]
        client = self.tracked.client
        while metrics or params or tags:
            client.log_batch(
                self.tracked.run_id,
                metrics=metrics[: MAX_BATCH["metrics"]],
                params=params[: MAX_BATCH["params"]],
                tags=tags[: MAX_BATCH["params"]],
            )
            metrics = metrics[MAX_BATCH["metrics"] :]
            params = params[MAX_BATCH["params"] :]
            tags = tags[MAX_BATCH["params"] :]

    def _artifacts(self, payload: dict[str, Any]) -> None:
        growing = set(payload.get("growing", ()))
        for name in payload["names"]:
            self.pending_artifacts.setdefault(
                (payload["folder"], name), (payload.get("artifact_path"), name in growing)
            )
        self._upload(final=False)

    def _upload(self, final: bool) -> None:
        """Upload the pending files that exist (written once, atomically); growing ones only
        when `final`. Early uploads keep the end of a run short."""
        for key, (artifact_path, growing) in sorted(self.pending_artifacts.items()):
            path = Path(key[0]) / key[1]
            if (final or not growing) and path.is_file():
                self.tracked.client.log_artifact(self.tracked.run_id, str(path), artifact_path)
                del self.pending_artifacts[key]

    def _call(self, payload: dict[str, Any]) -> None:
        payload["function"](self.tracked, **payload.get("kwargs", {}))

    def _end(self, payload: dict[str, Any]) -> None:
        try:
            self._upload(final=True)
        finally:
            self.mlflow_resource.end_run(status=payload.get("status") or "FINISHED")


_INSTANCE: Any = None


def _instance() -> Any:
    """One ephemeral Dagster instance for every session of this worker (building one costs
    0.15 s; dagster-mlflow's resource only needs it to exist)."""
    global _INSTANCE
    if _INSTANCE is None:
        import dagster as dg

        _INSTANCE = dg.DagsterInstance.ephemeral()
    return _INSTANCE


def sqlite_store_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI, else None."""
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix) :]) if tracking_uri.startswith(prefix) else None


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "quant-lakehouse"


def ensure_sqlite_store(path: Path, artifact_location: str | None) -> None:
    """Create `path` from the migrated template when it does not exist yet."""
    if path.exists():
        return
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    template = schema_template()
    with FileLock(str(path.with_name(f".{path.name}.lock"))):
        if path.exists():
            return
        staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        shutil.copyfile(template, staging)
        if artifact_location:
            # The template's Default experiment points where the template was made.
            with contextlib.closing(sqlite3.connect(staging)) as db, db:
                db.execute(
                    "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                    (f"{artifact_location.rstrip('/')}/0",),
                )
        os.replace(staging, path)


def schema_template() -> Path:
    """An empty MLflow database at the schema of the installed MLflow, made once."""
    import mlflow
    from filelock import FileLock
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = cache_dir()
    template = folder / f"mlflow-{mlflow.__version__}-empty.db"
    if template.exists():
        return template
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f".{template.name}.lock")):
        if template.exists():
            return template
        staging = folder / f".{template.name}.tmp-{os.getpid()}"
        staging.unlink(missing_ok=True)
        store = SqlAlchemyStore(f"sqlite:///{staging}", str(folder / "mlruns"))
        store.engine.dispose()
        os.replace(staging, template)
    return template


def _ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None) -> None:
    """Create the experiment with its artifact location before dagster-mlflow would create
    it without one (with a sqlite store, artifacts would then land in ./mlruns)."""
    if not artifact_location:
        return
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    if client.get_experiment_by_name(name) is not None:
        return
    try:
        client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _detach_streams() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            os.dup2(devnull, fd)
    os.close(devnull)


def _quiet_loggers() -> None:
    for name in ("mlflow", "alembic", "urllib3", "dagster"):
        logging.getLogger(name).setLevel(logging.ERROR)
