"""The data-quality view: what the lakehouse catalog says about its data, as a picture.

Owns the figures drawn from `catalog.json` (the distribution of per-symbol quality
scores, gaps per month, rows dropped by kind per month), the PNG that holds them, the
markdown that carries the PNG into Dagster metadata (the `ohlcv` and `data_audit`
materialisations) and the self-contained HTML page of `quant audit --html FILE`.

A catalog dict in, bytes or text out; no Dagster. The one write is `write_quality_page`.

"Over time" needs no history of our own: every catalog entry keeps its dropped rows per
bar date and kind (`dropped: {toxic|duplicate|invalid: {YYYY-MM-DD: rows}}`, merged across
runs), and its gaps with their dates. Months are those of the bars, not of the runs.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quant_resources.atomic import atomic_write_text
from quant_resources.errors import QuantError

DROP_KINDS = ("toxic", "duplicate", "invalid")
DROP_COLOURS = {"toxic": "tab:red", "duplicate": "tab:blue", "invalid": "tab:orange"}
LOWEST_SHOWN = 10
GAPS_SHOWN = 50
ALT_TEXT = "data quality: score distribution, gaps per month, rows dropped by kind"


@dataclass(frozen=True)
class QualityView:
    """The catalog reduced to what the view shows.

    scores: symbol key -> data_quality_score in [0, 1].
    gaps_by_month: "YYYY-MM" -> gaps (over the gap threshold) starting in that month.
    dropped_by_month: kind -> {"YYYY-MM" -> rows dropped with a bar date in that month}.
    gaps: (symbol key, gap record) for every open gap, newest first.
    errors: symbol key -> why it could not be ingested or read (catalog `errors`).
    """

    scores: dict[str, float]
    gaps_by_month: dict[str, int]
    dropped_by_month: dict[str, dict[str, int]]
    gaps: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    updated_at: str | None = None

    @property
    def symbols(self) -> int:
        return len(self.scores)

    def dropped_total(self, kind: str) -> int:
        return sum(self.dropped_by_month.get(kind, {}).values())

    def lowest(self, n: int = LOWEST_SHOWN) -> list[tuple[str, float]]:
        return sorted(self.scores.items(), key=lambda item: (item[1], item[0]))[:n]

    def score_summary(self) -> dict[str, float]:
        """min, p10, median (empty when the catalog holds no symbol)."""
        values = list(self.scores.values())
        if not values:
            return {}
        return {
            "min": float(min(values)),
            "p10": float(np.percentile(values, 10)),
            "median": float(statistics.median(values)),
        }


def _month(day: str) -> str:
    return day[:7]  # "YYYY-MM" of an ISO date


def quality_view(catalog: dict[str, Any]) -> QualityView:
    """The view of a catalog as `Lakehouse.read_catalog()` returns it."""
    scores: dict[str, float] = {}
    gaps_by_month: dict[str, int] = {}
    dropped: dict[str, dict[str, int]] = {kind: {} for kind in DROP_KINDS}
    gaps: list[tuple[str, dict[str, Any]]] = []
    for key, entry in sorted(catalog.get("symbols", {}).items()):
        if entry.get("data_quality_score") is not None:
            scores[key] = float(entry["data_quality_score"])
        for gap in entry.get("gaps", []):
            month = _month(gap["start"])
            gaps_by_month[month] = gaps_by_month.get(month, 0) + 1
            gaps.append((key, gap))
        for kind, per_day in entry.get("dropped", {}).items():
            counts = dropped.setdefault(kind, {})
            for day, rows in per_day.items():
                counts[_month(day)] = counts.get(_month(day), 0) + int(rows)
    gaps.sort(key=lambda item: (item[1]["start"], item[0]), reverse=True)
    errors = {
        key: str(error.get("reason", error)) if isinstance(error, dict) else str(error)
        for key, error in sorted(catalog.get("errors", {}).items())
    }
    return QualityView(
        scores=scores,
        gaps_by_month=dict(sorted(gaps_by_month.items())),
        dropped_by_month={k: dict(sorted(v.items())) for k, v in dropped.items()},
        gaps=gaps,
        errors=errors,
        updated_at=catalog.get("updated_at"),
    )


def _month_axis(*series: dict[str, int]) -> list[str]:
    """Every month from the first to the last one present in any series, gaps filled."""
    months = sorted({m for s in series for m in s})
    if not months:
        return []
    year, month = map(int, months[0].split("-"))
    last = months[-1]
    axis = []
    while True:
        label = f"{year:04d}-{month:02d}"
        axis.append(label)
        if label >= last:
            return axis
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def _month_ticks(axes: Any, months: list[str]) -> None:
    step = max(1, int(np.ceil(len(months) / 12)))
    positions = list(range(0, len(months), step))
    axes.set_xticks(positions, [months[i] for i in positions], rotation=45, ha="right")
    axes.set_xlim(-0.6, len(months) - 0.4)


def _empty(axes: Any, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="0.35")
    axes.set_xticks([])
    axes.set_yticks([])


def render_png(view: QualityView, dpi: int = 80) -> bytes:
    """Three panels, one above the other: scores, gaps per month, rows dropped per month."""
    # A bare Figure on an Agg canvas: no pyplot, no global backend switch, thread-safe.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(9.0, 9.0), dpi=dpi)
    FigureCanvasAgg(figure)
    scores_ax, gaps_ax, dropped_ax = figure.subplots(3, 1)

    summary = view.score_summary()
    if summary:
        scores_ax.hist(
            list(view.scores.values()), bins=np.linspace(0.0, 1.0, 21), color="tab:green",
            edgecolor="white",
        )
        scores_ax.axvline(summary["median"], color="black", lw=1.2, label=f"median {summary['median']:.3f}")
        scores_ax.axvline(summary["p10"], color="tab:red", lw=1.2, ls="--", label=f"p10 {summary['p10']:.3f}")
        scores_ax.legend(loc="upper left")
        scores_ax.set_xlim(0.0, 1.0)
        scores_ax.set_xlabel("data quality score")
        scores_ax.set_ylabel("symbols")
    else:
        _empty(scores_ax, "no symbol in the catalog")
    scores_ax.set_title(f"Quality score distribution ({view.symbols} symbols)")

    # One month axis under both panels, so a month with gaps and drops lines up.
    months = _month_axis(view.gaps_by_month, *view.dropped_by_month.values())
    total_gaps = sum(view.gaps_by_month.values())
    if total_gaps:
        gaps_ax.bar(range(len(months)), [view.gaps_by_month.get(m, 0) for m in months], color="tab:purple")
        _month_ticks(gaps_ax, months)
        gaps_ax.set_ylabel("gaps starting")
    else:
        _empty(gaps_ax, "no gap recorded")
    gaps_ax.set_title(f"Gaps per month ({total_gaps} open)")

    totals = ", ".join(f"{kind} {view.dropped_total(kind)}" for kind in view.dropped_by_month)
    if any(view.dropped_total(kind) for kind in view.dropped_by_month):
        bottom = np.zeros(len(months))
        for kind, per_month in view.dropped_by_month.items():
            heights = np.array([per_month.get(m, 0) for m in months], dtype=float)
            if heights.any():
                dropped_ax.bar(
                    range(len(months)), heights, bottom=bottom, label=kind,
                    color=DROP_COLOURS.get(kind),
                )
                bottom += heights
        dropped_ax.legend(loc="upper left")
        _month_ticks(dropped_ax, months)
        dropped_ax.set_ylabel("rows dropped")
    else:
        _empty(dropped_ax, "no row dropped")
    dropped_ax.set_title(f"Rows dropped by kind, per month of the bar ({totals})")

    for axes in (scores_ax, gaps_ax, dropped_ax):
        axes.grid(alpha=0.3, axis="y")
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))  # symbols, gaps, rows: counts
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def summary_line(view: QualityView) -> str:
    """One line under the picture: the figures a reader would otherwise look for."""
    summary = view.score_summary()
    scores = (
        f"quality median {summary['median']:.3f}, p10 {summary['p10']:.3f}, min {summary['min']:.3f}"
        if summary
        else "no quality score"
    )
    dropped = ", ".join(f"{kind} {view.dropped_total(kind)}" for kind in view.dropped_by_month)
    return (
        f"{view.symbols} symbols; {scores}; {len(view.gaps)} open gaps; rows dropped: {dropped}; "
        f"{len(view.errors)} symbols in error"
    )


def quality_markdown(view: QualityView, png: bytes | None = None) -> str:
    """The markdown of the metadata entry: the picture (a data URI, which Dagster's markdown
    renderer allows) and its one-line summary."""
    png = render_png(view) if png is None else png
    return f"![{ALT_TEXT}]({png_data_uri(png)})\n\n{summary_line(view)}"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: 0.5rem 0; } td, th { border: 1px solid #ccc;
padding: 0.2rem 0.6rem; text-align: left; } th { background: #f3f3f3; }
img { max-width: 100%; } .muted { color: #666; }
"""


def html_page(
    view: QualityView,
    png: bytes | None = None,
    *,
    title: str = "Lakehouse data quality",
    facts: dict[str, Any] | None = None,
    generated_at: dt.datetime | None = None,
) -> str:
    """One self-contained HTML page (inline style, the PNG as a data URI, no script, no
    external resource): the picture, the figures, the lowest scores, the open gaps, the
    symbols in error, and `facts` (e.g. the audit's summary) when given."""
    png = render_png(view) if png is None else png
    generated = (generated_at or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds")
    summary = view.score_summary()
    figures = [
        ["symbols", view.symbols],
        *[[f"quality score {k}", f"{v:.3f}"] for k, v in summary.items()],
        ["open gaps", len(view.gaps)],
        *[[f"{kind} rows dropped", view.dropped_total(kind)] for kind in view.dropped_by_month],
        ["symbols in error", len(view.errors)],
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="muted">generated {generated}; catalog updated {html.escape(str(view.updated_at))}</p>',
        f'<img id="quality-plot" alt="{ALT_TEXT}" src="{png_data_uri(png)}">',
        "<h2>Figures</h2>",
        _table(["what", "value"], figures),
    ]
    if facts:
        parts += ["<h2>Audit</h2>", _table(["what", "value"], [[k, v] for k, v in facts.items()])]
    parts += [
        f"<h2>Lowest quality scores ({min(LOWEST_SHOWN, view.symbols)} of {view.symbols})</h2>",
        _table(["symbol", "score"], [[k, f"{s:.3f}"] for k, s in view.lowest()]),
        f"<h2>Open gaps ({len(view.gaps)}, newest first)</h2>",
        _table(
            ["symbol", "start", "end", "missing sessions", "reason"],
            [
                [k, g["start"], g["end"], g.get("missing_sessions", ""), g.get("reason", "")]
                for k, g in view.gaps[:GAPS_SHOWN]
            ],
        )
        if view.gaps
        else "<p>none</p>",
    ]
    if view.errors:
        parts += [
            f"<h2>Symbols in error ({len(view.errors)})</h2>",
            _table(["symbol", "reason"], [[k, r[:300]] for k, r in view.errors.items()]),
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_quality_page(
    path: Path, catalog: dict[str, Any], facts: dict[str, Any] | None = None
) -> Path:
    """Write the page of `catalog` to `path` atomically (a reader never sees half a page)."""
    path = Path(path)
    if path.is_dir():
        raise QuantError(f"{path} is a folder: give a file name for the page, e.g. {path / 'quality.html'}")
    try:
        atomic_write_text(path, html_page(quality_view(catalog), facts=facts))
    except OSError as exc:
        raise QuantError(f"cannot write the data-quality page {path}: {exc.strerror or exc}") from exc
    return path.resolve()
