"""Helpers shared by tests: run the data job on a temp lakehouse, read files back."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from quant_assets.definitions import DATA_JOB, build_definitions
from quant_resources.run_tags import RANGE_END, RANGE_START
from quant_resources.settings import PROJECT_ROOT, Settings


def run_data_job(settings: Settings, start: dt.date, end: dt.date | None = None, instance=None):
    defs = build_definitions(settings)
    job = defs.resolve_job_def(DATA_JOB)
    instance = instance or dg.DagsterInstance.ephemeral()
    if end is None or end == start:
        return job.execute_in_process(instance=instance, partition_key=start.isoformat(), raise_on_error=False)
    tags = {RANGE_START: start.isoformat(), RANGE_END: end.isoformat()}
    return job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def metadata_of(result, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        m = event.step_materialization_data.materialization
        if m.asset_key.to_user_string() == asset:
            return {k: getattr(v, "value", v) for k, v in m.metadata.items()}
    raise AssertionError(f"no materialization of {asset}")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def run_dvc(dvc: str, repo: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    return subprocess.run([dvc, *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


def new_dvc_project(root: Path, dvc: str, files: Sequence[str]) -> tuple[Path, Path]:
    """A git repository at root/repo with these files of the project (its DVC project),
    its default DVC remote a local folder root/remote; committed. Returns (repo, remote)."""
    repo, remote = root / "repo", root / "remote"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "test@example.invalid")
    git(repo, "config", "user.name", "test")
    for name in files:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROJECT_ROOT / name, repo / name)
    run_dvc(dvc, repo, "remote", "modify", "local", "url", str(remote))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a DVC project")
    return repo, remote
