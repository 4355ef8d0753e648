"""The data-quality view (quant_assets/data/quality_report.py) on a hand-built catalog:
what it counts, the picture it draws, and the page `quant audit --html` writes."""

from __future__ import annotations

import re
import struct

import pytest

from quant_assets.data.quality_report import (
    ALT_TEXT,
    html_page,
    quality_markdown,
    quality_view,
    render_png,
    summary_line,
    write_quality_page,
)
from quant_resources.errors import QuantError


def _entry(score: float, gaps=(), toxic=None, duplicate=None, invalid=None) -> dict:
    return {
        "data_quality_score": score,
        "gaps": [{"start": s, "end": e, "missing_sessions": n} for s, e, n in gaps],
        "dropped": {"toxic": toxic or {}, "duplicate": duplicate or {}, "invalid": invalid or {}},
    }


CATALOG = {
    "symbols": {
        "SYNCX_A": _entry(
            0.5,
            gaps=[("2024-01-28", "2024-02-05", 9), ("2024-04-01", "2024-04-10", 10)],
            toxic={"2024-01-03": 1, "2024-01-20": 2},
            duplicate={"2024-03-01": 4},
        ),
        "SYNEQ_<B>": _entry(1.0, gaps=[("2024-01-10", "2024-01-18", 7)], invalid={"2024-04-30": 3}),
        "SYNEQ_C": _entry(0.9),
    },
    "errors": {"SYNEQ_D": {"reason": "no bars"}},
    "updated_at": "2024-05-01T00:00:00+00:00",
}


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


def test_the_view_counts_scores_gaps_and_drops_per_month_of_the_bar():
    view = quality_view(CATALOG)
    assert view.symbols == 3
    assert view.score_summary() == {"min": 0.5, "p10": pytest.approx(0.58), "median": 0.9}
    assert view.lowest(2) == [("SYNCX_A", 0.5), ("SYNEQ_C", 0.9)]
    # A gap counts in the month it starts, even when it runs into the next.
    assert view.gaps_by_month == {"2024-01": 2, "2024-04": 1}
    assert [(k, g["start"]) for k, g in view.gaps] == [
        ("SYNCX_A", "2024-04-01"), ("SYNCX_A", "2024-01-28"), ("SYNEQ_<B>", "2024-01-10"),
    ]  # fmt: skip
    assert view.dropped_by_month == {
        "toxic": {"2024-01": 3},
        "duplicate": {"2024-03": 4},
        "invalid": {"2024-04": 3},
    }
    assert view.errors == {"SYNEQ_D": "no bars"}
    assert summary_line(view) == (
        "3 symbols; quality median 0.900, p10 0.580, min 0.500; 3 open gaps; "
        "rows dropped: toxic 3, duplicate 4, invalid 3; 1 symbols in error"
    )


def test_an_empty_catalog_still_gives_a_picture_that_says_so():
    view = quality_view({"symbols": {}, "errors": {}})
    assert view.symbols == 0 and view.score_summary() == {} and view.gaps == []
    assert _png_size(render_png(view)) == (720, 720)
    assert "no quality score" in summary_line(view)


def test_the_picture_is_three_panels_and_the_markdown_carries_it_inline():
    view = quality_view(CATALOG)
    png = render_png(view)
    assert _png_size(png) == (720, 720)  # 9 x 9 inches at 80 dpi: fits Dagster's dialog
    markdown = quality_markdown(view, png)
    assert markdown.startswith(f"![{ALT_TEXT}](data:image/png;base64,")
    assert markdown.endswith(summary_line(view))


def test_the_html_page_is_self_contained_and_escapes_what_it_shows(tmp_path):
    page = html_page(quality_view(CATALOG), facts={"files": 3, "quarantined": 0})
    # Nothing to fetch: no script, no stylesheet or image from elsewhere.
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)
    assert page.count('src="data:image/png;base64,') == 1
    assert "SYNEQ_&lt;B&gt;" in page and "SYNEQ_<B>" not in page
    assert "<h2>Audit</h2>" in page and "<td>quarantined</td><td>0</td>" in page
    assert "<td>no bars</td>" in page

    written = write_quality_page(tmp_path / "reports" / "quality.html", CATALOG)
    assert written == (tmp_path / "reports" / "quality.html").resolve()
    assert written.read_text().startswith("<!DOCTYPE html>")
    assert not [p for p in written.parent.iterdir() if p.name != "quality.html"]  # no temp file left


def test_a_folder_given_as_the_page_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(QuantError, match="is a folder: give a file name"):
        write_quality_page(tmp_path, CATALOG)
