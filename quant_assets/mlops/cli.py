"""The `quant` commands of observability and reproducibility.

- `quant reproduce RUN_ID`: restore the lakehouse that alpha run read, re-run it, compare.
- `quant champion`: the `selection-policy` versions holding champion and challenger.
- `quant runs push|pull`: sealed run folders to and from object storage (QUANT_RUNS_URL).
- `quant pull`: restore the lakehouse version recorded in dvc.lock when it is missing or
  behind, by hand. Runs do it themselves: `lakehouse_restore`, the data job's first step.
- `restore_before_catch_up`: what `quant production` runs before it plans the catch-up.
- `quant mlflow-ui`: the MLflow UI over the tracking store, on 127.0.0.1.
- `record_with_dvc`: what `--dvc` on `quant data`, `backfill` and `production` runs after a
  successful data cycle.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from quant_resources.errors import QuantError


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="re-run a past alpha run on the lakehouse version it read and compare every output file",
    )
    p.add_argument("run_id", metavar="RUN_ID", help="a folder of data/runs/")
    p.add_argument("--keep", action="store_true", help="keep the temporary workspace and print where it is")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("champion", help="the selection policy holding the champion alias, against the challenger")
    p.set_defaults(func=cmd_champion)

    p = sub.add_parser(
        "pull", help="restore the lakehouse version recorded in dvc.lock when the lakehouse is missing or behind"
    )
    p.add_argument("--force", action="store_true", help="pull even when the lakehouse is not behind")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("runs", help="sealed run folders on object storage (QUANT_RUNS_URL)")
    runs = p.add_subparsers(dest="runs_command", required=True)
    q = runs.add_parser("push", help="upload every sealed run folder the bucket lacks (or only RUN_ID...)")
    q.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    q.set_defaults(func=cmd_runs_push)
    q = runs.add_parser("pull", help="download archived run folders that are not on this disk")
    q.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    q.set_defaults(func=cmd_runs_pull)

    p = sub.add_parser("mlflow-ui", help="start the MLflow UI over the tracking store on 127.0.0.1")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_mlflow_ui)


def add_dvc_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dvc",
        action="store_true",
        help="after a successful data cycle, record the lakehouse with DVC (dvc commit; dvc push to the default remote)",
    )


def record_with_dvc(settings) -> None:
    from quant_assets.mlops.dvc import describe_remote, record_lakehouse

    recorded = record_lakehouse(settings.data_dir)
    pushed = f"pushed to {describe_remote(recorded.remote)}" if recorded.remote else describe_remote(None)
    print(f"dvc: lakehouse version {recorded.md5} recorded in {recorded.root / 'dvc.lock'}, {pushed}")
    print("  keep the pointer with git: git add dvc.lock && git commit -m 'lakehouse version'")


def restore_before_catch_up(settings, verbose: bool, progress) -> None:
    """When the lakehouse is missing or behind the version dvc.lock records, run the data
    job's `lakehouse_restore` step alone first, so the catch-up plan starts where that
    version ends instead of re-ingesting the history. Nothing (and no DVC process) when no
    pull is due: every data run starts with the same step anyway."""
    from quant_assets import runner
    from quant_assets.definitions import DATA_JOB, RESTORE_ASSET
    from quant_assets.mlops.dvc import pull_plan

    if not pull_plan(settings.data_dir).needed:
        return
    with progress:
        summary = runner.execute(settings, DATA_JOB, assets=[RESTORE_ASSET], verbose=verbose)
    print(f"lakehouse restore: run {summary.run_id} in {summary.seconds:.1f}s")
    print(restore_line(summary.asset_metadata.get(RESTORE_ASSET)) or "  nothing to restore")


def restore_line(metadata: dict | None) -> str | None:
    """The summary line of a `lakehouse_restore` step that pulled a version; None otherwise."""
    if not metadata or not metadata.get("restored"):
        return None
    return (
        f"  lakehouse_restore: restored DVC version {metadata.get('dvc_version')} from "
        f"{metadata.get('remote')} ({metadata.get('reason')})"
    )


def cmd_reproduce(args: argparse.Namespace) -> int:
    from quant_assets.mlops.reproduce import reproduce
    from quant_resources.settings import get_settings

    result = reproduce(get_settings(), args.run_id, keep=args.keep)
    print(f"reproduce {result.run_id} (as of {result.as_of})")
    if result.fetched_from:
        print(f"  run folder: not on this disk, fetched from {result.fetched_from}")
    print(f"  lakehouse: {result.source_detail}")
    print(f"  features: {result.features_detail}")
    print(f"  re-ran the alpha cycle as run {result.rerun_id} in {result.seconds:.1f}s")
    by_bytes = sum(c.how == "bytes" for c in result.comparisons)
    by_content = [c.name for c in result.comparisons if c.how == "content"]
    if result.identical:
        print(f"  identical: {len(result.comparisons)} files ({by_bytes} by sha256, {', '.join(by_content)} by content)")
    else:
        print(f"  differs: {len(result.differences)} of {len(result.comparisons)} files")
        for c in result.differences:
            print(f"    {c.name}: {c.detail}")
    if args.keep:
        print(f"  workspace kept: {result.workspace}")
    return 0 if result.identical else 1


def cmd_champion(args: argparse.Namespace) -> int:
    from quant_assets.mlops.registry import parameter_differences, policy_report
    from quant_resources.settings import get_settings
    from quant_resources.tracking.resource import redact, tracking_uri_for
    from quant_resources.tracking.worker import sqlite_store_path

    uri = tracking_uri_for(get_settings())
    store = sqlite_store_path(uri)
    if store is not None and not store.exists():
        raise QuantError(f"no MLflow store at {store}: run the alpha cycle first (quant alpha)")
    report = policy_report(uri)
    print(f"{report['model']} at {redact(uri)}: {report['versions']} version(s)")
    champion, challenger = report["champion"], report["challenger"]
    if champion is None:
        print("  no version has an out-of-sample Sharpe yet: no champion")
        return 0
    for alias, entry in (("champion", champion), ("challenger", challenger)):
        if entry is None:
            print(f"  {alias:<10} none (only one ranked version)")
            continue
        objective = entry["parameters"].get("optimization", {}).get("objective", "?")
        print(
            f"  {alias:<10} v{entry['version']}: {_metrics_line(entry['metrics'])}; objective {objective}, "
            f"as of {entry['as_of']}, Dagster run {entry['dagster_run_id']}"
        )
    if challenger is not None:
        deltas = []
        for key, label, pct in (("sharpe", "Sharpe", False), ("annual_return", "annual return", True), ("max_drawdown", "max drawdown", True)):
            a, b = champion["metrics"].get(key), challenger["metrics"].get(key)
            if a is not None and b is not None:
                deltas.append(f"{label} {a - b:+.2%}" if pct else f"{label} {a - b:+.2f}")
        print(f"  champion - challenger: {', '.join(deltas)}")
        changed = parameter_differences(champion["parameters"], challenger["parameters"])
        if changed:
            listed = "; ".join(f"{k} {a!r} vs {b!r}" for k, (a, b) in changed.items())
            print(f"  parameters that differ (champion vs challenger): {listed}")
        else:
            print("  same parameters")
    return 0


def _metrics_line(metrics: dict) -> str:
    def pct(key):
        return f"{metrics[key]:.2%}" if key in metrics else "n/a"

    sharpe = f"{metrics['sharpe']:.2f}" if "sharpe" in metrics else "n/a"
    sortino = f"{metrics['sortino']:.2f}" if "sortino" in metrics else "n/a"
    return (
        f"Sharpe {sharpe}, Sortino {sortino}, annual return {pct('annual_return')}, "
        f"volatility {pct('annual_volatility')}, max drawdown {pct('max_drawdown')}, turnover/yr "
        + (f"{metrics['annual_turnover']:.2f}" if "annual_turnover" in metrics else "n/a")
    )


def _runs_url(settings) -> str:
    if not settings.runs_url:
        raise QuantError("QUANT_RUNS_URL is not set: say where run folders are archived (s3://bucket/prefix)")
    return settings.runs_url


def cmd_runs_push(args: argparse.Namespace) -> int:
    """Upload sealed run folders the bucket lacks: what a failed upload at the end of a run left."""
    from quant_resources.io_managers import SEAL_FILE, archived_runs, push_run_folder
    from quant_resources.settings import get_settings

    settings = get_settings()
    url = _runs_url(settings)
    runs_dir = settings.runs_dir
    if args.run_ids:
        wanted = [settings.layout.run_dir(run_id) for run_id in args.run_ids]
    else:
        found = runs_dir.glob("*") if runs_dir.is_dir() else []
        wanted = sorted(p for p in found if not p.name.startswith(".") and (p / SEAL_FILE).exists())
    on_bucket = archived_runs(url)
    todo = [p for p in wanted if p.name not in on_bucket]
    print(f"runs push: {len(wanted)} sealed run folders here, {len(wanted) - len(todo)} already on {url}, {len(todo)} to upload")
    failed = 0
    for run_dir in todo:
        try:
            done = push_run_folder(url, run_dir)
        except QuantError as exc:
            failed += 1
            print(f"  {run_dir.name}: FAILED: {exc}")
            continue
        print(f"  {run_dir.name}: {done.files} files, {done.bytes} bytes -> {done.url}")
    if failed:
        print(f"runs push: {failed} of {len(todo)} failed; run it again")
    return 1 if failed else 0


def cmd_runs_pull(args: argparse.Namespace) -> int:
    from quant_resources.io_managers import fetch_run_folder
    from quant_resources.settings import get_settings

    settings = get_settings()
    url = _runs_url(settings)
    for run_id in args.run_ids:
        run_dir = settings.layout.run_dir(run_id)
        if run_dir.exists():
            print(f"  {run_id}: already here ({run_dir})")
            continue
        fetch_run_folder(url, settings.runs_dir, run_id)
        print(f"  {run_id}: fetched from {url} into {run_dir}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from quant_assets.mlops.dvc import pull_lakehouse, pull_status
    from quant_resources.layout import StorageLayout
    from quant_resources.settings import get_settings

    data_dir = get_settings().data_dir
    needed, why = pull_status(data_dir)
    if not (needed or args.force):
        print(f"dvc pull: not needed: {why}")
        return 0
    print(f"dvc pull: {why}", flush=True)
    status = pull_lakehouse(data_dir)
    print(f"  restored {StorageLayout(data_dir).lakehouse_dir}" + (f" ({status})" if status else ""))
    return 0


def cmd_mlflow_ui(args: argparse.Namespace) -> int:
    """The MLflow server in a session of its own, supervised: Ctrl-C or a plain `kill PID`
    of this process stops the server and every process it started."""
    from quant_resources.settings import get_settings
    from quant_resources.tracking.resource import artifact_location_for, redact, tracking_uri_for
    from quant_resources.tracking.worker import ensure_sqlite_store, sqlite_store_path

    settings = get_settings()
    uri = tracking_uri_for(settings)
    artifacts = artifact_location_for(uri, settings.mlflow_artifacts_url)
    store = sqlite_store_path(uri)
    if store is not None:
        ensure_sqlite_store(store, artifacts)  # from the migrated template: starts in seconds
        if "://" not in artifacts:
            Path(artifacts).mkdir(parents=True, exist_ok=True)
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow), "server", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port), "--workers", "1"]
    if artifacts:
        command += ["--default-artifact-root", artifacts]
    # MLflow 3's job runner (huey consumers) is not needed to browse runs and outlives a kill.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    print(f"MLflow UI: http://{args.host}:{args.port} over {redact(uri)}; Ctrl-C or `kill {os.getpid()}` stops it", flush=True)
    return _supervise(command, env)


class _Stop(Exception):
    pass


def _supervise(command: list[str], env: dict[str, str]) -> int:
    def stop(signum, frame):
        raise _Stop

    process = subprocess.Popen(command, env=env, start_new_session=True)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        return process.wait()
    except _Stop:
        _stop_group(process)
        return 0


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the server's whole session, SIGKILL to what is left after 20 s."""
    deadline = time.monotonic() + 20
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    while time.monotonic() < deadline:
        process.poll()  # reap the leader, or the group never looks empty
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
