"""`audit.jsonl`: one JSON line per stage and per contract validation of an alpha run.

Lines are appended with a single write on a file opened with O_APPEND, so concurrent
steps never interleave within a line.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def append_audit(run_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    line = {"at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), **_clean(record)}
    run_dir.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(line, sort_keys=True, allow_nan=False) + "\n").encode()
    fd = os.open(run_dir / "audit.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return line


def read_audit(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
