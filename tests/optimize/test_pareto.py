"""The budget, the Pareto front and the choice: pure functions over plain records."""

from dataclasses import dataclass

import pytest

from embedtune.errors import ConfigError
from embedtune.optimize import Budget, NoStrategyFitsError, choose, pareto_front


@dataclass(frozen=True)
class Point:
    name: str
    quality: float
    index_mb: float
    query_ms: float
    usd: float = 0.0
    vectors_mb: float = 0.0


def test_a_budget_reads_its_ceilings_and_measures_relative_excess():
    budget = Budget.parse(" index_mb<=200, query_ms<=50 ,usd<=1e-2")
    assert budget.limits == {"index_mb": 200.0, "query_ms": 50.0, "usd": 0.01}
    excess = budget.excess(Point("p", 0.5, index_mb=300, query_ms=25, usd=0.01))
    assert excess == pytest.approx({"index_mb": 0.5, "query_ms": -0.5, "usd": 0.0})
    assert not budget.allows(Point("p", 0.5, 300, 25))
    assert budget.allows(Point("p", 0.5, 200, 50, 0.01))  # a ceiling is inclusive
    assert Budget.parse(None).limits == {} and Budget.parse("").allows(Point("p", 0, 1e9, 1e9, 1e9))
    assert str(budget) == "index_mb<=200,query_ms<=50,usd<=0.01"


def test_vectors_mb_bounds_the_vector_index_alone_and_index_mb_the_whole_store():
    # A hybrid over a quarter-size vector index: its BM25 index counts in index_mb, not in vectors_mb.
    hybrid = Point("hybrid", 0.72, index_mb=1.9 + 5.4, query_ms=10, vectors_mb=1.9)
    dense = Point("dense", 0.64, index_mb=7.6, query_ms=10, vectors_mb=7.6)
    budget = Budget.parse("vectors_mb<=1.9")
    assert budget.limits == {"vectors_mb": 1.9} and str(budget) == "vectors_mb<=1.9"
    assert budget.allows(hybrid) and not budget.allows(dense)
    assert choose([dense, hybrid], budget) is hybrid
    with pytest.raises(NoStrategyFitsError, match="closest is .* with index_mb 7.3"):
        choose([dense, hybrid], Budget(index_mb=1.9))
    # Smaller vectors at equal quality and whole size is a point of its own on the front.
    leaner = Point("leaner", 0.72, index_mb=7.3, query_ms=10, vectors_mb=1.0)
    assert [p.name for p in pareto_front([hybrid, leaner])] == ["leaner"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("latency_ms<=5", "unknown budget key 'latency_ms'; use index_mb, vectors_mb, query_ms, usd"),
        ("index_mb>=5", "budget item 'index_mb>=5' must read KEY<=NUMBER, as in index_mb<=50"),
        ("<=5", "unknown budget key '<=5'"),
        ("index_mb<=lots", "must read KEY<=NUMBER"),
        ("usd<=1,usd<=2", "given twice"),
    ],
)
def test_a_bad_budget_is_one_line_saying_what_to_write(text, says):
    with pytest.raises(ConfigError, match=".*") as caught:
        Budget.parse(text)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_the_front_keeps_exactly_the_undominated_points_best_first():
    big_best = Point("big", 0.70, index_mb=100, query_ms=30)
    small_good = Point("small", 0.65, index_mb=10, query_ms=10)
    dominated = Point("worse", 0.60, index_mb=50, query_ms=20)  # small_good beats it everywhere
    fast = Point("fast", 0.50, index_mb=10, query_ms=1)
    tie = Point("tie", 0.65, index_mb=10, query_ms=10)  # equal to small_good: neither dominates
    front = pareto_front([dominated, fast, big_best, small_good, tie])
    assert [p.name for p in front] == ["big", "small", "tie", "fast"]


def test_choose_takes_the_best_within_the_budget_and_names_the_closest_when_none_fits():
    big_best = Point("big", 0.70, index_mb=100, query_ms=30)
    small_good = Point("small", 0.65, index_mb=10, query_ms=10)
    assert choose([small_good, big_best], Budget()) is big_best
    assert choose([small_good, big_best], Budget(index_mb=50)) is small_good
    same_but_smaller = Point("same", 0.70, index_mb=60, query_ms=30)
    assert choose([big_best, same_but_smaller], Budget()) is same_but_smaller  # of equals, the cheapest
    with pytest.raises(NoStrategyFitsError) as caught:
        choose([small_good, big_best], Budget(index_mb=5), describe={id(small_good): "trial 1 (small)"})
    message = str(caught.value)
    assert "no strategy meets the budget index_mb<=5" in message
    assert "closest is trial 1 (small) with index_mb 10 (nDCG@10 0.6500)" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match="no trial finished"):
        choose([], Budget())
