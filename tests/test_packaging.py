"""The wheel works outside a checkout: built from the sources, installed into a fresh venv,
it loads the definitions and finds the default universe's scanners in its own package data.

Offline and quick: the wheel is built with this environment's setuptools (no build
isolation), installed without dependencies, and the new venv sees the project's
dependencies through a .pth line naming this environment's site-packages (a plain path:
the .pth files there, among them the editable install's finder, are not run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

PACKAGES = ("quant_assets", "quant_resources")

PROBE = """
import json
import quant_assets
from quant_assets.data.scanners import load_universe, scanners_dir
from quant_assets.definitions import defs
from quant_resources.settings import get_settings

definitions = defs()
settings = get_settings()
universe = load_universe(settings.config_dir, settings.universe)
print(json.dumps({
    "module": quant_assets.__file__,
    "scanners_dir": str(scanners_dir(settings.config_dir)),
    "universe": universe.universe,
    "scanners": [s.name for s in universe.scanners],
    "jobs": sorted(job.name for job in definitions.resolve_all_job_defs()),
    "assets": len(list(definitions.resolve_all_asset_specs())),
}))
"""


def _run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def _build_wheel(tmp_path: Path) -> Path:
    # Build from a copy so that the build leaves no build/ or egg-info in the checkout.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(PROJECT_ROOT / name, src / name)
    for package in PACKAGES:
        shutil.copytree(PROJECT_ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = tmp_path / "wheels"
    _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
        "--quiet", "-w", wheels, src,
    )  # fmt: skip
    (wheel,) = wheels.glob("quant_lakehouse-*.whl")
    return wheel


def test_the_installed_wheel_loads_the_definitions_and_its_scanners(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {Path(p).name for p in (PROJECT_ROOT / "quant_assets" / "configs" / "scanners").glob("*.yaml")}
    assert "default.yaml" in shipped
    assert {f"quant_assets/configs/scanners/{name}" for name in shipped} <= names
    assert not any(name.startswith(("configs/", "tests/")) for name in names)

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "quant_lakehouse_test_deps.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    # Without PYTHONPATH: a checkout on it holds an egg-info that pip would take for the
    # project already installed, and skip the wheel.
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANT_") and k != "PYTHONPATH"}
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel, env=env)

    work = tmp_path / "work"
    work.mkdir()
    env["QUANT_DATA_DIR"] = str(work / "data")
    probe = json.loads(_run(python, "-c", PROBE, cwd=work, env=env).stdout.strip().splitlines()[-1])

    module = Path(probe["module"]).resolve()
    assert module.is_relative_to(site.resolve()), f"quant_assets came from {module}, not the new venv"
    assert not module.is_relative_to(PROJECT_ROOT.resolve())
    assert Path(probe["scanners_dir"]).resolve().is_relative_to(site.resolve())
    assert probe["universe"] == "default" and probe["scanners"]
    assert {"data_cycle", "alpha_cycle", "gap_repair_job", "data_audit_job"} <= set(probe["jobs"])
    assert probe["assets"] > 0
