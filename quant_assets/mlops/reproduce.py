"""`quant reproduce RUN_ID`: re-run a past alpha run on the lakehouse it read; compare outputs.

1. Read the run folder: `manifest.json` (as-of day, snapshot parameters, every snapshot
   file's sha256, DVC version), `selection.json`, `optimization.json`, `backtest.json`.
2. Restore that lakehouse into a temporary workspace:
   - **dvc**: the manifest's `dvc_lakehouse_md5`, checked out from the project's DVC cache
     (its default remote for what the cache lacks), used only when each snapshot file it
     holds has the manifest's sha256;
   - **snapshot**: otherwise the run's own copies (`data/` of the run folder), with a
     catalog rebuilt from the manifest. A candidate the run excluded for a level shift
     gets an empty stand-in file: the snapshot plan checks it exists, never reads it.
   Either way `candidates.json` of the day is rebuilt from the manifest: the run planned
   exactly its snapshot files plus its exclusions.
   The feature store (`tv_technicals_1d`, read by the selection at the manifest's
   `feature_store_version`) comes, in this order, from: the DVC-restored table, when it
   can still read that version; the project's lakehouse table at that version (time
   travel, linked read-only into the workspace); otherwise the rows the run stored in its
   `features.parquet` (the selection's) and `backtest_features.parquet` (the ratings
   the backtest's walk-forward read), written into a fresh table of the workspace. A
   table is used only if, at the recorded version, it gives back both files' rows. The
   re-run is pinned to the version chosen (`run_snapshot`'s `feature_version`).
   When the run traded from a previous
   run's weights (a turnover-controlled policy: `optimization.json["previous"]`), a
   stand-in of that previous run goes into the workspace's runs folder
   (`alpha.runs.restore_previous_run`), so the re-run trades from the same weights.
3. Re-run the alpha cycle for the as-of day with the recorded run config (snapshot,
   selection, optimisation, backtest), on an ephemeral Dagster instance, tracking off.
4. Compare the two run folders file by file:
   - by sha256 of the bytes: every file but the two below (returns_matrix.parquet,
     selection.json, optimization.json, weights.parquet, backtest.json, features.parquet,
     backtest_features.parquet, the plots, each
     snapshot file under data/);
   - `manifest.json` on its content fields (as_of, parameters, universe, files with their
     sha256, excluded, lakehouse_fingerprint, and feature_store_version when the features
     were read at the recorded version, not rebuilt from features.parquet): run_id, created_at, git_revision and dvc_lakehouse_md5 describe the run itself;
   - `audit.jsonl` line by line without `at`, `run_id` and `duration_s`;
   - `.run_id` (the folder's owner) and `.finished` (when it was sealed) are not compared.

Run folders are read-only once their run finished (`RunArtifactIOManager.seal`): this
module only reads the original, and the re-run's folder, sealed in its turn, is made
writable again before the temporary workspace is removed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from quant_resources.errors import QuantError
from quant_resources.io_managers import OWNER_FILE, SEAL_FILE
from quant_resources.lakehouse import Lakehouse
from quant_resources.layout import StorageLayout
from quant_resources.schema import ts_to_date
from quant_resources.settings import Settings

MANIFEST_FIELDS = ("as_of", "parameters", "universe", "files", "excluded", "lakehouse_fingerprint")
AUDIT_VOLATILE = ("at", "run_id", "duration_s")
NOT_COMPARED = {OWNER_FILE, SEAL_FILE}  # describe the folder (owner, when sealed), not the run
REPRODUCES_TAG = "quant/reproduces"
BACKTEST_FEATURES_FILE = "backtest_features.parquet"  # defs/alpha/backtest.py writes it


@dataclass
class FileComparison:
    name: str
    how: str  # "bytes" or "content"
    identical: bool
    detail: str = ""


@dataclass
class Reproduction:
    run_id: str
    rerun_id: str
    as_of: str
    source: str  # "dvc" or "snapshot"
    source_detail: str
    workspace: Path
    seconds: float
    comparisons: list[FileComparison] = field(default_factory=list)
    features_detail: str = ""
    fetched_from: str | None = None  # the bucket URL, when the run folder was not on this disk

    @property
    def identical(self) -> bool:
        return bool(self.comparisons) and all(c.identical for c in self.comparisons)

    @property
    def differences(self) -> list[FileComparison]:
        return [c for c in self.comparisons if not c.identical]


def reproduce(
    settings: Settings,
    run_id: str,
    *,
    keep: bool = False,
    dvc: str | None = None,
    instance: dg.DagsterInstance | None = None,
) -> Reproduction:
    """Restore, re-run and compare the alpha run `run_id` of `settings.runs_dir`."""
    from quant_assets import runner
    from quant_resources.tracking import TRACKING_TAG

    original = settings.layout.run_dir(run_id)  # the run id validated before it becomes a path
    fetched_from = None
    if not original.exists() and settings.runs_url:  # run on another host: its archived folder
        from quant_resources.io_managers import fetch_run_folder

        fetch_run_folder(settings.runs_url, settings.runs_dir, run_id)
        fetched_from = f"{settings.runs_url.rstrip('/')}/{run_id}"
    manifest = _read_json(original / "manifest.json", run_id)
    as_of = dt.date.fromisoformat(manifest["as_of"])
    workspace = Path(tempfile.mkdtemp(prefix=f"quant-reproduce-{run_id[:8]}-"))
    try:
        source, detail = _restore(settings, manifest, original, workspace, dvc)
        pin, features_detail = _restore_features(
            settings, manifest, original, StorageLayout(workspace / "data")
        )
        _write_candidates(workspace / "data", manifest)
        rerun_settings = settings.replace(
            data_dir=workspace / "data", history_start=min(settings.history_start, as_of), runs_url=None
        )
        _restore_previous(original, manifest, rerun_settings.runs_dir)
        overrides = recorded_run_config(original, manifest)
        if pin is not None:
            overrides["run_snapshot"]["feature_version"] = pin
        started = time.perf_counter()
        summary = runner.run_alpha(
            rerun_settings,
            as_of,
            overrides=overrides,
            instance=instance or dg.DagsterInstance.ephemeral(),
            tags={TRACKING_TAG: "off", REPRODUCES_TAG: run_id},
        )
        result = Reproduction(
            run_id, summary.run_id, manifest["as_of"], source, detail, workspace,
            time.perf_counter() - started, features_detail=features_detail,
            fetched_from=fetched_from,
        )
        recorded = manifest.get("feature_store_version")
        result.comparisons = compare_runs(
            original,
            rerun_settings.layout.run_dir(summary.run_id),
            with_features=pin is not None and pin == recorded,
        )
        return result
    finally:
        if not keep:
            remove_tree(workspace)


def recorded_run_config(run_dir: Path, manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-asset config of the recorded run: what `runner.run_alpha(overrides=...)` takes."""
    import dataclasses

    from quant_assets.alpha.selection import SelectionParams

    # selected_winners' config: SelectionParams less what the run derives or fixes.
    fields = {f.name for f in dataclasses.fields(SelectionParams)} - {
        "periods_per_year",
        "relax_quality_step",
        "relax_history_factor",
    }
    selection = _read_json(run_dir / "selection.json", run_dir.name)["parameters"]
    optimization = _read_json(run_dir / "optimization.json", run_dir.name)["optimization"]
    backtest = _read_json(run_dir / "backtest.json", run_dir.name)["config"]
    return {
        "run_snapshot": dict(manifest["parameters"]["snapshot"]),
        "selected_winners": {k: v for k, v in selection.items() if k in fields},
        "portfolio_weights": dict(optimization),
        "backtest": dict(backtest),
    }


def _restore_previous(run_dir: Path, manifest: dict[str, Any], runs_dir: Path) -> None:
    """The previous run the original traded from, as a stand-in in the re-run's runs folder."""
    from quant_assets.alpha.runs import restore_previous_run

    path = run_dir / "optimization.json"
    recorded = _read_json(path, run_dir.name) if path.exists() else {}
    if recorded.get("previous"):
        restore_previous_run(
            runs_dir, recorded["previous"], manifest.get("universe"), recorded["policy_hash"]
        )


def compare_runs(original: Path, rerun: Path, *, with_features: bool) -> list[FileComparison]:
    """Every file of either run folder, compared as the module docstring says."""
    names = sorted(
        {str(p.relative_to(original)) for p in original.rglob("*") if p.is_file()}
        | {str(p.relative_to(rerun)) for p in rerun.rglob("*") if p.is_file()}
    )
    out = []
    for name in names:
        if name in NOT_COMPARED:
            continue
        a, b = original / name, rerun / name
        if not a.exists() or not b.exists():
            where = "the original" if a.exists() else "the re-run"
            out.append(FileComparison(name, "bytes", False, f"only in {where}"))
        elif name == "manifest.json":
            out.append(_compare_manifests(a, b, with_features))
        elif name == "audit.jsonl":
            out.append(_compare_audits(a, b))
        else:
            ha, hb = _sha256(a), _sha256(b)
            detail = "" if ha == hb else f"sha256 {ha[:12]}… != {hb[:12]}…"
            out.append(FileComparison(name, "bytes", ha == hb, detail))
    return out


def _compare_manifests(a: Path, b: Path, with_features: bool) -> FileComparison:
    left, right = json.loads(a.read_text()), json.loads(b.read_text())
    fields = MANIFEST_FIELDS + (("feature_store_version",) if with_features else ())
    differing = [f for f in fields if left.get(f) != right.get(f)]
    detail = f"content fields differ: {', '.join(differing)}" if differing else ""
    return FileComparison("manifest.json", "content", not differing, detail)


def _compare_audits(a: Path, b: Path) -> FileComparison:
    def lines(path: Path) -> list[dict[str, Any]]:
        records = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        cleaned = [{k: v for k, v in r.items() if k not in AUDIT_VOLATILE} for r in records]
        return sorted(cleaned, key=lambda r: (r.get("stage", ""), r.get("contract", "")))

    left, right = lines(a), lines(b)
    if left == right:
        return FileComparison("audit.jsonl", "content", True)
    stages = sorted({r["stage"] for r in left + right if r not in left or r not in right})
    return FileComparison("audit.jsonl", "content", False, f"lines differ in: {', '.join(stages)}")


# -- restoring the lakehouse ------------------------------------------------------------
def _restore(
    settings: Settings, manifest: dict[str, Any], run_dir: Path, workspace: Path, dvc: str | None
) -> tuple[str, str]:
    md5 = manifest.get("dvc_lakehouse_md5")
    reason = "the manifest records no DVC version"
    layout = StorageLayout(workspace / "data")
    if md5:
        try:
            restored = StorageLayout(_restore_with_dvc(settings, md5, workspace, dvc).parent)
            mismatched = [
                name
                for name, described in manifest["files"].items()
                if not (restored.ohlcv_dir / name).exists()
                or _sha256(restored.ohlcv_dir / name) != described["sha256"]
            ]
            if not mismatched:
                return "dvc", f"DVC version {md5}"
            reason = f"DVC version {md5} differs from the run's snapshot in {len(mismatched)} file(s)"
        except QuantError as exc:
            reason = f"DVC version {md5} could not be restored ({exc})"
        shutil.rmtree(layout.data_dir, ignore_errors=True)
        shutil.rmtree(workspace / ".dvc", ignore_errors=True)
    _restore_from_snapshot(manifest, run_dir, layout)
    return "snapshot", f"the run's own snapshot files ({reason})"


def _restore_features(
    settings: Settings, manifest: dict[str, Any], run_dir: Path, layout: StorageLayout
) -> tuple[int | None, str]:
    """Make the workspace's feature table hold what the run read; (version to pin, how).

    A table read at the recorded version must give back the rows the run stored in
    `features.parquet`: a table rebuilt from scratch numbers its versions anew, and its
    version V is then other content. Such a table is passed over like a missing one.
    """
    from quant_assets.features.store import version_readable, write_features

    version = manifest.get("feature_store_version")
    table = layout.feature_table()
    stored = run_dir / "features.parquet"
    backtest_stored = run_dir / BACKTEST_FEATURES_FILE
    if version is None:
        return None, "the run recorded no feature store version"
    live = settings.layout.feature_table()
    rejected = []
    for candidate, how in ((table, "the restored lakehouse"), (live, f"{live} (time travel)")):
        if not version_readable(candidate, version):
            rejected.append(f"{how}: version {version} cannot be read")
        elif not (
            _holds_what_the_run_read(candidate, version, manifest, stored)
            and _holds_what_the_backtest_read(candidate, version, manifest, run_dir)
        ):
            rejected.append(f"{how}: version {version} holds other rows than the run read")
        else:
            if candidate == live:
                remove_tree(table)
                table.parent.mkdir(parents=True, exist_ok=True)
                # Read-only by construction: the alpha re-run is given no lakehouse writer.
                table.symlink_to(live, target_is_directory=True)
            return version, f"tv_technicals_1d version {version} of {how}"
    remove_tree(table)
    why = "; ".join(rejected)
    if not stored.exists():
        return None, f"no source of the run's features ({why}; the run stored no features.parquet)"
    rows = pl.read_parquet(stored)
    if rows.height == 0:
        return None, f"{stored} holds no rows ({why})"
    how = "the run's own features.parquet"
    if backtest_stored.exists():
        rows = _with_backtest_rows(rows, pl.read_parquet(backtest_stored))
        how += f" and {BACKTEST_FEATURES_FILE}"
    pinned = write_features(table, rows, rows["date"].min(), rows["date"].max())
    return pinned, f"{how} ({why})"


def _with_backtest_rows(selection_rows: pl.DataFrame, backtest_rows: pl.DataFrame) -> pl.DataFrame:
    """The selection's full rows plus the backtest's (symbol, date, rating) rows, the other
    indicators null: a table of these gives the selection its rows at the as-of day (its
    rows are the latest of each symbol there) and the backtest its ratings."""
    from quant_assets.features.indicators import FEATURE_SCHEMA

    padded = backtest_rows.select(
        pl.col(c).cast(t) if c in backtest_rows.columns else pl.lit(None, dtype=t).alias(c)
        for c, t in FEATURE_SCHEMA.items()
    )
    full = selection_rows.select(pl.col(c).cast(t) for c, t in FEATURE_SCHEMA.items())
    # A (symbol, date) in both keeps the selection's row: the same rating, every column.
    return pl.concat([full, padded]).unique(["symbol", "date"], keep="first", maintain_order=True)


def _holds_what_the_run_read(
    table: Path, version: int, manifest: dict[str, Any], stored: Path
) -> bool:
    if not stored.exists():
        return True  # the run read no features (feature_weight 0): nothing to tell apart
    from quant_assets.features.store import read_features_as_of

    symbols = [d["symbol"] for d in manifest["files"].values()]
    day = dt.date.fromisoformat(manifest["as_of"])
    return read_features_as_of(table, version, day, symbols).equals(pl.read_parquet(stored))


def _holds_what_the_backtest_read(
    table: Path, version: int, manifest: dict[str, Any], run_dir: Path
) -> bool:
    """Whether the table at `version` gives back the rows of `backtest_features.parquet`
    (the same read as the backtest's: its recorded window, the snapshot's symbols)."""
    stored = run_dir / BACKTEST_FEATURES_FILE
    if not stored.exists():
        return True  # a run that read no ratings for its backtest
    from quant_assets.features.store import read_features

    window = _read_json(run_dir / "backtest.json", run_dir.name).get("features") or {}
    if not {"start", "end", "column"} <= set(window):
        return False
    symbols = sorted({d["symbol"] for d in manifest["files"].values()})
    rows = read_features(
        table,
        version=version,
        symbols=symbols,
        start=dt.date.fromisoformat(window["start"]),
        end=dt.date.fromisoformat(window["end"]),
        columns=[window["column"]],
    )
    return rows.equals(pl.read_parquet(stored))


def _restore_with_dvc(settings: Settings, md5: str, workspace: Path, dvc: str | None) -> Path:
    from quant_assets.mlops.dvc import DvcProject, restore_version

    project = DvcProject.containing(settings.data_dir, dvc)
    return restore_version(md5, workspace, project)


def _restore_from_snapshot(manifest: dict[str, Any], run_dir: Path, layout: StorageLayout) -> None:
    ohlcv = layout.ohlcv_dir
    ohlcv.mkdir(parents=True, exist_ok=True)
    symbols: dict[str, dict[str, Any]] = {}
    for name, described in manifest["files"].items():
        source = run_dir / "data" / name
        if not source.exists():
            raise QuantError(
                f"{source} is missing: the run folder lost its snapshot, and no DVC version "
                "of its lakehouse could be restored"
            )
        shutil.copyfile(source, ohlcv / name)
        stamps = pl.read_parquet(source, columns=["timestamp"])["timestamp"]
        exchange, symbol = described["symbol"].split("_", 1)
        symbols[described["symbol"]] = {
            "exchange": exchange,
            "symbol": symbol,
            "asset_class": described.get("asset_class"),
            "data_quality_score": described.get("data_quality_score"),
            "start_date": ts_to_date(stamps.min()).isoformat(),
            "end_date": ts_to_date(stamps.max()).isoformat(),
            "rows": described["rows"],
            "file": f"ohlcv/{name}",
            "level_shifts": [],
            # The quality score as of the run's day needs its dropped rows up to that day.
            "dropped": {"recorded": {manifest["as_of"]: int(described.get("dropped_rows_as_of") or 0)}},
        }
    for key, reason in (manifest.get("excluded") or {}).items():
        exchange, symbol = key.split("_", 1)
        layout.ohlcv_path(exchange, symbol).touch()  # a stand-in: excluded files are never read
        flagged = reason.removeprefix("level shift flagged on ").split(", ")
        symbols[key] = {
            "exchange": exchange,
            "symbol": symbol,
            "end_date": manifest["as_of"],
            "level_shifts": flagged,
        }
    catalog = {"version": 1, "symbols": symbols, "errors": {}, "meta": {"rebuilt_from": "manifest"}}
    # A throwaway lakehouse in the reproduction's workspace: its catalog is rebuilt whole
    # from the manifest (no merge, no `updated_at`), so it is written here, not merged by
    # `Lakehouse.update_catalog`.
    layout.catalog_path.write_text(json.dumps(catalog, indent=2, sort_keys=True))


def _write_candidates(data_dir: Path, manifest: dict[str, Any]) -> None:
    keys = sorted({d["symbol"] for d in manifest["files"].values()} | set(manifest.get("excluded") or {}))
    document = {
        "date": manifest["as_of"],
        "universe": manifest.get("universe"),
        "candidates": [dict(zip(("exchange", "symbol"), k.split("_", 1), strict=True)) for k in keys],
    }
    day = dt.date.fromisoformat(manifest["as_of"])
    Lakehouse(data_dir=str(data_dir)).write_candidates([(day, json.dumps(document, indent=2, sort_keys=True))])


def remove_tree(root: Path) -> None:
    """`rm -rf root`, sealed run folders included: a folder of mode 0555 lets no one but
    root delete what it holds, so every folder is made writable (by its owner) first."""
    if not root.exists():
        return
    for folder, _, _ in os.walk(root):
        with contextlib.suppress(OSError):
            os.chmod(folder, stat.S_IMODE(os.stat(folder).st_mode) | stat.S_IRWXU)
    shutil.rmtree(root, ignore_errors=True)


def _read_json(path: Path, run_id: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QuantError(
            f"run {run_id}: {path} is missing; list the runs with `ls {path.parent.parent}`"
        ) from None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
