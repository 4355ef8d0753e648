"""A fake Binance spot REST API on a loopback port, for tests that must not touch the internet.

`FakeBinance` is a real `http.server` on 127.0.0.1 (port chosen by the OS) serving the
documented response shapes of the three endpoints `BinanceSource` uses:

- `GET /api/v3/klines`: rows `[open ms, open, high, low, close, volume, close ms,
  quote volume, trades, taker base, taker quote, "0"]`, prices as strings, ascending,
  the first `limit` (max 1000) bars with open time in [startTime, endTime];
- `GET /api/v3/exchangeInfo` (optionally `?symbol=`): `{"symbols": [{"symbol", "status",
  "baseAsset", "quoteAsset", ...}], ...}`;
- `GET /api/v3/ticker/24hr` (optionally `?symbol=`): objects with `quoteVolume`.

Unknown symbols get HTTP 400 `{"code": -1121, "msg": "Invalid symbol."}`. Every response
carries `X-MBX-USED-WEIGHT-1M`: the weight the fake has served so far, or a value pinned
with `used_weight_header`. Scripted faults (`rate_limit`, `server_error`, `malformed`,
`stall`) replace the next N responses; `requests` records everything received so tests
can assert pagination parameters.

Bars are generated from a closed form so tests can state exact values: on day `n`
(0 = the listing day) a symbol with base price `p` has open = p + n, high = open + 2,
low = open - 1, close = open + 0.5, volume = 1000 + n.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

MS_PER_DAY = 86_400_000
KLINES_MAX_LIMIT = 1000
# Request weights of the current spot API (changelog 2023-08-25).
WEIGHTS = {"/api/v3/klines": 2, "/api/v3/exchangeInfo": 20}
TICKER_WEIGHT_ONE, TICKER_WEIGHT_ALL = 2, 80


def day_ms(day: dt.date) -> int:
    """UTC epoch milliseconds at 00:00 of `day`: a daily kline's open time."""
    return (day - dt.date(1970, 1, 1)).days * MS_PER_DAY


@dataclass(frozen=True)
class FakeSymbol:
    """One listed pair and the generator of its daily bars."""

    symbol: str
    base_asset: str
    quote_asset: str = "USDT"
    status: str = "TRADING"
    listed: dt.date = dt.date(2018, 1, 1)
    base_price: float = 100.0
    quote_volume: float = 1_000_000.0

    def bar(self, n: int) -> tuple[float, float, float, float, float]:
        """(open, high, low, close, volume) on day `n` after listing."""
        open_ = self.base_price + n
        return open_, open_ + 2.0, open_ - 1.0, open_ + 0.5, 1000.0 + n

    def kline(self, day: dt.date) -> list:
        n = (day - self.listed).days
        open_, high, low, close, volume = self.bar(n)
        open_ms = day_ms(day)
        return [
            open_ms,
            f"{open_:.8f}",
            f"{high:.8f}",
            f"{low:.8f}",
            f"{close:.8f}",
            f"{volume:.8f}",
            open_ms + MS_PER_DAY - 1,
            f"{volume * close:.8f}",
            100 + n,
            f"{volume / 2:.8f}",
            f"{volume * close / 2:.8f}",
            "0",
        ]


DEFAULT_SYMBOLS = (
    FakeSymbol(
        "BTCUSDT", "BTC", listed=dt.date(2017, 8, 17), base_price=4000.0, quote_volume=2.5e9
    ),
    FakeSymbol("ETHUSDT", "ETH", listed=dt.date(2017, 8, 17), base_price=300.0, quote_volume=1.2e9),
)


@dataclass(frozen=True)
class Fault:
    """A scripted response that replaces the next matching request's real one."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stall_s: float = 0.0  # sleep before answering, to trigger client timeouts
    path: str | None = None  # only requests to this path; None = any path


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    params: dict[str, str]
    status: int


class FakeBinance:
    """The fake server. Use as a context manager; `base_url` points at it."""

    def __init__(
        self,
        symbols: tuple[FakeSymbol, ...] | list[FakeSymbol] = DEFAULT_SYMBOLS,
        today: dt.date = dt.date(2026, 1, 1),
    ) -> None:
        self.symbols = {s.symbol: s for s in symbols}
        self.today = today  # the last day with a bar: the fake's "now"
        self.requests: list[RecordedRequest] = []
        self.used_weight_header: int | None = None  # pin X-MBX-USED-WEIGHT-1M
        self.send_weight_header = True
        self._served_weight = 0
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> FakeBinance:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                fake._handle(self)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # Stalled handlers must not keep stop() waiting.
        self._server.daemon_threads = True
        self._server.block_on_close = False
        # A short poll interval keeps stop() (and so each test's teardown) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeBinance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ---- scripted faults -------------------------------------------------------------
    def add_fault(self, fault: Fault, times: int = 1) -> None:
        with self._lock:
            self._faults.extend([fault] * times)

    def rate_limit(
        self,
        times: int = 1,
        retry_after: int | None = 1,
        status: int = 429,
        path: str | None = None,
    ) -> None:
        """Answer 429 (or 418, an IP ban) with `Retry-After` seconds (None: no header)."""
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        msg = "Too many requests; current limit of IP is 6000 requests per minute."
        body = json.dumps({"code": -1003, "msg": msg}).encode()
        self.add_fault(Fault(status, body, headers, path=path), times)

    def server_error(self, times: int = 1, status: int = 500, path: str | None = None) -> None:
        body = json.dumps({"code": -1000, "msg": "An unknown error occurred."}).encode()
        self.add_fault(Fault(status, body, path=path), times)

    def malformed(self, body: bytes | str, times: int = 1, path: str | None = None) -> None:
        """Answer 200 with `body` (not JSON, or JSON of the wrong shape)."""
        raw = body.encode() if isinstance(body, str) else body
        self.add_fault(Fault(200, raw, path=path), times)

    def stall(self, seconds: float, times: int = 1, path: str | None = None) -> None:
        """Wait `seconds` before answering normally-shaped but empty: provokes a client timeout."""
        self.add_fault(Fault(200, b"[]", stall_s=seconds, path=path), times)

    # ---- inspection ------------------------------------------------------------------
    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    # ---- request handling ------------------------------------------------------------
    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.path is None or fault.path == path:
                    del self._faults[i]
                    return fault
        return None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        params = dict(parse_qsl(parts.query))
        fault = self._take_fault(parts.path)
        if fault is not None:
            if fault.stall_s:
                time.sleep(fault.stall_s)
            status, body, headers = fault.status, fault.body, dict(fault.headers)
        else:
            status, payload, weight = self._route(parts.path, params)
            body, headers = json.dumps(payload).encode(), {}
            with self._lock:
                self._served_weight += weight
        with self._lock:
            self.requests.append(RecordedRequest(parts.path, params, status))
            used = (
                self._served_weight if self.used_weight_header is None else self.used_weight_header
            )
        if self.send_weight_header:
            headers.setdefault("X-MBX-USED-WEIGHT-1M", str(used))
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json;charset=UTF-8")
            handler.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test): nothing left to answer

    def _route(self, path: str, params: dict[str, str]) -> tuple[int, object, int]:
        if path == "/api/v3/klines":
            return self._klines(params)
        if path == "/api/v3/exchangeInfo":
            return self._exchange_info(params)
        if path == "/api/v3/ticker/24hr":
            return self._ticker(params)
        return 404, {"code": -1, "msg": f"no route {path}"}, 0

    def _unknown(self, weight: int) -> tuple[int, object, int]:
        return 400, {"code": -1121, "msg": "Invalid symbol."}, weight

    def _klines(self, params: dict[str, str]) -> tuple[int, object, int]:
        weight = WEIGHTS["/api/v3/klines"]
        info = self.symbols.get(params.get("symbol", ""))
        if info is None:
            return self._unknown(weight)
        if params.get("interval") != "1d":
            return 400, {"code": -1120, "msg": "Invalid interval."}, weight
        limit = int(params.get("limit", "500"))
        if not 1 <= limit <= KLINES_MAX_LIMIT:
            return 400, {"code": -1130, "msg": "Invalid data sent for a parameter."}, weight
        first = max(day_ms(info.listed), int(params.get("startTime", "0")))
        last = min(day_ms(self.today), int(params.get("endTime", str(day_ms(self.today)))))
        # Daily klines open at 00:00 UTC: round the first requested instant up to one.
        first_day = -(-first // MS_PER_DAY)
        rows = []
        day_index = first_day
        while day_index * MS_PER_DAY <= last and len(rows) < limit:
            rows.append(info.kline(dt.date(1970, 1, 1) + dt.timedelta(days=day_index)))
            day_index += 1
        return 200, rows, weight

    def _symbol_record(self, info: FakeSymbol) -> dict:
        return {
            "symbol": info.symbol,
            "status": info.status,
            "baseAsset": info.base_asset,
            "baseAssetPrecision": 8,
            "quoteAsset": info.quote_asset,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "orderTypes": ["LIMIT", "MARKET"],
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [],
            "permissions": [],
            "permissionSets": [["SPOT"]],
        }

    def _exchange_info(self, params: dict[str, str]) -> tuple[int, object, int]:
        weight = WEIGHTS["/api/v3/exchangeInfo"]
        if "symbol" in params:
            info = self.symbols.get(params["symbol"])
            if info is None:
                return self._unknown(weight)
            listed = [info]
        else:
            listed = list(self.symbols.values())
        payload = {
            "timezone": "UTC",
            "serverTime": day_ms(self.today),
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 6000,
                }
            ],
            "exchangeFilters": [],
            "symbols": [self._symbol_record(s) for s in listed],
        }
        return 200, payload, weight

    def _ticker_record(self, info: FakeSymbol) -> dict:
        return {
            "symbol": info.symbol,
            "openPrice": "1.00000000",
            "highPrice": "1.00000000",
            "lowPrice": "1.00000000",
            "lastPrice": "1.00000000",
            "volume": "1.00000000",
            "quoteVolume": f"{info.quote_volume:.8f}",
            "openTime": day_ms(self.today),
            "closeTime": day_ms(self.today) + MS_PER_DAY - 1,
            "firstId": 0,
            "lastId": 1,
            "count": 2,
        }

    def _ticker(self, params: dict[str, str]) -> tuple[int, object, int]:
        if "symbol" in params:
            info = self.symbols.get(params["symbol"])
            if info is None:
                return self._unknown(TICKER_WEIGHT_ONE)
            return 200, self._ticker_record(info), TICKER_WEIGHT_ONE
        return 200, [self._ticker_record(s) for s in self.symbols.values()], TICKER_WEIGHT_ALL
