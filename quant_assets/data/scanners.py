"""Discovery: scanner configs (YAML in `scanners/{universe}.yaml`) and their evaluation.

The configs ship inside the package (`quant_assets/configs/scanners/`, found with
importlib.resources, so an installed wheel has them); `QUANT_CONFIG_DIR` names another
folder holding a `scanners/` of its own.

Point in time: the candidates of day D depend only on what was known at the close of D.
A scanner keeps the symbols that pass its static rules (asset class, exchange), that were
listed at least `min_history_sessions` sessions of their calendar before the end of D
(counted on the calendar from the listing date, so a lakehouse that starts at the history
start still sees years of history), that hold a bar up to D, that were not delisted
before D, and whose trailing median dollar volume (close x volume over the last
`liquidity_window_sessions` bars up to D) reaches `min_median_dollar_volume`; it ranks
them and keeps the top N. Candidates are the union over the universe's scanners, each with
the rule values that admitted it. The source's own (current) liquidity figure is never
used: it would choose 2019's candidates with 2025's volumes.

`universe_pool` is what ingestion fetches before any day is ranked: every listed symbol
the static rules admit and that traded at some point of the window (no liquidity rule:
that would need the future).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pydantic
import yaml

from quant_assets.data.calendar import sessions_between
from quant_resources.errors import ConfigError
from quant_resources.schema import ASSET_CLASSES, SECONDS_PER_DAY, SymbolInfo
from quant_resources.symbols import validate_name


class ScannerConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)

    name: str
    asset_classes: list[Literal["crypto", "equity"]] = list(ASSET_CLASSES)
    exchanges: list[str] | None = None
    min_history_sessions: int = pydantic.Field(default=0, ge=0)  # sessions from the listing to the day
    min_median_dollar_volume: float = pydantic.Field(default=0.0, ge=0)
    liquidity_window_sessions: int = pydantic.Field(default=63, ge=1)  # the trailing median's window
    rank_by: Literal["median_dollar_volume", "history_sessions"] = "median_dollar_volume"
    top_n: int = pydantic.Field(default=100, ge=1)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _renamed_fields(cls, value: object) -> object:
        if isinstance(value, dict) and "min_history_days" in value:
            raise ValueError(
                "min_history_days was renamed min_history_sessions: history is counted in "
                "sessions (bars) of the symbol's calendar up to the day"
            )
        if isinstance(value, dict) and value.get("rank_by") == "history_days":
            raise ValueError("rank_by: history_days was renamed history_sessions")
        return value

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


def _static_match(scanner: ScannerConfig, info: SymbolInfo) -> bool:
    return info.asset_class in scanner.asset_classes and (
        scanner.exchanges is None or info.exchange in scanner.exchanges
    )


def universe_pool(
    config: UniverseConfig, listed: Iterable[SymbolInfo], start: dt.date, end: dt.date
) -> list[SymbolInfo]:
    """The symbols ingestion fetches for the window [start, end], sorted by key.

    Every listed symbol that a scanner's static rules admit (asset class, exchange), that
    was listed by `end` and not delisted before `start`. No liquidity or top-N rule: those
    are decided per day from the lakehouse's bars (`scan_point_in_time`), and deciding them
    now would use the future.
    """
    pool = {
        info.key: info
        for info in listed
        if info.genesis_date <= end
        and (info.delisting_date is None or info.delisting_date >= start)
        and any(_static_match(scanner, info) for scanner in config.scanners)
    }
    return [pool[key] for key in sorted(pool)]


def _rules(config: UniverseConfig) -> dict[str, dict]:
    return {s.name: s.model_dump(mode="json", exclude={"name"}) for s in config.scanners}


def _dump(value: object) -> str:
    # The options of `atomic_write_json(..., indent=None)`, so fragments join into its bytes.
    return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False, default=str)


@dataclass(frozen=True)
class BarHistory:
    """Per symbol (in `keys` order), the epoch days of its bars and, per liquidity window,
    the trailing median dollar volume at each bar (over that bar and the window - 1 bars
    before it, fewer at the start of the history)."""

    keys: list[str]
    days: list[np.ndarray]  # int64 epoch days, sorted, one array per symbol
    medians: dict[int, list[np.ndarray]]  # window -> float64 per symbol, aligned with days


def bar_history(bars: pl.DataFrame, windows: Iterable[int]) -> BarHistory:
    """Rolling medians of close x volume, computed once per symbol and window.

    bars: columns symbol (the catalog key), timestamp (epoch seconds), close, volume; any
    order. A symbol's bars must have unique timestamps (the lakehouse guarantees it).
    """
    windows = sorted(set(windows))
    frame = bars.select(
        pl.col("symbol"),
        (pl.col("timestamp") // SECONDS_PER_DAY).alias("day"),
        (pl.col("close") * pl.col("volume")).alias("dollar_volume"),
    )
    keys, bounds = _symbol_runs(frame)
    if keys != sorted(set(keys)) or not _days_increase(frame["day"].to_numpy(), bounds):
        # Files read in name order are already sorted: a string sort of millions of rows
        # is the costliest step, so it runs only when needed.
        frame = frame.sort(["symbol", "day"])
        keys, bounds = _symbol_runs(frame)
    frame = frame.with_columns(
        [
            pl.col("dollar_volume").rolling_median(window_size=w, min_samples=1).over("symbol").alias(f"m{w}")
            for w in windows
        ]
    )
    all_days = frame["day"].to_numpy()
    days = [all_days[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    medians: dict[int, list[np.ndarray]] = {}
    for w in windows:
        column = frame[f"m{w}"].to_numpy()
        medians[w] = [column[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return BarHistory(keys, days, medians)


def _symbol_runs(frame: pl.DataFrame) -> tuple[list[str], list[int]]:
    """The runs of equal `symbol` values: (symbol of each run, row offsets of their bounds)."""
    runs = frame.select(pl.col("symbol").rle()).unnest("symbol")
    keys = [str(k) for k in runs["value"].to_list()]
    return keys, [0, *np.cumsum(runs["len"].to_numpy().astype(np.int64)).tolist()]


def _days_increase(days: np.ndarray, bounds: list[int]) -> bool:
    step = np.diff(days)
    step[np.array(bounds[1:-1], dtype=np.int64) - 1] = 1  # a new symbol may start anywhere
    return bool((step > 0).all())


def _as_of_matrices(history: BarHistory, day_numbers: np.ndarray) -> tuple[np.ndarray, dict[int, np.ndarray], np.ndarray]:
    """(sessions, medians per window, first bar day) as of each day: shape (days, symbols).

    sessions[d, j] = bars of symbol j up to day d; medians[w][d, j] = the trailing median at
    its last bar up to day d (NaN before its first bar).
    """
    n_days, n_symbols = len(day_numbers), len(history.keys)
    sessions = np.zeros((n_days, n_symbols), dtype=np.int64)
    medians = {w: np.full((n_days, n_symbols), np.nan) for w in history.medians}
    first = np.zeros(n_symbols, dtype=np.int64)
    for j, days in enumerate(history.days):
        count = np.searchsorted(days, day_numbers, side="right")
        sessions[:, j] = count
        first[j] = days[0] if len(days) else 0
        held = count > 0
        for w, per_symbol in history.medians.items():
            medians[w][held, j] = per_symbol[j][count[held] - 1]
    return sessions, medians, first


def _history_sessions(infos: list[SymbolInfo | None], dates: list[dt.date]) -> np.ndarray:
    """Sessions of each symbol's calendar from its listing (genesis) to each date, both
    included; 0 before the listing. Shape (dates, symbols).

    Counted on the calendar, not on the bars held: a lakehouse that starts at the history
    start still knows that a symbol listed years before has years of history. A cumulative
    count S(day) = sessions in [origin, day] per calendar gives count = S(date) - S(genesis - 1).
    """
    listed = [info for info in infos if info is not None]
    origin = min([*(i.genesis_date for i in listed), *dates]) - dt.timedelta(days=2)
    counts = np.zeros((len(dates), len(infos)), dtype=np.int64)
    cumulative: dict[str, np.ndarray] = {}
    for j, info in enumerate(infos):
        if info is None:
            continue
        calendar = info.calendar  # the symbol's exchange calendar (24/7 for crypto)
        if calendar not in cumulative:
            cumulative[calendar] = np.array([sessions_between(origin, d, calendar) for d in dates], dtype=np.int64)
        before = sessions_between(origin, info.genesis_date - dt.timedelta(days=1), calendar)
        counts[:, j] = np.maximum(cumulative[calendar] - before, 0)
    return counts


def scan_point_in_time(
    config: UniverseConfig,
    symbols: dict[str, SymbolInfo],
    history: BarHistory,
    dates: list[dt.date],
) -> Iterator[tuple[dt.date, str, int]]:
    """(date, candidates document as compact JSON text, candidates) for each date.

    symbols: the registry by key (asset class, exchange, delisting date); a symbol with
    bars but no registry entry is skipped. history: the lakehouse's bars (`bar_history`),
    of which only those up to each date are looked at. A symbol delisted before the date
    is out; on and before its delisting date it is in like any other.

    Document: {"as_of", "universe", "scanners": {name: rules}, "candidates": [...]}, the
    candidates sorted by key (EXCHANGE_SYMBOL); each record holds exchange, symbol,
    asset_class, genesis_date (its listing), history_sessions (sessions of its calendar
    from its listing to the date), median_dollar_volume (the trailing median of the first scanner that admitted
    it) and admitted_by [{scanner, rank}]. The text is byte for byte what
    `atomic_write_json(path, document, indent=None)` writes.
    """
    keys = history.keys
    day_numbers = np.array([(d - dt.date(1970, 1, 1)).days for d in dates], dtype=np.int64)
    _, medians, _ = _as_of_matrices(history, day_numbers)
    infos = [symbols.get(key) for key in keys]
    sessions = _history_sessions(infos, dates)
    no_delisting = np.iinfo(np.int64).max
    delisted_after = np.array(
        [
            (info.delisting_date - dt.date(1970, 1, 1)).days if info and info.delisting_date else no_delisting
            for info in infos
        ],
        dtype=np.int64,
    )
    trading = day_numbers[:, None] <= delisted_after[None, :]  # (days, symbols)
    # Per scanner: the admitted column indices of each day, in rank order.
    ranked: list[tuple[ScannerConfig, np.ndarray, np.ndarray]] = []
    for scanner in config.scanners:
        static = np.array([info is not None and _static_match(scanner, info) for info in infos], dtype=bool)
        liquidity = medians[scanner.liquidity_window_sessions]
        eligible = (
            static[None, :]
            & trading
            & (sessions >= max(scanner.min_history_sessions, 1))
            & (liquidity >= scanner.min_median_dollar_volume)
        )
        score = liquidity if scanner.rank_by == "median_dollar_volume" else sessions.astype(np.float64)
        score = np.where(eligible, score, -np.inf)
        # Stable on columns in key order: ties rank by key.
        order = np.argsort(-score, axis=1, kind="stable")[:, : scanner.top_n]
        kept = np.take_along_axis(eligible, order, axis=1)
        ranked.append((scanner, order, kept))
    suffix = f'],"scanners":{_dump(_rules(config))},"universe":{_dump(config.universe)}}}\n'
    # The parts of a record that never change, encoded once per symbol.
    heads = [
        f',"asset_class":{_dump(info.asset_class)},"exchange":{_dump(info.exchange)},"genesis_date":'
        if info
        else ""
        for info in infos
    ]
    tails = [f',"symbol":{_dump(info.symbol)}}}' if info else "" for info in infos]
    genesis = [_dump(info.genesis_date.isoformat()) if info else "" for info in infos]
    scanner_names = [_dump(s.name) for s in config.scanners]
    for d, as_of in enumerate(dates):
        admitted: dict[int, list[str]] = {}
        value: dict[int, float] = {}
        for s, (scanner, order, kept) in enumerate(ranked):
            columns = order[d][kept[d]].tolist()
            liquidity = medians[scanner.liquidity_window_sessions][d].tolist()
            for rank, j in enumerate(columns, start=1):
                if j in admitted:
                    admitted[j].append(f'{{"rank":{rank},"scanner":{scanner_names[s]}}}')
                else:
                    admitted[j] = [f'{{"rank":{rank},"scanner":{scanner_names[s]}}}']
                    value[j] = liquidity[j]
        row = sessions[d].tolist()
        records = [
            f'{{"admitted_by":[{",".join(admitted[j])}]{heads[j]}{genesis[j]},"history_sessions":{row[j]}'
            f',"median_dollar_volume":{value[j]!r}{tails[j]}'
            for j in sorted(admitted)  # keys are sorted: by catalog key, as before
        ]
        yield as_of, f'{{"as_of":"{as_of.isoformat()}","candidates":[{",".join(records)}{suffix}', len(records)


def scan_many(
    config: UniverseConfig, symbols: dict[str, SymbolInfo], history: BarHistory, dates: list[dt.date]
) -> dict[dt.date, dict]:
    """`scan_point_in_time`'s documents as dicts (a long range: stream the text instead)."""
    return {day: json.loads(text) for day, text, _ in scan_point_in_time(config, symbols, history, dates)}
