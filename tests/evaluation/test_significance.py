"""Confidence intervals, the paired randomisation test and the recommendation built on them."""

import numpy as np
import pytest

from embedtune.evaluation.significance import EXACT_UP_TO, bootstrap_ci, paired_test, recommend


def per_query_scores(seed: int, n: int, mean: float, spread: float = 0.25) -> np.ndarray:
    """nDCG-like values: ``n`` draws around ``mean``, kept in [0, 1]."""
    return np.clip(np.random.default_rng(seed).normal(mean, spread, n), 0.0, 1.0)


def test_the_interval_holds_the_mean_and_narrows_with_more_queries():
    few, many = per_query_scores(1, 20, 0.6), per_query_scores(1, 500, 0.6)
    low, high = bootstrap_ci(few)
    assert low < few.mean() < high
    wide = high - low
    low, high = bootstrap_ci(many)
    assert low < many.mean() < high
    # The interval of a mean shrinks as 1/sqrt(n): 25 times the queries, about a fifth of the width.
    assert 0.12 < (high - low) / wide < 0.3


def test_the_interval_covers_the_true_mean_about_95_percent_of_the_time():
    true_mean = 0.5  # uniform values on [0, 1]
    covered = 0
    for seed in range(200):
        values = np.random.default_rng(seed).random(40)
        low, high = bootstrap_ci(values, resamples=1000, seed=seed)
        covered += low <= true_mean <= high
    # The percentile bootstrap runs a little under 95 % at 40 queries; far from it would be a bug.
    assert 0.88 <= covered / 200 <= 0.99


def test_one_query_or_equal_values_give_a_point_interval():
    assert bootstrap_ci([0.7]) == (0.7, 0.7)
    assert bootstrap_ci([0.25] * 30) == pytest.approx((0.25, 0.25))


def test_identical_runs_give_p_one():
    values = per_query_scores(2, 50, 0.7)
    assert paired_test(values, values) == 1.0
    assert paired_test(values, values.copy(), resamples=10) == 1.0


def test_a_clearly_better_run_gets_a_small_p_and_a_slightly_better_one_does_not():
    base = per_query_scores(3, 60, 0.6)
    noise = np.random.default_rng(4).normal(0, 0.05, 60)
    assert paired_test(np.clip(base + 0.1 + noise, 0, 1), base) < 0.001
    # A gain a tenth of the per-query noise is what another draw of queries could give.
    assert paired_test(base + 0.005 + noise, base) > 0.2
    assert paired_test(base, base + 0.005 + noise) == paired_test(base + 0.005 + noise, base)  # two-sided


def test_exact_p_value_by_counting_sign_assignments():
    # Three queries each better by 1 (and two ties, which change nothing): of the 8 sign
    # assignments only +++ and --- reach |sum| = 3.
    a, b = [1.0, 1.0, 1.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.5, 0.0]
    assert paired_test(a, b) == 2 / 8
    # Differences 3, 1, 1: the sums are ±5, ±3 (twice each) and ±1; only ±5 reach the observed 5.
    assert paired_test([3.0, 1.0, 1.0], [0.0, 0.0, 0.0]) == 2 / 8
    # Differences 2, 1: sums 3, 1, -1, -3; |sum| >= 3 twice of four.
    assert paired_test([2.0, 1.0], [0.0, 0.0]) == 2 / 4


def test_same_seed_same_figures_other_seed_other_draws():
    a, b = per_query_scores(5, 80, 0.6), per_query_scores(6, 80, 0.58)
    assert bootstrap_ci(a, seed=7) == bootstrap_ci(a, seed=7)
    assert paired_test(a, b, seed=7) == paired_test(a, b, seed=7)
    assert bootstrap_ci(a, seed=7) != bootstrap_ci(a, seed=8)
    assert paired_test(a, b, seed=7) != paired_test(a, b, seed=8)


def test_cross_check_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    a, b = per_query_scores(8, 12, 0.6), per_query_scores(9, 12, 0.5)
    exact = stats.permutation_test(
        (a - b,), np.mean, permutation_type="samples", n_resamples=np.inf, alternative="two-sided"
    )
    assert len(a) <= EXACT_UP_TO and paired_test(a, b) == pytest.approx(exact.pvalue)
    a, b = per_query_scores(10, 60, 0.6), per_query_scores(11, 60, 0.55)
    sampled = stats.permutation_test((a - b,), np.mean, permutation_type="samples", n_resamples=10_000, rng=1)
    assert paired_test(a, b) == pytest.approx(sampled.pvalue, abs=0.02)
    interval = stats.bootstrap((a,), np.mean, method="percentile", n_resamples=10_000, rng=1).confidence_interval
    assert bootstrap_ci(a) == pytest.approx((interval.low, interval.high), abs=0.008)


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="not a finite number"):
        bootstrap_ci([0.5, float("nan")])
    with pytest.raises(ValueError, match="one value per query each, not 3 and 2"):
        paired_test([0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([0.5], confidence=95)


def as_queries(values: np.ndarray) -> dict[str, float]:
    return {f"q{i}": float(v) for i, v in enumerate(values)}


def test_recommend_takes_the_cheaper_of_two_equal_strategies():
    quality = per_query_scores(12, 40, 0.7)
    noise = np.random.default_rng(13).normal(0, 0.05, 40)
    noise -= noise.mean()  # as good as the slow one on average, less 0.004
    per_query = {"slow": as_queries(quality + 0.004), "fast": as_queries(quality + noise)}
    costs = {"slow": 9.0, "fast": 1.0}
    chosen = recommend(per_query, costs.__getitem__)
    assert (chosen.best, chosen.recommended) == ("slow", "fast")
    assert chosen.p_value > 0.05 and chosen.within_noise == ("slow", "fast")
    assert chosen.p_values["slow"] == 1.0 and chosen.queries == 40


def test_recommend_keeps_the_best_when_the_cheaper_is_significantly_worse():
    quality = per_query_scores(14, 40, 0.6)
    noise = np.random.default_rng(15).normal(0, 0.05, 40)
    per_query = {"fast": as_queries(quality + noise), "slow": as_queries(np.clip(quality + 0.15, 0, 1))}
    chosen = recommend(per_query, {"slow": 9.0, "fast": 1.0}.__getitem__)
    assert (chosen.best, chosen.recommended) == ("slow", "slow")
    assert chosen.significantly_worse("fast") and chosen.p_values["fast"] < 0.001


def test_recommend_among_equal_costs_takes_the_higher_mean_and_follows_a_given_best():
    quality = per_query_scores(16, 30, 0.6)
    noise = np.random.default_rng(17).normal(0, 0.05, 30)
    noise -= noise.mean() + 0.001
    per_query = {"a": as_queries(quality), "b": as_queries(quality + 0.001), "c": as_queries(quality + noise)}
    chosen = recommend(per_query, lambda name: 0)
    assert (chosen.best, chosen.recommended) == ("b", "b")
    # A best named by the caller (picked on its own figures) is the reference, even if not the top mean.
    named = recommend(per_query, lambda name: {"a": 1, "b": 1, "c": 0}[name], best="a")
    assert (named.best, named.recommended) == ("a", "c")
    assert not named.significantly_worse("b")  # above the best: never "worse"


def test_recommend_refuses_strategies_on_other_queries():
    with pytest.raises(ValueError, match="other queries"):
        recommend({"a": {"q1": 1.0}, "b": {"q2": 1.0}}, lambda name: 0)
    with pytest.raises(ValueError, match="not one of the strategies"):
        recommend({"a": {"q1": 1.0}}, lambda name: 0, best="z")
