"""Gap detection per calendar and the data-quality score, against hand counts."""

import datetime as dt

import numpy as np

from quant_assets.data.gaps import detect_gaps
from quant_assets.data.quality import quality_score
from quant_resources.schema import date_to_ts


def ts(*days):
    return np.array([date_to_ts(d) for d in days])


def test_crypto_gap_counts_calendar_days():
    d = dt.date(2024, 1, 1)
    gaps = detect_gaps(ts(d, d + dt.timedelta(days=1), d + dt.timedelta(days=8)), "24/7", 5)
    assert len(gaps) == 1
    assert (gaps[0].start, gaps[0].end, gaps[0].missing_sessions) == (dt.date(2024, 1, 3), dt.date(2024, 1, 8), 6)


def test_crypto_five_missing_days_is_not_a_gap():
    d = dt.date(2024, 1, 1)
    assert detect_gaps(ts(d, d + dt.timedelta(days=6)), "24/7", 5) == []


def test_equity_weekends_are_not_missing_sessions():
    # Friday 2024-01-05 to Monday 2024-01-15: missing 8..12 = 5 sessions -> not a gap
    assert detect_gaps(ts(dt.date(2024, 1, 5), dt.date(2024, 1, 15)), "business", 5) == []
    # Friday 2024-01-05 to Tuesday 2024-01-16: 6 missing sessions -> a gap
    gaps = detect_gaps(ts(dt.date(2024, 1, 5), dt.date(2024, 1, 16)), "business", 5)
    assert [(g.start, g.end, g.missing_sessions) for g in gaps] == [(dt.date(2024, 1, 8), dt.date(2024, 1, 15), 6)]


def test_quality_score_hand_computed():
    # 10 calendar days, 8 bars held, 2 rows dropped: completeness 0.8, cleanliness 0.8
    assert quality_score(8, dt.date(2024, 1, 1), dt.date(2024, 1, 10), "24/7", 2, False) == 0.64
    assert quality_score(8, dt.date(2024, 1, 1), dt.date(2024, 1, 10), "24/7", 2, True) == 0.32
    assert quality_score(10, dt.date(2024, 1, 1), dt.date(2024, 1, 10), "24/7", 0, False) == 1.0
    assert quality_score(0, None, None, "24/7", 0, False) == 0.0
