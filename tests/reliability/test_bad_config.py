"""Bad configuration: scanner configs and run config fail with a clear, specific error."""

from __future__ import annotations

import dagster as dg
import pytest

from quant_assets.data.scanners import load_universe
from quant_assets.definitions import ALPHA_JOB, build_definitions
from quant_resources.errors import ConfigError, InvalidSymbolError
from quant_resources.settings import Settings


def write_config(tmp_path, body: str):
    folder = tmp_path / "configs" / "scanners"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.yaml").write_text(body)
    return tmp_path / "configs"


def test_scanner_config_with_unknown_field(tmp_path):
    config_dir = write_config(tmp_path, "universe: u\nscanners:\n  - name: a\n    top_nn: 5\n")
    with pytest.raises(ConfigError, match=r"u\.yaml is invalid: scanners\.0\.top_nn: Extra inputs are not permitted"):
        load_universe(config_dir, "u")


@pytest.mark.parametrize(
    "line,where",
    [("top_n: many", "scanners.0.top_n"), ("min_history_sessions: -3", "scanners.0.min_history_sessions"), ("asset_classes: [bonds]", "scanners.0.asset_classes.0")],
)
def test_scanner_config_with_wrong_type_or_value(tmp_path, line, where):
    config_dir = write_config(tmp_path, f"universe: u\nscanners:\n  - name: a\n    {line}\n")
    with pytest.raises(ConfigError, match=rf"u\.yaml is invalid: {where.replace('.', '[.]')}"):
        load_universe(config_dir, "u")


def test_scanner_config_that_is_not_yaml(tmp_path):
    config_dir = write_config(tmp_path, "universe: u\nscanners: [\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_universe(config_dir, "u")


def test_universe_name_cannot_traverse_paths(tmp_path):
    with pytest.raises(InvalidSymbolError, match="invalid universe"):
        load_universe(tmp_path, "../../etc/passwd")


def test_unknown_objective_is_refused_at_launch(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    job = build_definitions(settings).resolve_job_def(ALPHA_JOB)
    with pytest.raises(dg.DagsterInvalidConfigError, match="objective"):
        job.execute_in_process(
            instance=dg.DagsterInstance.ephemeral(), partition_key="2025-06-30",
            run_config={"ops": {"portfolio_weights": {"config": {"objective": "yolo"}}}},
        )
    assert not settings.runs_dir.exists()  # nothing ran, nothing was written


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"portfolio_weights": {"max_weight": -0.1}}, "ops.portfolio_weights.config.max_weight: Input should be greater than 0"),
        ({"selected_winners": {"n_winners": 0}}, "ops.selected_winners.config.n_winners"),
        ({"backtest": {"cost_bps": -5}}, "ops.backtest.config.cost_bps"),
        ({"portfolio_weights": {"objective": "yolo"}}, "ops.portfolio_weights.config.objective"),
    ],
)
def test_bad_run_config_values_fail_before_any_run(tmp_path, overrides, message):
    from quant_assets import runner

    settings = Settings(data_dir=tmp_path / "data")
    with pytest.raises(ConfigError, match=message.replace(".", "[.]")):
        runner.run_alpha(settings, runner.parse_day("2025-06-30"), overrides=overrides)
    assert not settings.runs_dir.exists()
