"""The import rules of docs/architecture.md, read from the source (every import, including
those inside functions):

- the pure core (numerics, indicators, market-data rules) imports nothing of Dagster,
  MLflow or Delta Lake, and of our resources only the pure helpers (names, schema,
  errors): it can be tested and reused without an orchestrator or a lakehouse;
- `quant_resources` never imports `quant_assets`: resources sit below the graph;
- only the entry points (the CLI, the runner) and Dagster's loader reach the definitions.
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
# The command line (its observability commands too, wherever they live) and the runner.
ENTRY_POINTS = {
    "quant_assets/cli.py",
    "quant_assets/runner.py",
    "quant_assets/definitions.py",
    "quant_assets/cli_observability.py",
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
