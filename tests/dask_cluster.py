"""A real Dask distributed cluster on loopback: one `dask scheduler` and N `dask worker`
processes (one thread each, no nanny, so the pid of a worker is the process we started
and a killed worker stays dead), each with this checkout first on its PYTHONPATH and
telemetry off. Used by tests/test_distributed.py and benchmarks/bench_cluster.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from quant_resources.runtime import OFFLINE_ENV
from quant_resources.settings import PROJECT_ROOT

DASK = str(Path(sys.executable).parent / "dask")


class LocalDaskCluster:
    def __init__(self, workdir: Path, workers: int = 2, start_timeout_s: float = 60.0):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.n_workers = workers
        self.start_timeout_s = start_timeout_s
        self.scheduler_file = self.workdir / "scheduler.json"
        self.processes: dict[str, subprocess.Popen] = {}
        self.address = ""
        path = os.environ.get("PYTHONPATH", "")
        self.env = {
            **os.environ,
            **OFFLINE_ENV,
            "PYTHONPATH": f"{PROJECT_ROOT}{os.pathsep}{path}" if path else str(PROJECT_ROOT),
            # A worker holds as many tasks as it has threads (one): none waits queued behind
            # a busy task, so the others' work goes to the free worker.
            "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.0",
        }

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - kept open for the process's life
        self.processes[name] = subprocess.Popen(
            [DASK, *args],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self) -> LocalDaskCluster:
        self._spawn(
            "scheduler",
            [
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(self.scheduler_file),
            ],
        )
        deadline = time.monotonic() + self.start_timeout_s
        while not self.scheduler_file.exists():
            self._alive_or_raise("scheduler", deadline)
            time.sleep(0.1)
        self.address = json.loads(self.scheduler_file.read_text())["address"]
        for i in range(self.n_workers):
            self.add_worker(f"worker{i}")
        self.wait_for_workers(self.n_workers)
        return self

    def add_worker(self, name: str) -> None:
        self._spawn(
            name,
            [
                "worker",
                self.address,
                "--name",
                name,
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
                "--memory-limit",
                "0",
                # Imported at start-up, as a deployed worker would: the first shard does not
                # pay for importing Dagster and the project.
                "--preload",
                "quant_assets.data.shards",
            ],
        )

    def _alive_or_raise(self, name: str, deadline: float) -> None:
        process = self.processes[name]
        if process.poll() is not None or time.monotonic() > deadline:
            log = (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"dask {name} did not start (exit {process.poll()}):\n{log}")

    def client(self):
        from distributed import Client

        return Client(self.address, timeout=30, set_as_default=False)

    def wait_for_workers(self, n: int) -> None:
        with self.client() as client:
            client.wait_for_workers(n, timeout=self.start_timeout_s)

    def worker_pids(self) -> dict[str, int]:
        """Worker address -> its pid, as the workers themselves report it."""
        with self.client() as client:
            return client.run(os.getpid)

    def processing(self) -> dict[str, list[str]]:
        """Worker address -> the task keys the scheduler has on it now."""
        with self.client() as client:
            return {w: list(keys) for w, keys in client.processing().items()}

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        for process in self.processes.values():
            if process.pid == pid:
                process.wait(timeout=30)

    def stop(self) -> None:
        """Every worker (all at once), then the scheduler; each by its pid."""
        workers = [p for n, p in self.processes.items() if n != "scheduler"]
        for group in (
            workers,
            [self.processes["scheduler"]] if "scheduler" in self.processes else [],
        ):
            for process in group:
                if process.poll() is None:
                    process.terminate()
            for process in group:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)

    def __enter__(self) -> LocalDaskCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
