"""`quant`: the command line. Every command runs through the Dagster definitions against
the persistent DAGSTER_HOME, so its runs show in the UI afterwards.

Errors a user can fix (a bad date, an unknown universe, a missing config) print as one
line and exit with status 2; a failed run exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from quant_assets.mlops.cli import (
    add_commands,
    add_dvc_flag,
    record_with_dvc,
    restore_before_catch_up,
    restore_line,
)
from quant_resources.errors import QuantError
from quant_resources.runtime import prepare_process


def _print_data_summary(summary) -> None:
    from quant_assets.data.skipped import skipped_line
    from quant_assets.definitions import RESTORE_ASSET

    meta = summary.asset_metadata.get("ohlcv", {})
    cand = summary.asset_metadata.get("candidates", {})
    print(f"data cycle {summary.window}: run {summary.run_id} in {summary.seconds:.1f}s")
    if restored := restore_line(summary.asset_metadata.get(RESTORE_ASSET)):
        print(restored)
    if cand:
        print(f"  candidates: {cand.get('candidates_last_day')} on the last day ({cand.get('days_written')} day(s) written)")
    if meta:
        print(
            "  ohlcv: {symbols} symbols, ingested {ingested}, skipped {skipped}, failed {failed}, "
            "not listed yet {not_listed}".format(**{k: meta.get(k, 0) for k in ("symbols", "ingested", "skipped", "failed", "not_listed")})
        )
        print(
            "  rows fetched {rows_fetched}, new {rows_new}; dropped: toxic {toxic_rows_dropped}, "
            "duplicates {duplicates_dropped}, invalid {invalid_rows_dropped}; level shifts {level_shifts_flagged}; "
            "gaps {gaps}".format(**{k: meta.get(k, 0) for k in ("rows_fetched", "rows_new", "toxic_rows_dropped", "duplicates_dropped", "invalid_rows_dropped", "level_shifts_flagged", "gaps")})
        )
        if skipped := skipped_line(meta.get("skipped_file_reasons") or {}):
            print(f"  {skipped}")
        if "quality_score_median" in meta:
            print(f"  data quality: median {meta['quality_score_median']:.3f}, p10 {meta['quality_score_p10']:.3f}, min {meta['quality_score_min']:.3f}")
    failed = [k for k, ok in summary.checks.items() if not ok]
    print(f"  checks: {len(summary.checks) - len(failed)} passed, {len(failed)} failed" + (f" ({', '.join(failed)})" if failed else ""))


def _print_metadata(title: str, summary) -> None:
    print(f"{title}: run {summary.run_id} in {summary.seconds:.1f}s")
    for asset, meta in summary.asset_metadata.items():
        plain = {k: v for k, v in meta.items() if not isinstance(v, (dict, list)) and not str(v).startswith(("-", "|", "!["))}
        print(f"  {asset}: " + ", ".join(f"{k}={v}" for k, v in plain.items()))
    failed = [k for k, ok in summary.checks.items() if not ok]
    if summary.checks:
        print(f"  checks: {len(summary.checks) - len(failed)} passed, {len(failed)} failed" + (f" ({', '.join(failed)})" if failed else ""))


def cmd_data(args: argparse.Namespace) -> int:
    from quant_assets import runner
    from quant_assets.partitions import latest_complete_day
    from quant_resources.settings import get_settings

    settings = get_settings()
    day = runner.parse_day(args.date) if args.date else latest_complete_day()
    with _progress(args, f"data cycle {day}"):
        summary = runner.run_data(settings, day, verbose=args.verbose)
    _print_data_summary(summary)
    if args.dvc:
        record_with_dvc(settings)
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from quant_assets import runner
    from quant_resources.settings import get_settings

    settings = get_settings()
    start, end = runner.parse_day(args.start, "start"), runner.parse_day(args.end, "end")
    print(f"backfill {start}..{end} as one run", flush=True)
    with _progress(args, f"backfill {start}..{end}"):
        summary = runner.run_backfill(settings, start, end, verbose=args.verbose)
    _print_data_summary(summary)
    if args.dvc:
        record_with_dvc(settings)
    return 0


def cmd_production(args: argparse.Namespace) -> int:
    from quant_assets import runner
    from quant_assets.partitions import latest_complete_day
    from quant_resources.settings import get_settings

    settings = get_settings()
    day = runner.parse_day(args.date) if args.date else latest_complete_day()
    runner.check_day(day, settings)
    # The recorded lakehouse version first (through Dagster), so the plan starts where it ends.
    restore_before_catch_up(settings, args.verbose, _progress(args, "lakehouse restore"))
    plan = runner.data_catch_up_plan(settings, day)
    for start, end in plan:
        if start == end:
            print(f"data cycle {start}", flush=True)
            with _progress(args, f"data cycle {start}"):
                summary = runner.run_data(settings, start, verbose=args.verbose)
        else:
            print(f"catching up {start}..{end} as one run", flush=True)
            with _progress(args, f"catch-up {start}..{end}"):
                summary = runner.run_backfill(settings, start, end, verbose=args.verbose)
        _print_data_summary(summary)
    if args.dvc:  # before the alpha cycle, so its manifest names the DVC version it read
        record_with_dvc(settings)
    print(f"alpha cycle {day}", flush=True)
    with _progress(args, f"alpha cycle {day}"):
        summary = runner.run_alpha(settings, day, objective=args.objective, verbose=args.verbose)
    _print_alpha_summary(summary, runner.alpha_report(settings, summary.run_id))
    return 0


def _progress(args: argparse.Namespace, title: str):
    """Bars on a terminal, a line per step otherwise; nothing extra when --verbose (the
    event stream is on the terminal then)."""
    import contextlib

    from quant_resources.progress import Reporter, reporting

    if args.verbose:
        return contextlib.nullcontext()
    return reporting(Reporter(title))


def _print_alpha_summary(summary, report) -> None:
    print(f"alpha cycle {summary.window}: run {summary.run_id} in {summary.seconds:.1f}s")
    print(f"  winners ({len(report['winners'])}, selection hash {report['selection_hash'][:12]}):")
    for w in report["winners"]:
        weight = report["weights"].get(w["symbol"], 0.0)
        print(f"    {w['symbol']:<18} weight {weight:7.2%}  score {w['score']:7.3f}  cluster {w['cluster']}")
    m, b = report["metrics"], report["benchmark_metrics"]

    def fmt(x, pct=False):
        return "n/a" if x is None else (f"{x:.2%}" if pct else f"{x:.2f}")

    print(
        f"  backtest: Sharpe {fmt(m.get('sharpe'))} (equal weight {fmt(b.get('sharpe'))}), "
        f"max drawdown {fmt(m.get('max_drawdown'), True)}, annual return {fmt(m.get('annual_return'), True)}, "
        f"volatility {fmt(m.get('annual_volatility'), True)}"
    )
    failed = [k for k, ok in summary.checks.items() if not ok]
    print(f"  checks: {len(summary.checks) - len(failed)} passed, {len(failed)} failed" + (f" ({', '.join(failed)})" if failed else ""))
    print(f"  run folder: {report['run_dir']}")


def cmd_alpha(args: argparse.Namespace) -> int:
    from quant_assets import runner
    from quant_assets.partitions import latest_complete_day
    from quant_resources.settings import get_settings

    settings = get_settings()
    if args.start or args.end:
        return _alpha_range(args, settings)
    day = runner.parse_day(args.date) if args.date else latest_complete_day()
    with _progress(args, f"alpha cycle {day}"):
        summary = runner.run_alpha(settings, day, objective=args.objective, verbose=args.verbose)
    _print_alpha_summary(summary, runner.alpha_report(settings, summary.run_id))
    return 0


def _alpha_range(args: argparse.Namespace, settings) -> int:
    """`quant alpha --start D --end D [--jobs N]`: one run per day, N days at once."""
    from quant_assets import runner
    from quant_assets.parallel import day_range, run_alpha_days
    from quant_resources.errors import ConfigError

    if not (args.start and args.end) or args.date:
        raise ConfigError("give --start and --end together (a range), or --date (one day)")
    start, end = runner.parse_day(args.start, "start"), runner.parse_day(args.end, "end")
    runner.check_day(start, settings, "start")
    runner.check_day(end, settings, "end")
    if end < start:
        raise ConfigError(f"the range ends ({end}) before it starts ({start})")
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: at least 1")
    days = list(day_range(start, end))
    print(f"alpha cycle {start}..{end}: {len(days)} day(s), {args.jobs} at a time", flush=True)
    t0 = time.perf_counter()

    def done(result) -> None:
        if result.error:
            print(f"  {result.day}: FAILED: {result.error}", flush=True)
            return
        sharpe = result.report["metrics"].get("sharpe")
        print(
            f"  {result.day}: run {result.run_id} in {result.seconds:.1f}s, "
            f"{len(result.report['winners'])} winners, selection {result.report['selection_hash'][:12]}, "
            f"Sharpe {'n/a' if sharpe is None else f'{sharpe:.2f}'}",
            flush=True,
        )

    results = run_alpha_days(settings, days, objective=args.objective, jobs=args.jobs, on_done=done)
    failed = [r for r in results if r.error]
    print(f"alpha cycle {start}..{end}: {len(results) - len(failed)} succeeded, {len(failed)} failed in {time.perf_counter() - t0:.1f}s")
    return 1 if failed else 0


def cmd_repair(args: argparse.Namespace) -> int:
    from quant_assets import runner
    from quant_resources.settings import get_settings

    with _progress(args, "gap repair"):
        summary = runner.run_repair(get_settings(), verbose=args.verbose)
    _print_metadata("gap repair", summary)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from quant_assets import runner
    from quant_resources.settings import get_settings

    settings = get_settings()
    with _progress(args, "audit"):
        summary = runner.run_audit(settings, verbose=args.verbose)
    _print_metadata("audit", summary)
    if args.html:
        from quant_assets.data.quality_report import write_quality_page
        from quant_resources.lakehouse import Lakehouse

        facts = {k: v for k, v in summary.asset_metadata.get("data_audit", {}).items() if isinstance(v, (int, float, str)) and not str(v).startswith(("-", "|", "!["))}
        catalog = Lakehouse(data_dir=str(settings.data_dir)).read_catalog()
        print(f"  data-quality page: {write_quality_page(Path(args.html), catalog, {'audit run': summary.run_id, **facts})}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from quant_resources.settings import PROJECT_ROOT

    workspace = PROJECT_ROOT / "workspace.yaml"
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-h", args.host, "-p", str(args.port)]
    print(
        f"Dagster UI: http://{args.host}:{args.port}  (DAGSTER_HOME={os.environ['DAGSTER_HOME']}); "
        f"Ctrl-C or `kill {os.getpid()}` stops it",
        flush=True,
    )
    # Become `dagster dev` (same PID) with default signal handling, even when started in
    # the background by a shell that ignores SIGINT/SIGTERM: a plain `kill PID` then stops
    # it, and dagster dev stops its web server and daemon.
    _default_signals()
    home = Path(os.environ["DAGSTER_HOME"])
    if (home / "postgres").exists():
        # This process becomes `dagster dev` (exec), so its exit handler, which stops the
        # embedded server when it is the last user, never runs: a watcher does it.
        from quant_resources.instance import spawn_watcher

        spawn_watcher(os.getpid(), home)
    os.execv(sys.executable, command)
    return 0  # not reached


def cmd_instance(args: argparse.Namespace) -> int:
    """Where the Dagster instance lives and who uses it (prepare_process made it ready)."""
    import json as _json

    from quant_resources.instance import PG_URL_ENV, EmbeddedPostgres, mask_password
    from quant_resources.progress import log_file

    home = Path(os.environ["DAGSTER_HOME"])
    print(f"DAGSTER_HOME {home}")
    if os.environ.get(PG_URL_ENV):
        print(f"  storage: external PostgreSQL {mask_password(os.environ[PG_URL_ENV])} ({PG_URL_ENV})")
    else:
        embedded = EmbeddedPostgres(home)
        handles = embedded.pgdata / ".handle_pids.json"
        users = [p for p in _json.loads(handles.read_text() or "[]") if p != os.getpid()] if handles.exists() else []
        print(f"  storage: embedded PostgreSQL in {embedded.pgdata} (server pid {embedded.running_pid()})")
        print(f"  other processes using it: {', '.join(map(str, users)) or 'none (it stops when this command exits)'}")
    print(f"  log: {log_file()}")
    return 0


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-v", "--verbose", action="store_true",
        help="print Dagster's event stream on the terminal (always in $DAGSTER_HOME/logs/quant.log)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quant", description="quant-lakehouse: data and alpha cycles on Dagster")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="run the data cycle for one day (default: the newest complete day)")
    p.add_argument("--date", help="partition day, YYYY-MM-DD")
    add_dvc_flag(p)
    _add_verbose(p)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("backfill", help="run the data cycle over a date range as one run")
    p.add_argument("--start", required=True)
    p.add_argument("--end", required=True)
    add_dvc_flag(p)
    _add_verbose(p)
    p.set_defaults(func=cmd_backfill)

    objectives = ["min_variance", "max_sharpe", "risk_parity", "hrp", "equal_weight"]
    p = sub.add_parser("production", help="catch the lakehouse up to the newest complete day, then the alpha cycle")
    p.add_argument("--date", help="run as of this day instead of the newest complete day")
    p.add_argument("--objective", choices=objectives)
    add_dvc_flag(p)
    _add_verbose(p)
    p.set_defaults(func=cmd_production)

    p = sub.add_parser("alpha", help="run the alpha cycle for one day on the lakehouse as it is (no network)")
    p.add_argument("--date", help="as-of day, YYYY-MM-DD (default: the newest complete day)")
    p.add_argument("--start", help="first day of a range: one run per day (with --end)")
    p.add_argument("--end", help="last day of a range")
    p.add_argument("--jobs", type=int, default=2, help="days of a range run at once (default 2)")
    p.add_argument("--objective", choices=objectives, help="portfolio objective (default min_variance)")
    _add_verbose(p)
    p.set_defaults(func=cmd_alpha)

    p = sub.add_parser("repair", help="re-fetch the windows of recorded gaps")
    _add_verbose(p)
    p.set_defaults(func=cmd_repair)

    p = sub.add_parser("audit", help="re-validate every lakehouse file and report drift")
    p.add_argument("--html", metavar="FILE", help="also write the data-quality view as one self-contained HTML page")
    _add_verbose(p)
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("ui", help="start the Dagster UI (dagster dev) on 127.0.0.1")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("instance", help="where the Dagster instance lives (PostgreSQL) and which processes use it")
    p.set_defaults(func=cmd_instance)

    add_commands(sub)  # reproduce, champion, pull, mlflow-ui
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        prepare_process()
        if not getattr(args, "verbose", False) and args.command != "ui":
            from quant_resources.progress import quiet_python_logging

            quiet_python_logging()
        code = args.func(args)
    except QuantError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        print(f"quant {args.command}: error: {first}", file=sys.stderr)
        from quant_assets.runner import RunFailed

        return 1 if isinstance(exc, RunFailed) else 2
    if os.environ.get("QUANT_VERBOSE_TIMING"):
        print(json.dumps({"seconds": round(time.perf_counter() - started, 2)}))
    return code


if __name__ == "__main__":
    sys.exit(main())
