"""Where a run's independent pieces of work (ingestion's symbol shards) execute.

`InProcessCompute` runs them in the run's own process, one after another (each piece
is already threaded inside): the laptop default. `DaskCompute` hands them to a Dask
distributed cluster (`dask scheduler` + `dask worker` processes on any host that sees
the lakehouse's file system and can import this project): each piece is one Dask task,
and a worker that dies mid-task has its task run again on another worker by the
scheduler. The piece must be a module-level function of picklable arguments.

Chosen by `QUANT_COMPUTE` in `quant_assets/definitions.py::build_resources`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import dagster as dg

from quant_resources.errors import QuantError

T = TypeVar("T")
R = TypeVar("R")


class ComputeError(QuantError):
    """The compute cluster cannot be reached."""


class Compute(dg.ConfigurableResource):
    """Runs `fn` over items; yields (index of the item, result) as each one finishes."""

    @property
    def distributed(self) -> bool:
        return False

    def map_unordered(
        self, fn: Callable[[T], R], items: Sequence[T], *, name: str = "task"
    ) -> Iterator[tuple[int, R]]:
        raise NotImplementedError


class InProcessCompute(Compute):
    """Every item in this process, in order."""

    def map_unordered(
        self, fn: Callable[[T], R], items: Sequence[T], *, name: str = "task"
    ) -> Iterator[tuple[int, R]]:
        for index, item in enumerate(items):
            yield index, fn(item)


class DaskCompute(Compute):
    """Every item a task on the Dask distributed cluster whose scheduler is `scheduler`."""

    scheduler: str
    connect_timeout_s: float = 30.0

    @property
    def distributed(self) -> bool:
        return True

    def map_unordered(
        self, fn: Callable[[T], R], items: Sequence[T], *, name: str = "task"
    ) -> Iterator[tuple[int, R]]:
        from distributed import Client, as_completed

        try:
            client = Client(self.scheduler, timeout=self.connect_timeout_s, set_as_default=False)
        except OSError as exc:
            raise ComputeError(
                f"cannot reach the Dask scheduler at {self.scheduler} ({exc}); start it "
                "(`dask scheduler`, docs/deployment.md) or set QUANT_COMPUTE=inprocess"
            ) from exc
        try:
            # Unique keys: two runs on one cluster never share (or reuse) each other's results.
            run = uuid.uuid4().hex[:12]
            futures = [
                client.submit(fn, item, key=f"{name}-{index}-{run}", pure=False)
                for index, item in enumerate(items)
            ]
            position = {future.key: index for index, future in enumerate(futures)}
            for future in as_completed(futures, loop=client.loop):
                yield position[future.key], future.result()
        finally:
            client.close()


def compute_for(kind: str, scheduler: str | None) -> Compute:
    """The compute named by `QUANT_COMPUTE` ("inprocess" or "dask")."""
    if kind == "dask":
        if not scheduler:
            raise ComputeError("QUANT_COMPUTE=dask needs QUANT_DASK_SCHEDULER (tcp://host:8786)")
        return DaskCompute(scheduler=scheduler)
    return InProcessCompute()


__all__ = ["Compute", "ComputeError", "DaskCompute", "InProcessCompute", "compute_for"]
