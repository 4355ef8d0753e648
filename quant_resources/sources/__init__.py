"""Market-data sources and the one place that chooses among them."""

from __future__ import annotations

from quant_resources.settings import Settings, get_settings
from quant_resources.sources.base import MarketDataSource


def source_from_settings(settings: Settings | None = None) -> MarketDataSource:
    """The source selected by `QUANT_SOURCE` (synthetic by default)."""
    settings = settings or get_settings()
    if settings.source == "files":
        from quant_resources.sources.files import FileSource

        return FileSource(folder=str(settings.files_dir))
    if settings.source == "binance":
        from quant_resources.sources.binance import BinanceSource

        return BinanceSource(base_url=settings.binance_base_url)
    from quant_resources.sources.synthetic import SyntheticSource

    return SyntheticSource(n_symbols=settings.synthetic_symbols, seed=settings.synthetic_seed)


__all__ = ["MarketDataSource", "source_from_settings"]
