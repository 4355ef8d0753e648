"""Discovery: scanner configs (YAML in `configs/scanners/{universe}.yaml`) and their evaluation.

A scanner keeps the source's symbols that pass its filters as of a date, ranks them
and keeps the top N. Candidates are the union over the universe's scanners, each with
the rule values that admitted it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

import pydantic
import yaml

from quant_resources.errors import ConfigError
from quant_resources.schema import ASSET_CLASSES, SymbolInfo
from quant_resources.symbols import validate_name


class ScannerConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)

    name: str
    asset_classes: list[Literal["crypto", "equity"]] = list(ASSET_CLASSES)
    exchanges: list[str] | None = None
    min_history_days: int = pydantic.Field(default=0, ge=0)
    min_median_dollar_volume: float = pydantic.Field(default=0.0, ge=0)
    rank_by: Literal["median_dollar_volume", "history_days"] = "median_dollar_volume"
    top_n: int = pydantic.Field(default=100, ge=1)

    @pydantic.field_validator("min_median_dollar_volume", mode="before")
    @classmethod
    def _int_is_a_number(cls, value: object) -> object:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class UniverseConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)

    universe: str
    description: str = ""
    scanners: list[ScannerConfig] = pydantic.Field(min_length=1)


def available_universes(config_dir: Path) -> list[str]:
    return sorted(p.stem for p in (config_dir / "scanners").glob("*.yaml"))


def load_universe(config_dir: Path, universe: str) -> UniverseConfig:
    """Load and validate `configs/scanners/{universe}.yaml`, with one-line errors."""
    validate_name(universe, "universe")
    path = config_dir / "scanners" / f"{universe}.yaml"
    if not path.exists():
        known = ", ".join(available_universes(config_dir)) or "none"
        raise ConfigError(
            f"unknown universe {universe!r}: no scanner config {path} (available: {known}); "
            "set QUANT_UNIVERSE or add the file"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"scanner config {path} is not valid YAML: {exc}") from None
    try:
        config = UniverseConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"scanner config {path} is invalid: {problems}") from None
    if config.universe != universe:
        raise ConfigError(f"scanner config {path} names universe {config.universe!r}, expected {universe!r}")
    return config


def scan_many(
    config: UniverseConfig, symbols: list[SymbolInfo], dates: list[dt.date]
) -> dict[dt.date, dict]:
    """The candidates document of each date.

    Static rules (asset class, exchange, liquidity) and the ranking are applied once per
    scanner; per date only the history rule remains, so a long range stays cheap.
    Document: {"as_of", "universe", "scanners": {name: rules}, "candidates": [...]}, the
    candidates sorted by exchange and symbol, each with the rule values that admitted it.
    """
    prepared = []
    for scanner in config.scanners:
        eligible = [
            info
            for info in symbols
            if info.active
            and info.asset_class in scanner.asset_classes
            and (scanner.exchanges is None or info.exchange in scanner.exchanges)
            and info.median_dollar_volume >= scanner.min_median_dollar_volume
        ]
        if scanner.rank_by == "median_dollar_volume":
            eligible.sort(key=lambda i: (-i.median_dollar_volume, i.key))
        else:  # older listings first: more history on every date
            eligible.sort(key=lambda i: (i.genesis_date, i.key))
        prepared.append((scanner, eligible))
    rules = {
        s.name: s.model_dump(mode="json", exclude={"name"}) for s in config.scanners
    }
    documents: dict[dt.date, dict] = {}
    for as_of in dates:
        admitted: dict[str, dict] = {}
        for scanner, eligible in prepared:
            rank = 0
            for info in eligible:
                history_days = (as_of - info.genesis_date).days + 1
                if history_days < max(scanner.min_history_days, 1):
                    continue
                rank += 1
                record = admitted.setdefault(
                    info.key,
                    {
                        "exchange": info.exchange,
                        "symbol": info.symbol,
                        "asset_class": info.asset_class,
                        "genesis_date": info.genesis_date.isoformat(),
                        "history_days": history_days,
                        "median_dollar_volume": info.median_dollar_volume,
                        "admitted_by": [],
                    },
                )
                record["admitted_by"].append({"scanner": scanner.name, "rank": rank})
                if rank >= scanner.top_n:
                    break
        documents[as_of] = {
            "as_of": as_of.isoformat(),
            "universe": config.universe,
            "scanners": rules,
            "candidates": [admitted[k] for k in sorted(admitted)],
        }
    return documents
