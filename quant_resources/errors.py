"""Errors that cross module boundaries. Each names what was wrong and what to do next."""

from __future__ import annotations


class QuantError(Exception):
    """Base class: the CLI prints these as one line, without a traceback."""


class InvalidSymbolError(QuantError, ValueError):
    """A symbol or exchange name that may not become a file name."""


class SourceError(QuantError):
    """A market-data source could not deliver bars for one symbol."""

    def __init__(self, symbol: str, reason: str, *, file: str | None = None, source: str = ""):
        self.symbol = symbol
        self.reason = reason
        self.file = file
        self.source = source
        where = f" (file {file})" if file else ""
        via = f" from source '{source}'" if source else ""
        super().__init__(f"{symbol}: cannot fetch bars{via}{where}: {reason}")


class UnknownSymbolError(SourceError):
    """The source does not list this symbol."""


class ConfigError(QuantError, ValueError):
    """A settings value, scanner config or run config that cannot be used."""
