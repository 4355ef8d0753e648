"""The embedded synthetic market: a deterministic universe of crypto and equity bars.

This module owns the default `MarketDataSource`. It needs no network and no files, and
the same (seed, symbol, date) always gives the same bar, bit for bit, whatever window
is asked: random draws are made in fixed per-year chunks seeded from (seed, symbol,
year), and common factors from (seed, factor, year).

The universe (symbol `i` of `n_symbols`; a larger universe extends a smaller one):

- 40% crypto on exchange "SYNCX" ("C001USDT", "C002USDT", ...): a bar every calendar
  day, annualised volatility 60-90%, loading on a market and a crypto factor.
- 60% equities on exchange "SYNEQ" ("E001", "E002", ...): a bar on every session of the
  NYSE calendar (exchange-calendars' XNYS, quant_resources/calendars.py: none on weekends
  or NYSE holidays such as 2024-07-04 and 2024-12-25), annualised volatility 20-40%,
  loading on the market and one of two sector factors. The XNYS sessions come from the
  installed exchange-calendars: a release that adds a closure (a day of mourning)
  changes the bars around it.
- About 80% of symbols are listed (genesis) in 2010-2015, the rest between 2018-06 and
  2025-06, after the default history start.
- About 5% *delist* (3 of every block of 64 symbols): they stop trading for good on a
  seeded session between max(genesis, 2018-01-01) + 1 year and 2025-06-30 and have no bar
  after it (`SymbolInfo.delisting_date`), so point-in-time discovery and survivorship are
  exercised by default. Drawn from their own stream: no other bar changes.

Some symbols carry *seeded defects* (toxic spikes, lasting level shifts, gaps, duplicate
bars, high < low, non-positive closes) at deterministic dates, each kind on its own
dates, between max(genesis, 2018-01-01) + 30 days and 2025-06-30.
`SyntheticSource.seeded_defects` says where, so ingestion tests can check the lakehouse
catalog against the truth.

*Late bars* (off unless `late_bars_seed` is set): some runs of 6-9 sessions that a bulk
fetch (a window longer than `late_bars_bulk_days`, 31 by default) leaves out and a targeted
fetch of a short window delivers, as a vendor whose history download misses bars that a
re-request returns. A history backfill then records them as gaps and the gap repair,
which re-fetches exactly the gap's sessions, heals them; the seeded `gap` defects are
real halts and stay open. The model is stateless on purpose: "first fetch" and "later
fetch" are told apart by the window asked, not by memory, so a `quant backfill` and a
later `quant repair` in another process see the same market. `SyntheticSource.late_bars`
says where they are.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import polars as pl

from quant_resources.calendars import calendar_for, session_days
from quant_resources.errors import UnknownSymbolError
from quant_resources.schema import SECONDS_PER_DAY, SymbolInfo, empty_ohlcv
from quant_resources.sources.base import MarketDataSource

CRYPTO_EXCHANGE = "SYNCX"
EQUITY_EXCHANGE = "SYNEQ"
DEFECT_KINDS: tuple[str, ...] = (
    "toxic",
    "level_shift",
    "gap",
    "duplicate",
    "high_low",
    "nonpositive",
)
TOXIC_MULTIPLIER = 8.0  # a spike closes at ~8x the previous close (return ~+700%)
LEVEL_SHIFT_MULTIPLIER = 10.0  # a redenomination multiplies every later price by 10

_EPOCH = dt.date(1970, 1, 1)
_DEFECTS_FROM = dt.date(2018, 1, 1)  # defects sit after max(genesis, this) + 30 days
_DEFECTS_UNTIL = dt.date(2025, 6, 30)  # ... and strictly before this date
# Each defect kind hits this many symbols of every block of 64 (~7%): about 20 symbols
# per kind in the default 300-symbol universe, enough for ingestion tests to count on.
_DEFECTS_PER_BLOCK = 5
# Every defect event gets its own slot of at least this many days; 8-day margins at both
# ends of a slot and 20 days of room for a gap run keep events >= 16 days apart.
_SLOT_DAYS = 60
_SLOT_MARGIN = 8
_EVENT_ROOM = 20

# Tags keep the random streams of parameters, years, factors and defects independent.
_TAG_PARAMS, _TAG_YEAR, _TAG_FACTOR, _TAG_DEFECTS, _TAG_LATE = 101, 202, 303, 404, 505
_TAG_DELIST = 606
_DELISTINGS_PER_BLOCK = 3  # of every 64 symbols (~5%)
_DELIST_FROM = dt.date(2018, 1, 1)  # delistings sit after max(genesis, this) + 365 days
_DELIST_UNTIL = dt.date(2025, 6, 30)  # ... and strictly before this date
_N_FACTORS = 4  # 0 market, 1 and 2 equity sectors, 3 crypto sector
_CARRY_LIMIT = 500_000  # entries of the year-start log-price cache before it is reset


_MASK64 = (1 << 64) - 1
_local = threading.local()


def _key(tag: int, seed: int, a: int, b: int) -> np.ndarray:
    """A 128-bit Philox key naming one random stream: (tag, seed) and (a, b)."""
    # splitmix64 finaliser: nearby seeds and tags give unrelated keys.
    x = (tag * 0x9E3779B97F4A7C15 + seed) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    x ^= x >> 31
    return np.array([x, ((a & 0xFFFF_FFFF) << 32) | (b & 0xFFFF_FFFF)], dtype=np.uint64)


def _generator(tag: int, seed: int, a: int, b: int = 0) -> np.random.Generator:
    """A fresh generator on stream (tag, seed, a, b), for sequential draws."""
    return np.random.Generator(np.random.Philox(key=_key(tag, seed, a, b)))


def _normals(tag: int, seed: int, a: int, b: int, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normals from the start of stream (tag, seed, a, b).

    Philox is counter-based, so re-keying one per-thread generator gives the same numbers
    as a fresh one at a fraction of the cost (creating a generator costs ~30 us, more than
    drawing a year of shocks). Numbers are drawn in order, so a shape (1, n) gives the
    first row of a shape (k, n).
    """
    if (rng := getattr(_local, "rng", None)) is None:
        rng = _local.rng = np.random.Generator(np.random.Philox(key=0))
    rng.bit_generator.state = {
        "bit_generator": "Philox",
        "state": {"counter": np.zeros(4, dtype=np.uint64), "key": _key(tag, seed, a, b)},
        "buffer": np.zeros(4, dtype=np.uint64),
        "buffer_pos": 4,
        "has_uint32": 0,
        "uinteger": 0,
    }
    return rng.standard_normal(shape)


def _epoch_day(day: dt.date) -> int:
    return (day - _EPOCH).days


def _from_epoch_day(day: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=int(day))


@lru_cache(maxsize=1)
def _equity_sessions() -> np.ndarray:
    """Epoch days of the equities' sessions: their exchange's calendar (XNYS), read-only."""
    return session_days(calendar_for(EQUITY_EXCHANGE, "equity")).view(np.int64)


def _next_session(day: int, crypto: bool) -> int:
    """The first session on or after epoch day `day` (crypto: every day is one)."""
    if crypto:
        return day
    sessions = _equity_sessions()
    return int(sessions[np.searchsorted(sessions, day, side="left")])


def _previous_session(day: int, crypto: bool) -> int:
    """The last session on or before epoch day `day`."""
    if crypto:
        return day
    sessions = _equity_sessions()
    return int(sessions[np.searchsorted(sessions, day, side="right") - 1])


def _is_crypto(idx: int) -> bool:
    # Two crypto in every five symbols, so any prefix of the universe is 40% crypto.
    return idx % 5 in (0, 3)


def _symbol_name(idx: int) -> tuple[str, str, bool]:
    """(exchange, symbol, is_crypto) of universe member `idx`, independent of `n_symbols`."""
    crypto_before = 2 * (idx // 5) + (idx % 5 > 0) + (idx % 5 > 3)
    if _is_crypto(idx):
        return CRYPTO_EXCHANGE, f"C{crypto_before + 1:03d}USDT", True
    return EQUITY_EXCHANGE, f"E{idx - crypto_before + 1:03d}", False


@dataclass(frozen=True)
class _SymbolParams:
    idx: int
    exchange: str
    symbol: str
    crypto: bool
    genesis_day: int
    log_p0: float
    mu_d: float  # daily log drift
    vol_d: float  # daily volatility of log returns
    beta_market: float
    beta_sector: float
    beta_idio: float
    sector: int  # factor row of the sector factor
    dollar_volume: float  # median daily dollar volume
    open_gap: float  # open-to-previous-close noise, in units of vol_d
    wick: float  # high/low wick size, in units of vol_d

    @property
    def genesis(self) -> dt.date:
        return _from_epoch_day(self.genesis_day)


_PARAM_BLOCK = 64  # symbols whose parameters are drawn together (one generator per block)


@lru_cache(maxsize=1024)
def _param_block(seed: int, block: int) -> tuple[_SymbolParams, ...]:
    """Parameters of symbols [block * 64, (block + 1) * 64), drawn in one vectorised go.

    Drawing per block rather than per symbol keeps a 1000-symbol listing cheap; a block
    never depends on `n_symbols`, so a larger universe extends a smaller one.
    """
    rng = _generator(_TAG_PARAMS, seed, block)
    # Python floats: scalar arithmetic on numpy scalars would cost more than the draws.
    u = rng.random((7, _PARAM_BLOCK)).tolist()
    z = rng.standard_normal((2, _PARAM_BLOCK)).tolist()
    out = []
    for j in range(_PARAM_BLOCK):
        idx = block * _PARAM_BLOCK + j
        exchange, symbol, crypto = _symbol_name(idx)
        if u[0][j] < 0.2:  # a late listing, after the default history start
            first, last = dt.date(2018, 6, 1), dt.date(2025, 6, 1)
        else:
            first = dt.date(2013, 1, 1) if crypto else dt.date(2010, 1, 1)
            last = dt.date(2015, 12, 31)
        offset = int(u[1][j] * ((last - first).days + 1))
        genesis_day = _next_session(_epoch_day(first) + offset, crypto)
        periods = 365.0 if crypto else 252.0
        if crypto:
            vol_annual = 0.60 + 0.30 * u[2][j]
            beta_market, beta_sector = 0.15 + 0.15 * u[3][j], 0.50 + 0.20 * u[4][j]
            sector = 3
            log10_p0 = -2.0 + 5.0 * u[5][j]
            log10_dollar_volume = 6.5 + 0.9 * z[0][j]
            open_gap = 0.02  # 24/7: the open is the previous close, give or take a tick
        else:
            vol_annual = 0.20 + 0.20 * u[2][j]
            beta_market, beta_sector = 0.35 + 0.25 * u[3][j], 0.25 + 0.20 * u[4][j]
            sector = 1 if u[6][j] < 0.5 else 2
            log10_p0 = 0.7 + 2.0 * u[5][j]
            log10_dollar_volume = 7.0 + 0.8 * z[0][j]
            open_gap = 0.25  # overnight gaps
        mu_annual = 0.03 + 0.08 * z[1][j]
        out.append(
            _SymbolParams(
                idx=idx,
                exchange=exchange,
                symbol=symbol,
                crypto=crypto,
                genesis_day=genesis_day,
                log_p0=log10_p0 * math.log(10.0),
                mu_d=mu_annual / periods,
                vol_d=vol_annual / math.sqrt(periods),
                beta_market=beta_market,
                beta_sector=beta_sector,
                beta_idio=math.sqrt(1.0 - beta_market**2 - beta_sector**2),
                sector=sector,
                dollar_volume=10.0**log10_dollar_volume,
                open_gap=open_gap,
                wick=0.5,
            )
        )
    return tuple(out)


def _symbol_params(seed: int, idx: int) -> _SymbolParams:
    return _param_block(seed, idx // _PARAM_BLOCK)[idx % _PARAM_BLOCK]


@lru_cache(maxsize=256)
def _factor_year(seed: int, year: int) -> np.ndarray:
    """Unit-variance daily factor shocks, shape (factors, calendar days of `year`)."""
    n_days = (dt.date(year + 1, 1, 1) - dt.date(year, 1, 1)).days
    shocks = np.stack(
        [_normals(_TAG_FACTOR, seed, factor, year, (n_days,)) for factor in range(_N_FACTORS)]
    )
    shocks.flags.writeable = False
    return shocks


@lru_cache(maxsize=1024)
def _delistings_block(seed: int, block: int) -> tuple[int | None, ...]:
    """The last session (epoch day) of each symbol of a parameter block that delists, or None."""
    rng = _generator(_TAG_DELIST, seed, block)
    chosen = set(rng.choice(_PARAM_BLOCK, size=_DELISTINGS_PER_BLOCK, replace=False).tolist())
    where = rng.random(_PARAM_BLOCK).tolist()
    out: list[int | None] = []
    for j in range(_PARAM_BLOCK):
        p = _symbol_params(seed, block * _PARAM_BLOCK + j)
        lo = _epoch_day(max(p.genesis, _DELIST_FROM)) + 365
        hi = _epoch_day(_DELIST_UNTIL) - 1
        if j not in chosen or lo >= hi:
            out.append(None)
            continue
        out.append(_previous_session(lo + int(where[j] * (hi - lo)), p.crypto))
    return tuple(out)


def _delisting_day(seed: int, idx: int) -> int | None:
    return _delistings_block(seed, idx // _PARAM_BLOCK)[idx % _PARAM_BLOCK]


# --------------------------------------------------------------------------- defects


@dataclass(frozen=True)
class _DefectPlan:
    """Where one symbol's defects sit, as epoch days (sessions of the symbol's calendar)."""

    toxic: tuple[int, ...] = ()
    level_shift: tuple[int, ...] = ()
    gap: tuple[tuple[int, int], ...] = ()  # (first missing session, last missing session)
    duplicate: tuple[tuple[int, float], ...] = ()  # (day, volume factor of the extra row)
    high_low: tuple[int, ...] = ()
    nonpositive: tuple[tuple[int, float], ...] = ()  # (day, close: 0 or -1 x the close)
    touched_years: frozenset[int] = field(default_factory=frozenset)  # of point defects

    def touches(self, year: int) -> bool:
        # A level shift lasts: it touches its own year and every later one.
        shifted = any(year >= _from_epoch_day(d).year for d in self.level_shift)
        return shifted or year in self.touched_years


@lru_cache(maxsize=1024)
def _defect_kinds_block(seed: int, block: int) -> tuple[frozenset[str], ...]:
    """Which defect kinds hit each symbol of a parameter block.

    Stratified: every kind hits the same number of symbols in every block, so counts per
    kind do not depend on the luck of a seed (about 20 per kind in 300 symbols).
    """
    rng = _generator(_TAG_DEFECTS, seed, block, 1)
    hit: list[set[str]] = [set() for _ in range(_PARAM_BLOCK)]
    for kind in DEFECT_KINDS:
        for j in rng.choice(_PARAM_BLOCK, size=_DEFECTS_PER_BLOCK, replace=False).tolist():
            hit[j].add(kind)
    return tuple(frozenset(kinds) for kinds in hit)


@lru_cache(maxsize=1 << 16)
def _defect_plan(seed: int, idx: int) -> _DefectPlan:
    p = _symbol_params(seed, idx)
    kinds = _defect_kinds_block(seed, idx // _PARAM_BLOCK)[idx % _PARAM_BLOCK]
    rng = _generator(_TAG_DEFECTS, seed, idx)
    counts = {"duplicate": int(rng.integers(2, 4)), "high_low": int(rng.integers(1, 3))}
    events = [kind for kind in DEFECT_KINDS if kind in kinds]
    events = [kind for kind in events for _ in range(counts.get(kind, 1))]
    rng.shuffle(events)
    lo = _epoch_day(max(p.genesis, _DEFECTS_FROM)) + 30
    hi = _epoch_day(_DEFECTS_UNTIL) - 1
    # A late listing leaves too little room: keep only the events that fit their slots.
    events = events[: max(0, (hi - lo) // _SLOT_DAYS)]
    if not events:
        return _DefectPlan()
    slot = (hi - lo) // len(events)
    found: dict[str, list] = {kind: [] for kind in DEFECT_KINDS}
    years: set[int] = set()
    for j, kind in enumerate(events):
        room = slot - 2 * _SLOT_MARGIN - _EVENT_ROOM
        day = lo + j * slot + _SLOT_MARGIN + int(rng.integers(0, room + 1))
        day = _next_session(day, p.crypto)
        years.add(_from_epoch_day(day).year)
        if kind == "gap":
            last = day
            for _ in range(int(rng.integers(8, 13)) - 1):
                last = _next_session(last + 1, p.crypto)
            years.add(_from_epoch_day(last).year)
            found["gap"].append((day, last))
        elif kind == "duplicate":
            found["duplicate"].append((day, 1.0 + float(rng.uniform(0.01, 0.05))))
        elif kind == "nonpositive":
            found["nonpositive"].append((day, 0.0 if rng.random() < 0.5 else -1.0))
        else:
            found[kind].append(day)
    return _DefectPlan(
        toxic=tuple(sorted(found["toxic"])),
        level_shift=tuple(sorted(found["level_shift"])),
        gap=tuple(sorted(found["gap"])),
        duplicate=tuple(sorted(found["duplicate"])),
        high_low=tuple(sorted(found["high_low"])),
        nonpositive=tuple(sorted(found["nonpositive"])),
        touched_years=frozenset(years),
    )


# Rows of a year's value matrix (shape (5, sessions)); a year is (days, values).
_OPEN, _HIGH, _LOW, _CLOSE, _VOLUME = range(5)
_VALUE_COLUMNS = ("open", "high", "low", "close", "volume")


def _apply_defects(
    plan: _DefectPlan, days: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Seed `plan`'s defects into one year of clean bars (`values` changes in place)."""

    def at(day: int) -> int | None:
        i = int(np.searchsorted(days, day))
        return i if i < len(days) and days[i] == day else None

    for shift_day in plan.level_shift:
        later = days >= shift_day
        values[_OPEN : _CLOSE + 1, later] *= LEVEL_SHIFT_MULTIPLIER
        values[_VOLUME, later] /= LEVEL_SHIFT_MULTIPLIER  # a redenomination keeps dollar volume
    for day in plan.toxic:
        if (i := at(day)) is not None:
            values[_CLOSE, i] *= TOXIC_MULTIPLIER
            values[_HIGH, i] = max(values[_HIGH, i], values[_CLOSE, i])
    for day in plan.high_low:
        if (i := at(day)) is not None:
            values[[_HIGH, _LOW], i] = values[[_LOW, _HIGH], i]
    for day, sign in plan.nonpositive:
        if (i := at(day)) is not None:
            values[_CLOSE, i] = sign * values[_CLOSE, i] if sign else 0.0
            # Only the sign is wrong, not the OHLC ordering: one defect, one contract.
            values[_LOW, i] = min(values[_LOW, i], values[_CLOSE, i])
    copies = np.ones(len(days), dtype=np.int64)
    extra_volume = np.ones(len(days))
    for day, factor in plan.duplicate:
        if (i := at(day)) is not None:
            copies[i], extra_volume[i] = 2, factor
    if copies.sum() > len(days):
        order = np.repeat(np.arange(len(days)), copies)
        days, values = days[order], values[:, order]
        second_copy = np.zeros(len(order), dtype=bool)
        second_copy[1:] = order[1:] == order[:-1]
        values[_VOLUME, second_copy] *= extra_volume[order[second_copy]]
    keep = np.ones(len(days), dtype=bool)
    for first, last in plan.gap:
        keep &= (days < first) | (days > last)
    return (days, values) if keep.all() else (days[keep], values[:, keep])


# ------------------------------------------------------------------------- late bars

_LATE_SHARE = 0.25  # chance that a symbol has one late run in a given calendar year
_LATE_SESSIONS = (6, 10)  # sessions per run, [6, 10): above the default gap threshold (5)
_LATE_CLEARANCE = 25  # days kept between a late run and any seeded defect or the genesis


@lru_cache(maxsize=1 << 16)
def _late_run(seed: int, late_seed: int, idx: int, year: int) -> tuple[int, int] | None:
    """The late run of (symbol, year) as (first, last) epoch-day sessions, or None.

    Drawn from its own stream, so turning late bars on changes no other bar; kept clear of
    the seeded defects so a late run never merges with a real halt or hides a spike.
    """
    p = _symbol_params(seed, idx)
    rng = _generator(_TAG_LATE, seed, idx, ((late_seed & 0xFFFFF) << 12) ^ (year & 0xFFF))
    if rng.random() >= _LATE_SHARE:
        return None
    jan1 = _epoch_day(dt.date(year, 1, 1))
    day = _next_session(jan1 + 9 + int(rng.integers(0, 330)), p.crypto)
    last = day
    for _ in range(int(rng.integers(*_LATE_SESSIONS)) - 1):
        last = _next_session(last + 1, p.crypto)
    plan = _defect_plan(seed, idx)
    defect_days = [
        *plan.toxic, *plan.level_shift, *plan.high_low,
        *(d for d, _ in plan.duplicate), *(d for d, _ in plan.nonpositive),
        *(d for g in plan.gap for d in g),
    ]
    near = any(day - _LATE_CLEARANCE <= d <= last + _LATE_CLEARANCE for d in defect_days)
    if near or day < p.genesis_day + _LATE_CLEARANCE:
        return None
    return day, last


def _late_runs(seed: int, late_seed: int, idx: int, first: int, last: int) -> list[tuple[int, int]]:
    """Late runs of a symbol that touch epoch days [first, last], unclipped."""
    years = range(_from_epoch_day(first).year - 1, _from_epoch_day(last).year + 1)
    runs = (_late_run(seed, late_seed, idx, y) for y in years)
    return [r for r in runs if r is not None and r[0] <= last and r[1] >= first]


# ------------------------------------------------------------------------ price paths

# Log close at the start of (seed, idx, year): the chain that ties years together. Kept
# apart from the bar cache so a cold fetch computes each earlier year exactly once.
_LOG_START: dict[tuple[int, int, int], float] = {}


@lru_cache(maxsize=512)
def _calendar(year: int) -> tuple[np.ndarray, np.ndarray]:
    """Epoch days of `year` and which of them are equity sessions (XNYS)."""
    day0 = _epoch_day(dt.date(year, 1, 1))
    days = np.arange(day0, _epoch_day(dt.date(year + 1, 1, 1)), dtype=np.int64)
    sessions = _equity_sessions()
    lo, hi = np.searchsorted(sessions, [days[0], days[-1] + 1])
    equity = np.zeros(len(days), dtype=bool)
    equity[sessions[lo:hi] - day0] = True
    days.flags.writeable = equity.flags.writeable = False
    return days, equity


def _simulate_year(
    seed: int, p: _SymbolParams, year: int, log_start: float, bars: bool = True
) -> tuple[np.ndarray, np.ndarray, float]:
    """Clean bars of one calendar year from `log_start`: (days, values, log close at end).

    `values` rows are open, high, low, close, volume. With `bars=False` only the end level
    is computed (for years before a window). The idiosyncratic shocks are the first row
    of the year's draws, so both modes see the same numbers and the same arithmetic: the
    end level is identical bit for bit, whichever window asked for it.
    """
    factors = _factor_year(seed, year)
    days, equity = _calendar(year)
    n_days = len(days)
    draws = _normals(_TAG_YEAR, seed, p.idx, year, (5, n_days) if bars else (1, n_days))
    session = None if p.crypto else equity
    if p.genesis_day > days[0]:
        session = (days >= p.genesis_day) if session is None else session & (days >= p.genesis_day)
    returns = (
        (p.vol_d * p.beta_market) * factors[0]
        + (p.vol_d * p.beta_sector) * factors[p.sector]
        + (p.vol_d * p.beta_idio) * draws[0]
        + p.mu_d
    )
    if session is not None:
        returns = returns[session]
    # Always the same sequential cumsum from the same start: bit-identical across windows.
    log_close = np.cumsum(np.concatenate(([log_start], returns)))
    log_end = float(log_close[-1])
    if not bars:
        return days[:0], np.empty((5, 0)), log_end
    if session is not None:
        days, draws = days[session], draws[:, session]
    log_prev, log_close = log_close[:-1], log_close[1:]
    # Everything goes through one exp: the volume row holds log(volume) directly, so
    # volume * close is the symbol's dollar volume times a lognormal noise.
    logs = np.empty((5, len(days)))
    np.multiply(draws[1], p.open_gap * p.vol_d, out=logs[_OPEN])
    logs[_OPEN] += log_prev
    wick = p.wick * p.vol_d
    np.maximum(logs[_OPEN], log_close, out=logs[_HIGH])
    logs[_HIGH] += wick * np.abs(draws[2])
    np.minimum(logs[_OPEN], log_close, out=logs[_LOW])
    logs[_LOW] -= wick * np.abs(draws[3])
    logs[_CLOSE] = log_close
    np.multiply(draws[4], 0.4, out=logs[_VOLUME])
    logs[_VOLUME] += math.log(p.dollar_volume)
    logs[_VOLUME] -= log_close
    return days, np.exp(logs, out=logs), log_end


def _log_start(seed: int, p: _SymbolParams, year: int) -> float:
    genesis_year = _from_epoch_day(p.genesis_day).year
    if year <= genesis_year:
        return p.log_p0
    key = (seed, p.idx, year)
    if key in _LOG_START:
        return _LOG_START[key]
    # Walk forward from the latest year whose start is known.
    known = year - 1
    while known > genesis_year and (seed, p.idx, known) not in _LOG_START:
        known -= 1
    level = _log_start(seed, p, known)
    for y in range(known, year):
        _, _, level = _simulate_year(seed, p, y, level, bars=False)
        _remember_start(seed, p.idx, y + 1, level)
    return level


def _remember_start(seed: int, idx: int, year: int, level: float) -> None:
    if len(_LOG_START) > _CARRY_LIMIT:
        _LOG_START.clear()
    _LOG_START[(seed, idx, year)] = level


@lru_cache(maxsize=1024)
def _year_bars(seed: int, idx: int, year: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw bars (defects included) of one symbol and calendar year, read-only."""
    p = _symbol_params(seed, idx)
    days, values, log_end = _simulate_year(seed, p, year, _log_start(seed, p, year))
    _remember_start(seed, idx, year + 1, log_end)
    plan = _defect_plan(seed, idx)
    if plan.touches(year):
        days, values = _apply_defects(plan, days, values)
    days.flags.writeable = values.flags.writeable = False
    return days, values


@lru_cache(maxsize=64)
def _universe(
    seed: int, n_symbols: int
) -> tuple[tuple[SymbolInfo, ...], dict[tuple[str, str], int]]:
    infos = []
    index: dict[tuple[str, str], int] = {}
    today = _epoch_day(_today_utc())
    for idx in range(n_symbols):
        p = _symbol_params(seed, idx)
        delisting = _delisting_day(seed, idx)
        infos.append(
            SymbolInfo(
                exchange=p.exchange,
                symbol=p.symbol,
                asset_class="crypto" if p.crypto else "equity",
                genesis_date=p.genesis,
                median_dollar_volume=p.dollar_volume,
                # The market has no future: a delisting not yet happened is not known.
                delisting_date=_from_epoch_day(delisting) if delisting is not None and delisting <= today else None,
            )
        )
        index[(p.exchange, p.symbol)] = idx
    return tuple(infos), index


def clear_caches() -> None:
    """Forget every memoised parameter, factor path and bar; results do not change.

    For tests that prove a window gives the same bars however it is reached, and for
    long-lived processes that want the memory back.
    """
    for cached in (
        _param_block,
        _factor_year,
        _defect_kinds_block,
        _delistings_block,
        _defect_plan,
        _year_bars,
        _universe,
        _calendar,
        _late_run,
        _equity_sessions,
    ):
        cached.cache_clear()
    _LOG_START.clear()


def _as_date(value: dt.date) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


def _today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


class SyntheticSource(MarketDataSource):
    """The embedded default market: deterministic, offline, with known defects.

    `n_symbols` members (symbol `i` is the same in every universe that includes it);
    `seed` chooses the market. Bars are stamped at 00:00 UTC of the session date and
    exist from the symbol's genesis date up to today (UTC): the synthetic market has no
    future. With `late_bars_seed` set, some bars arrive late (module docstring): a fetch
    of a window longer than `late_bars_bulk_days` leaves them out, a shorter one has them.
    """

    n_symbols: int = 300
    seed: int = 7
    late_bars_seed: int | None = None  # None: every bar on the first fetch (the default)
    late_bars_bulk_days: int = 31

    def list_symbols(self) -> list[SymbolInfo]:
        return list(_universe(self.seed, self.n_symbols)[0])

    def symbol_info(self, exchange: str, symbol: str) -> SymbolInfo | None:
        idx = _universe(self.seed, self.n_symbols)[1].get((exchange, symbol))
        return None if idx is None else _universe(self.seed, self.n_symbols)[0][idx]

    def _index(self, exchange: str, symbol: str) -> int:
        idx = _universe(self.seed, self.n_symbols)[1].get((exchange, symbol))
        if idx is None:
            raise UnknownSymbolError(
                symbol,
                f"no symbol {symbol!r} on exchange {exchange!r} in the synthetic universe "
                f"({self.n_symbols} symbols, seed {self.seed}; exchanges {CRYPTO_EXCHANGE} "
                f"for crypto, {EQUITY_EXCHANGE} for equities): pick one from list_symbols() "
                "or raise QUANT_SYNTHETIC_SYMBOLS",
                source="synthetic",
            )
        return idx

    def fetch_bars(self, exchange: str, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        """Raw bars of `symbol` for sessions in [start, end]; defects are left in on purpose."""
        idx = self._index(exchange, symbol)
        p = _symbol_params(self.seed, idx)
        first = max(_epoch_day(_as_date(start)), p.genesis_day)
        last = min(_epoch_day(_as_date(end)), self._last_day(idx))
        if first > last:
            return empty_ohlcv()
        years = [
            _year_bars(self.seed, idx, y)
            for y in range(_from_epoch_day(first).year, _from_epoch_day(last).year + 1)
        ]
        if len(years) == 1:
            days, values = years[0]
        else:
            days = np.concatenate([y[0] for y in years])
            values = np.concatenate([y[1] for y in years], axis=1)
        lo, hi = int(np.searchsorted(days, first)), int(np.searchsorted(days, last, side="right"))
        days, values = days[lo:hi], values[:, lo:hi]
        asked = _epoch_day(_as_date(end)) - _epoch_day(_as_date(start)) + 1
        if self.late_bars_seed is not None and asked > self.late_bars_bulk_days:
            keep = np.ones(len(days), dtype=bool)
            for run_first, run_last in _late_runs(self.seed, self.late_bars_seed, idx, first, last):
                keep &= (days < run_first) | (days > run_last)
            days, values = days[keep], values[:, keep]
        # Series from int64/float64 arrays already have the OHLCV_SCHEMA dtypes; skipping
        # the schema cast halves the construction cost.
        return pl.DataFrame(
            [pl.Series("timestamp", days * SECONDS_PER_DAY)]
            + [pl.Series(name, values[row]) for row, name in enumerate(_VALUE_COLUMNS)]
        )

    def _last_day(self, idx: int) -> int:
        """The symbol's last bar that exists: today, or its delisting session."""
        today = _epoch_day(_today_utc())
        delisting = _delisting_day(self.seed, idx)
        return today if delisting is None else min(today, delisting)

    def late_bars(
        self,
        exchange: str,
        symbol: str,
        start: dt.date | None = None,
        end: dt.date | None = None,
    ) -> list[tuple[dt.date, dt.date]]:
        """The runs of late bars (first, last session) in [start, end], clipped to it and
        to the bars that exist (genesis to today); empty when late bars are off."""
        if self.late_bars_seed is None:
            return []
        idx = self._index(exchange, symbol)
        p = _symbol_params(self.seed, idx)
        lo = max(_epoch_day(_as_date(start)) if start is not None else p.genesis_day, p.genesis_day)
        hi = min(_epoch_day(_as_date(end)) if end is not None else 10**6, self._last_day(idx))
        runs = []
        for first, last in _late_runs(self.seed, self.late_bars_seed, idx, lo, hi):
            first, last = _next_session(max(first, lo), p.crypto), _previous_session(min(last, hi), p.crypto)
            if first <= last:
                runs.append((_from_epoch_day(first), _from_epoch_day(last)))
        return runs

    def seeded_defects(
        self,
        exchange: str,
        symbol: str,
        start: dt.date | None = None,
        end: dt.date | None = None,
    ) -> dict[str, list]:
        """Where this symbol's raw bars carry seeded defects, restricted to [start, end].

        Returns {"toxic": [date], "level_shift": [date], "gap": [(first_missing,
        last_missing)], "duplicate": [date] (one entry per extra row), "high_low": [date],
        "nonpositive": [date]}. A gap that straddles the window edge is clipped to it.
        """
        plan_idx = self._index(exchange, symbol)
        plan = _defect_plan(self.seed, plan_idx)
        lo = _epoch_day(_as_date(start)) if start is not None else -(10**9)
        hi = _epoch_day(_as_date(end)) if end is not None else 10**9
        if (delisting := _delisting_day(self.seed, plan_idx)) is not None:
            hi = min(hi, delisting)  # no bar, so no defect, after its last session

        def dates(days: tuple[int, ...]) -> list[dt.date]:
            return [_from_epoch_day(d) for d in days if lo <= d <= hi]

        crypto = _symbol_params(self.seed, plan_idx).crypto
        gaps = []
        for first, last in plan.gap:
            # Clip to the window, onto sessions, so a gap never "starts" on a weekend or holiday.
            first, last = (
                _next_session(max(first, lo), crypto),
                _previous_session(min(last, hi), crypto),
            )
            if first <= last:
                gaps.append((_from_epoch_day(first), _from_epoch_day(last)))
        return {
            "toxic": dates(plan.toxic),
            "level_shift": dates(plan.level_shift),
            "gap": gaps,
            "duplicate": dates(tuple(d for d, _ in plan.duplicate)),
            "high_low": dates(plan.high_low),
            "nonpositive": dates(tuple(d for d, _ in plan.nonpositive)),
        }
