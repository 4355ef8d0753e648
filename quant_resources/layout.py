"""The storage layout: every path of the lakehouse, the exports and the run folders.

One frozen object built from the data folder spells the storage contract
(docs/lakehouse_contract.md, the DESIGN storage table); settings, the `Lakehouse`
writer, the IO managers and the assets ask it for paths instead of joining names
themselves. Names that come from data (symbols, run ids, feature tables, lock names)
are validated before they become part of a path.

    data/
      lakehouse/                      written by the data cycle only
        symbols.parquet               symbol registry
        catalog.json                  per-symbol catalog
        ohlcv/{EXCHANGE}_{SYMBOL}_1d.parquet
        features/tv_technicals_1d/    Delta table
        quarantine/                   unreadable files moved aside by the audit
        audit/latest.json             the last audit's report
        .locks/{name}.lock            inter-process locks of the writer
      export/{date}/candidates.json   scanner output per day
      export/runs/{run_id}/           audit.jsonl of a data, repair or audit run
      runs/{run_id}/                  an alpha run's folder
      mlflow/mlflow.db                tracking (sqlite + artifacts beside it)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from quant_resources.symbols import ohlcv_filename, safe_child, validate_name

FEATURE_TABLE = "tv_technicals_1d"  # the feature store's Delta table (and its asset's name)
CANDIDATES_FILE = "candidates.json"


def run_folder(runs_dir: Path | str, run_id: str) -> Path:
    """`{runs_dir}/{run_id}`, the run id validated and the folder never left (a symlink
    named like a run cannot point elsewhere)."""
    return safe_child(Path(runs_dir), validate_name(run_id, "run id"))


@dataclass(frozen=True)
class StorageLayout:
    """Every location of the storage contract under `data_dir`. Paths are not created here."""

    data_dir: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))

    # -- the lakehouse -----------------------------------------------------
    @property
    def lakehouse_dir(self) -> Path:
        return self.data_dir / "lakehouse"

    @property
    def symbols_path(self) -> Path:
        return self.lakehouse_dir / "symbols.parquet"

    @property
    def catalog_path(self) -> Path:
        return self.lakehouse_dir / "catalog.json"

    @property
    def ohlcv_dir(self) -> Path:
        return self.lakehouse_dir / "ohlcv"

    def ohlcv_path(self, exchange: str, symbol: str) -> Path:
        """The file of one symbol; the names are validated before they become a path."""
        return safe_child(self.ohlcv_dir, ohlcv_filename(exchange, symbol))

    @property
    def features_dir(self) -> Path:
        return self.lakehouse_dir / "features"

    def feature_table(self, name: str = FEATURE_TABLE) -> Path:
        """The folder of the Delta table `name` (default: the technical-indicator table)."""
        return self.features_dir / validate_name(name, "feature table")

    @property
    def quarantine_dir(self) -> Path:
        return self.lakehouse_dir / "quarantine"

    @property
    def audit_report_path(self) -> Path:
        """The last lakehouse audit's report, read by the next audit to report drift."""
        return self.lakehouse_dir / "audit" / "latest.json"

    @property
    def locks_dir(self) -> Path:
        return self.lakehouse_dir / ".locks"

    def lock_path(self, name: str) -> Path:
        """The lock file of `name` (a symbol key, "catalog", "symbols")."""
        return self.locks_dir / f"{validate_name(name, 'lock')}.lock"

    # -- exports -----------------------------------------------------------
    @property
    def export_dir(self) -> Path:
        return self.data_dir / "export"

    def export_day_dir(self, day: dt.date) -> Path:
        return self.export_dir / day.isoformat()

    def candidates_path(self, day: dt.date) -> Path:
        """`export/{date}/candidates.json`, the scanner output of `day`."""
        return self.export_day_dir(day) / CANDIDATES_FILE

    @property
    def data_runs_dir(self) -> Path:
        return self.export_dir / "runs"

    def data_run_dir(self, run_id: str) -> Path:
        """Where a data, repair or audit run writes its `audit.jsonl`."""
        return self.data_runs_dir / validate_name(run_id, "run id")

    # -- alpha runs --------------------------------------------------------
    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    def run_dir(self, run_id: str) -> Path:
        """The folder of the alpha run `run_id` (see `run_folder`)."""
        return run_folder(self.runs_dir, run_id)

    # -- tracking ----------------------------------------------------------
    @property
    def mlflow_dir(self) -> Path:
        return self.data_dir / "mlflow"

    @property
    def mlflow_db(self) -> Path:
        """The default MLflow backend store (sqlite); artifacts go in a folder beside it."""
        return self.mlflow_dir / "mlflow.db"
