"""Binance spot market data over the public, keyless REST API.

Owns the `BinanceSource` resource: daily klines (`GET /api/v3/klines`, paginated in
1000-bar pages), the symbol list (`GET /api/v3/exchangeInfo`), 24h quote volume
(`GET /api/v3/ticker/24hr`) and each symbol's first kline as its genesis date. It also
owns the politeness rules Binance asks of clients: a request-weight budget per calendar
minute (read back from the `X-MBX-USED-WEIGHT-1M` header), `Retry-After` on 429/418, and
exponential backoff on 5xx and network errors. Frames are raw; cleaning is ingestion's job.

Only the standard library (`urllib`) is used; nothing touches the network at import.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import polars as pl
from pydantic import Field, PrivateAttr

from quant_resources.errors import ConfigError, InvalidSymbolError, SourceError, UnknownSymbolError
from quant_resources.schema import (
    OHLCV_SCHEMA,
    SECONDS_PER_DAY,
    SymbolInfo,
    date_to_ts,
    empty_ohlcv,
    ts_to_date,
)
from quant_resources.sources.base import MarketDataSource
from quant_resources.symbols import validate_name

log = logging.getLogger(__name__)

KLINES_PATH = "/api/v3/klines"
EXCHANGE_INFO_PATH = "/api/v3/exchangeInfo"
TICKER_24H_PATH = "/api/v3/ticker/24hr"
KLINES_PAGE_LIMIT = 1000  # the documented maximum of `limit`
# Request weights of the current spot API (changelog 2023-08-25; limit 6000 per minute).
KLINES_WEIGHT = 2
EXCHANGE_INFO_WEIGHT = 20
TICKER_ONE_WEIGHT = 2
TICKER_ALL_WEIGHT = 80
INVALID_SYMBOL_CODE = -1121
# Binance bans an IP for "2 minutes to 3 days"; a 418 without Retry-After waits the minimum.
IP_BAN_DEFAULT_WAIT_S = 120.0
MAX_BACKOFF_S = 60.0
# Our clock and Binance's are not in lock step: wait this long past the minute boundary.
WINDOW_RESET_MARGIN_S = 1.0
LISTING_CONTEXT = "symbol list"


@dataclass
class _Clock:
    """Time as the source sees it; tests replace both to run without real waits."""

    sleep: Callable[[float], None] = time.sleep
    # Wall clock, not monotonic: Binance's weight window is the calendar minute.
    now: Callable[[], float] = time.time


@dataclass
class _WeightBudget:
    """Request weight used in the current calendar minute, Binance's fixed 1-minute window."""

    budget: int
    minute: int = -1
    used: int = 0

    def _roll(self, now: float) -> None:
        minute = int(now // 60)
        if minute != self.minute:
            self.minute, self.used = minute, 0

    def wait_before(self, weight: int, now: float) -> float:
        """Seconds to sleep so that sending `weight` more stays within the budget."""
        self._roll(now)
        # A fresh window always admits one request, even one heavier than a tiny budget.
        if self.used == 0 or self.used + weight <= self.budget:
            return 0.0
        return (self.minute + 1) * 60 - now + WINDOW_RESET_MARGIN_S

    def record(self, weight: int, now: float, server_used: int | None) -> None:
        self._roll(now)
        # The server's count includes other clients on this IP: trust it over ours.
        self.used = server_used if server_used is not None else self.used + weight


@dataclass(frozen=True)
class _Response:
    status: int
    headers: Any  # http.client.HTTPMessage: case-insensitive .get()
    body: bytes


class BinanceSource(MarketDataSource):
    """Daily spot bars and the USDT (by default) symbol list from Binance's public REST API.

    `fetch_bars` returns raw bars with `timestamp` in UTC epoch seconds at the bar's open.
    `list_symbols` returns TRADING pairs quoted in `quote_asset`; `median_dollar_volume` is
    the rolling 24h quote volume (one ticker call for all pairs), and `genesis_date` is the
    day of the pair's first kline (one klines request per pair, cached for the life of the
    instance) unless `genesis_from_first_kline` is off, then `default_genesis_date`.
    """

    base_url: str = Field(
        default="https://data-api.binance.vision",
        description="Spot REST endpoint; the default serves public market data only, keyless.",
    )
    exchange: str = Field(default="BINANCE", description="Exchange name in symbols and files.")
    quote_asset: str = Field(default="USDT", description="list_symbols keeps pairs quoted in it.")
    timeout_s: float = Field(default=30.0, description="Per-request connect and read timeout.")
    max_retries: int = Field(
        default=5, description="Retries after 5xx, network errors, 429 and 418, per request."
    )
    backoff_base_s: float = Field(
        default=1.0, description="First backoff after a 5xx or network error; doubles, max 60 s."
    )
    max_total_wait_s: float = Field(
        default=900.0,
        description="Cap on retry waits per request; a longer Retry-After fails at once.",
    )
    weight_budget_per_minute: int = Field(
        default=5000,
        description="Request weight to use per calendar minute (Binance allows 6000 per IP).",
    )
    genesis_from_first_kline: bool = Field(
        default=True,
        description="Genesis = day of the first kline (1 request per pair), else the default.",
    )
    default_genesis_date: str = Field(
        default="2017-07-14",  # Binance's launch day
        description="YYYY-MM-DD genesis when genesis_from_first_kline is off.",
    )

    _clock: _Clock = PrivateAttr(default_factory=_Clock)
    _budget: _WeightBudget | None = PrivateAttr(default=None)
    _opener: urllib.request.OpenerDirector | None = PrivateAttr(default=None)
    _genesis_cache: dict[str, dt.date] = PrivateAttr(default_factory=dict)

    @property
    def source_name(self) -> str:
        return "binance"

    def use_clock(
        self, sleep: Callable[[float], None], now: Callable[[], float] | None = None
    ) -> BinanceSource:
        """Replace the sleep (and wall clock) used for backoff and rate limits; returns self.

        For tests and for callers that pace requests themselves. Dagster rebuilds resources
        from their config, so a clock set here does not survive into a Dagster run.
        """
        self._clock = _Clock(sleep=sleep, now=now or time.time)
        return self

    # ---- protocol --------------------------------------------------------------------
    def fetch_bars(self, exchange: str, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        """Raw daily bars of `symbol` with open times in [start 00:00, end+1 00:00) UTC.

        Pages through the window 1000 bars per request. A window before the listing gives
        an empty frame. Raises UnknownSymbolError when Binance does not list the symbol.
        """
        self._check_exchange(exchange, symbol)
        validate_name(symbol)
        if end < start:
            return empty_ohlcv()
        window = f"window {start.isoformat()}..{end.isoformat()}"
        start_ms = date_to_ts(start) * 1000
        end_ms = (date_to_ts(end) + SECONDS_PER_DAY) * 1000 - 1
        rows: list[tuple[int, float, float, float, float, float]] = []
        cursor = start_ms
        while cursor <= end_ms:
            params = {
                "symbol": symbol,
                "interval": "1d",
                "startTime": cursor,
                "endTime": end_ms,
                "limit": KLINES_PAGE_LIMIT,
            }
            page, url = self._get_json(KLINES_PATH, params, KLINES_WEIGHT, symbol, window)
            parsed = _parse_klines(page, symbol, url)
            if not parsed:
                break
            rows.extend(parsed)
            last_open_ms = max(row[0] for row in parsed)
            if len(parsed) < KLINES_PAGE_LIMIT:
                break
            if last_open_ms < cursor:
                raise SourceError(
                    symbol,
                    f"pagination made no progress in {window}: asked for bars from "
                    f"{cursor} ms, the last bar opened at {last_open_ms} ms ({url}); "
                    "check that base_url points at the Binance spot API",
                    source=self.source_name,
                )
            cursor = last_open_ms + 1  # open times are unique: step just past the last one
        return _bars_frame(rows, start, end)

    def list_symbols(self) -> list[SymbolInfo]:
        """TRADING pairs quoted in `quote_asset`, with 24h quote volume and genesis date.

        Costs weight 20 (exchangeInfo) + 80 (ticker/24hr, all pairs) + 2 per pair whose
        genesis is not cached yet (when `genesis_from_first_kline`).
        """
        exchange = validate_name(self.exchange, "exchange")
        info, url = self._get_json(EXCHANGE_INFO_PATH, {}, EXCHANGE_INFO_WEIGHT, None, "")
        symbols = _trading_symbols(info, self.quote_asset, url)
        tickers, ticker_url = self._get_json(
            TICKER_24H_PATH, {"type": "MINI"}, TICKER_ALL_WEIGHT, None, ""
        )
        volumes = _quote_volumes(tickers, ticker_url)
        return [
            SymbolInfo(
                exchange=exchange,
                symbol=symbol,
                asset_class="crypto",
                genesis_date=self._genesis(symbol),
                median_dollar_volume=volumes.get(symbol, 0.0),
            )
            for symbol in symbols
        ]

    def symbol_info(self, exchange: str, symbol: str) -> SymbolInfo | None:
        """One pair's metadata for weight 20 + 2 + 2, instead of listing every pair."""
        if exchange != self.exchange:
            return None
        try:
            validate_name(symbol)
            info, url = self._get_json(
                EXCHANGE_INFO_PATH, {"symbol": symbol}, EXCHANGE_INFO_WEIGHT, symbol, ""
            )
        except (UnknownSymbolError, InvalidSymbolError):
            return None
        if symbol not in _trading_symbols(info, self.quote_asset, url):
            return None
        ticker, ticker_url = self._get_json(
            TICKER_24H_PATH, {"symbol": symbol, "type": "MINI"}, TICKER_ONE_WEIGHT, symbol, ""
        )
        volumes = _quote_volumes([ticker], ticker_url)
        return SymbolInfo(
            exchange=validate_name(self.exchange, "exchange"),
            symbol=symbol,
            asset_class="crypto",
            genesis_date=self._genesis(symbol),
            median_dollar_volume=volumes.get(symbol, 0.0),
        )

    # ---- genesis ---------------------------------------------------------------------
    def _default_genesis(self) -> dt.date:
        try:
            return dt.date.fromisoformat(self.default_genesis_date)
        except ValueError:
            raise ConfigError(
                f"BinanceSource.default_genesis_date={self.default_genesis_date!r} is not a "
                "date: use YYYY-MM-DD"
            ) from None

    def _genesis(self, symbol: str) -> dt.date:
        """The day of the pair's first kline; exchangeInfo has no listing date."""
        if not self.genesis_from_first_kline:
            return self._default_genesis()
        if symbol in self._genesis_cache:
            return self._genesis_cache[symbol]
        params = {"symbol": symbol, "interval": "1d", "startTime": 0, "limit": 1}
        page, url = self._get_json(KLINES_PATH, params, KLINES_WEIGHT, symbol, "first kline")
        parsed = _parse_klines(page, symbol, url)
        if parsed:
            genesis = ts_to_date(parsed[0][0] // 1000)  # klines open in epoch milliseconds
        else:
            # Listed but no daily bar yet: history starts today, not at a made-up date.
            genesis = dt.datetime.fromtimestamp(self._clock.now(), dt.UTC).date()
        self._genesis_cache[symbol] = genesis
        return genesis

    # ---- HTTP ------------------------------------------------------------------------
    def _check_exchange(self, exchange: str, symbol: str) -> None:
        if exchange != self.exchange:
            raise UnknownSymbolError(
                symbol,
                f"this Binance source serves exchange {self.exchange!r}, not {exchange!r}; "
                "fetch it from the source configured for that exchange",
                source=self.source_name,
            )

    def _send(self, url: str) -> _Response:
        if self._opener is None:
            self._opener = urllib.request.build_opener()
        try:
            request = urllib.request.Request(url, headers={"Accept": "application/json"})
        except ValueError:
            raise ConfigError(
                f"BinanceSource.base_url={self.base_url!r} is not an http(s) URL; set "
                "QUANT_BINANCE_BASE_URL to e.g. https://data-api.binance.vision"
            ) from None
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                return _Response(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:
            with error:
                return _Response(error.code, error.headers, error.read())

    def _get_json(
        self, path: str, params: dict[str, Any], weight: int, symbol: str | None, context: str
    ) -> tuple[Any, str]:
        """GET `path` as JSON, pacing, retrying and translating errors; returns (body, url).

        `symbol` and `context` (a window, "first kline") only make error messages specific.
        """
        url = f"{self.base_url.rstrip('/')}{path}"
        if params:
            url += "?" + urlencode(params)
        who = symbol or f"{self.exchange} {LISTING_CONTEXT}"
        where = f" ({context})" if context else ""
        if self._budget is None:
            self._budget = _WeightBudget(self.weight_budget_per_minute)
        waited = 0.0
        for attempt in range(self.max_retries + 1):
            pause = self._budget.wait_before(weight, self._clock.now())
            if pause > 0:
                log.info("binance: request weight budget reached, waiting %.1f s", pause)
                self._clock.sleep(pause)
            try:
                response = self._send(url)
            except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
                reason = getattr(exc, "reason", exc)
                problem = f"network error ({type(reason).__name__}: {reason})"
                delay = self._backoff(attempt)
            else:
                self._budget.record(weight, self._clock.now(), _used_weight(response.headers))
                if 200 <= response.status < 300:
                    return _decode_json(response.body, who, url, where), url
                if response.status in (418, 429):
                    problem, delay = self._rate_limit_delay(response, attempt)
                elif response.status >= 500:
                    problem = f"HTTP {response.status} (Binance-side error)"
                    delay = self._backoff(attempt)
                else:
                    raise self._client_error(response, who, url, where)
            if attempt == self.max_retries:
                raise SourceError(
                    who,
                    f"{problem}{where} at {url}; gave up after {self.max_retries} retries. "
                    "Try again later, or raise max_retries / timeout_s",
                    source=self.source_name,
                )
            if waited + delay > self.max_total_wait_s:
                raise SourceError(
                    who,
                    f"{problem}{where} at {url}; waiting {delay:.0f} s more would exceed "
                    f"max_total_wait_s={self.max_total_wait_s:.0f} (already waited "
                    f"{waited:.0f} s). Rerun after the wait, or raise max_total_wait_s",
                    source=self.source_name,
                )
            log.warning("binance: %s%s at %s; retrying in %.2f s", problem, where, url, delay)
            self._clock.sleep(delay)
            waited += delay
        raise AssertionError("unreachable: the loop returns or raises")

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_base_s * 2**attempt, MAX_BACKOFF_S)

    def _rate_limit_delay(self, response: _Response, attempt: int) -> tuple[str, float]:
        retry_after = _retry_after(response.headers)
        if response.status == 418:
            # An IP ban: retrying before it lifts only lengthens it.
            delay = retry_after if retry_after is not None else IP_BAN_DEFAULT_WAIT_S
            return f"HTTP 418 (this IP is banned for {delay:.0f} s after ignoring 429s)", delay
        delay = retry_after if retry_after is not None else self._backoff(attempt)
        return f"HTTP 429 (request weight limit reached, Retry-After {delay:.0f} s)", delay

    def _client_error(self, response: _Response, who: str, url: str, where: str) -> SourceError:
        code, msg = _error_payload(response.body)
        if code == INVALID_SYMBOL_CODE:
            return UnknownSymbolError(
                who,
                f"Binance does not list {who!r} (code {code} {msg!r}){where} at {url}; check "
                "the spelling against list_symbols() (pairs look like BTCUSDT)",
                source=self.source_name,
            )
        detail = f"code {code} {msg!r}" if code is not None else _snippet(response.body)
        hint = (
            "the request was blocked by Binance's web application firewall; slow down"
            if response.status == 403
            else "check the symbol, the window and base_url"
        )
        return SourceError(
            who,
            f"HTTP {response.status} ({detail}){where} at {url}; {hint}",
            source=self.source_name,
        )


# ---- parsing (pure) ------------------------------------------------------------------
def _snippet(body: bytes, limit: int = 80) -> str:
    text = body[:limit].decode("utf-8", errors="replace")
    return repr(text + ("..." if len(body) > limit else ""))


def _decode_json(body: bytes, who: str, url: str, where: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise SourceError(
            who,
            f"the response{where} at {url} is not JSON (starts {_snippet(body)}); check that "
            "base_url points at the Binance spot API and not at a proxy or login page",
            source="binance",
        ) from None


def _error_payload(body: bytes) -> tuple[int | None, str]:
    try:
        payload = json.loads(body)
    except ValueError:
        return None, ""
    if isinstance(payload, dict) and isinstance(payload.get("code"), int):
        return payload["code"], str(payload.get("msg", ""))
    return None, ""


def _used_weight(headers: Any) -> int | None:
    value = headers.get("X-MBX-USED-WEIGHT-1M") if headers is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP-date form: Binance documents seconds, fall back to backoff
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def _malformed(symbol: str, url: str, what: str) -> SourceError:
    return SourceError(
        symbol,
        f"malformed klines response at {url}: {what}; the API may have changed or base_url "
        "does not point at the Binance spot API",
        source="binance",
    )


def _parse_klines(
    page: Any, symbol: str, url: str
) -> list[tuple[int, float, float, float, float, float]]:
    """(open ms, open, high, low, close, volume) per kline row; SourceError on a bad shape."""
    if not isinstance(page, list):
        raise _malformed(symbol, url, f"expected a JSON array of rows, got {type(page).__name__}")
    parsed = []
    for i, row in enumerate(page):
        if not isinstance(row, list) or len(row) < 6:
            raise _malformed(symbol, url, f"row {i} is {row!r}, not an array of at least 6 fields")
        open_ms = row[0]
        if isinstance(open_ms, bool) or not isinstance(open_ms, int):
            raise _malformed(symbol, url, f"row {i} open time {open_ms!r} is not integer ms")
        values = []
        for name, raw in zip(("open", "high", "low", "close", "volume"), row[1:6], strict=True):
            try:
                if isinstance(raw, bool) or not isinstance(raw, str | int | float):
                    raise ValueError
                values.append(float(raw))
            except ValueError:
                raise _malformed(
                    symbol,
                    url,
                    f"row {i} (open time {open_ms} ms) has {name}={raw!r}, not a number",
                ) from None
        parsed.append((open_ms, *values))
    return parsed


def _bars_frame(
    rows: list[tuple[int, float, float, float, float, float]], start: dt.date, end: dt.date
) -> pl.DataFrame:
    if not rows:
        return empty_ohlcv()
    columns = list(zip(*rows, strict=True))
    frame = pl.DataFrame(
        {
            "timestamp": [ms // 1000 for ms in columns[0]],
            "open": columns[1],
            "high": columns[2],
            "low": columns[3],
            "close": columns[4],
            "volume": columns[5],
        },
        schema=OHLCV_SCHEMA,
    )
    # The protocol promises the window; a server answering outside it is not trusted.
    lo, hi = date_to_ts(start), date_to_ts(end) + SECONDS_PER_DAY
    return frame.filter((pl.col("timestamp") >= lo) & (pl.col("timestamp") < hi))


def _trading_symbols(info: Any, quote_asset: str, url: str) -> list[str]:
    """Valid names of TRADING pairs quoted in `quote_asset`, in exchangeInfo order."""
    records = info.get("symbols") if isinstance(info, dict) else None
    if not isinstance(records, list):
        raise SourceError(
            f"BINANCE {LISTING_CONTEXT}",
            f"malformed exchangeInfo at {url}: no 'symbols' array; check base_url",
            source="binance",
        )
    symbols = []
    for record in records:
        if not isinstance(record, dict):
            continue
        if record.get("status") != "TRADING" or record.get("quoteAsset") != quote_asset:
            continue
        try:
            symbols.append(validate_name(record.get("symbol")))
        except InvalidSymbolError as exc:
            # One odd name must not hide every other pair: skip it and say so.
            log.warning("binance: skipping listed pair: %s", exc)
    return symbols


def _quote_volumes(tickers: Any, url: str) -> dict[str, float]:
    """symbol -> 24h quote volume; unparseable entries are skipped (volume 0 downstream)."""
    if not isinstance(tickers, list):
        raise SourceError(
            f"BINANCE {LISTING_CONTEXT}",
            f"malformed ticker/24hr response at {url}: expected an array; check base_url",
            source="binance",
        )
    volumes = {}
    for ticker in tickers:
        if not isinstance(ticker, dict) or not isinstance(ticker.get("symbol"), str):
            continue
        try:
            volumes[ticker["symbol"]] = float(ticker.get("quoteVolume"))
        except (TypeError, ValueError):
            log.warning("binance: no usable quoteVolume for %s at %s", ticker["symbol"], url)
    return volumes
