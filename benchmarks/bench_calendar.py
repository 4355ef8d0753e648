"""Benchmark: the calendar's hot paths, per symbol, over 1000 symbols x 10 years.

    .venv/bin/python benchmarks/bench_calendar.py [--symbols 1000] [--repeat 5]

Times, in this process after one warm-up pass (best of --repeat):

1. gap detection (`detect_gaps`) of every symbol's bars of the synthetic market,
   2016-01-01..2025-12-31, on the symbol's own calendar (`SymbolInfo.calendar`);
2. the per-symbol calendar arithmetic of an ingest: `first_session_on_or_after`,
   `last_session_on_or_before` (the fetch window) and `quality_score` (sessions between
   the first and last bar);
3. a cold synthetic fetch of the same 1000 x 10 years (`clear_caches()` first), which
   lays every equity's years on its sessions.

and, each in a fresh interpreter: the cost of `import quant_assets.data.calendar` (the
exchange-calendars import must stay lazy) and of the first session count of an equity
(import of exchange-calendars and the building of one calendar's sessions).

Run it from a `git archive` copy of an older tree (`PYTHONPATH=<copy>`) to compare.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time

START, END = dt.date(2016, 1, 1), dt.date(2025, 12, 31)


def best(fn, repeat: int) -> float:
    fn()  # warm-up: caches filled, as in a long ingest
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def fresh(code: str) -> float:
    """Seconds `code` takes in a new interpreter (its own clock, start-up excluded)."""
    timed = f"import time\nt0 = time.perf_counter()\n{code}\nprint(time.perf_counter() - t0)"
    out = subprocess.run([sys.executable, "-c", timed], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from quant_assets.data.calendar import first_session_on_or_after, last_session_on_or_before
    from quant_assets.data.gaps import detect_gaps
    from quant_assets.data.quality import quality_score
    from quant_resources.sources.synthetic import SyntheticSource, clear_caches

    source = SyntheticSource(n_symbols=args.symbols)
    infos = source.list_symbols()

    def fetch_all() -> list:
        return [source.fetch_bars(i.exchange, i.symbol, START, END) for i in infos]

    def cold_fetch() -> None:
        clear_caches()
        source.list_symbols()
        fetch_all()

    t_fetch = best(cold_fetch, max(1, args.repeat // 2))
    bars = [(i, f["timestamp"].to_numpy()) for i, f in zip(infos, fetch_all(), strict=True)]
    rows = sum(ts.size for _, ts in bars)

    def gaps() -> int:
        return sum(len(detect_gaps(ts, info.calendar, 5)) for info, ts in bars)

    def arithmetic() -> None:
        for info, ts in bars:
            if not ts.size:
                continue
            first_session_on_or_after(max(START, info.genesis_date), info.calendar)
            last_session_on_or_before(END, info.calendar)
            first = dt.date(1970, 1, 1) + dt.timedelta(days=int(ts[0]) // 86400)
            last = dt.date(1970, 1, 1) + dt.timedelta(days=int(ts[-1]) // 86400)
            quality_score(ts.size, first, last, info.calendar, 0, False)

    t_gaps = best(gaps, args.repeat)
    t_arith = best(arithmetic, args.repeat)
    t_import = min(fresh("import quant_assets.data.calendar") for _ in range(3))
    t_first = min(
        fresh(
            "import datetime as dt\n"
            "from quant_assets.data.calendar import sessions_between\n"
            "from quant_resources.sources.synthetic import SyntheticSource\n"
            "info = SyntheticSource().symbol_info('SYNEQ', 'E001')\n"
            "sessions_between(dt.date(2016, 1, 1), dt.date(2025, 12, 31), info.calendar)"
        )
        for _ in range(3)
    )
    calendars = sorted({i.calendar for i in infos})
    print(f"symbols {len(infos)} ({', '.join(calendars)}), bars {rows:,}, {START}..{END}")
    print(f"gap detection, every symbol:          {t_gaps * 1000:8.1f} ms ({gaps()} gaps)")
    print(f"ingest calendar arithmetic:           {t_arith * 1000:8.1f} ms")
    print(f"cold synthetic fetch, every symbol:   {t_fetch * 1000:8.1f} ms")
    print(f"fresh process: import calendar        {t_import * 1000:8.1f} ms")
    print(f"fresh process: first equity count     {t_first * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
