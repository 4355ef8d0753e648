"""Indicators against hand-computed answers and an independent loop implementation.

The reference below is deliberately written another way (plain lists, the textbook
forms: Wilder's `(prev * 13 + x) / 14`, RSI as `100 - 100 / (1 + RS)`, two-pass
variance), so a shared mistake is unlikely.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandera.errors
import polars as pl
import pytest

from quant_assets.features.indicators import (
    FEATURE_COLUMNS,
    FIRST_VALID_ROW,
    FeaturesSchema,
    compute_indicators,
    rating_expression,
)
from quant_resources.schema import date_to_ts

DAY = 86_400


def bars_from_closes(
    closes: list[float],
    *,
    symbol: str = "AAA",
    first_day: dt.date = dt.date(2020, 1, 1),
    half_range: float = 0.0,
    volume: float = 1_000.0,
) -> pl.DataFrame:
    """Daily bars whose open equals the close and whose range is close +- half_range."""
    start = date_to_ts(first_day)
    return pl.DataFrame(
        {
            "symbol": [symbol] * len(closes),
            "timestamp": [start + i * DAY for i in range(len(closes))],
            "open": closes,
            "high": [c + half_range for c in closes],
            "low": [c - half_range for c in closes],
            "close": closes,
            "volume": [volume] * len(closes),
        },
        schema_overrides={"timestamp": pl.Int64},
    )


def random_walk_bars(symbol: str, n: int, first_day: dt.date, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.025, n)))
    open_ = np.concatenate([[close[0]], close[:-1]]) * np.exp(rng.normal(0.0, 0.005, n))
    high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.02, n))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.02, n))
    start = date_to_ts(first_day)
    return pl.DataFrame(
        {
            "symbol": symbol,
            "timestamp": start + np.arange(n, dtype=np.int64) * DAY,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.uniform(1e3, 1e6, n),
        }
    )


# ---------------------------------------------------------------- reference (plain Python)


def ref_sma(xs: list[float], n: int) -> list[float | None]:
    return [None if i < n - 1 else sum(xs[i - n + 1 : i + 1]) / n for i in range(len(xs))]


def ref_pstd(xs: list[float], n: int, ddof: int) -> list[float | None]:
    out: list[float | None] = []
    for i in range(len(xs)):
        if i < n - 1:
            out.append(None)
            continue
        window = xs[i - n + 1 : i + 1]
        mean = sum(window) / n
        out.append(math.sqrt(sum((x - mean) ** 2 for x in window) / (n - ddof)))
    return out


def ref_ema(xs: list[float | None], n: int) -> list[float | None]:
    """EMA seeded with the mean of the first n non-null inputs; null inputs only lead."""
    out: list[float | None] = [None] * len(xs)
    first = next((i for i, x in enumerate(xs) if x is not None), len(xs))
    if len(xs) - first < n:
        return out
    k = 2.0 / (n + 1)
    ema = sum(xs[first : first + n]) / n
    out[first + n - 1] = ema
    for i in range(first + n, len(xs)):
        ema = (xs[i] - ema) * k + ema
        out[i] = ema
    return out


def ref_wilder(xs: list[float], n: int, first: int) -> list[float | None]:
    out: list[float | None] = [None] * len(xs)
    if len(xs) - first < n:
        return out
    avg = sum(xs[first : first + n]) / n
    out[first + n - 1] = avg
    for i in range(first + n, len(xs)):
        avg = (avg * (n - 1) + xs[i]) / n
        out[i] = avg
    return out


def sign(x: float) -> int:
    return (x > 0) - (x < 0)


def ref_indicators(o: list, h: list, lo: list, c: list, v: list) -> dict[str, list]:
    n = len(c)
    sma20, sma50, sma200 = ref_sma(c, 20), ref_sma(c, 50), ref_sma(c, 200)
    ema12, ema26 = ref_ema(c, 12), ref_ema(c, 26)
    changes = [0.0] + [c[i] - c[i - 1] for i in range(1, n)]
    gains = ref_wilder([max(d, 0.0) for d in changes], 14, first=1)
    losses = ref_wilder([max(-d, 0.0) for d in changes], 14, first=1)
    rsi: list[float | None] = []
    for g, lo_ in zip(gains, losses, strict=True):
        if g is None:
            rsi.append(None)
        elif lo_ == 0:
            rsi.append(100.0 if g > 0 else None)
        else:
            rsi.append(100.0 - 100.0 / (1.0 + g / lo_))
    macd = [None if a is None or b is None else a - b for a, b in zip(ema12, ema26, strict=True)]
    signal = ref_ema(macd, 9)
    hist = [None if s is None else m - s for m, s in zip(macd, signal, strict=True)]
    std20 = ref_pstd(c, 20, ddof=0)
    upper = [None if m is None else m + 2 * s for m, s in zip(sma20, std20, strict=True)]
    lower = [None if m is None else m - 2 * s for m, s in zip(sma20, std20, strict=True)]
    true_range = [h[0] - lo[0]] + [
        max(h[i] - lo[i], abs(h[i] - c[i - 1]), abs(lo[i] - c[i - 1])) for i in range(1, n)
    ]
    atr = ref_wilder(true_range, 14, first=0)
    roc = [None if i < 20 else 100.0 * (c[i] / c[i - 20] - 1.0) for i in range(n)]
    log_returns = [math.log(c[i] / c[i - 1]) for i in range(1, n)]
    vol_of_returns = ref_pstd(log_returns, 20, ddof=1)
    vol = [None] + [None if s is None else s * math.sqrt(252) for s in vol_of_returns]
    rating: list[float | None] = []
    for i in range(n):
        ma_votes = [sign(c[i] - m) for m in (sma20[i], sma50[i], sma200[i]) if m is not None]
        if ema26[i] is not None:
            ma_votes.append(sign(ema12[i] - ema26[i]))
        osc_votes = []
        if rsi[i] is not None:
            osc_votes.append(1 if rsi[i] < 30 else -1 if rsi[i] > 70 else 0)
        if signal[i] is not None:
            osc_votes.append(sign(macd[i] - signal[i]))
        if upper[i] is not None:
            osc_votes.append(1 if c[i] < lower[i] else -1 if c[i] > upper[i] else 0)
        if ma_votes and osc_votes:
            rating.append((sum(ma_votes) / len(ma_votes) + sum(osc_votes) / len(osc_votes)) / 2)
        else:
            rating.append(None)
    return {
        "close": list(c),
        "sma_20": sma20,
        "sma_50": sma50,
        "sma_200": sma200,
        "ema_12": ema12,
        "ema_26": ema26,
        "rsi_14": rsi,
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": hist,
        "bb_mid_20": sma20,
        "bb_upper_20": upper,
        "bb_lower_20": lower,
        "atr_14": atr,
        "roc_20": roc,
        "realized_vol_20": vol,
        "volume_sma_20": ref_sma(v, 20),
        "rating": rating,
    }


# ---------------------------------------------------------------- agreement with the reference


REFERENCE_LENGTHS = {"LONG": 400, "MID": 260, "YOUNG": 90}


def reference_bars() -> pl.DataFrame:
    """Three random walks of different lengths and start dates, rows shuffled."""
    return pl.concat(
        [
            random_walk_bars("LONG", 400, dt.date(2019, 1, 1), seed=4),
            random_walk_bars("MID", 260, dt.date(2019, 6, 1), seed=5),
            random_walk_bars("YOUNG", 90, dt.date(2020, 1, 15), seed=6),
        ]
    ).sample(fraction=1.0, shuffle=True, seed=11)  # the input order must not matter


def test_every_indicator_matches_the_loop_reference_on_three_random_walks():
    lengths = REFERENCE_LENGTHS
    bars = reference_bars()
    features = compute_indicators(bars)

    assert features.columns == list(FEATURE_COLUMNS)
    assert features.height == sum(lengths.values())
    for symbol, length in lengths.items():
        mine = features.filter(pl.col("symbol") == symbol)
        raw = bars.filter(pl.col("symbol") == symbol).sort("timestamp")
        assert mine["date"].is_sorted() and mine.height == length
        expected = ref_indicators(
            *(raw[c].to_list() for c in ("open", "high", "low", "close", "volume"))
        )
        for column, want in expected.items():
            got = mine[column].to_list()
            for row, (g, w) in enumerate(zip(got, want, strict=True)):
                if w is None:
                    assert g is None, f"{symbol} {column} row {row}: {g} should be null"
                else:
                    assert g is not None, f"{symbol} {column} row {row}: null, want {w}"
                    assert math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-9), (
                        f"{symbol} {column} row {row}: {g} != {w}"
                    )


def test_random_walk_exercises_every_rating_vote():
    # Guards the reference test: it only proves something if RSI extremes and band
    # breaks actually occur in the series it compares.
    features = compute_indicators(reference_bars())
    assert features.filter(pl.col("rsi_14") < 30).height > 0
    assert features.filter(pl.col("rsi_14") > 70).height > 0
    assert features.filter(pl.col("close") < pl.col("bb_lower_20")).height > 0
    assert features.filter(pl.col("close") > pl.col("bb_upper_20")).height > 0


# ---------------------------------------------------------------- hand-computed answers


def test_rsi_of_a_strictly_rising_series_is_100_after_warm_up():
    features = compute_indicators(bars_from_closes([float(x) for x in range(1, 31)]))
    rsi = features["rsi_14"].to_list()
    assert rsi[:14] == [None] * 14
    assert rsi[14:] == [100.0] * 16


def test_rsi_of_a_flat_series_is_null_not_invented():
    features = compute_indicators(bars_from_closes([50.0] * 30))
    assert features["rsi_14"].null_count() == 30


def test_sma_and_population_bollinger_bands_on_a_constructed_window():
    # Twenty closes alternating 9, 11: mean 10, population std 1 (sample std would be
    # sqrt(20/19) = 1.026), so the bands are exactly 8 and 12.
    closes = [9.0, 11.0] * 10 + [31.0]
    features = compute_indicators(bars_from_closes(closes))
    row19 = features.row(19, named=True)
    assert row19["sma_20"] == pytest.approx(10.0, abs=1e-12)
    assert row19["bb_mid_20"] == pytest.approx(10.0, abs=1e-12)
    assert row19["bb_upper_20"] == pytest.approx(12.0, abs=1e-12)
    assert row19["bb_lower_20"] == pytest.approx(8.0, abs=1e-12)
    # Next window: ten 11s, nine 9s and a 31 -> mean 222 / 20 = 11.1; squared deviations
    # 10 * 0.01 + 9 * 4.41 + 19.9^2 = 435.8, population variance 21.79.
    row20 = features.row(20, named=True)
    assert row20["sma_20"] == pytest.approx(11.1, abs=1e-12)
    assert row20["bb_upper_20"] == pytest.approx(11.1 + 2 * math.sqrt(21.79), abs=1e-12)
    assert row20["bb_lower_20"] == pytest.approx(11.1 - 2 * math.sqrt(21.79), abs=1e-12)
    assert features["sma_20"][:19].null_count() == 19


def test_macd_of_a_constant_series_is_zero_and_bands_collapse():
    features = compute_indicators(bars_from_closes([50.0] * 60))
    tail = features.slice(33)
    assert tail["ema_12"].to_list() == [50.0] * 27
    assert tail["macd"].to_list() == [0.0] * 27
    assert tail["macd_signal"].to_list() == [0.0] * 27
    assert tail["macd_hist"].to_list() == [0.0] * 27
    assert tail["bb_upper_20"].to_list() == [50.0] * 27
    assert tail["bb_lower_20"].to_list() == [50.0] * 27
    assert tail["roc_20"].to_list() == [0.0] * 27
    assert tail["realized_vol_20"].to_list() == [0.0] * 27


def test_atr_of_a_constant_range_series_equals_the_range():
    # Close rises 0.5 a bar inside a range of 2: gaps to the previous close (1.5, 0.5)
    # stay below the range, so every true range, and ATR, is 2.
    closes = [100.0 + 0.5 * i for i in range(40)]
    features = compute_indicators(bars_from_closes(closes, half_range=1.0))
    atr = features["atr_14"].to_list()
    assert atr[:13] == [None] * 13
    assert atr[13:] == pytest.approx([2.0] * 27, abs=1e-12)


def test_atr_counts_an_overnight_gap_as_range():
    # Flat at 100 with range 2, then a gap to 110 (range still 2): that bar's true range
    # is high - previous close = 111 - 100 = 11, so Wilder's ATR = (2 * 13 + 11) / 14.
    closes = [100.0] * 20 + [110.0]
    features = compute_indicators(bars_from_closes(closes, half_range=1.0))
    assert features["atr_14"][19] == pytest.approx(2.0, abs=1e-12)
    assert features["atr_14"][20] == pytest.approx((2.0 * 13 + 11.0) / 14, abs=1e-12)


def test_roc_is_a_percentage_and_volatility_is_annualised_with_sqrt_252():
    closes = [100.0 * 1.01**i for i in range(25)]
    features = compute_indicators(bars_from_closes(closes))
    assert features["roc_20"][20] == pytest.approx(100.0 * (1.01**20 - 1.0), rel=1e-12)
    # Equal log returns: zero volatility.
    assert features["realized_vol_20"][24] == pytest.approx(0.0, abs=1e-12)
    # Alternating log returns +r, -r: 20 of them, sample std r * sqrt(20 / 19).
    r = 0.01
    zigzag = [100.0 * math.exp(r * (i % 2)) for i in range(21)]
    vol = compute_indicators(bars_from_closes(zigzag))["realized_vol_20"][20]
    assert vol == pytest.approx(r * math.sqrt(20 / 19) * math.sqrt(252), rel=1e-9)


def test_rating_averages_the_moving_average_and_oscillator_scores():
    frame = pl.DataFrame(
        {
            "close": [10.0, 10.0, 10.0],
            "sma_20": [9.0, None, 9.0],  # buy
            "sma_50": [11.0, None, 9.0],  # sell
            "sma_200": [None, None, 9.0],  # no vote yet
            "ema_12": [10.0, None, 10.0],
            "ema_26": [9.0, None, 9.0],  # buy
            "rsi_14": [25.0, 50.0, 80.0],  # buy / neutral / sell
            "macd": [1.0, None, 1.0],
            "macd_signal": [2.0, None, 0.5],  # sell / - / buy
            "bb_lower_20": [8.0, None, 10.5],  # neutral / - / buy (below the band)
            "bb_upper_20": [12.0, None, 12.0],
        }
    )
    rating = frame.select(rating_expression())[:, 0].to_list()
    # Row 0: MA (1 - 1 + 1) / 3, oscillators (1 - 1 + 0) / 3 = 0 -> 1/6.
    assert rating[0] == pytest.approx(1 / 6, abs=1e-15)
    # Row 1: an oscillator vote but no moving-average vote -> null, not 0.
    assert rating[1] is None
    # Row 2: MA all buy = 1, oscillators (-1 + 1 + 1) / 3 -> (1 + 1/3) / 2.
    assert rating[2] == pytest.approx(2 / 3, abs=1e-15)


# ---------------------------------------------------------------- warm-up and hygiene


EXPECTED_FIRST_ROW = {
    "close": 0,
    "sma_20": 19,
    "sma_50": 49,
    "sma_200": 199,
    "ema_12": 11,
    "ema_26": 25,
    "rsi_14": 14,
    "macd": 25,
    "macd_signal": 33,
    "macd_hist": 33,
    "bb_mid_20": 19,
    "bb_upper_20": 19,
    "bb_lower_20": 19,
    "atr_14": 13,
    "roc_20": 20,
    "realized_vol_20": 20,
    "volume_sma_20": 19,
    "rating": 19,
}


def test_warm_up_is_null_exactly_until_each_indicator_has_its_bars():
    bars = pl.concat(
        [
            random_walk_bars("A", 250, dt.date(2020, 1, 1), seed=5),
            random_walk_bars("B", 230, dt.date(2020, 3, 1), seed=6),
        ]
    )
    features = compute_indicators(bars)
    assert dict(FIRST_VALID_ROW) == EXPECTED_FIRST_ROW  # the documented table
    for symbol in ("A", "B"):
        mine = features.filter(pl.col("symbol") == symbol)
        for column, first in EXPECTED_FIRST_ROW.items():
            nulls = mine[column].is_null().to_list()
            assert nulls == [True] * first + [False] * (mine.height - first), column


def test_a_symbol_with_ten_bars_gets_only_nulls():
    features = compute_indicators(bars_from_closes([float(x) for x in range(10, 20)]))
    for column in FEATURE_COLUMNS[3:]:
        assert features[column].null_count() == 10, column


def test_a_zero_close_gives_nulls_never_infinities():
    closes = [10.0] * 25 + [0.0] + [10.0] * 25
    features = compute_indicators(bars_from_closes(closes))
    floats = features.select(pl.selectors.float())
    assert (
        not floats.select(pl.any_horizontal(pl.all().is_infinite() | pl.all().is_nan()))
        .to_series()
        .any()
    )
    # ROC 20 bars after the zero divides by it: null.
    assert features["roc_20"][45] is None


def test_a_symbol_is_unaffected_by_its_neighbours_in_the_universe():
    # Windows run across the sorted universe and are masked at symbol boundaries; a
    # penny token sorted right after a 1e5-priced coin must not inherit its rounding.
    tiny = random_walk_bars("B_TINY", 260, dt.date(2020, 1, 1), seed=8).with_columns(
        pl.col("open", "high", "low", "close") * 1e-9
    )
    huge = random_walk_bars("A_HUGE", 300, dt.date(2019, 1, 1), seed=9).with_columns(
        pl.col("open", "high", "low", "close") * 1e5
    )
    alone = compute_indicators(tiny)
    together = compute_indicators(pl.concat([huge, tiny])).filter(pl.col("symbol") == "B_TINY")
    for column in FEATURE_COLUMNS[2:]:
        a, b = alone[column], together[column]
        assert a.is_null().equals(b.is_null()), column
        assert ((a - b).abs() <= 1e-12 * a.abs()).all(), column


def test_timestamp_becomes_the_utc_session_date():
    bars = bars_from_closes([1.0, 2.0], first_day=dt.date(2024, 2, 28))
    bars = bars.with_columns(pl.col("timestamp") + 3_600)  # stamped 01:00 UTC: same day
    assert compute_indicators(bars)["date"].to_list() == [
        dt.date(2024, 2, 28),
        dt.date(2024, 2, 29),
    ]


def test_duplicate_sessions_and_missing_prices_are_refused_with_the_symbol():
    bars = bars_from_closes([1.0, 2.0, 3.0], symbol="DUP")
    with pytest.raises(ValueError, match="'DUP' on 2020-01-02"):
        compute_indicators(pl.concat([bars, bars.slice(1, 1)]))
    broken = bars.with_columns(close=pl.when(pl.col("close") == 2.0).then(None).otherwise("close"))
    with pytest.raises(ValueError, match="'DUP' on 2020-01-02"):
        compute_indicators(broken)
    with pytest.raises(ValueError, match="volume"):
        compute_indicators(bars.drop("volume"))


def test_lazy_and_eager_input_give_the_same_features():
    bars = random_walk_bars("A", 60, dt.date(2020, 1, 1), seed=9)
    assert compute_indicators(bars.lazy()).equals(compute_indicators(bars))


# ---------------------------------------------------------------- L2 contract


def valid_features() -> pl.DataFrame:
    return compute_indicators(random_walk_bars("A", 80, dt.date(2020, 1, 1), seed=4))


def test_contract_accepts_indicators_with_warm_up_nulls():
    features = valid_features()
    assert features["sma_50"].null_count() > 0
    FeaturesSchema.validate(features)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("rsi_14", 101.0),
        ("rsi_14", -0.5),
        ("atr_14", -1.0),
        ("realized_vol_20", -0.1),
        ("rating", 1.5),
    ],
)
def test_contract_rejects_out_of_range_values(column, value):
    features = valid_features().with_columns(
        pl.when(pl.int_range(pl.len()) == 60).then(value).otherwise(pl.col(column)).alias(column)
    )
    with pytest.raises(pandera.errors.SchemaError, match=column):
        FeaturesSchema.validate(features)


def test_contract_rejects_lower_band_above_upper_band():
    features = valid_features().with_columns(
        bb_lower_20=pl.when(pl.int_range(pl.len()) == 60)
        .then(pl.col("bb_upper_20") + 1.0)
        .otherwise(pl.col("bb_lower_20"))
    )
    with pytest.raises(pandera.errors.SchemaError, match="bollinger_order"):
        FeaturesSchema.validate(features)


def test_contract_rejects_infinity_and_duplicate_rows():
    infinite = valid_features().with_columns(
        macd=pl.when(pl.int_range(pl.len()) == 60).then(float("inf")).otherwise(pl.col("macd"))
    )
    with pytest.raises(pandera.errors.SchemaError, match="macd"):
        FeaturesSchema.validate(infinite)
    features = valid_features()
    with pytest.raises(pandera.errors.SchemaError, match="unique_symbol_date"):
        FeaturesSchema.validate(pl.concat([features, features.tail(1)]))
