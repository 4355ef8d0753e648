"""The code location tells its story: every asset says what it is, who owns it, how it is
built, and what guards it; every job, schedule and sensor resolves."""

from __future__ import annotations

import dagster as dg
import pytest

from quant_assets.definitions import build_definitions
from quant_assets.defs.automation.sensors import data_gate
from quant_resources.settings import Settings

GROUPS = {"data", "alpha", "maintenance"}
OWNERS = {
    "data": "team:data-platform",
    "maintenance": "team:data-platform",
    "alpha": "team:quant-research",
}

# Assets of the data and alpha groups that carry no asset check, and why.
UNCHECKED = {
    "candidates": (
        "a list of symbols to ingest, not data: the scanner rules are its contract, and every "
        "symbol it names is validated (name, L0 bars) when ohlcv ingests it"
    ),
    "run_snapshot": (
        "fails fast inside the asset (missing or stale candidates raise) and manifest.json "
        "records each copied file's sha256; the bars are the lakehouse's, checked by ohlcv_*"
    ),
    "backtest": (
        "a report over inputs already under contract (returns_l1, selection_l3, weights_l4); "
        "its metrics describe the policy and have no pass/fail threshold"
    ),
}


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return build_definitions(Settings())


@pytest.fixture(scope="module")
def graph(defs):
    return defs.resolve_asset_graph()


def asset_nodes(graph):
    return {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}


def test_the_whole_code_location_resolves(defs):
    repository = defs.get_repository_def()  # builds every job, schedule and sensor
    assert {"data_cycle", "alpha_cycle", "gap_repair_job", "data_audit_job"} <= set(
        repository.job_names
    )
    assert {s.name for s in repository.schedule_defs} == {
        "data_cycle_daily",
        "gap_repair_weekly",
        "data_audit_weekly",
    }
    assert {s.name for s in repository.sensor_defs} == {"alpha_after_data"}


def test_every_asset_has_group_description_kinds_owners_and_code_version(graph):
    nodes = asset_nodes(graph)
    assert len(nodes) == 11, sorted(nodes)  # with lakehouse_restore, the data job's first step
    for name, node in nodes.items():
        assert node.group_name in GROUPS, name
        assert node.description and len(node.description) >= 60, (
            f"{name}: say what it is and where it lands"
        )
        assert node.kinds, f"{name}: no kinds"
        assert node.owners == [OWNERS[node.group_name]], f"{name}: owners {node.owners}"
        if node.is_materializable:  # computed here (not an external source)
            assert node.code_version, f"{name}: a compute asset without code_version"


def test_every_data_and_alpha_asset_has_a_check_or_a_stated_reason(graph):
    nodes = asset_nodes(graph)
    checked = {key.asset_key.to_user_string() for key in graph.asset_check_keys}
    for name, node in nodes.items():
        if node.group_name not in ("data", "alpha"):
            continue
        if name in UNCHECKED:
            assert name not in checked, f"{name} has checks now: drop it from UNCHECKED"
        else:
            assert name in checked, (
                f"{name} ({node.group_name}) has no asset check and no reason in UNCHECKED"
            )
    assert set(UNCHECKED) <= set(nodes)


def test_every_check_has_a_description(graph):
    for key in graph.asset_check_keys:
        spec = graph.get_check_spec(key)
        assert spec.description, f"{key.asset_key.to_user_string()}:{key.name}"


def test_the_sensor_gates_on_the_data_assets_and_their_blocking_checks(settings):
    """Derived from the graph: every data asset, and exactly the blocking checks on them
    (hand-checked against the contracts: L0 schema, toxic, L2 features)."""
    gate = data_gate(build_definitions(settings).resolve_asset_graph())
    assert [k.to_user_string() for k in gate.assets] == ["candidates", "ohlcv", "tv_technicals_1d"]
    assert {(k.asset_key.to_user_string(), k.name) for k in gate.blocking_checks} == {
        ("ohlcv", "ohlcv_schema"),
        ("ohlcv", "ohlcv_toxic_free"),
        ("tv_technicals_1d", "features_l2"),
    }


def test_alpha_assets_carry_their_artifact_name_and_data_assets_backfill_as_one_run(graph):
    for name, node in asset_nodes(graph).items():
        if node.group_name == "alpha":
            assert node.metadata.get("artifact"), (
                f"{name}: the file it writes in data/runs/{{run_id}}/"
            )
            assert node.backfill_policy is None, f"{name}: an alpha backfill is one run per day"
        if node.group_name == "data":
            assert node.backfill_policy == dg.BackfillPolicy.single_run(), name
