"""What a source could not list: the files (or symbols) it skipped, and why.

A source leaves out of `list_symbols` what it cannot read (`FileSource`: an empty export,
a missing Close column, a name that is not EXCHANGE_SYMBOL.csv) and says why through
`skipped_files()`. The `ohlcv` asset reports every one where a user looks: its metadata,
the run summary of the CLI, the catalog's `errors` (keyed by the file name, `stage:
listing`) and the warn check `ohlcv_skipped_files`. An entry leaves the catalog when
the source no longer skips it (the file fixed, renamed or removed).

Pure functions over plain values: no Dagster, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

LISTING = "listing"  # the `stage` of a catalog error written here
SHOWN = 10  # skipped files named on the CLI's summary line


def skipped_errors(skipped: Sequence[tuple[str, str]], source: str, at: str) -> dict[str, dict[str, Any]]:
    """Catalog `errors` entries, by file name, for what the source skipped."""
    return {
        name: {"file": name, "reason": reason, "stage": LISTING, "source": source, "at": at}
        for name, reason in skipped
    }


def resolved_listing_errors(catalog: Mapping[str, Any], skipped: Sequence[tuple[str, str]]) -> list[str]:
    """Keys of listing errors in the catalog that the source no longer skips."""
    now = {name for name, _ in skipped}
    return [
        key for key, error in catalog.get("errors", {}).items() if error.get("stage") == LISTING and key not in now
    ]


def listing_errors(catalog: Mapping[str, Any]) -> dict[str, str]:
    """file name -> reason of every listing error in the catalog."""
    return {
        key: str(error.get("reason", ""))
        for key, error in sorted(catalog.get("errors", {}).items())
        if error.get("stage") == LISTING
    }


def skipped_line(reasons: Mapping[str, str], limit: int = SHOWN) -> str | None:
    """`skipped 2 files: A.csv: why; B.csv: why`, or None when nothing was skipped."""
    if not reasons:
        return None
    items = sorted(reasons.items())
    shown = "; ".join(f"{name}: {reason}" for name, reason in items[:limit])
    more = f"; and {len(items) - limit} more (catalog.json errors)" if len(items) > limit else ""
    return f"skipped {len(items)} file{'s' if len(items) != 1 else ''}: {shown}{more}"


def skipped_markdown(reasons: Mapping[str, str], limit: int = 200) -> str:
    """A markdown table of the skipped files and why, for the UI."""
    rows = "\n".join(f"| {name} | {reason.replace('|', '/')} |" for name, reason in sorted(reasons.items())[:limit])
    return "| file | why it was skipped |\n|---|---|\n" + rows
