"""DVC-versioned lakehouse and `quant reproduce`, with real DVC in a temporary git repository.

The repository gets the project's own dvc.yaml, .dvc/config, .dvcignore and .gitignore,
with its default remote pointed at a temporary folder. Through the CLI, as a user runs
it: a data cycle recorded with `--dvc` (dvc commit + push), an alpha run, a later data
cycle that changes the lakehouse, `quant reproduce` of the first run (identical, from
DVC), a fresh clone restored by `quant pull` (dvc pull).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import git, new_dvc_project, run_data_job

from quant_assets import cli
from quant_assets.mlops.dvc import read_lock_md5
from quant_resources.settings import Settings

AS_OF = dt.date(2025, 6, 30)
LATER = AS_OF + dt.timedelta(days=1)
PROJECT_FILES = ("dvc.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore")




def quant(*args: str) -> int:
    return cli.main(list(args))


def lakehouse_hashes(lakehouse: Path) -> dict[str, str]:
    return {
        str(p.relative_to(lakehouse)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(lakehouse.rglob("*"))
        if p.is_file() and ".locks" not in p.parts
    }


@pytest.fixture(scope="module")
def project(dvc, tmp_path_factory):
    """The repository after: history, the as-of day --dvc, alpha, a later day --dvc; each
    lock committed to git."""
    root = tmp_path_factory.mktemp("dvc")
    repo, remote = new_dvc_project(root, dvc, PROJECT_FILES)
    env = {
        "QUANT_DATA_DIR": str(repo / "data"),
        "QUANT_HISTORY_START": "2024-01-01",
        "QUANT_SYNTHETIC_SYMBOLS": "40",
        "QUANT_UNIVERSE": "small",
        "QUANT_FRESHNESS_HOURS": "1000000",
        "DAGSTER_HOME": str(root / "dagster_home"),
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.chdir(repo)
        history = Settings(
            data_dir=repo / "data", history_start=dt.date(2024, 1, 1), synthetic_symbols=40,
            universe="small", freshness_hours=1e6,
        )
        assert run_data_job(history, history.history_start, AS_OF - dt.timedelta(days=1)).success
        assert quant("data", "--date", AS_OF.isoformat(), "--dvc") == 0
        first_md5 = read_lock_md5(repo, "data/lakehouse")
        git(repo, "add", "dvc.lock")
        git(repo, "commit", "-q", "-m", "lakehouse up to the as-of day")
        assert quant("alpha", "--date", AS_OF.isoformat()) == 0
        (run_id,) = [p.name for p in (repo / "data" / "runs").iterdir()]
        assert quant("data", "--date", LATER.isoformat(), "--dvc") == 0
        git(repo, "add", "dvc.lock")
        git(repo, "commit", "-q", "-m", "one more day")
    return {"repo": repo, "remote": remote, "env": env, "run_id": run_id, "first_md5": first_md5}


@pytest.fixture
def in_project(project, monkeypatch):
    for key, value in project["env"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(project["repo"])
    return project


def test_data_cycle_with_dvc_commits_and_pushes_each_lakehouse_version(project):
    repo = project["repo"]
    latest = read_lock_md5(repo, "data/lakehouse")
    assert project["first_md5"] and latest and latest != project["first_md5"]  # the later day changed it
    pushed = {p.name for p in (project["remote"] / "files" / "md5").rglob("*.dir")}
    for md5 in (project["first_md5"], latest):
        digest = md5.removesuffix(".dir")
        assert f"{digest[2:]}.dir" in pushed, md5  # both versions are on the remote
    assert "data/lakehouse" not in git(repo, "ls-files")  # git holds the pointer, not the data
    listing = json.loads(next((project["remote"] / "files" / "md5").rglob(f"{latest[2:-4]}.dir")).read_text())
    assert not [e for e in listing if ".locks" in e["relpath"]]  # .dvcignore keeps the locks out


def test_the_alpha_manifest_names_the_dvc_version_it_read(project):
    manifest = json.loads((project["repo"] / "data" / "runs" / project["run_id"] / "manifest.json").read_text())
    assert manifest["dvc_lakehouse_md5"] == project["first_md5"]


def test_reproduce_restores_the_recorded_version_and_reports_identical_hashes(in_project, capsys):
    assert quant("reproduce", in_project["run_id"]) == 0
    out = capsys.readouterr().out
    assert f"DVC version {in_project['first_md5']}" in out
    assert "identical:" in out and "by sha256" in out


def test_reproduce_from_the_runs_own_snapshot_when_no_dvc_version_is_recorded(in_project, capsys):
    runs = in_project["repo"] / "data" / "runs"
    copy = runs / "copy-without-dvc"
    shutil.copytree(runs / in_project["run_id"], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["dvc_lakehouse_md5"] = None
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    try:
        assert quant("reproduce", copy.name) == 0
    finally:
        shutil.rmtree(copy)
    out = capsys.readouterr().out
    assert "the run's own snapshot files" in out and "identical:" in out


def test_reproduce_names_the_files_that_differ(in_project, capsys):
    runs = in_project["repo"] / "data" / "runs"
    copy = runs / "copy-tampered"
    shutil.copytree(runs / in_project["run_id"], copy)
    weights = copy / "weights.parquet"
    weights.write_bytes(weights.read_bytes() + b"\0")
    try:
        assert quant("reproduce", copy.name) == 1
    finally:
        shutil.rmtree(copy)
    out = capsys.readouterr().out
    assert "differs: 1 of" in out and "weights.parquet: sha256" in out


def test_dvc_pull_restores_the_lakehouse_in_a_fresh_clone(project, tmp_path, monkeypatch, capsys):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project["repo"]), str(clone)], check=True)
    assert not (clone / "data" / "lakehouse").exists()
    for key, value in {**project["env"], "QUANT_DATA_DIR": str(clone / "data")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(clone)
    assert quant("pull") == 0
    assert "the lakehouse is missing" in capsys.readouterr().out
    restored = lakehouse_hashes(clone / "data" / "lakehouse")
    assert restored == lakehouse_hashes(project["repo"] / "data" / "lakehouse")
    assert "catalog.json" in restored and len(restored) > 20
    assert quant("pull") == 0  # now up to date: nothing to do
    assert "not needed" in capsys.readouterr().out


def test_data_with_dvc_outside_a_dvc_project_says_what_to_do(tmp_path, dvc):
    from quant_assets.mlops.dvc import DvcError, record_lakehouse

    with pytest.raises(DvcError, match="no DVC project"):
        record_lakehouse(tmp_path / "data", dvc=dvc)
