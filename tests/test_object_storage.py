"""Run folders, MLflow artifacts and the DVC remote on S3-compatible object storage.

A local S3 server (moto's, on 127.0.0.1 at a free port) is started by the tests, with
dummy credentials; nothing reaches the internet. An alpha run archives its sealed folder
to the bucket and its MLflow artifacts land in another; an upload that fails leaves the
run sealed and says so, and `quant runs push` uploads it later; `quant reproduce` fetches
a folder that is not on this disk; the lakehouse goes to a DVC remote on the bucket and
comes back byte-identical.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from helpers import new_dvc_project, run_data_job

from quant_assets import cli
from quant_assets.definitions import ALPHA_JOB, build_definitions
from quant_assets.mlops.reproduce import remove_tree, reproduce
from quant_resources.errors import ConfigError
from quant_resources.io_managers import ARCHIVE_TAG, SEAL_FILE
from quant_resources.lakehouse import Lakehouse
from quant_resources.objectstore import ObjectStore, ObjectStoreError, split_s3_url
from quant_resources.schema import date_to_ts
from quant_resources.settings import Settings
from quant_resources.tracking.resource import artifact_location_for

pytestmark = pytest.mark.slow

AS_OF = dt.date(2025, 3, 31)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 (a free port), AWS_* set to it with dummy
    credentials; a boto3 client on it."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    empty = tmp_path_factory.mktemp("aws") / "empty"
    empty.write_text("")
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith(("AWS_", "MLFLOW_S3_"))]:
            patch.delenv(key)
        patch.setenv("AWS_ENDPOINT_URL", endpoint)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("AWS_CONFIG_FILE", str(empty))  # no ~/.aws of this machine
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
        patch.setenv("NO_PROXY", "127.0.0.1,localhost")
        client = boto3.client("s3", endpoint_url=endpoint)
        yield client
    server.stop()


def keys(client, bucket: str, prefix: str = "") -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".locks" not in p.parts
    }


def quant(*args: str) -> int:
    return cli.main(list(args))


# -- the object store ---------------------------------------------------------------------
def test_a_folder_is_complete_on_the_bucket_only_with_its_commit_marker(s3, tmp_path):
    s3.create_bucket(Bucket="folders")
    store = ObjectStore("s3://folders/some/prefix")
    folder = tmp_path / "run-1"
    (folder / "data").mkdir(parents=True)
    (folder / "a.json").write_text("{}")
    (folder / "data" / "x.parquet").write_bytes(os.urandom(3000))
    (folder / ".finished").write_text("done")
    moved = store.upload_folder(folder, "run-1", ".finished")
    assert (moved.url, moved.files) == ("s3://folders/some/prefix/run-1", 3)
    assert store.complete_folders(".finished") == {"run-1"}

    # A folder whose marker never arrived (an interrupted upload) is not complete, nor fetched.
    s3.put_object(Bucket="folders", Key="some/prefix/run-2/a.json", Body=b"{}")
    assert store.complete_folders(".finished") == {"run-1"}
    with pytest.raises(ObjectStoreError, match="run-2 is incomplete \\(no .finished\\)"):
        store.download_folder("run-2", tmp_path / "back-2", ".finished", lambda parts: None)

    back = tmp_path / "back"
    store.download_folder("run-1", back, ".finished", lambda parts: None)
    assert tree(back) == tree(folder)

    # Bytes that are not what was uploaded are refused, naming the object.
    head = s3.head_object(Bucket="folders", Key="some/prefix/run-1/a.json")
    s3.put_object(Bucket="folders", Key="some/prefix/run-1/a.json", Body=b"[]", Metadata=head["Metadata"])
    with pytest.raises(ObjectStoreError, match="run-1/a.json is damaged"):
        store.download_folder("run-1", tmp_path / "back-3", ".finished", lambda parts: None)


def test_s3_settings():
    assert split_s3_url("s3://bucket/a/b/") == ("bucket", "a/b")
    assert split_s3_url("s3://bucket") == ("bucket", "")
    with pytest.raises(ConfigError, match="QUANT_RUNS_URL='/tmp/runs' is not an S3 URL"):
        Settings(runs_url="/tmp/runs")
    env = {"QUANT_RUNS_URL": "s3://b/runs", "QUANT_MLFLOW_ARTIFACTS_URL": "s3://b/mlflow", "QUANT_DVC_REMOTE": "s3://b/dvc"}
    settings = Settings.from_env(env)
    assert (settings.runs_url, settings.mlflow_artifacts_url, settings.dvc_remote) == tuple(env.values())
    assert artifact_location_for(settings.tracking_uri, settings.mlflow_artifacts_url) == "s3://b/mlflow"
    assert artifact_location_for("sqlite:////x/mlflow/mlflow.db") == "/x/mlflow/artifacts"


# -- run folders and MLflow artifacts of real alpha runs ------------------------------------
def run_alpha(settings: Settings, instance: dg.DagsterInstance):
    job = build_definitions(settings).resolve_job_def(ALPHA_JOB)
    result = job.execute_in_process(instance=instance, partition_key=AS_OF.isoformat(), raise_on_error=False)
    assert result.success
    return result.run_id


@pytest.fixture(scope="module")
def alpha_runs(s3, tmp_path_factory):
    """A small lakehouse; one alpha run archived to `runs`, with its MLflow artifacts in
    `mlflow`; one whose archive bucket does not exist."""
    for bucket in ("runs", "mlflow"):
        s3.create_bucket(Bucket=bucket)
    root = tmp_path_factory.mktemp("object_storage")
    settings = Settings(
        data_dir=root / "data", history_start=dt.date(2024, 10, 1), synthetic_symbols=30,
        universe="small", freshness_hours=1e6,
        runs_url="s3://runs/alpha", mlflow_artifacts_url="s3://mlflow/artifacts",
    )
    assert run_data_job(settings, settings.history_start, AS_OF).success
    instance = dg.DagsterInstance.ephemeral()
    archived = run_alpha(settings, instance)
    failed = run_alpha(settings.replace(runs_url="s3://no-such-bucket/alpha"), instance)
    return {"settings": settings, "instance": instance, "archived": archived, "failed": failed, "root": root}


def test_a_sealed_run_folder_is_archived_to_the_bucket(s3, alpha_runs):
    settings, run_id = alpha_runs["settings"], alpha_runs["archived"]
    run_dir = settings.layout.run_dir(run_id)
    assert (run_dir / SEAL_FILE).exists()
    local = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    assert keys(s3, "runs", f"alpha/{run_id}/") == sorted(f"alpha/{run_id}/{name}" for name in local)
    for name in ("manifest.json", "weights.parquet", SEAL_FILE):
        body = s3.get_object(Bucket="runs", Key=f"alpha/{run_id}/{name}")["Body"].read()
        assert body == (run_dir / name).read_bytes()
    run = alpha_runs["instance"].get_run_by_id(run_id)
    assert run.tags[ARCHIVE_TAG] == f"s3://runs/alpha/{run_id}"


def test_mlflow_artifacts_of_an_alpha_run_land_in_the_bucket(s3, alpha_runs):
    from mlflow import MlflowClient

    settings, run_id = alpha_runs["settings"], alpha_runs["archived"]
    client = MlflowClient(settings.tracking_uri)
    (tracked,) = client.search_runs(
        [client.get_experiment_by_name("quant-lakehouse").experiment_id],
        filter_string=f"tags.dagster_run_id = '{run_id}'",
    )
    assert tracked.info.artifact_uri.startswith("s3://mlflow/artifacts/")
    prefix = tracked.info.artifact_uri.removeprefix("s3://mlflow/") + "/"
    names = {key.removeprefix(prefix) for key in keys(s3, "mlflow", prefix)}
    assert {"manifest.json", "selection.json", "weights.parquet", "backtest.json", "audit.jsonl"} <= names
    body = s3.get_object(Bucket="mlflow", Key=prefix + "manifest.json")["Body"].read()
    assert body == (settings.layout.run_dir(run_id) / "manifest.json").read_bytes()
    assert not (settings.mlflow_dir / "artifacts").exists()  # nothing went to the local folder


def test_a_failed_upload_leaves_the_run_sealed_says_so_and_runs_push_retries_it(s3, alpha_runs, monkeypatch, capsys):
    settings, run_id, instance = alpha_runs["settings"], alpha_runs["failed"], alpha_runs["instance"]
    assert (settings.layout.run_dir(run_id) / SEAL_FILE).exists()  # the run finished: the seal is the commit
    run = instance.get_run_by_id(run_id)
    assert run.tags[ARCHIVE_TAG].startswith(f"failed: upload to s3://no-such-bucket/alpha/{run_id}/") and "NoSuchBucket" in run.tags[ARCHIVE_TAG]
    errors = [e.user_message for e in instance.all_logs(run_id) if "NOT archived" in (e.user_message or "")]
    assert len(errors) == 1 and "s3://no-such-bucket/alpha" in errors[0] and "`quant runs push`" in errors[0]

    s3.create_bucket(Bucket="no-such-bucket")
    monkeypatch.setenv("QUANT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("QUANT_RUNS_URL", "s3://no-such-bucket/alpha")
    assert quant("runs", "push") == 0
    out = capsys.readouterr().out
    assert "2 sealed run folders here, 0 already on s3://no-such-bucket/alpha, 2 to upload" in out
    assert f"{run_id}: " in out and f"-> s3://no-such-bucket/alpha/{run_id}" in out
    assert f"alpha/{run_id}/{SEAL_FILE}" in keys(s3, "no-such-bucket")
    assert quant("runs", "push") == 0
    assert "2 already on s3://no-such-bucket/alpha, 0 to upload" in capsys.readouterr().out


def test_reproduce_fetches_a_run_folder_that_is_not_on_this_disk(s3, alpha_runs, tmp_path):
    """Another host's data folder: the same lakehouse, none of the run folders."""
    settings, run_id = alpha_runs["settings"], alpha_runs["archived"]
    elsewhere = settings.replace(data_dir=tmp_path / "data")
    shutil.copytree(settings.lakehouse_dir, elsewhere.lakehouse_dir)
    assert not elsewhere.layout.run_dir(run_id).exists()
    result = reproduce(elsewhere, run_id)
    assert result.fetched_from == f"s3://runs/alpha/{run_id}"
    assert result.identical, [(c.name, c.detail) for c in result.differences]
    fetched = elsewhere.layout.run_dir(run_id)
    assert tree(fetched) == tree(settings.layout.run_dir(run_id))
    assert {oct(p.stat().st_mode & 0o777) for p in fetched.rglob("*") if p.is_file()} == {oct(0o444)}  # sealed
    assert not any(result.rerun_id in k for k in keys(s3, "runs"))  # the re-run is never archived
    remove_tree(elsewhere.data_dir)


def test_runs_pull_fetches_by_hand_and_refuses_an_unknown_run(s3, alpha_runs, tmp_path, monkeypatch, capsys):
    run_id = alpha_runs["archived"]
    monkeypatch.setenv("QUANT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("QUANT_RUNS_URL", "s3://runs/alpha")
    assert quant("runs", "pull", run_id) == 0
    assert f"{run_id}: fetched from s3://runs/alpha" in capsys.readouterr().out
    assert (tmp_path / "data" / "runs" / run_id / "manifest.json").exists()
    assert quant("runs", "pull", "no-such-run") == 2
    assert "s3://runs/alpha/no-such-run does not exist" in capsys.readouterr().err
    remove_tree(tmp_path / "data")


# -- the DVC remote -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dvc_s3(request) -> str:
    """DVC with its S3 plugin: QUANT_TEST_DVC when set, else the project's tool env (built
    with `make dvc-tool`, whose DVC_REQUIREMENT is dvc[s3])."""
    dvc = os.environ.get("QUANT_TEST_DVC") or request.getfixturevalue("dvc")
    python = Path(dvc).with_name("python")
    if subprocess.run([str(python), "-c", "import dvc_s3"], capture_output=True).returncode != 0:
        reason = f"{dvc} has no S3 plugin: rm -rf .venv/tools/dvc && make dvc-tool (DVC_REQUIREMENT is dvc[s3])"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return dvc


def test_the_lakehouse_goes_to_an_s3_dvc_remote_and_comes_back_byte_identical(s3, dvc_s3, tmp_path, monkeypatch):
    from quant_assets.mlops.dvc import pull_lakehouse, pull_plan, record_lakehouse

    s3.create_bucket(Bucket="dvc")
    repo, _ = new_dvc_project(tmp_path, dvc_s3, ("dvc.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore"))
    data_dir = repo / "data"
    lakehouse = Lakehouse(data_dir=str(data_dir))
    for i, symbol in enumerate(("BTCUSDT", "ETHUSDT", "SOLUSDT")):
        days = [dt.date(2024, 1, 1) + dt.timedelta(days=d) for d in range(30)]
        bars = pl.DataFrame({
            "timestamp": [date_to_ts(d) for d in days], "open": [1.0 + i] * 30, "high": [2.0] * 30,
            "low": [0.5] * 30, "close": [1.5] * 30, "volume": [float(d) for d in range(30)],
        })
        lakehouse.merge_bars("BINANCE", symbol, bars)
    lakehouse.update_catalog(meta={"last_partition": "2024-01-30"})
    before = tree(lakehouse.root)

    monkeypatch.setenv("QUANT_DVC_REMOTE", "s3://dvc/lakehouse")
    recorded = record_lakehouse(data_dir, dvc_s3)
    assert recorded.remote["name"] == "quant" and recorded.remote["url"] == "s3://dvc/lakehouse"
    assert recorded.remote["endpointurl"] == os.environ["AWS_ENDPOINT_URL"]
    assert (repo / ".dvc" / "config.local").exists() and "quant" not in (repo / ".dvc" / "config").read_text()
    stored = keys(s3, "dvc", "lakehouse/")
    assert len(stored) == len(before) + 1  # every file, and the directory listing

    shutil.rmtree(lakehouse.root)
    shutil.rmtree(repo / ".dvc" / "cache")  # nothing left on this disk: the pull reads the bucket
    plan = pull_plan(data_dir, dvc_s3)
    assert plan.needed and plan.remote["url"] == "s3://dvc/lakehouse"
    pull_lakehouse(data_dir, dvc_s3)
    assert tree(lakehouse.root) == before
