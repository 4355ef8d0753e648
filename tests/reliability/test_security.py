"""Security: no path traversal, servers on loopback, secrets never written anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from quant_assets.cli import build_parser
from quant_resources.errors import InvalidSymbolError
from quant_resources.io_managers import RunArtifactIOManager
from quant_resources.symbols import safe_child


@pytest.mark.parametrize("run_id", ["../../etc", "a/b", "..", ""])
def test_run_ids_cannot_leave_the_runs_folder(tmp_path, run_id):
    manager = RunArtifactIOManager(runs_dir=str(tmp_path / "runs"))
    with pytest.raises(InvalidSymbolError):
        manager.run_dir(run_id)


def test_safe_child_refuses_escapes(tmp_path):
    for name in ("../x", "/etc/passwd", "a/../../b"):
        with pytest.raises(InvalidSymbolError):
            safe_child(tmp_path, name)


def test_dagster_ui_binds_to_loopback_by_default():
    args = build_parser().parse_args(["ui"])
    assert args.host == "127.0.0.1"


def test_mlflow_ui_binds_to_loopback_by_default():
    makefile = (Path(__file__).parents[2] / "Makefile").read_text()
    assert "\nmlflow-ui:" in makefile
    recipe = makefile.split("\nmlflow-ui:", 1)[1].split("\n\n", 1)[0]
    assert "--host 127.0.0.1" in recipe


# The secret check runs on a full `make flow-production`: tests/test_flow_production.py.
