"""DVC for the orchestration layer: record, push, pull and restore lakehouse versions.

The lakehouse (`data/lakehouse`) is the output of the `data_cycle` stage of `dvc.yaml`;
`dvc.lock` holds the version last recorded, as the md5 of a DVC directory object. Only
the CLI and the Makefile call DVC, always as a command from its own environment
(`.venv/tools/dvc`, made by `make dvc-tool`: in the project environment DVC's hydra-core
would pin an antlr4 that breaks Dagster's asset selection). Loaders never call DVC or git:
the only function here they use, `recorded_lakehouse_md5`, reads files. The orchestrator
calls the rest: the data job's first step (`quant_assets/data/restore.py`), the CLI.

- `record_lakehouse`: `dvc commit --force data_cycle` (the stage's output as it is now
  goes into the cache and `dvc.lock`), then `dvc push data_cycle` when a default remote
  is configured. Committing `dvc.lock` to git is left to the user: this never commits.
- `pull_plan` / `pull_lakehouse`: the recorded version is pulled when the lakehouse is
  missing or behind it (its last data partition is older than the recorded one's).
  `pull_plan` reads files only, and calls DVC only when a pull is due (to ask for the
  default remote) or when the cache lacks the recorded version's listing (`dvc fetch`):
  deciding that there is nothing to do costs no DVC process. `pull_status` is its
  (needed, why) for `quant pull`.
- `QUANT_DVC_REMOTE` (e.g. `s3://bucket/dvc`): every DVC command of `quant` first makes it
  the default remote `quant` of this checkout (`.dvc/config.local`, the committed
  `.dvc/config` untouched), its `endpointurl` from AWS_ENDPOINT_URL for a non-AWS S3
  server (`DvcProject.use_remote`). S3 needs the tool environment built with `dvc[s3]`.
- `restore_version`: checks any recorded version out into a scratch DVC workspace (the
  project's cache first, its default remote for what the cache lacks), for
  `quant reproduce`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from quant_resources.errors import QuantError
from quant_resources.layout import StorageLayout
from quant_resources.objectstore import endpoint_url
from quant_resources.settings import PROJECT_ROOT, get_settings

STAGE = "data_cycle"
DVC_TOOL = PROJECT_ROOT / ".venv" / "tools" / "dvc" / "bin" / "dvc"
DVC_ENV = {"DVC_NO_ANALYTICS": "1"}
REMOTE = "quant"  # the remote QUANT_DVC_REMOTE configures


class DvcError(QuantError):
    """A DVC command or project that cannot do what was asked; the message says what to do."""


# -- reading what DVC recorded (no DVC command: loaders may use these) ------------------
def find_project(start: Path) -> Path | None:
    """The nearest folder at or above `start` holding `.dvc/` and `dvc.yaml`."""
    for folder in [start, *start.parents]:
        if (folder / ".dvc").is_dir() and (folder / "dvc.yaml").is_file():
            return folder
    return None


def lakehouse_out(root: Path, data_dir: Path) -> str | None:
    """`data/lakehouse` as dvc.yaml's `data_cycle` stage names it, when it is this data_dir's."""
    try:
        stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
        outs = stages[STAGE].get("outs", [])
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None
    wanted = StorageLayout(data_dir).lakehouse_dir.resolve()
    for out in outs:
        path = next(iter(out)) if isinstance(out, dict) else out
        if (root / path).resolve() == wanted:
            return str(path)
    return None


def read_lock_md5(root: Path, out: str) -> str | None:
    """The md5 (`<hash>.dir`) dvc.lock records for `out`, else None."""
    try:
        lock = yaml.safe_load((root / "dvc.lock").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    for stage in (lock.get("stages") or {}).values():
        for entry in stage.get("outs") or []:
            if entry.get("path") == out and entry.get("md5"):
                return str(entry["md5"])
    return None


def cache_dir(root: Path) -> Path:
    """The project's DVC cache: `cache.dir` of .dvc/config.local or .dvc/config, else .dvc/cache."""
    for name in ("config.local", "config"):
        configured = _config_value(root / ".dvc" / name, "cache", "dir")
        if configured:
            path = Path(os.path.expanduser(configured))
            return path if path.is_absolute() else (root / ".dvc" / path).resolve()
    return root / ".dvc" / "cache"


def directory_listing(root: Path, md5: str) -> dict[str, str] | None:
    """relpath -> md5 of a recorded directory version, from the cache; None if not cached."""
    digest = md5.removesuffix(".dir")
    path = cache_dir(root) / "files" / "md5" / digest[:2] / f"{digest[2:]}.dir"
    try:
        return {entry["relpath"]: entry["md5"] for entry in json.loads(path.read_text())}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def recorded_lakehouse_md5(data_dir: Path, used: Mapping[str, bytes]) -> str | None:
    """The DVC version of the lakehouse a run used, or None when it cannot be vouched for.

    `used` maps lakehouse-relative paths (`ohlcv/X_Y_1d.parquet`) to the bytes the run
    read. The version recorded in dvc.lock is returned only when each of those files and
    the current `catalog.json` are byte-identical to that version in the DVC cache: a
    lakehouse changed after the last `dvc commit` is not that version.
    """
    root = find_project(data_dir.resolve())
    out = lakehouse_out(root, data_dir) if root else None
    md5 = read_lock_md5(root, out) if out else None
    listing = directory_listing(root, md5) if md5 else None
    if listing is None:
        return None
    try:
        catalog = StorageLayout(data_dir).catalog_path.read_bytes()
    except OSError:
        return None
    for relpath, content in {**used, "catalog.json": catalog}.items():
        if listing.get(relpath) != hashlib.md5(content, usedforsecurity=False).hexdigest():
            return None
    return md5


def _config_value(path: Path, section: str, key: str) -> str | None:
    """A value of DVC's INI-like config (`[cache]` / `dir = ...`), without DVC."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    current = None
    for raw in lines:
        line = raw.strip()
        if line.startswith("["):
            current = line.strip("[]'\" ")
        elif current == section and (match := re.match(rf"{key}\s*=\s*(.+)", line)):
            return match.group(1).strip()
    return None


# -- DVC commands (orchestration only) --------------------------------------------------
def dvc_executable() -> str:
    """DVC from its tool environment, else from PATH; DvcError saying how to install it."""
    if DVC_TOOL.exists():
        return str(DVC_TOOL)
    found = shutil.which("dvc")
    if found:
        return found
    raise DvcError(
        f"DVC is not installed: run `make dvc-tool` (it installs DVC into {DVC_TOOL.parent.parent}, "
        "outside the project environment)"
    )


@dataclass(frozen=True)
class DvcProject:
    root: Path
    dvc: str

    @classmethod
    def containing(cls, data_dir: Path, dvc: str | None = None) -> DvcProject:
        root = find_project(data_dir.resolve())
        if root is None:
            raise DvcError(
                f"no DVC project (dvc.yaml and .dvc/) at or above {data_dir}: DVC versions the "
                "lakehouse of a quant-lakehouse checkout; run there, or leave out --dvc"
            )
        project = cls(root, dvc or dvc_executable())
        if url := get_settings().dvc_remote:
            project.use_remote(url, endpoint_url())
        return project

    def use_remote(self, url: str, endpoint: str | None = None) -> None:
        """Make `url` the default remote `quant` of this checkout, in `.dvc/config.local`
        (never committed; it overrides `.dvc/config`), with `endpointurl` for an s3:// URL
        when `endpoint` is given. No DVC process when the file already says so."""
        local = self.root / ".dvc" / "config.local"
        section = f'remote "{REMOTE}'  # how `_config_value` reads the header ['remote "quant"']
        endpoint = endpoint if url.startswith("s3://") else None
        if (
            _config_value(local, "core", "remote") == REMOTE
            and _config_value(local, section, "url") == url
            and _config_value(local, section, "endpointurl") == endpoint
        ):
            return
        self.run("remote", "add", "--local", "--default", "--force", REMOTE, url)
        if endpoint:
            self.run("remote", "modify", "--local", REMOTE, "endpointurl", endpoint)

    def run(self, *args: str, cwd: Path | None = None) -> str:
        """Run `dvc args...`; its stdout, or DvcError with DVC's own last words."""
        command = [self.dvc, *args]
        done = subprocess.run(
            command, cwd=cwd or self.root, env={**os.environ, **DVC_ENV}, capture_output=True, text=True
        )
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
            raise DvcError(f"`dvc {' '.join(args)}` failed in {cwd or self.root}: {' / '.join(said)}")
        return done.stdout

    def out_for(self, data_dir: Path) -> str:
        out = lakehouse_out(self.root, data_dir)
        if out is None:
            raise DvcError(
                f"{StorageLayout(data_dir).lakehouse_dir} is not the `{STAGE}` output of the DVC project at "
                f"{self.root} (see its dvc.yaml): run with the project's data folder "
                "(QUANT_DATA_DIR unset), or leave out --dvc"
            )
        return out

    def default_remote(self) -> dict[str, str] | None:
        """{"name", "url", and its other options} of the default remote, else None."""
        settings: dict[str, str] = {}
        for line in self.run("config", "--list").splitlines():
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
        name = settings.get("core.remote")
        if not name or f"remote.{name}.url" not in settings:
            return None
        prefix = f"remote.{name}."
        options = {k[len(prefix) :]: v for k, v in settings.items() if k.startswith(prefix)}
        return {"name": name, **options}


@dataclass
class Recorded:
    root: Path
    md5: str
    remote: dict[str, str] | None


def record_lakehouse(data_dir: Path, dvc: str | None = None) -> Recorded:
    """Record the lakehouse as it is now as the `data_cycle` version; push it when a remote is set."""
    project = DvcProject.containing(data_dir, dvc)
    out = project.out_for(data_dir)
    project.run("commit", "--force", STAGE)
    md5 = read_lock_md5(project.root, out)
    if md5 is None:
        raise DvcError(f"`dvc commit {STAGE}` left no version of {out} in {project.root / 'dvc.lock'}")
    remote = project.default_remote()
    if remote is not None:
        project.run("push", STAGE)
    return Recorded(project.root, md5, remote)


@dataclass(frozen=True)
class PullPlan:
    """Whether the lakehouse must be restored from the version dvc.lock records, and why."""

    needed: bool
    why: str
    md5: str | None = None  # the recorded version, when there is one
    remote: dict[str, str] | None = None  # the default remote, when a pull is due


def pull_plan(data_dir: Path, dvc: str | None = None) -> PullPlan:
    """What restoring `data_dir/lakehouse` to the recorded version takes.

    Nothing to do, without a DVC process: `data_dir` is not the `data_cycle` output of a
    DVC project (QUANT_DATA_DIR points elsewhere), dvc.lock records no version, or the
    lakehouse's last data partition is not older than the recorded version's (read from
    the cache). A pull is due when the lakehouse is missing or behind, and only then is the
    default remote asked for (`dvc config --list`); without one, nothing can be pulled. A
    lakehouse with files but no catalog naming its last partition is never due: its extent
    is unknown, and a pull would overwrite it (`quant pull --force` does, when asked).
    """
    root = find_project(data_dir.resolve())
    if root is None:
        return PullPlan(False, f"{data_dir} is in no DVC project (no dvc.yaml and .dvc/ above it)")
    out = lakehouse_out(root, data_dir)
    if out is None:
        return PullPlan(False, f"{StorageLayout(data_dir).lakehouse_dir} is not the `{STAGE}` output of the DVC project at {root}")
    md5 = read_lock_md5(root, out)
    if md5 is None:
        return PullPlan(False, "dvc.lock records no lakehouse version yet (quant data --dvc records one)")
    layout = StorageLayout(data_dir)
    catalog = layout.catalog_path
    local = _last_partition(catalog.read_bytes()) if catalog.exists() else None
    remote: dict[str, str] | None = None
    if local is None:
        if catalog.exists() or any(layout.ohlcv_dir.glob("*.parquet")):
            # Files whose extent is unknown are never overwritten by a run's automatic pull.
            return PullPlan(
                False,
                f"{layout.lakehouse_dir} holds data but no catalog.json naming its last partition: "
                f"`quant audit` rebuilds the catalog; `quant pull --force` restores the recorded version {md5}",
                md5,
            )
        why = f"the lakehouse is missing; the recorded version is {md5}"
    else:
        if directory_listing(root, md5) is None:  # recorded elsewhere: its listing is on the remote
            project = DvcProject.containing(data_dir, dvc)
            remote = project.default_remote()
            if remote is None:
                return PullPlan(False, f"the recorded version {md5} is not in the DVC cache and no default remote is configured", md5)
            project.run("fetch", STAGE)
        recorded = _recorded_last_partition(root, md5)
        if recorded is None or recorded <= local:
            return PullPlan(
                False, f"the lakehouse ({local}) is not behind the recorded version {md5} ({recorded or 'unknown'})", md5
            )
        why = f"the lakehouse ends at {local}; the recorded version {md5} reaches {recorded}"
    remote = remote or DvcProject.containing(data_dir, dvc).default_remote()
    if remote is None:
        return PullPlan(False, f"{why}, but no default DVC remote is configured (dvc remote add -d NAME URL)", md5)
    return PullPlan(True, why, md5, remote)


def pull_status(data_dir: Path, dvc: str | None = None) -> tuple[bool, str]:
    """(pull needed, why): a remote is configured and the lakehouse is missing or behind."""
    plan = pull_plan(data_dir, dvc)
    return plan.needed, plan.why


def pull_lakehouse(data_dir: Path, dvc: str | None = None) -> str:
    """Check the version recorded in dvc.lock out into the lakehouse (fetching what is missing)."""
    project = DvcProject.containing(data_dir, dvc)
    project.out_for(data_dir)
    project.run("pull", "--force", STAGE)
    return project.run("status", STAGE).strip()


def restore_version(md5: str, workspace: Path, source: DvcProject) -> Path:
    """Check lakehouse version `md5` out into `workspace/data/lakehouse`.

    `workspace` becomes a scratch DVC project (no git) that shares `source`'s cache and
    default remote, so a version still in the cache costs no download.
    """
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "data").mkdir(exist_ok=True)
    source.run("init", "--no-scm", "--quiet", cwd=workspace)
    source.run("config", "cache.dir", str(cache_dir(source.root)), cwd=workspace)
    remote = source.default_remote()
    if remote is not None:
        name = remote.pop("name")
        source.run("remote", "add", "--default", name, remote.pop("url"), cwd=workspace)
        for key, value in remote.items():
            source.run("remote", "modify", name, key, value, cwd=workspace)
    lakehouse = StorageLayout(workspace / "data").lakehouse_dir
    pointer = {"outs": [{"md5": md5, "path": lakehouse.name, "hash": "md5"}]}
    pointer_file = lakehouse.with_name(f"{lakehouse.name}.dvc")  # data/lakehouse.dvc
    pointer_file.write_text(yaml.safe_dump(pointer, sort_keys=False))
    source.run("pull", str(pointer_file.relative_to(workspace)), cwd=workspace)
    return lakehouse


def _last_partition(catalog: bytes) -> str | None:
    try:
        return (json.loads(catalog).get("meta") or {}).get("last_partition")
    except ValueError:
        return None


def _recorded_last_partition(root: Path, md5: str) -> str | None:
    listing = directory_listing(root, md5) or {}
    digest = listing.get("catalog.json")
    if digest is None:
        return None
    path = cache_dir(root) / "files" / "md5" / digest[:2] / digest[2:]
    try:
        return _last_partition(path.read_bytes())
    except OSError:
        return None


def describe_remote(remote: Mapping[str, Any] | None) -> str:
    return f"remote '{remote['name']}' ({remote['url']})" if remote else "no remote configured (not pushed)"
