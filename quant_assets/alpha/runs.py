"""Earlier alpha runs in the runs folder: where a turnover-controlled policy's previous
weights come from.

A daily run of a policy with a turnover penalty or cap trades from the weights of the
latest earlier run of the same policy on the same universe: the newest run folder that

* is sealed (`.finished`: every step its run planned succeeded),
* holds `manifest.json`, `optimization.json` and `weights.parquet`,
* has an `as_of` strictly before this run's (never a later day: point in time),
* has the same `universe` in its manifest and the same `policy_hash` in its
  `optimization.json`.

Among runs of the same day the one sealed last wins (then the larger run id, so the
choice never depends on the order folders are listed in). Folders that cannot be read
are skipped. The choice is recorded in the new run's `optimization.json`
(`previous_run_id`, `previous`: its as-of and weights), so `quant reproduce` can restore
exactly that previous run (`restore_previous_run`) in its workspace.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from quant_resources.io_managers import SEAL_FILE
from quant_resources.layout import run_folder

MANIFEST = "manifest.json"
OPTIMIZATION = "optimization.json"
WEIGHTS = "weights.parquet"


@dataclass(frozen=True)
class PreviousRun:
    """The run a new run trades from: its id, as-of day and weights (symbol -> weight)."""

    run_id: str
    as_of: str
    weights: dict[str, float]

    def record(self) -> dict[str, Any]:
        """What `optimization.json` keeps of it (`previous`)."""
        return {"run_id": self.run_id, "as_of": self.as_of, "weights": dict(self.weights)}


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def find_previous_run(
    runs_dir: Path, as_of: dt.date | str, universe: str | None, policy_hash: str
) -> PreviousRun | None:
    """The latest sealed run of `policy_hash` on `universe` with an as-of strictly before
    `as_of` (see the module docstring), or None."""
    day = as_of if isinstance(as_of, str) else as_of.isoformat()
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return None
    best: tuple[str, str, str] | None = None
    for folder in runs_dir.iterdir():
        seal = folder / SEAL_FILE
        if not folder.is_dir() or not seal.is_file() or not (folder / WEIGHTS).is_file():
            continue
        try:
            manifest = _read(folder / MANIFEST)
            optimization = _read(folder / OPTIMIZATION)
            finished = str((_read(seal) or {}).get("finished_at", ""))
        except (OSError, ValueError, AttributeError):
            continue
        earlier = str(manifest.get("as_of", "9999-12-31"))
        if not earlier < day or manifest.get("universe") != universe:
            continue
        if optimization.get("policy_hash") != policy_hash:
            continue
        key = (earlier, finished, folder.name)
        if best is None or key > best:
            best = key
    if best is None:
        return None
    as_of_found, _, run_id = best
    frame = pl.read_parquet(runs_dir / run_id / WEIGHTS)
    weights = {str(s): float(w) for s, w in zip(frame["symbol"], frame["weight"], strict=True)}
    return PreviousRun(run_id, as_of_found, weights)


def restore_previous_run(
    runs_dir: Path, previous: dict[str, Any], universe: str | None, policy_hash: str
) -> Path:
    """A stand-in for a recorded previous run (`optimization.json["previous"]`) in
    `runs_dir`, which `find_previous_run` picks exactly as it picked the original: its
    manifest (run id, as-of, universe), its policy hash, its weights and a seal.

    For `quant reproduce`: the re-run's workspace has no runs of its own, so without the
    stand-in a turnover-controlled policy would trade from cash instead.
    """
    folder = run_folder(runs_dir, previous["run_id"])  # the id validated before it is a path
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "run_id": previous["run_id"],
        "as_of": previous["as_of"],
        "universe": universe,
        "restored_from": "the optimization.json of a run that traded from this one",
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    (folder / OPTIMIZATION).write_text(json.dumps({"policy_hash": policy_hash}, indent=2))
    weights = previous["weights"]
    pl.DataFrame(
        {"symbol": sorted(weights), "weight": [float(weights[s]) for s in sorted(weights)]},
        schema={"symbol": pl.String, "weight": pl.Float64},
    ).write_parquet(folder / WEIGHTS)
    (folder / SEAL_FILE).write_text(
        json.dumps({"run_id": previous["run_id"], "finished_at": "restored"})
    )
    return folder
