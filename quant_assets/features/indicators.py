"""Daily technical indicators for the whole universe at once, and their L2 contract.

`compute_indicators` turns OHLCV bars of many symbols (one row per symbol and session)
into one row of indicators per symbol and date, for the whole universe in one polars
query: no Python loop per symbol. Shifts and rolling windows run on the symbol-sorted
columns and are masked where they would reach into the previous symbol; only the
recursive averages need a per-symbol window (`.over`). 1000 symbols x 10 years of
daily bars take about 2 s on two cores.

Conventions (docs/features.md has the formulas):

- Warm-up is null, never invented: an indicator is null until the symbol has enough
  bars for its textbook definition (sma_200 from the 200th bar, rsi_14 from the 15th).
- Recursive averages (EMA, Wilder's RSI and ATR, the MACD signal) are seeded with the
  simple mean of their first `n` inputs, then recurse `y = a*x + (1-a)*y_prev`.
- Bollinger bands use the population standard deviation (ddof=0, as Bollinger and
  TradingView do); realized volatility uses the sample one (ddof=1, an estimator),
  annualised with sqrt(252) for every symbol, crypto included.
- roc_20 is a percentage. No infinities or NaN: a division by zero gives null.
- `rating` in [-1, 1] averages two group scores (moving averages, oscillators), each
  the mean of its available buy(+1)/neutral(0)/sell(-1) votes.
"""

from __future__ import annotations

import math

import pandera.polars as pa
import polars as pl

from quant_resources.schema import ts_to_date_expr

TRADING_DAYS_PER_YEAR = 252
BOLLINGER_WIDTH = 2.0
RSI_OVERSOLD = 30.0
RSI_OVERBOUGHT = 70.0

FEATURE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "date": pl.Date(),
    "close": pl.Float64(),
    "sma_20": pl.Float64(),
    "sma_50": pl.Float64(),
    "sma_200": pl.Float64(),
    "ema_12": pl.Float64(),
    "ema_26": pl.Float64(),
    "rsi_14": pl.Float64(),
    "macd": pl.Float64(),
    "macd_signal": pl.Float64(),
    "macd_hist": pl.Float64(),
    "bb_mid_20": pl.Float64(),
    "bb_upper_20": pl.Float64(),
    "bb_lower_20": pl.Float64(),
    "atr_14": pl.Float64(),
    "roc_20": pl.Float64(),
    "realized_vol_20": pl.Float64(),
    "volume_sma_20": pl.Float64(),
    "rating": pl.Float64(),
}
FEATURE_COLUMNS: tuple[str, ...] = tuple(FEATURE_SCHEMA)
FLOAT_COLUMNS: tuple[str, ...] = FEATURE_COLUMNS[2:]

# Row (0-based, per symbol) of the first non-null value; the warm-up is every row before.
FIRST_VALID_ROW: dict[str, int] = {
    "close": 0,
    "sma_20": 19,
    "sma_50": 49,
    "sma_200": 199,
    "ema_12": 11,
    "ema_26": 25,
    "rsi_14": 14,  # 14 close-to-close changes need 15 bars
    "macd": 25,
    "macd_signal": 33,  # EMA 9 of macd, whose first value is at row 25
    "macd_hist": 33,
    "bb_mid_20": 19,
    "bb_upper_20": 19,
    "bb_lower_20": 19,
    "atr_14": 13,  # the first true range is high - low, so 14 bars suffice
    "roc_20": 20,
    "realized_vol_20": 20,  # 20 log returns need 21 bars
    "volume_sma_20": 19,
    "rating": 19,  # first MA vote (close vs sma_20) and oscillator vote (Bollinger)
}

# Bars of history an incremental update needs before its first date so that its
# recursive averages match a full rebuild to machine precision: the slowest memory is
# Wilder's (13/14)^n, below 1e-16 after about 500 bars; sma_200 needs only 200.
WARMUP_BARS = 520

_BAR_COLUMNS = ("symbol", "timestamp", "open", "high", "low", "close", "volume")
_SYMBOL_ID = "_symbol_id"
_ROW = "_row"  # 0-based position of a bar in its symbol's history


def _in_symbol(expr: pl.Expr, from_row: int) -> pl.Expr:
    """`expr` evaluated on the whole symbol-sorted column, kept from per-symbol row `from_row`.

    A shift by k or a window of n bars computed across all symbols at once reads only
    the current symbol's bars from row k (or n - 1) on; earlier rows would read the
    previous symbol's tail, so they are nulled. This avoids a per-symbol window (`over`),
    which costs several times more, for everything but the recursive averages.
    """
    return pl.when(pl.col(_ROW) >= from_row).then(expr)


def _recursion_input(values: pl.Expr, *, n: int, first: int) -> pl.Expr:
    """Input of `_seeded_ewm`: null, then the mean of the first `n` values, then the values.

    `values` start at per-symbol row `first`; the seed sits at row `first + n - 1`.
    """
    seed_row = first + n - 1
    row = pl.col(_ROW)
    return pl.when(row == seed_row).then(values.rolling_mean(n)).when(row > seed_row).then(values)


def _seeded_ewm(recursion_input: pl.Expr, *, alpha: float) -> pl.Expr:
    """Recursive average `y = alpha * x + (1 - alpha) * y_prev`, per symbol.

    Polars' `ewm_mean(adjust=False)` starts its recursion at the first non-null input,
    so on `_recursion_input` it is null before the seed row, equals the seed (the simple
    mean of the first n values) there, and recurses after.
    """
    return recursion_input.ewm_mean(alpha=alpha, adjust=False).over(_SYMBOL_ID)


def _safe_ratio(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
    """numerator / denominator, null where the denominator is zero (never inf or NaN)."""
    return pl.when(denominator != 0).then(numerator / denominator)


def _vote(condition_buy: pl.Expr, condition_sell: pl.Expr) -> pl.Expr:
    """+1 buy, -1 sell, 0 neutral; null when an input is null (no vote, not a neutral one)."""
    return condition_buy.cast(pl.Float64) - condition_sell.cast(pl.Float64)


def _group_score(votes: list[pl.Expr]) -> pl.Expr:
    """Mean of the non-null votes; null when none is available yet."""
    cast = [v.cast(pl.Float64) for v in votes]
    available = pl.sum_horizontal([v.is_not_null().cast(pl.Int32) for v in cast])
    return pl.when(available > 0).then(pl.sum_horizontal(cast) / available)


def _check_bars(bars: pl.DataFrame) -> None:
    """Refuse bars the indicators would silently turn into garbage. `bars` is sorted."""
    bad_price = pl.any_horizontal(
        [~pl.col(c).is_finite().fill_null(False) for c in ("open", "high", "low", "close")]
    )
    bad = bars.filter(bad_price | pl.col("symbol").is_null() | pl.col("date").is_null())
    if bad.height:
        first = bad.row(0, named=True)
        raise ValueError(
            f"{bad.height} bar(s) with a null or non-finite price, symbol or timestamp, "
            f"first: symbol {first['symbol']!r} on {first['date']}; "
            "bars must pass the L0 OHLCV contract before features are computed"
        )
    # Sorted by (symbol, date): a duplicate sits right after its twin.
    repeated = (pl.col("symbol") == pl.col("symbol").shift(1)) & (
        pl.col("date") == pl.col("date").shift(1)
    )
    dupes = bars.filter(repeated)
    if dupes.height:
        first = dupes.row(0, named=True)
        raise ValueError(
            f"{dupes.height} extra bar(s) on an already used (symbol, date), first: "
            f"{first['symbol']!r} on {first['date']}; keep one bar per symbol and session"
        )


def _prepare_bars(bars: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
    """Bars with `date` (pl.Date) and a per-symbol integer id, typed, checked, sorted.

    Raises ValueError naming the first offending symbol when a column is missing, a
    price is null or not finite, or two bars of a symbol fall on the same date.
    """
    frame = bars.lazy() if isinstance(bars, pl.DataFrame) else bars
    missing = [c for c in _BAR_COLUMNS if c not in frame.collect_schema().names()]
    if missing:
        raise ValueError(
            f"bars lack column(s) {missing}: pass symbol, timestamp, open, high, low, close, volume"
        )
    collected = (
        frame.select(
            pl.col("symbol").cast(pl.String),
            # Floor division keeps a bar stamped later in its UTC day on that day.
            ts_to_date_expr().alias("date"),
            *(pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close", "volume")),
        )
        .collect()
        # Sorting eagerly: measured several times faster than inside the lazy query.
        .sort("symbol", "date")
    )
    _check_bars(collected)
    # Sorted by symbol: a running count of symbol changes numbers the symbols (windows
    # keyed on an integer run several times faster than on strings), and the distance
    # to the symbol's first row is each bar's position in its own history.
    new_symbol = (pl.col("symbol") != pl.col("symbol").shift(1)).fill_null(True)
    index = pl.int_range(pl.len(), dtype=pl.Int64)
    return collected.with_columns(
        new_symbol.cum_sum().alias(_SYMBOL_ID),
        (index - pl.when(new_symbol).then(index).forward_fill()).alias(_ROW),
    )


def compute_indicators(bars: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
    """One row of indicators per (symbol, date) for every bar given.

    bars: columns symbol (str), timestamp (int64, UTC epoch seconds at 00:00 of the
    session date), open, high, low, close, volume (float64); any number of symbols,
    any order, one bar per symbol and session. Extra columns are ignored.

    Returns the columns of `FEATURE_SCHEMA` (prices in the bars' currency, roc_20 in
    percent, realized_vol_20 as an annualised fraction), sorted by (symbol, date).
    Indicators are causal: a value depends only on the symbol's bars up to that date.
    """
    ordered = _prepare_bars(bars)
    close = pl.col("close")
    prev_close = pl.col("_prev_close")
    annualise = math.sqrt(TRADING_DAYS_PER_YEAR)

    frame = ordered.lazy().with_columns(
        _in_symbol(close.shift(1), 1).alias("_prev_close"),
        _in_symbol(close.shift(20), 20).alias("_close_20_ago"),
    )
    frame = frame.with_columns(
        (close - prev_close).clip(lower_bound=0).alias("_gain"),
        (prev_close - close).clip(lower_bound=0).alias("_loss"),
        # max_horizontal skips nulls: on a symbol's first bar the true range is high - low.
        pl.max_horizontal(
            pl.col("high") - pl.col("low"),
            (pl.col("high") - prev_close).abs(),
            (pl.col("low") - prev_close).abs(),
        ).alias("_true_range"),
        pl.when((close > 0) & (prev_close > 0))
        .then((close / prev_close).log())
        .alias("_log_return"),
        (100.0 * (_safe_ratio(close, pl.col("_close_20_ago")) - 1.0)).alias("roc_20"),
    )
    frame = frame.with_columns(
        _in_symbol(close.rolling_mean(20), 19).alias("sma_20"),
        _in_symbol(close.rolling_mean(50), 49).alias("sma_50"),
        _in_symbol(close.rolling_mean(200), 199).alias("sma_200"),
        # Population standard deviation (ddof=0), as in Bollinger's definition.
        _in_symbol(close.rolling_std(20, ddof=0), 19).alias("_bb_std"),
        # Sample standard deviation (ddof=1): realized volatility is an estimate.
        _in_symbol(pl.col("_log_return").rolling_std(20, ddof=1) * annualise, 20).alias(
            "realized_vol_20"
        ),
        _in_symbol(pl.col("volume").rolling_mean(20), 19).alias("volume_sma_20"),
        _recursion_input(close, n=12, first=0).alias("_ema_12_input"),
        _recursion_input(close, n=26, first=0).alias("_ema_26_input"),
        _recursion_input(pl.col("_gain"), n=14, first=1).alias("_gain_input"),
        _recursion_input(pl.col("_loss"), n=14, first=1).alias("_loss_input"),
        _recursion_input(pl.col("_true_range"), n=14, first=0).alias("_true_range_input"),
    )
    frame = frame.with_columns(
        _seeded_ewm(pl.col("_ema_12_input"), alpha=2 / 13).alias("ema_12"),
        _seeded_ewm(pl.col("_ema_26_input"), alpha=2 / 27).alias("ema_26"),
        # Wilder's smoothing is an EMA with alpha = 1 / n.
        _seeded_ewm(pl.col("_gain_input"), alpha=1 / 14).alias("_avg_gain"),
        _seeded_ewm(pl.col("_loss_input"), alpha=1 / 14).alias("_avg_loss"),
        _seeded_ewm(pl.col("_true_range_input"), alpha=1 / 14).alias("atr_14"),
    )
    avg_gain, avg_loss = pl.col("_avg_gain"), pl.col("_avg_loss")
    frame = frame.with_columns(
        (pl.col("ema_12") - pl.col("ema_26")).alias("macd"),
        # 100 * g / (g + l) equals 100 - 100 / (1 + g / l) and stays finite when l == 0
        # (RSI 100); with no movement at all (g == l == 0) RSI is undefined: null.
        (100.0 * _safe_ratio(avg_gain, avg_gain + avg_loss)).alias("rsi_14"),
        pl.col("sma_20").alias("bb_mid_20"),
        (pl.col("sma_20") + BOLLINGER_WIDTH * pl.col("_bb_std")).alias("bb_upper_20"),
        (pl.col("sma_20") - BOLLINGER_WIDTH * pl.col("_bb_std")).alias("bb_lower_20"),
    )
    frame = frame.with_columns(
        _recursion_input(pl.col("macd"), n=9, first=FIRST_VALID_ROW["macd"]).alias("_macd_input")
    )
    frame = frame.with_columns(
        _seeded_ewm(pl.col("_macd_input"), alpha=2 / 10).alias("macd_signal")
    )
    frame = frame.with_columns((pl.col("macd") - pl.col("macd_signal")).alias("macd_hist"))
    frame = frame.with_columns(rating_expression().alias("rating"))
    # Safety net for inputs such as a zero price: no inf or NaN ever leaves this module.
    frame = frame.with_columns(
        pl.when(pl.col(c).is_finite()).then(pl.col(c)).alias(c) for c in FLOAT_COLUMNS
    )
    return frame.select(pl.col(c).cast(t) for c, t in FEATURE_SCHEMA.items()).collect()


def moving_average_votes() -> list[pl.Expr]:
    """Trend votes: price above its averages, fast EMA above slow EMA -> buy."""
    close = pl.col("close")
    return [
        (close - pl.col("sma_20")).sign(),
        (close - pl.col("sma_50")).sign(),
        (close - pl.col("sma_200")).sign(),
        (pl.col("ema_12") - pl.col("ema_26")).sign(),
    ]


def oscillator_votes() -> list[pl.Expr]:
    """Oscillator votes: oversold/overbought RSI, MACD vs its signal, price outside the bands."""
    close, rsi = pl.col("close"), pl.col("rsi_14")
    return [
        _vote(rsi < RSI_OVERSOLD, rsi > RSI_OVERBOUGHT),
        (pl.col("macd") - pl.col("macd_signal")).sign(),
        _vote(close < pl.col("bb_lower_20"), close > pl.col("bb_upper_20")),
    ]


def rating_expression() -> pl.Expr:
    """Mean of the moving-average score and the oscillator score, in [-1, 1].

    Each score is the mean of its group's available votes, so a young symbol is rated
    on the votes it already has; the rating is null until both groups have one vote.
    Equal group weights keep the four trend votes from outvoting the three oscillators.
    """
    ma_score = _group_score(moving_average_votes())
    oscillator_score = _group_score(oscillator_votes())
    return (ma_score + oscillator_score) / 2.0


def _finite_or_null(data: pa.PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(pl.col(data.key).is_finite() | pl.col(data.key).is_null())


def _bands_ordered(data: pa.PolarsData) -> pl.LazyFrame:
    lower, mid, upper = pl.col("bb_lower_20"), pl.col("bb_mid_20"), pl.col("bb_upper_20")
    # A null band is warm-up, not a violation.
    return data.lazyframe.select(((lower <= mid) & (mid <= upper)).fill_null(True))


def _one_row_per_symbol_and_date(data: pa.PolarsData) -> pl.LazyFrame:
    # Same rule as pandera's `unique=["symbol", "date"]`, three times faster on 2.5M
    # rows: an exact integer key (category id, day number) hashes cheaper than a struct.
    symbol_id = pl.col("symbol").cast(pl.Categorical).to_physical().cast(pl.Int64)
    key = symbol_id * (1 << 32) + pl.col("date").cast(pl.Int32).cast(pl.Int64)
    return data.lazyframe.select(~key.is_duplicated())


def _float_column(*checks: pa.Check) -> pa.Column:
    finite = pa.Check(_finite_or_null, name="finite", error="inf or NaN (want a number or null)")
    return pa.Column(pl.Float64, checks=[finite, *checks], nullable=True)


FeaturesSchema = pa.DataFrameSchema(
    {
        "symbol": pa.Column(pl.String, nullable=False),
        "date": pa.Column(pl.Date, nullable=False),
        **{c: _float_column() for c in FLOAT_COLUMNS},
        "close": _float_column(pa.Check.gt(0)),
        "rsi_14": _float_column(pa.Check.in_range(0, 100)),
        "atr_14": _float_column(pa.Check.ge(0)),
        "realized_vol_20": _float_column(pa.Check.ge(0)),
        "volume_sma_20": _float_column(pa.Check.ge(0)),
        "rating": _float_column(pa.Check.in_range(-1, 1)),
    },
    checks=[
        pa.Check(_bands_ordered, name="bollinger_order", error="bb_lower <= bb_mid <= bb_upper"),
        pa.Check(
            _one_row_per_symbol_and_date,
            name="unique_symbol_date",
            error="(symbol, date) not unique: one row per symbol and date",
        ),
    ],
    name="L2 features",
    description="tv_technicals_1d rows: indicator ranges, finite floats, one row per symbol and date",
)
"""L2 contract of the feature store. Nulls are allowed (warm-up); extra columns are too."""
