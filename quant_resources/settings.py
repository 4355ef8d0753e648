"""Settings: one object, read from `QUANT_*` environment variables at one selection point.

`get_settings()` returns the settings in force for the current thread or task: an
override installed with `use_settings(...)` (a contextvar, so it never leaks into
another thread or asyncio task), else a fresh read of the environment. Nothing reads
the environment at import time.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime as dt
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from quant_resources.errors import ConfigError
from quant_resources.layout import StorageLayout
from quant_resources.locks import check_mode
from quant_resources.objectstore import split_s3_url

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("synthetic", "files", "binance")
COMPUTES = ("inprocess", "dask")  # where ingestion shards run (quant_resources/compute.py)


def _parse_date(name: str, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a date: use YYYY-MM-DD") from None


def _parse_number(name: str, value: str, kind: type) -> float | int:
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a {kind.__name__}") from None


@dataclass(frozen=True)
class Settings:
    """Everything a run may be configured with. Paths are made absolute on creation."""

    data_dir: Path = Path("data")
    history_start: dt.date = dt.date(2018, 1, 1)
    toxic_threshold: float = 5.0  # a close-to-close return above +500% is toxic
    gap_threshold_days: int = 5  # gaps longer than this many expected sessions are recorded
    freshness_hours: float = 12.0  # a file fetched this recently is not fetched again
    universe: str = "default"
    source: str = "synthetic"
    files_dir: Path | None = None
    # QUANT_CONFIG_DIR: a folder with scanners/{universe}.yaml. None: the scanner configs
    # shipped inside the installed package (quant_assets/configs), checkout or wheel alike.
    config_dir: Path | None = None
    synthetic_symbols: int = 300
    synthetic_seed: int = 7
    binance_base_url: str = "https://data-api.binance.vision"
    mlflow_tracking_uri: str | None = None  # default: sqlite under {data_dir}/mlflow
    # Where `ohlcv` runs its symbol shards: "inprocess" (threads in the run's process, the
    # laptop) or "dask" (a Dask distributed cluster at `dask_scheduler`, e.g. tcp://host:8786).
    compute: str = "inprocess"
    dask_scheduler: str | None = None
    shard_symbols: int = 100  # symbols per shard handed to a cluster worker
    # Shared storage (docs/deployment.md): the lakehouse's lock mode (quant_resources/locks.py),
    # and object-storage URLs (s3://bucket/prefix; the endpoint of a non-AWS server comes
    # from AWS_ENDPOINT_URL) for sealed run folders, MLflow artifacts and the DVC remote.
    locks: str = "auto"
    runs_url: str | None = None
    mlflow_artifacts_url: str | None = None
    dvc_remote: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).absolute())
        if self.config_dir is not None:
            object.__setattr__(self, "config_dir", Path(self.config_dir).absolute())
        if self.files_dir is not None:
            object.__setattr__(self, "files_dir", Path(self.files_dir).absolute())
        if self.source not in SOURCES:
            raise ConfigError(
                f"unknown source {self.source!r}: choose one of {', '.join(SOURCES)} (QUANT_SOURCE)"
            )
        if self.source == "files" and self.files_dir is None:
            raise ConfigError("QUANT_SOURCE=files needs QUANT_FILES_DIR, the folder of exports")
        if self.toxic_threshold <= 0:
            raise ConfigError(f"toxic threshold must be positive, got {self.toxic_threshold}")
        if self.gap_threshold_days < 1:
            raise ConfigError(f"gap threshold must be at least 1 day, got {self.gap_threshold_days}")
        if self.compute not in COMPUTES:
            raise ConfigError(
                f"unknown compute {self.compute!r}: choose one of {', '.join(COMPUTES)} (QUANT_COMPUTE)"
            )
        if self.compute == "dask" and not self.dask_scheduler:
            raise ConfigError(
                "QUANT_COMPUTE=dask needs QUANT_DASK_SCHEDULER, the scheduler's address (tcp://host:8786)"
            )
        if self.shard_symbols < 1:
            raise ConfigError(f"a shard needs at least 1 symbol, got {self.shard_symbols} (QUANT_SHARD_SYMBOLS)")
        if self.synthetic_symbols < 1:
            raise ConfigError(f"synthetic universe needs at least 1 symbol, got {self.synthetic_symbols}")
        check_mode(self.locks)
        if self.runs_url is not None:
            split_s3_url(self.runs_url, "QUANT_RUNS_URL")

    # Paths of the storage contract (docs/lakehouse_contract.md): the layout owns them;
    # the properties below are shorthands for its most used ones.
    @property
    def layout(self) -> StorageLayout:
        return StorageLayout(self.data_dir)

    @property
    def lakehouse_dir(self) -> Path:
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
    def features_dir(self) -> Path:
        return self.layout.features_dir

    @property
    def quarantine_dir(self) -> Path:
        return self.layout.quarantine_dir

    @property
    def export_dir(self) -> Path:
        return self.layout.export_dir

    @property
    def runs_dir(self) -> Path:
        return self.layout.runs_dir

    @property
    def mlflow_dir(self) -> Path:
        return self.layout.mlflow_dir

    @property
    def tracking_uri(self) -> str:
        """QUANT_MLFLOW_TRACKING_URI when set, else `sqlite:///{data_dir}/mlflow/mlflow.db`."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.layout.mlflow_db}"

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read `QUANT_*` variables; unset ones take the defaults above."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, object] = {}
        if v := env.get("QUANT_DATA_DIR"):
            kwargs["data_dir"] = Path(v)
        if v := env.get("QUANT_HISTORY_START"):
            kwargs["history_start"] = _parse_date("QUANT_HISTORY_START", v)
        if v := env.get("QUANT_TOXIC_THRESHOLD"):
            kwargs["toxic_threshold"] = _parse_number("QUANT_TOXIC_THRESHOLD", v, float)
        if v := env.get("QUANT_GAP_THRESHOLD_DAYS"):
            kwargs["gap_threshold_days"] = _parse_number("QUANT_GAP_THRESHOLD_DAYS", v, int)
        if v := env.get("QUANT_FRESHNESS_HOURS"):
            kwargs["freshness_hours"] = _parse_number("QUANT_FRESHNESS_HOURS", v, float)
        if v := env.get("QUANT_UNIVERSE"):
            kwargs["universe"] = v
        if v := env.get("QUANT_SOURCE"):
            kwargs["source"] = v
        if v := env.get("QUANT_FILES_DIR"):
            kwargs["files_dir"] = Path(v)
        if v := env.get("QUANT_CONFIG_DIR"):
            kwargs["config_dir"] = Path(v)
        if v := env.get("QUANT_SYNTHETIC_SYMBOLS"):
            kwargs["synthetic_symbols"] = _parse_number("QUANT_SYNTHETIC_SYMBOLS", v, int)
        if v := env.get("QUANT_SYNTHETIC_SEED"):
            kwargs["synthetic_seed"] = _parse_number("QUANT_SYNTHETIC_SEED", v, int)
        if v := env.get("QUANT_BINANCE_BASE_URL"):
            kwargs["binance_base_url"] = v
        if v := env.get("QUANT_MLFLOW_TRACKING_URI", "").strip():
            kwargs["mlflow_tracking_uri"] = v
        if v := env.get("QUANT_COMPUTE", "").strip():
            kwargs["compute"] = v
        if v := env.get("QUANT_DASK_SCHEDULER", "").strip():
            kwargs["dask_scheduler"] = v
        if v := env.get("QUANT_SHARD_SYMBOLS"):
            kwargs["shard_symbols"] = _parse_number("QUANT_SHARD_SYMBOLS", v, int)
        if v := env.get("QUANT_LOCKS", "").strip():
            kwargs["locks"] = v
        if v := env.get("QUANT_RUNS_URL", "").strip():
            kwargs["runs_url"] = v
        if v := env.get("QUANT_MLFLOW_ARTIFACTS_URL", "").strip():
            kwargs["mlflow_artifacts_url"] = v
        if v := env.get("QUANT_DVC_REMOTE", "").strip():
            kwargs["dvc_remote"] = v
        return cls(**kwargs)


_OVERRIDE: contextvars.ContextVar[Settings | None] = contextvars.ContextVar(
    "quant_settings_override", default=None
)


def get_settings() -> Settings:
    """The settings in force here: the innermost `use_settings` override, else the environment."""
    override = _OVERRIDE.get()
    return override if override is not None else Settings.from_env()


@contextlib.contextmanager
def use_settings(settings: Settings | None = None, **changes: object) -> Iterator[Settings]:
    """Install settings for the current thread or task only; restored on exit.

    `use_settings(data_dir=tmp)` starts from the settings in force and changes fields.
    """
    base = settings if settings is not None else get_settings()
    chosen = base.replace(**changes) if changes else base
    token = _OVERRIDE.set(chosen)
    try:
        yield chosen
    finally:
        _OVERRIDE.reset(token)
