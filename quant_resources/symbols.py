"""Symbol names become file names: this module is the only place that turns one into a path."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from quant_resources.errors import InvalidSymbolError

_ALLOWED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# The exchange is the part of a file name before the first "_", so it may not hold one.
_ALLOWED_EXCHANGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,31}$")


def validate_name(name: object, what: str = "symbol") -> str:
    """Return `name` when it is safe as part of a file name, else raise InvalidSymbolError.

    Allowed: 1 to 64 characters from [A-Za-z0-9._-], starting with a letter or digit
    (so neither "." nor ".." nor a hidden file), and no "..".
    """
    if not isinstance(name, str) or name == "":
        raise InvalidSymbolError(f"invalid {what} {name!r}: it must be a non-empty string")
    pattern = _ALLOWED_EXCHANGE if what == "exchange" else _ALLOWED
    if not pattern.match(name) or ".." in name:
        raise InvalidSymbolError(
            f"invalid {what} {name!r}: only letters, digits, '.', '-'"
            + (" and '_'" if what != "exchange" else "")
            + " are allowed "
            "(1-64 characters, starting with a letter or digit, no '..'); "
            "rename it in the source or scanner config"
        )
    return name


def symbol_key(exchange: str, symbol: str) -> str:
    return f"{validate_name(exchange, 'exchange')}_{validate_name(symbol)}"


def ohlcv_filename(exchange: str, symbol: str) -> str:
    return f"{symbol_key(exchange, symbol)}_1d.parquet"


@functools.lru_cache(maxsize=256)
def _resolved(folder: str) -> Path:
    return Path(folder).resolve()


def safe_child(folder: Path, filename: str) -> Path:
    """`folder / filename`, refusing anything that would resolve outside `folder`.

    Called for every file of every symbol: the folder is resolved once per process, and
    the child only when it is a symlink (a name without separators or ".." can leave the
    folder no other way), one lstat instead of a realpath walk of the whole path.
    """
    base = _resolved(str(folder))
    if not filename or "/" in filename or filename in (".", ".."):
        raise InvalidSymbolError(f"refusing path {filename!r}: it leaves {base}")
    path = base / filename
    if path.is_symlink():
        path = path.resolve()
    if path.parent != base:
        raise InvalidSymbolError(f"refusing path {filename!r}: it leaves {base}")
    return path
