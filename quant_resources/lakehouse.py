"""The read-write lakehouse resource: the only writer of `data/lakehouse/` and of the
day's candidates in `data/export/`.

It owns the per-symbol locks (`HostLock`: POSIX locks that hold across the hosts sharing
the lakehouse, quant_resources/locks.py), the atomic merge of new bars into a symbol's Parquet file,
the catalog and registry updates, the candidates files, and the gate through which the
feature table is committed. Paths come from `StorageLayout`. Domain rules (what to
fetch, how to clean, how to score, how to compute and commit indicators) live in
`quant_assets`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import numpy as np
import polars as pl

from quant_resources.atomic import (
    TMP_MARKER,
    atomic_write_json,
    atomic_write_many,
    atomic_write_parquet,
    host_name,
    read_json,
    temp_writer,
)
from quant_resources.errors import QuantError
from quant_resources.layout import StorageLayout
from quant_resources.locks import HostLock
from quant_resources.schema import OHLCV_COLUMNS, OHLCV_SCHEMA, SymbolInfo, symbols_frame
from quant_resources.symbols import symbol_key

CATALOG_VERSION = 1
LOCK_TIMEOUT_S = 600
T = TypeVar("T")


class LakehouseError(QuantError):
    """A lakehouse file that cannot be read or written."""


def empty_catalog() -> dict[str, Any]:
    return {"version": CATALOG_VERSION, "symbols": {}, "errors": {}, "meta": {}}


class Lakehouse(dg.ConfigurableResource):
    """Read-write access to `{data_dir}/lakehouse`. Given only to data-cycle assets."""

    data_dir: str
    locks: str = "auto"  # QUANT_LOCKS: auto, posix or flock (quant_resources/locks.py)

    # -- paths (shorthands of the layout) ------------------------------------
    @property
    def layout(self) -> StorageLayout:
        return StorageLayout(Path(self.data_dir))

    @property
    def root(self) -> Path:
        return self.layout.lakehouse_dir

    @property
    def ohlcv_dir(self) -> Path:
        return self.layout.ohlcv_dir

    @property
    def catalog_path(self) -> Path:
        return self.layout.catalog_path

    @property
    def symbols_path(self) -> Path:
        return self.layout.symbols_path

    @property
    def quarantine_dir(self) -> Path:
        return self.layout.quarantine_dir

    @property
    def export_dir(self) -> Path:
        return self.layout.export_dir

    @property
    def features_table(self) -> Path:
        return self.layout.feature_table()

    def ohlcv_path(self, exchange: str, symbol: str) -> Path:
        """The file of one symbol; the names are validated before they become a path."""
        return self.layout.ohlcv_path(exchange, symbol)

    def ohlcv_files(self) -> list[Path]:
        if not self.ohlcv_dir.exists():
            return []
        return sorted(p for p in self.ohlcv_dir.glob("*_1d.parquet") if not p.name.startswith("."))

    # -- locks -------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """A lock on `name`, exclusive between threads, processes and hosts (`HostLock`)."""
        with HostLock(self.layout.lock_path(name), timeout=LOCK_TIMEOUT_S, mode=self.locks):
            yield

    def check_writable(self) -> None:
        self._check_writable()

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete temp files of writers that no longer run (a SIGKILL between write and rename).

        A temp file is named `.{file}.tmp-{pid}@{host}-{random}`; it is stale when it is this
        host's and its pid is gone. Another host's are left to that host: on a shared
        lakehouse, its pid says nothing here. Published files are never touched.
        """
        removed = []
        here = host_name()
        for folder in (self.root, self.ohlcv_dir):
            if not folder.exists():
                continue
            for tmp in folder.glob(f".*{TMP_MARKER}*"):
                writer = temp_writer(tmp.name)
                if writer is None or writer[1] not in (None, here):
                    continue
                if not _pid_alive(writer[0]):
                    with contextlib.suppress(FileNotFoundError):
                        tmp.unlink()
                        removed.append(tmp)
        return removed

    def _check_writable(self) -> None:
        folder = self.root
        try:
            for folder in (self.root, self.ohlcv_dir):
                folder.mkdir(parents=True, exist_ok=True)
                probe = folder / f".write-probe-{os.getpid()}-{threading.get_ident()}"
                probe.write_bytes(b"")
                probe.unlink()
        except OSError as exc:
            raise LakehouseError(
                f"the lakehouse folder {folder} is not writable ({exc.strerror}); "
                "fix its permissions or point QUANT_DATA_DIR elsewhere. Nothing was changed."
            ) from exc

    # -- bars --------------------------------------------------------------
    def read_ohlcv(self, exchange: str, symbol: str) -> pl.DataFrame | None:
        """The symbol's bars, or None when it has no file yet."""
        path = self.ohlcv_path(exchange, symbol)
        if not path.exists():
            return None
        return read_ohlcv_file(path)

    def read_ohlcv_versioned(self, exchange: str, symbol: str) -> tuple[pl.DataFrame | None, tuple | None]:
        """The symbol's bars and the file's (mtime_ns, size, inode), to hand back to `merge_bars`."""
        path = self.ohlcv_path(exchange, symbol)
        try:
            before = path.stat()
        except FileNotFoundError:
            return None, None
        frame = read_ohlcv_file(path)
        return frame, (before.st_mtime_ns, before.st_size, before.st_ino)

    def merge_bars(
        self,
        exchange: str,
        symbol: str,
        new_bars: pl.DataFrame,
        known: tuple[pl.DataFrame | None, tuple | None] | None = None,
    ) -> pl.DataFrame:
        """Merge `new_bars` into the symbol's file under its lock and publish atomically.

        A timestamp present in both takes the new bar (a source may revise); every other
        existing row is kept, so concurrent writers never lose a row. `known` is what
        `read_ohlcv_versioned` returned earlier: reused only when the file has not changed
        since (same mtime, size and inode), else the file is read again under the lock.
        Returns the merged frame.
        """
        path = self.ohlcv_path(exchange, symbol)
        with self.lock(symbol_key(exchange, symbol)):
            try:
                # fstat of an opened file, not stat of the path: on NFS an open revalidates
                # with the server (close-to-open), a stat may answer from a cache that has
                # not seen another host's rename yet.
                with open(path, "rb") as handle:
                    stat = os.fstat(handle.fileno())
                version = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            except FileNotFoundError:
                version = None
            if known is not None and known[1] == version and (version is None) == (known[0] is None):
                existing = known[0]
            else:
                existing = read_ohlcv_file(path) if version is not None else None
            merged = merge_frames(existing, new_bars)
            if existing is None or not merged.equals(existing):
                atomic_write_parquet(path, merged)
        return merged

    # -- catalog -----------------------------------------------------------
    def read_catalog(self) -> dict[str, Any]:
        try:
            catalog = read_json(self.catalog_path, default=None)
        except ValueError as exc:
            raise LakehouseError(
                f"the catalog {self.catalog_path} is not valid JSON ({exc}); restore it with "
                "`dvc checkout data/lakehouse` or delete it and run `quant audit` to rebuild it"
            ) from exc
        if catalog is None:
            return empty_catalog()
        for key in ("symbols", "errors", "meta"):
            catalog.setdefault(key, {})
        return catalog

    def update_catalog(
        self,
        entries: dict[str, dict[str, Any]] | None = None,
        errors: dict[str, dict[str, Any]] | None = None,
        meta: dict[str, Any] | None = None,
        remove: Iterable[str] = (),
        remove_errors: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Merge entries into the catalog under its lock; the newer file's entry wins.
        `remove_errors` drops errors that no longer hold (a skipped file fixed or removed)."""
        self._check_writable()
        with self.lock("catalog"):
            catalog = self.read_catalog()
            symbols = catalog["symbols"]
            for key, entry in (entries or {}).items():
                old = symbols.get(key)
                if old is None or entry.get("file_mtime_ns", 0) >= old.get("file_mtime_ns", 0):
                    symbols[key] = entry
                catalog["errors"].pop(key, None)
            for key, error in (errors or {}).items():
                catalog["errors"][key] = error
            for key in remove:
                symbols.pop(key, None)
            for key in remove_errors:
                catalog["errors"].pop(key, None)
            if meta:
                catalog["meta"].update(meta)
            catalog["updated_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            atomic_write_json(self.catalog_path, catalog)
            return catalog

    # -- candidates ----------------------------------------------------------
    def write_candidates(self, days_and_texts: Iterable[tuple[dt.date, str]]) -> int:
        """Write each day's `export/{date}/candidates.json`; returns the bytes written.

        `days_and_texts` is consumed lazily (a history backfill writes one file per day,
        3653 for 10 years: memory holds one document), and the files are made durable
        together by `atomic_write_many` (two syncs in all, not two fsyncs a file). Each
        file is whole or absent; an I/O error raises, naming the file.
        """
        written = 0

        def files() -> Iterator[tuple[Path, bytes]]:
            nonlocal written
            for day, text in days_and_texts:
                data = text.encode("utf-8")
                written += len(data)
                yield self.layout.candidates_path(day), data

        atomic_write_many(files())
        return written

    # -- features ------------------------------------------------------------
    def write_features(self, commit: Callable[..., T], *args: Any) -> T:
        """Commit to the feature table: `commit(features_table, *args)`.

        The Delta writer (`quant_assets.features.store.update_features`) stays beside the
        indicators it validates, since this package imports nothing of `quant_assets`; it
        is handed the table path here, so the feature table, like every lakehouse file, is
        written only by holders of this resource (the alpha side reads it through
        `LakehouseView`). No file lock is taken: a Delta commit is atomic, and concurrent
        writers are ordered by the Delta log (the writer retries a lost race).
        """
        return commit(self.features_table, *args)

    # -- registry ----------------------------------------------------------
    def read_symbols(self) -> pl.DataFrame | None:
        if not self.symbols_path.exists():
            return None
        with open(self.symbols_path, "rb") as handle:  # one version (see read_ohlcv_file)
            return pl.read_parquet(handle)

    def update_symbols(self, infos: list[SymbolInfo]) -> pl.DataFrame:
        """Upsert symbols into `symbols.parquet` (keyed by exchange and symbol)."""
        with self.lock("symbols"):
            new = symbols_frame(infos)
            old = self.read_symbols()
            if old is not None:
                # A registry written before a column existed (delisting_date) gets it empty.
                missing = [pl.lit(None, dtype).alias(name) for name, dtype in new.schema.items() if name not in old.columns]
                new = pl.concat([old.with_columns(missing).select(new.columns).cast(new.schema), new])
            registry = new.unique(["exchange", "symbol"], keep="last").sort(["exchange", "symbol"])
            if old is None or not registry.equals(old):
                atomic_write_parquet(self.symbols_path, registry)
            return registry


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_ohlcv_file(path: Path) -> pl.DataFrame:
    """Read one lakehouse file, with an error naming it when it is damaged.

    Through one open handle: polars given a path may open it more than once, and a writer
    renaming a new version into place in between (another process, or another host) would
    hand it the footer of one version and the pages of the other."""
    try:
        with open(path, "rb") as handle:
            frame = pl.read_parquet(handle, columns=list(OHLCV_COLUMNS))
    except Exception as exc:  # polars raises several types for a damaged file
        raise LakehouseError(
            f"cannot read lakehouse file {path}: {exc.__class__.__name__}: {str(exc)[:200]}; "
            "run `quant audit` to quarantine it, then `quant repair` to re-fetch it"
        ) from exc
    return frame.cast(OHLCV_SCHEMA)


def _strictly_after(existing: pl.DataFrame, new_bars: pl.DataFrame) -> bool:
    """Both sorted and unique, the new bars all after the file's last: the daily append."""
    held, stamps = existing["timestamp"].to_numpy(), new_bars["timestamp"].to_numpy()
    in_order = np.concatenate([held, stamps]) if stamps.size else held
    return bool(np.all(np.diff(in_order) > 0))


def merge_frames(existing: pl.DataFrame | None, new_bars: pl.DataFrame) -> pl.DataFrame:
    """Existing bars and new ones, one bar per timestamp (the new bar wins), sorted."""
    new_bars = new_bars.select(OHLCV_COLUMNS).cast(OHLCV_SCHEMA)
    if existing is None or existing.height == 0:
        return new_bars.unique("timestamp", keep="last").sort("timestamp")
    existing = existing.select(OHLCV_COLUMNS)
    if _strictly_after(existing, new_bars):
        # Appending gives the same frame as the general merge below, without hashing and
        # sorting ten years of bars for one new bar.
        return pl.concat([existing, new_bars])
    both = pl.concat([existing, new_bars])
    return both.unique("timestamp", keep="last", maintain_order=True).sort("timestamp")
