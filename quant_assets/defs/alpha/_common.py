"""What the alpha assets share: their audit lines, the run folder and small encoders."""

import base64
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from quant_assets.alpha.audit import append_audit
from quant_assets.mlops.tracking import mirror_audit
from quant_resources.io_managers import LakehouseView, check_run_folder_writable
from quant_resources.schema import ts_to_date_expr
from quant_resources.settings import Settings


def run_dir(settings: Settings, run_id: str) -> Path:
    return settings.layout.run_dir(run_id)  # the folder RunArtifactIOManager writes


def png_markdown(png: bytes, title: str) -> dg.MetadataValue:
    encoded = base64.b64encode(png).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")


def periods_per_year(matrix: pl.DataFrame) -> int:
    dates = matrix["date"]
    return 365 if dates.len() and (dates.dt.weekday() > 5).any() else 252


def audit(settings: Settings, context, stage: str, started: float, **fields: Any) -> dict:
    partition = context.partition_key if context.has_partition_key else None
    record = {
        "stage": stage,
        "asset_key": context.asset_key.to_user_string(),
        "partition": partition,
        "run_id": context.run_id,
        "duration_s": round(time.perf_counter() - started, 4),
        **fields,
    }
    folder = run_dir(settings, context.run_id)
    check_run_folder_writable(folder, context.run_id)
    line = append_audit(folder, record)
    mirror_audit(context, line, folder)
    return line


def audit_contract(
    settings: Settings, context, contract: str, result: dg.AssetCheckResult
) -> None:
    metadata = {k: getattr(v, "value", v) for k, v in (result.metadata or {}).items()}
    folder = run_dir(settings, context.run_id)
    check_run_folder_writable(folder, context.run_id)
    line = append_audit(
        folder,
        {
            "stage": "contract",
            "contract": contract,
            "asset_key": context.asset_key.to_user_string(),
            "partition": context.partition_key if context.has_partition_key else None,
            "run_id": context.run_id,
            "passed": bool(result.passed),
            "failures": metadata.get("failures", 0),
            "rows_checked": metadata.get("rows_checked"),
        },
    )
    mirror_audit(context, line, folder)


def winners_frame(document: dict[str, Any]) -> pl.DataFrame:
    """The winners of a selection.json document as a frame of the L3 contract's columns."""
    return pl.DataFrame(
        document["winners"],
        schema={
            "symbol": pl.String,
            "score": pl.Float64,
            "momentum": pl.Float64,
            "volatility": pl.Float64,
            "cluster": pl.Int64,
        },
    )


def feature_version(view: LakehouseView) -> int | None:
    if not (view.features_table / "_delta_log").exists():
        return None
    try:
        from quant_assets.features.store import current_version

        return current_version(view.features_table)
    except Exception:  # a feature store that cannot be read must not stop the snapshot
        return None


def forward_fill_cases(matrix: pl.DataFrame, closes: dict[str, pl.DataFrame]) -> int:
    """Values in the matrix where the symbol has no bar: a forward fill would put them there."""
    bad = 0
    for symbol, bars in closes.items():
        days = bars.select(ts_to_date_expr().alias("date"))
        present = matrix.select("date", symbol).filter(pl.col(symbol).is_not_nan())
        bad += present.join(days, on="date", how="anti").height
    return bad


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=2, allow_nan=False) + "\n").encode()


def read_json(path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def plot_bytes(plotter, result) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "plot.png"
        plotter(result, path)
        return path.read_bytes()


