"""IO managers of the alpha side: the read-only boundary and the run folders.

- `ReadOnlyLakehouseIOManager` hands alpha assets a `LakehouseView` of the lakehouse
  (catalog, files, candidates of the partition day) and refuses every store with a
  `PermissionError` naming the asset and the path.
- `RunArtifactIOManager` stores alpha outputs in `data/runs/{run_id}/` (one file per
  asset, named by the asset's `artifact` metadata) and never overwrites a file that
  belongs to another run. When a run succeeds, `seal` makes its folder read-only: a
  `.finished` marker, files 0444, folders 0555. Every writer checks the marker
  (`check_run_folder_writable`), so a finished folder is refused in code even for root,
  whom mode bits do not stop. With `runs_url` (QUANT_RUNS_URL, `s3://bucket/prefix`)
  `archive` then uploads the sealed folder (`push_run_folder`): the seal stays the
  commit point, an upload failure is reported and retried by `quant runs push`, and
  `fetch_run_folder` brings a folder that is not on this disk back from the bucket.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from quant_resources.atomic import (
    atomic_copy,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    read_json,
)
from quant_resources.errors import QuantError
from quant_resources.layout import StorageLayout, run_folder
from quant_resources.symbols import safe_child, validate_name

OWNER_FILE = ".run_id"
SEAL_FILE = ".finished"  # a run folder holding it is finished: read-only, never written again
READ_ONLY_FILE, READ_ONLY_DIR = 0o444, 0o555


def check_run_folder_writable(run_dir: Path, run_id: str) -> None:
    """Raise PermissionError unless `run_dir` may receive files of run `run_id`: it is not
    owned by another run and not finished (sealed). A folder that does not exist yet is fine."""
    owner = run_dir / OWNER_FILE
    if owner.exists():
        found = owner.read_text().strip()
        if found != run_id:
            raise PermissionError(f"{run_dir} belongs to run {found}, not {run_id}: refusing to write into it")
    seal = run_dir / SEAL_FILE
    if seal.exists():
        finished = (read_json(seal, default=None) or {}).get("finished_at", "earlier")
        raise PermissionError(
            f"run {run_id} finished ({finished}): its folder {run_dir} is read-only and is never "
            "written again; start a new run (quant alpha) or reproduce it (quant reproduce)"
        )


def seal_run_folder(run_dir: Path, run_id: str) -> None:
    """Mark `run_dir` finished and make it read-only on disk (files 0444, folders 0555).

    The marker comes first: from then on writers refuse the folder, whatever the mode bits.
    Idempotent.
    """
    if not run_dir.is_dir():
        return
    if not (run_dir / SEAL_FILE).exists():
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        atomic_write_json(run_dir / SEAL_FILE, {"run_id": run_id, "finished_at": stamp})
    for folder, dirs, files in os.walk(run_dir, topdown=False):
        for name in files:
            os.chmod(os.path.join(folder, name), READ_ONLY_FILE)
        for name in dirs:
            os.chmod(os.path.join(folder, name), READ_ONLY_DIR)
    os.chmod(run_dir, READ_ONLY_DIR)


@dataclass(frozen=True)
class LakehouseView:
    """Read-only access to the lakehouse as the data cycle left it, for one partition day."""

    data_dir: Path
    day: dt.date | None

    @property
    def layout(self) -> StorageLayout:
        return StorageLayout(self.data_dir)

    @property
    def root(self) -> Path:
        return self.layout.lakehouse_dir

    def catalog(self) -> dict[str, Any]:
        catalog = read_json(self.layout.catalog_path, default=None)
        if catalog is None:
            raise QuantError(
                f"the lakehouse at {self.root} has no catalog.json: run the data cycle first "
                "(quant data, or quant backfill)"
            )
        return catalog

    def candidates(self) -> dict[str, Any]:
        if self.day is None:
            raise QuantError("candidates need a partition day")
        path = self.layout.candidates_path(self.day)
        document = read_json(path, default=None)
        if document is None:
            raise QuantError(
                f"no candidates for {self.day.isoformat()}: {path} is missing; run the data cycle "
                f"for that day first (quant data --date {self.day.isoformat()})"
            )
        return document

    def ohlcv_path(self, exchange: str, symbol: str) -> Path:
        return self.layout.ohlcv_path(exchange, symbol)

    @property
    def features_table(self) -> Path:
        return self.layout.feature_table()


class ReadOnlyLakehouseIOManager(dg.ConfigurableIOManager):
    """Loads lakehouse assets as a read-only `LakehouseView`; storing raises PermissionError."""

    data_dir: str

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        key = context.asset_key.to_user_string() if context.has_asset_key else context.name
        raise PermissionError(
            f"asset {key} may not write the lakehouse at {StorageLayout(Path(self.data_dir)).lakehouse_dir}: "
            "the alpha cycle reads it read-only; write run artifacts through RunArtifactIOManager"
        )

    def load_input(self, context: dg.InputContext) -> LakehouseView:
        day = None
        if context.has_asset_partitions:
            window = context.asset_partitions_time_window
            day = (window.end - dt.timedelta(days=1)).date()
        return LakehouseView(Path(self.data_dir), day)


@dataclass
class Artifact:
    """An alpha output: the main payload plus extra files for the same run folder.

    payload: a polars DataFrame (written as Parquet) or a JSON-ready dict.
    files: name -> bytes or a source Path (copied), written before the main file.
    run_dir: set when loaded, the run folder it came from.
    """

    payload: Any
    files: dict[str, bytes | Path] = field(default_factory=dict)
    run_dir: Path | None = None


class RunArtifactIOManager(dg.ConfigurableIOManager):
    """Stores each alpha output in `{runs_dir}/{run_id}/{artifact}`; never overwrites another run's files."""

    runs_dir: str
    runs_url: str | None = None  # s3://bucket/prefix: sealed folders are archived there

    def run_dir(self, run_id: str) -> Path:
        return run_folder(self.runs_dir, run_id)

    def _claim(self, run_dir: Path, run_id: str) -> None:
        check_run_folder_writable(run_dir, run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        owner = run_dir / OWNER_FILE
        if not owner.exists():
            atomic_write_bytes(owner, run_id.encode())

    def seal(self, run_id: str) -> Path:
        """Make the folder of the finished run `run_id` read-only (`seal_run_folder`)."""
        run_dir = self.run_dir(run_id)
        seal_run_folder(run_dir, run_id)
        return run_dir

    def archive(self, run_id: str, log: Any, instance: dg.DagsterInstance | None = None) -> str | None:
        """Upload the sealed folder of `run_id` to `runs_url`; its URL, or None when not
        archived (no `runs_url`, or the upload failed). Never raises: the run is finished
        once sealed. The outcome goes to the run's log and its `quant/archive` tag."""
        if not self.runs_url:
            return None
        try:
            done = push_run_folder(self.runs_url, self.run_dir(run_id))
        except Exception as exc:  # noqa: BLE001 - any failure: reported, the run stays sealed
            log.error(
                f"run folder {self.run_dir(run_id)} is sealed but NOT archived to {self.runs_url}: {exc}. "
                "`quant runs push` uploads every sealed folder the bucket lacks."
            )
            _tag(instance, run_id, f"failed: {str(exc)[:400]}")
            return None
        log.info(f"run folder archived to {done.url} ({done.files} files, {done.bytes} bytes)")
        _tag(instance, run_id, done.url)
        return done.url

    def _filename(self, context: dg.OutputContext | dg.InputContext) -> str:
        metadata = context.definition_metadata or {}
        name = metadata.get("artifact")
        name = getattr(name, "value", name)
        if not name:
            raise QuantError(f"asset {context.asset_key.to_user_string()} has no `artifact` metadata (its file name)")
        return str(name)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        run_id = context.run_id
        run_dir = self.run_dir(run_id)
        self._claim(run_dir, run_id)  # from here on every file in run_dir is this run's
        artifact = obj if isinstance(obj, Artifact) else Artifact(obj)
        for name, content in artifact.files.items():
            target = run_dir
            for part in Path(name).parts:
                target = safe_child(target, validate_name(part, "artifact file"))
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                atomic_copy(content, target)
            else:
                atomic_write_bytes(target, content)
        name = self._filename(context)
        path = safe_child(run_dir, name)
        if isinstance(artifact.payload, pl.DataFrame):
            atomic_write_parquet(path, artifact.payload)
        else:
            atomic_write_json(path, artifact.payload)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> Any:
        upstream = context.upstream_output
        run_dir = self.run_dir(upstream.run_id)
        name = self._filename(upstream)
        path = run_dir / name
        if not path.exists():
            raise QuantError(f"{path} is missing: materialise {upstream.asset_key.to_user_string()} first")
        if name.endswith(".parquet"):
            return Artifact(pl.read_parquet(path), run_dir=run_dir)
        return Artifact(json.loads(path.read_text(encoding="utf-8")), run_dir=run_dir)


# -- run folders on object storage -----------------------------------------------------------
ARCHIVE_TAG = "quant/archive"  # on a Dagster run: where its sealed folder was archived, or why not


def push_run_folder(runs_url: str, run_dir: Path):
    """Upload the sealed folder `run_dir` under `runs_url`, `.finished` last (`ObjectStore`)."""
    from quant_resources.objectstore import ObjectStore

    if not (run_dir / SEAL_FILE).exists():
        raise QuantError(f"{run_dir} is not sealed ({SEAL_FILE} missing): only finished runs are archived")
    return ObjectStore(runs_url).upload_folder(run_dir, run_dir.name, SEAL_FILE)


def archived_runs(runs_url: str) -> set[str]:
    """Run ids whose folder is on the bucket whole (its `.finished` uploaded)."""
    from quant_resources.objectstore import ObjectStore

    return ObjectStore(runs_url).complete_folders(SEAL_FILE)


def fetch_run_folder(runs_url: str, runs_dir: Path, run_id: str) -> Path:
    """Download the archived folder of `run_id` into `runs_dir`, sealed as it was.

    It is assembled in a hidden folder beside its place and renamed into it, so a reader
    never sees half a folder. Each object's path is vetted like an artifact name.
    """
    from quant_resources.objectstore import ObjectStore

    final = run_folder(runs_dir, run_id)
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{run_id}.fetch-{os.getpid()}")

    def check(parts: list[str]) -> None:
        if len(parts) == 1 and parts[0] in (OWNER_FILE, SEAL_FILE):
            return
        for part in parts:
            validate_name(part, "archived file")

    try:
        ObjectStore(runs_url).download_folder(run_id, staging, SEAL_FILE, check)
        owner = staging / OWNER_FILE
        if owner.exists() and owner.read_text().strip() != run_id:
            raise QuantError(f"{runs_url}/{run_id} belongs to run {owner.read_text().strip()}: not fetched")
        seal_run_folder(staging, run_id)
        try:
            os.rename(staging, final)
        except OSError:
            if not final.exists():  # not a fetch by someone else that won the race
                raise
    finally:
        if staging.exists():
            _remove_tree(staging)
    return final


def _remove_tree(root: Path) -> None:
    import shutil

    for folder, _, _ in os.walk(root):
        os.chmod(folder, 0o755)
    shutil.rmtree(root, ignore_errors=True)


def _tag(instance: dg.DagsterInstance | None, run_id: str, value: str) -> None:
    if instance is not None:
        with contextlib.suppress(Exception):  # the log line already says it
            instance.add_run_tags(run_id, {ARCHIVE_TAG: value})
