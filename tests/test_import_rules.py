"""The import rules of docs/architecture.md, read from the source (every import, including
those inside functions):

- the pure core (numerics, indicators, market-data rules) imports nothing of Dagster,
  MLflow or Delta Lake, and of our resources only the pure helpers (names, schema,
  errors): it can be tested and reused without an orchestrator or a lakehouse;
- `quant_resources` never imports `quant_assets`: resources sit below the graph;
- only the entry points (the CLI, the runner) and Dagster's loader reach the definitions;
- nothing but the definitions imports the graph (`quant_assets/defs/`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CORE = [
    "quant_assets/alpha/covariance.py",
    "quant_assets/alpha/hrp.py",
    "quant_assets/alpha/metrics.py",
    "quant_assets/alpha/selection.py",
    "quant_assets/alpha/policy.py",
    "quant_assets/alpha/params.py",
    "quant_assets/alpha/backtest.py",
    "quant_assets/alpha/returns.py",
    "quant_assets/alpha/optimize",
    "quant_assets/features/indicators.py",
    "quant_assets/data/sanitize.py",
    "quant_assets/data/gaps.py",
    "quant_assets/data/quality.py",
    "quant_assets/data/calendar.py",
    "quant_assets/data/scanners.py",
]
FORBIDDEN_IN_CORE = ("dagster", "dagster_mlflow", "mlflow", "deltalake")
PURE_RESOURCES = {
    "quant_resources.schema",
    "quant_resources.errors",
    "quant_resources.symbols",
    "quant_resources.calendars",
}
# The command line (its MLOps commands too) and the runner.
ENTRY_POINTS = {
    "quant_assets/cli.py",
    "quant_assets/runner.py",
    "quant_assets/definitions.py",
    "quant_assets/mlops/cli.py",
}


def modules(entry: str) -> list[Path]:
    path = ROOT / entry
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def imported(path: Path) -> set[str]:
    """Every module `path` imports, absolute names (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join([*base, *([node.module] if node.module else [])]))
            elif node.module:
                names.add(node.module)
    return names


def test_the_rules_see_imports_inside_functions(tmp_path):
    """The reader must not miss a lazy import: the rules would pass on a stub otherwise."""
    module = ROOT / "quant_assets" / "alpha" / "optimize" / "_convex.py"
    assert "cvxpy" in imported(module)  # imported inside a method, on first use


@pytest.mark.parametrize("entry", CORE)
def test_the_core_imports_no_orchestrator_and_no_storage(entry):
    for path in modules(entry):
        for name in imported(path):
            top = name.split(".")[0]
            assert top not in FORBIDDEN_IN_CORE, f"{path.relative_to(ROOT)} imports {name}"
            if top == "quant_resources":
                assert name in PURE_RESOURCES, f"{path.relative_to(ROOT)} imports {name} (I/O)"


def test_resources_never_import_the_graph():
    for path in sorted((ROOT / "quant_resources").rglob("*.py")):
        for name in imported(path):
            assert not name.startswith("quant_assets"), f"{path.relative_to(ROOT)} imports {name}"


def test_only_the_entry_points_reach_the_definitions():
    for path in sorted((ROOT / "quant_assets").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative in ENTRY_POINTS:
            continue
        assert "quant_assets.definitions" not in imported(path), f"{relative} imports the definitions"


def test_nothing_but_the_definitions_imports_the_graph():
    """`quant_assets/defs/` is loaded whole by the definitions; the core, the MLOps home and
    the entry points reach it only through `quant_assets.definitions`."""
    for path in sorted((ROOT / "quant_assets").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative == "quant_assets/definitions.py" or relative.startswith("quant_assets/defs/"):
            continue
        for name in imported(path):
            assert not name.startswith("quant_assets.defs"), f"{relative} imports {name}"


def test_the_graph_is_module_level_assets_loaded_by_dagster():
    """Every asset is importable by name from its domain's module, and the code location
    holds exactly what Dagster's loader finds under defs/ (nothing built in a closure)."""
    import datetime as dt

    import dagster as dg

    import quant_assets.defs
    from quant_assets.definitions import build_definitions
    from quant_assets.defs.alpha.backtest import backtest
    from quant_assets.defs.data.ohlcv import ohlcv
    from quant_assets.defs.features.tv_technicals import tv_technicals_1d
    from quant_resources.settings import Settings

    for asset in (backtest, ohlcv, tv_technicals_1d):
        assert isinstance(asset, dg.AssetsDefinition)
    loaded = dg.load_defs(defs_root=quant_assets.defs, project_root=ROOT)
    location = build_definitions(Settings(history_start=dt.date(2024, 1, 1))).resolve_asset_graph()
    assert {k for a in loaded.assets for k in a.keys} == location.get_all_asset_keys()
    # One style of check: declared on the asset, so the loader finds no separate check.
    assert not list(loaded.asset_checks or [])
