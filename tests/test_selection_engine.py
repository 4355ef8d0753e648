"""The selection engine (quant_assets/alpha/selection.py) on tiny hand-computed panels:
eligibility, the score with its feature term, clustering, relaxation, and the hash."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from quant_assets.alpha.selection import (
    SelectionParams,
    correlation_clusters,
    pairwise_correlation,
    scores,
    select_winners,
)

NAN = math.nan
# Four rows, three symbols. With skip=1 the momentum uses the first three rows; the
# volatility (sample std, ddof=1) all four; periods_per_year=1 leaves it unannualised.
#   A: m = 1.1 * 1.1 * 0.9 - 1 = 0.089;  std of (.1, .1, -.1, .05) = sqrt(.026875 / 3)
#      = 0.0946485;  score = 0.940322
#   B: m = 1.05 ** 3 - 1 = 0.157625;  std of (.05, .05, .05, -.05) = sqrt(.0075 / 3) = 0.05;
#      score = 3.1525
#   C: m = 1.02 * 0.98 * 1.02 - 1 = 0.019592;  std of (.02, -.02, .02, 0) = sqrt(.0011 / 3)
#      = 0.0191485;  score = 1.023159
PANEL = np.array(
    [
        [0.10, 0.05, 0.02],
        [0.10, 0.05, -0.02],
        [-0.10, 0.05, 0.02],
        [0.05, -0.05, 0.00],
    ]
)
SYMBOLS = ["A", "B", "C"]


def params(**overrides) -> SelectionParams:
    base = dict(
        lookback=4, skip=1, min_history=3, min_quality=0.8, n_clusters=1, per_cluster=5,
        n_winners=2, max_relaxations=0, periods_per_year=1, feature_weight=0.2,
    )
    return SelectionParams(**{**base, **overrides})


def by_symbol(selection) -> dict[str, dict]:
    return {w["symbol"]: w for w in selection.winners}


def test_momentum_volatility_and_score_match_the_hand_computation():
    momentum, volatility, score = scores(PANEL, skip=1, periods_per_year=1)
    assert momentum == pytest.approx([0.089, 0.157625, 0.019592])
    std_a, std_c = math.sqrt(0.026875 / 3), math.sqrt(0.0011 / 3)
    assert volatility == pytest.approx([std_a, 0.05, std_c])
    assert score == pytest.approx([0.089 / std_a, 3.1525, 0.019592 / std_c])
    assert score == pytest.approx([0.940322, 3.1525, 1.023159], rel=1e-6)
    # Annualising multiplies the volatility by sqrt(P) and divides the score by it.
    _, yearly, yearly_score = scores(PANEL, skip=1, periods_per_year=4)
    assert yearly == pytest.approx(2 * volatility) and yearly_score == pytest.approx(score / 2)


def test_without_features_the_score_is_the_momentum_term_and_winners_carry_no_feature():
    selection = select_winners(PANEL, SYMBOLS, params())
    assert selection.symbols == ["B", "C"]  # 3.1525 and 1.023 beat A's 0.940
    winners = by_symbol(selection)
    assert winners["C"]["score"] == pytest.approx(1.023159, rel=1e-6)
    assert all("feature" not in w for w in selection.winners)
    assert selection.params["feature_weight"] == 0.2  # recorded in selection.json


def test_the_feature_term_is_added_with_its_weight_and_can_change_the_winners():
    # A: 0.940322 + 0.2 * 1.0 = 1.140322;  C: 1.023159 + 0.2 * -0.5 = 0.923159;
    # B has no feature (term 0): 3.1525.
    selection = select_winners(PANEL, SYMBOLS, params(), features={"A": 1.0, "C": -0.5})
    assert selection.symbols == ["A", "B"]
    winners = by_symbol(selection)
    assert winners["A"]["score"] == pytest.approx(1.140322, rel=1e-6)
    assert winners["A"]["feature"] == 1.0 and winners["A"]["momentum"] == pytest.approx(0.089)
    assert winners["B"]["score"] == pytest.approx(3.1525) and winners["B"]["feature"] is None
    # A weight of 0 leaves the momentum ranking; a null or NaN feature counts as 0.
    unweighted = select_winners(PANEL, SYMBOLS, params(feature_weight=0.0), features={"A": 1.0})
    assert unweighted.symbols == ["B", "C"]
    nulls = select_winners(PANEL, SYMBOLS, params(), features={"A": None, "C": NAN})
    assert nulls.symbols == ["B", "C"] and by_symbol(nulls)["C"]["feature"] is None
    assert by_symbol(nulls)["C"]["score"] == pytest.approx(1.023159, rel=1e-6)


@pytest.mark.parametrize("weight", [-0.1, math.inf, math.nan])
def test_a_negative_or_non_finite_feature_weight_is_refused(weight):
    with pytest.raises(ValueError, match="feature_weight"):
        params(feature_weight=weight)


def test_eligibility_excludes_short_history_low_quality_flat_and_flagged_symbols():
    extra = np.array(
        [
            [NAN, NAN, 0.01, 0.03],  # D: 2 returns
            [NAN, 0.02, 0.01, -0.02],  # E: 3 returns, but low quality
            [0.01, 0.02, 0.01, 0.01],  # F: fine, but flagged
            [0.00, 0.00, 0.00, 0.00],  # G: flat, no volatility
        ]
    ).T
    panel = np.hstack([PANEL, extra])
    symbols = [*SYMBOLS, "D", "E", "F", "G"]
    selection = select_winners(
        panel, symbols, params(n_winners=5), quality={"E": 0.5, "A": 0.8}, flagged={"F"}
    )
    assert selection.excluded == {
        "D": "2 returns in the lookback < 3",
        "E": "data quality 0.500 < 0.800",
        "F": "level shift flagged in the catalog",
        "G": "score undefined (no volatility)",
    }
    assert selection.eligible == 3 and selection.candidates == 7
    assert selection.symbols == ["A", "B", "C"]  # quality exactly at the minimum is eligible


def test_only_the_lookback_rows_count_towards_history():
    # Ten rows, lookback 4: C's NaNs in the last four rows leave it 2 returns < 3.
    old = np.full((6, 3), 0.01)
    panel = np.vstack([old, PANEL])
    panel[-2:, 2] = NAN
    selection = select_winners(panel, SYMBOLS, params())
    assert selection.excluded == {"C": "2 returns in the lookback < 3"}
    assert by_symbol(selection)["A"]["score"] == pytest.approx(0.940322, rel=1e-6)


# Two pairs of perfectly correlated series: X and X2 = 2X; Y and Y2 = Y / 2 (shifted).
# Scores (skip 0, P = 1): Y 4.839, Y2 4.786, X 1.348, X2 1.286.
_X = np.array([0.01, -0.02, 0.03, -0.01, 0.02, -0.03, 0.01, 0.02])
_Y = np.array([0.02, 0.01, -0.01, -0.02, 0.02, 0.01, -0.01, -0.02])
PAIRS = np.column_stack([_X, 2 * _X, _Y + 0.01, 0.5 * _Y + 0.005])
PAIR_SYMBOLS = ["X", "X2", "Y", "Y2"]


def test_correlation_clusters_group_the_correlated_pairs():
    labels = correlation_clusters(PAIRS, 2)
    assert labels[0] == labels[1] and labels[2] == labels[3] and labels[0] != labels[2]
    assert list(correlation_clusters(PAIRS, 1)) == [1, 1, 1, 1]
    assert list(correlation_clusters(PAIRS[:, :1], 3)) == [1]


# Complete columns a, e, f (one standardised product) and columns with NaN b, c, d
# (pairwise sums), each correlation over the rows both columns have:
#   a-e: a - 2.5 = (-1.5, -.5, .5, 1.5), e - 2.5 = (1.5, -1.5, -1.5, 1.5): sum 0 -> 0
#   a-f: f - 2.5 = (-1.5, .5, -.5, 1.5): 4 / (sqrt 5 sqrt 5) = 0.8;  e-f: 0
#   a-b (rows 0-2): b = 2a -> 1;  a-c (rows 1-3): c = 5 - a -> -1;  b-c (rows 1, 2): -1
#   e-b (rows 0-2): e = (4, 1, 1) - 2 = (2, -1, -1), b - 4 = (-2, 0, 2): -6 / sqrt(6 * 8)
#   d has one row: undefined with every other column.
CORR_WINDOW = np.array(
    [
        # a    b    c    d    e    f
        [1.0, 2.0, NAN, 1.0, 4.0, 1.0],
        [2.0, 4.0, 3.0, NAN, 1.0, 3.0],
        [3.0, 6.0, 2.0, NAN, 1.0, 2.0],
        [4.0, NAN, 1.0, NAN, 4.0, 4.0],
    ]
)


def test_pairwise_correlation_matches_the_hand_computation():
    corr = pairwise_correlation(CORR_WINDOW)
    a, b, c, d, e, f = range(6)
    expected = {
        (a, e): 0.0,
        (a, f): 0.8,
        (e, f): 0.0,
        (a, b): 1.0,
        (a, c): -1.0,
        (b, c): -1.0,
        (e, b): -6 / math.sqrt(48),
    }
    for (i, j), value in expected.items():
        assert corr[i, j] == pytest.approx(value, abs=1e-12), (i, j)
    assert np.array_equal(corr, corr.T, equal_nan=True)
    assert np.all(np.diag(corr) == 1.0)
    assert not np.isfinite(np.delete(corr[d], d)).any()


def test_pairwise_correlation_is_pearson_over_the_common_rows_of_each_pair():
    rng = np.random.default_rng(5)
    window = rng.normal(0.0, 0.01, (60, 12)) + rng.normal(0.0, 0.01, (60, 1))
    assert np.allclose(pairwise_correlation(window), np.corrcoef(window.T), atol=1e-12)
    window[:15, 3] = NAN  # a late start
    gaps = window[:, 6:]  # gaps in half of the columns; columns 0-2 and 4-5 stay complete
    gaps[rng.random(gaps.shape) < 0.05] = NAN
    corr = pairwise_correlation(window)
    for i in range(12):
        for j in range(12):
            both = np.isfinite(window[:, i]) & np.isfinite(window[:, j])
            reference = np.corrcoef(window[both, i], window[both, j])[0, 1]
            assert corr[i, j] == pytest.approx(reference, abs=1e-12), (i, j)


def test_correlation_clusters_are_the_average_linkage_of_the_correlation_distance():
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    rng = np.random.default_rng(9)
    loadings = rng.normal(0.0, 1.0, (40, 4))
    window = rng.normal(0.0, 0.01, (120, 4)) @ loadings.T + rng.normal(0.0, 0.01, (120, 40))
    window[:30, :5] = NAN
    window[rng.random(window.shape) < 0.02] = NAN
    reference = np.empty((40, 40))
    for i in range(40):
        for j in range(40):
            both = np.isfinite(window[:, i]) & np.isfinite(window[:, j])
            reference[i, j] = np.corrcoef(window[both, i], window[both, j])[0, 1]
    distance = np.sqrt((1.0 - np.clip(reference, -1.0, 1.0)) / 2.0)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="average")
    for k in (2, 5, 8):
        expected = fcluster(tree, t=k, criterion="maxclust")
        assert np.array_equal(correlation_clusters(window, k), expected)


def test_winners_are_the_best_per_cluster_not_the_best_overall():
    pair_params = params(lookback=8, skip=0, min_history=8, n_winners=2, per_cluster=1)
    one_cluster = select_winners(PAIRS, PAIR_SYMBOLS, SelectionParams(**{**pair_params.__dict__, "per_cluster": 2}))
    assert one_cluster.symbols == ["Y", "Y2"]  # one cluster: the two best scores
    two = select_winners(PAIRS, PAIR_SYMBOLS, SelectionParams(**{**pair_params.__dict__, "n_clusters": 2}))
    assert two.symbols == ["X", "Y"]  # Y2 (4.786) loses to X (1.348): same cluster as Y
    # Clusters are numbered by their alphabetically first member.
    assert {w["symbol"]: w["cluster"] for w in two.winners} == {"X": 1, "Y": 2}


def test_relaxation_lowers_the_thresholds_step_by_step_and_records_each():
    relaxed = select_winners(
        PANEL, SYMBOLS, params(n_winners=3, max_relaxations=2), quality={"C": 0.75}
    )
    # Step 1: quality 0.8 - 0.1 = 0.7, history int(3 * 0.75) = 2; C (0.75) is back.
    assert relaxed.relaxations == [
        {"step": 1, "eligible_before": 2, "min_quality": 0.7, "min_history": 2}
    ]
    assert relaxed.symbols == ["A", "B", "C"] and relaxed.excluded == {}
    exhausted = select_winners(
        PANEL, SYMBOLS, params(n_winners=3, max_relaxations=2), quality={"C": 0.5}
    )
    assert exhausted.relaxations == [
        {"step": 1, "eligible_before": 2, "min_quality": 0.7, "min_history": 2},
        {"step": 2, "eligible_before": 2, "min_quality": 0.6, "min_history": 2},
    ]
    assert exhausted.symbols == ["A", "B"]
    assert exhausted.excluded == {"C": "data quality 0.500 < 0.600"}


def test_the_hash_covers_the_content_and_changes_when_the_winners_change():
    features = {"A": 0.1, "C": 0.1}
    first = select_winners(PANEL, SYMBOLS, params(), features=features)
    first.features = {"table": "tv_technicals_1d", "column": "rating", "missing": ["B"]}
    document = first.document("2025-06-30")
    body = {k: v for k, v in document.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    assert document["hash"] == hashlib.sha256(canonical.encode()).hexdigest()
    # Deterministic: the same inputs, even with the columns in another order, hash the same.
    order = [2, 0, 1]
    again = select_winners(PANEL[:, order], [SYMBOLS[j] for j in order], params(), features=features)
    again.features = dict(first.features)
    assert again.document("2025-06-30") == document
    # A feature that moves A ahead of C changes the winners, and so the hash.
    moved = select_winners(PANEL, SYMBOLS, params(), features={"A": 1.0, "C": 0.1})
    moved.features = dict(first.features)
    assert moved.symbols != first.symbols
    assert moved.document("2025-06-30")["hash"] != document["hash"]
    # The day and the feature source are part of the content too.
    assert first.document("2025-07-01")["hash"] != document["hash"]
