"""Discovery: scanner configs (YAML in `scanners/{universe}.yaml`) and their evaluation.

The configs ship inside the package (`quant_assets/configs/scanners/`, found with
importlib.resources, so an installed wheel has them); `QUANT_CONFIG_DIR` names another
folder holding a `scanners/` of its own.

A scanner keeps the source's symbols that pass its filters as of a date, ranks them
and keeps the top N. Candidates are the union over the universe's scanners, each with
the rule values that admitted it.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
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
    # Calendar days since the listing (`history_days`): a listing age, the same for
    # crypto and equities, which no weekend or holiday shortens.
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


def scanners_dir(config_dir: Path | None) -> Traversable:
    """`{config_dir}/scanners` (QUANT_CONFIG_DIR), else the package's own scanner configs."""
    if config_dir is not None:
        return Path(config_dir) / "scanners"
    return resources.files("quant_assets") / "configs" / "scanners"


def available_universes(config_dir: Path | None) -> list[str]:
    folder = scanners_dir(config_dir)
    if not folder.is_dir():
        return []
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_universe(config_dir: Path | None, universe: str) -> UniverseConfig:
    """Load and validate `scanners/{universe}.yaml` (see `scanners_dir`), with one-line errors."""
    validate_name(universe, "universe")
    path = scanners_dir(config_dir).joinpath(f"{universe}.yaml")
    if not path.is_file():
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


def _prepare(config: UniverseConfig, symbols: list[SymbolInfo]) -> list[tuple[ScannerConfig, list[SymbolInfo]]]:
    """Per scanner, its eligible symbols in rank order: the rules that do not depend on the date."""
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
    return prepared


def _admitted(
    prepared: list[tuple[ScannerConfig, list[SymbolInfo]]], as_of: dt.date
) -> dict[str, tuple[SymbolInfo, list[tuple[str, int]]]]:
    """Symbols admitted on `as_of`, each with its (scanner, rank) admissions in scanner order."""
    admitted: dict[str, tuple[SymbolInfo, list[tuple[str, int]]]] = {}
    for scanner, eligible in prepared:
        # history_days = (as_of - genesis).days + 1 must reach the rule: a bound on genesis.
        latest_genesis = as_of - dt.timedelta(days=max(scanner.min_history_days, 1) - 1)
        rank = 0
        for info in eligible:
            if info.genesis_date > latest_genesis:
                continue
            rank += 1
            admitted.setdefault(info.key, (info, []))[1].append((scanner.name, rank))
            if rank >= scanner.top_n:
                break
    return admitted


def _rules(config: UniverseConfig) -> dict[str, dict]:
    return {s.name: s.model_dump(mode="json", exclude={"name"}) for s in config.scanners}


def scan_days(
    config: UniverseConfig, symbols: list[SymbolInfo], dates: list[dt.date]
) -> Iterator[tuple[dt.date, dict]]:
    """The candidates document of each date, one date at a time (see `scan_many`)."""
    prepared = _prepare(config, symbols)
    rules = _rules(config)
    for as_of in dates:
        admitted = _admitted(prepared, as_of)
        candidates = []
        for key in sorted(admitted):
            info, admissions = admitted[key]
            candidates.append(
                {
                    "exchange": info.exchange,
                    "symbol": info.symbol,
                    "asset_class": info.asset_class,
                    "genesis_date": info.genesis_date.isoformat(),
                    "history_days": (as_of - info.genesis_date).days + 1,
                    "median_dollar_volume": info.median_dollar_volume,
                    "admitted_by": [{"scanner": name, "rank": rank} for name, rank in admissions],
                }
            )
        yield as_of, {"as_of": as_of.isoformat(), "universe": config.universe, "scanners": rules, "candidates": candidates}


def scan_many(
    config: UniverseConfig, symbols: list[SymbolInfo], dates: list[dt.date]
) -> dict[dt.date, dict]:
    """The candidates document of each date.

    Static rules (asset class, exchange, liquidity) and the ranking are applied once per
    scanner; per date only the history rule remains, so a long range stays cheap.
    Document: {"as_of", "universe", "scanners": {name: rules}, "candidates": [...]}, the
    candidates sorted by exchange and symbol, each with the rule values that admitted it.
    A long range holds every document in memory: `scan_days_json` streams them.
    """
    return dict(scan_days(config, symbols, dates))


def _dump(value: object) -> str:
    # The options of `atomic_write_json(..., indent=None)`, so fragments join into its bytes.
    return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False, default=str)


def _record_parts(info: SymbolInfo, admissions: list[tuple[str, int]]) -> tuple[str, int, str]:
    """One candidate record as JSON text before and after its `history_days` value.

    Keys in sorted order: admitted_by, asset_class, exchange, genesis_date, history_days,
    median_dollar_volume, symbol. Returns (text before, genesis date ordinal, text after).
    """
    admitted_by = _dump([{"scanner": name, "rank": rank} for name, rank in admissions])
    before = (
        f'{{"admitted_by":{admitted_by},"asset_class":{_dump(info.asset_class)}'
        f',"exchange":{_dump(info.exchange)},"genesis_date":{_dump(info.genesis_date.isoformat())}'
        ',"history_days":'
    )
    after = f',"median_dollar_volume":{_dump(info.median_dollar_volume)},"symbol":{_dump(info.symbol)}}}'
    return before, info.genesis_date.toordinal(), after


def _admission_dates(prepared: list[tuple[ScannerConfig, list[SymbolInfo]]]) -> list[dt.date]:
    """Sorted dates on which a symbol meets a scanner's history rule (with repeats).

    Which symbols a scanner admits, and their ranks, depend only on how many of these
    dates have passed: between two of them every date has the same admissions.
    """
    return sorted(
        info.genesis_date + dt.timedelta(days=max(scanner.min_history_days, 1) - 1)
        for scanner, eligible in prepared
        for info in eligible
    )


def window_candidate_keys(
    config: UniverseConfig, symbols: list[SymbolInfo], dates: list[dt.date]
) -> set[str]:
    """Every symbol that is a candidate on at least one of `dates`.

    A range run must ingest these, not only the last day's: a symbol ranked out of a
    top-N list later in the range was still a candidate on its earlier days, and the alpha
    cycle of those days snapshots it. Admissions change on a few dates only, so the
    scanners run once per change, not once per day.
    """
    prepared = _prepare(config, symbols)
    admission_dates = _admission_dates(prepared)
    keys: set[str] = set()
    state = -1
    for as_of in dates:
        passed = bisect.bisect_right(admission_dates, as_of)
        if passed != state:
            keys |= set(_admitted(prepared, as_of))
            state = passed
    return keys


def scan_days_json(
    config: UniverseConfig, symbols: list[SymbolInfo], dates: list[dt.date]
) -> Iterator[tuple[dt.date, str, int]]:
    """(date, document as compact JSON text, candidates) for each date, one at a time.

    The text is byte for byte what `atomic_write_json(path, document, indent=None)` writes
    for `scan_days`' document (tests/test_scanners.py proves it). The records are encoded
    once per change of the admissions, and per date only `as_of` and each `history_days`
    are filled in: a 10-year range of a 1000-symbol universe neither holds 3.6 million
    record dicts nor encodes each one again.
    """
    prepared = _prepare(config, symbols)
    admission_dates = _admission_dates(prepared)
    suffix = f'],"scanners":{_dump(_rules(config))},"universe":{_dump(config.universe)}}}\n'
    state, records = -1, []
    for as_of in dates:
        passed = bisect.bisect_right(admission_dates, as_of)
        if passed != state:
            admitted = _admitted(prepared, as_of)
            records = [_record_parts(*admitted[key]) for key in sorted(admitted)]
            state = passed
        ordinal = as_of.toordinal() + 1
        body = ",".join([f"{before}{ordinal - genesis}{after}" for before, genesis, after in records])
        yield as_of, f'{{"as_of":"{as_of.isoformat()}","candidates":[{body}{suffix}', len(records)
