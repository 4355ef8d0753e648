"""`candidates`: each day's scanner output, written to export/{date}/candidates.json."""

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg

from quant_assets.data.scanners import UniverseConfig, load_universe, scan_days_json, scan_many
from quant_assets.partitions import DAILY, window_dates
from quant_resources import progress
from quant_resources.io_managers import LakehouseView
from quant_resources.lakehouse import Lakehouse
from quant_resources.schema import SymbolInfo
from quant_resources.settings import Settings
from quant_resources.sources.base import MarketDataSource

RESTORE_ASSET = "lakehouse_restore"


def write_candidates(
    lakehouse: Lakehouse,
    config: UniverseConfig,
    listed: list[SymbolInfo],
    days: list[dt.date],
    advance: Callable[[int, int], None] | None = None,
) -> int:
    """Write each day's candidates.json (compact, atomic) through the lakehouse; returns
    the bytes written.

    A history backfill writes one file per day (3653 for 10 years, 7305 for 20):
    documents are scanned and encoded one at a time (memory holds one) and made durable
    together (`Lakehouse.write_candidates`).
    """

    def days_and_texts() -> Iterator[tuple[dt.date, str]]:
        for done, (day, text, _) in enumerate(scan_days_json(config, listed, days), start=1):
            if advance and (done % 32 == 0 or done == len(days)):
                advance(done, len(days))
            yield day, text

    return lakehouse.write_candidates(days_and_texts())  # an I/O error fails the asset, naming the file


def read_candidates(settings: Settings, day: dt.date) -> dict[str, Any]:
    """The day's candidates document; the same reader (and error) as the alpha side's."""
    return LakehouseView(settings.data_dir, day).candidates()


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[RESTORE_ASSET],  # the data job's first step: the recorded lakehouse version, restored
    group_name="data",
    kinds={"python", "json"},
    description=(
        "Scanner output per day: the symbols of the universe that pass its scanners "
        "(scanners/{universe}.yaml, shipped in quant_assets/configs unless "
        "QUANT_CONFIG_DIR names another folder), written to data/export/{date}/candidates.json."
    ),
)
def candidates(
    context: dg.AssetExecutionContext,
    settings: dg.ResourceParam[Settings],
    source: MarketDataSource,
    lakehouse: Lakehouse,
) -> dg.MaterializeResult:
    start, end = window_dates(context)
    config = load_universe(settings.config_dir, settings.universe)
    listed = source.list_symbols()
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    write_candidates(
        lakehouse, config, listed, days, advance=lambda done, total: progress.advance("candidates", done, total, "days")
    )
    last = scan_many(config, listed, [end])[end]
    counts: dict[str, int] = {}
    for record in last["candidates"]:
        counts[record["asset_class"]] = counts.get(record["asset_class"], 0) + 1
    context.log.info(f"candidates {start}..{end}: {len(days)} day(s), {len(last['candidates'])} on {end}")
    return dg.MaterializeResult(
        metadata={
            "universe": settings.universe,
            "days_written": len(days),
            "candidates_last_day": len(last["candidates"]),
            "by_asset_class": dg.MetadataValue.json(counts),
            "symbols_listed": len(listed),
            "path": dg.MetadataValue.path(str(lakehouse.layout.candidates_path(end))),
        }
    )
