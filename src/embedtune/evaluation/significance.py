"""Is a difference between retrieval strategies real, or noise of the queries that were drawn?

A collection's figure is a mean over its queries; another draw of queries would give another mean.
Everything here works on per-query values (one metric value per query, as
:func:`~embedtune.evaluation.metrics.evaluate_per_query` gives them), is pure numpy, and is
deterministic for a seed:

- :func:`bootstrap_ci`: the percentile bootstrap interval of the mean (Efron and Tibshirani, "An
  Introduction to the Bootstrap", 1993). The queries are resampled with replacement ``resamples``
  times and the interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of
  the resampled means. With one seed and one number of queries every call draws the same
  resamples, so the intervals of strategies scored on the same queries are paired.
- :func:`paired_test`: the two-sided paired randomisation (sign-flip permutation) test of the
  mean per-query difference (Fisher 1935; Smucker, Allan and Carterette, "A comparison of
  statistical significance tests for information retrieval evaluation", CIKM 2007, recommend it
  for IR). If the two strategies were interchangeable, each query's difference would be as likely
  to have either sign; ``p`` is the share of sign assignments whose ``|sum|`` is at least the
  observed one. Queries with no difference cannot change that sum and are dropped. When at most
  ``EXACT_UP_TO`` queries differ, every one of the ``2^m`` assignments is counted (an exact p);
  otherwise ``resamples`` random assignments are, and ``p = (1 + hits) / (1 + resamples)``, which is
  never 0.
- :func:`recommend`: the cheapest strategy that is not significantly worse than the best.

Each strategy is tested against the best alone, without a correction for the several tests: a
correction would let more strategies pass as "within noise", so leaving it out keeps the
recommendation nearer the best, the cautious side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ALPHA",
    "CONFIDENCE",
    "EXACT_UP_TO",
    "RESAMPLES",
    "Recommendation",
    "bootstrap_ci",
    "paired_test",
    "recommend",
]

CONFIDENCE = 0.95
ALPHA = 0.05  # a strategy is significantly worse than the best when p < ALPHA
RESAMPLES = 10_000
EXACT_UP_TO = 22  # differing queries up to which the paired test counts all 2^m sign assignments
_CELLS = 1 << 20  # numbers drawn per block, so memory stays flat however many queries there are


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """``(low, high)``: the percentile bootstrap interval of the mean of ``values`` (one per query)."""
    data = _values(values, "values")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    _check_resamples(resamples)
    n = len(data)
    rng = np.random.default_rng(seed)
    means = np.concatenate([data[rng.integers(0, n, size=(rows, n))].mean(axis=1) for rows in _blocks(resamples, n)])
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> float:
    """The two-sided p-value of the paired randomisation test: is ``mean(a)`` unlike ``mean(b)``?

    ``a[i]`` and ``b[i]`` are two strategies' values on the same query ``i``. Identical values
    give ``p = 1``; a small ``p`` says the difference is unlikely to come from the query draw.
    """
    first, second = _values(a, "a"), _values(b, "b")
    if len(first) != len(second):
        raise ValueError(f"a and b must hold one value per query each, not {len(first)} and {len(second)}")
    _check_resamples(resamples)
    diffs = first - second
    diffs = diffs[diffs != 0.0]
    m = len(diffs)
    if m == 0:
        return 1.0
    observed = abs(float(diffs.sum()))
    # Sums of the same numbers in another order differ in the last bits; the observed one must count.
    threshold = observed - 1e-9 * max(1.0, observed)
    if m <= EXACT_UP_TO:
        # Every sign assignment's sum is a sum over the first half plus one over the second half.
        left, right = _signed_sums(diffs[: m // 2]), _signed_sums(diffs[m // 2 :])
        step = max(1, _CELLS // len(right))
        hits = sum(
            int(np.count_nonzero(np.abs(left[i : i + step, None] + right[None, :]) >= threshold))
            for i in range(0, len(left), step)
        )
        return hits / (len(left) * len(right))
    rng = np.random.default_rng(seed)
    hits = 0
    for rows in _blocks(resamples, m):
        signs = rng.integers(0, 2, size=(rows, m), dtype=np.int8) * 2 - 1
        hits += int(np.count_nonzero(np.abs(signs @ diffs) >= threshold))
    return (1 + hits) / (1 + resamples)


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    """What :func:`recommend` chose and why.

    ``recommended`` is the cheapest strategy not significantly worse than ``best``; ``p_values``
    holds every strategy's paired-test p-value against ``best`` (1.0 for ``best`` itself);
    ``means`` their mean values, over ``queries`` queries; ``alpha`` the significance level.
    """

    recommended: str
    best: str
    p_values: Mapping[str, float]
    means: Mapping[str, float]
    queries: int
    alpha: float = ALPHA

    @property
    def p_value(self) -> float:
        """The recommended strategy's p-value against the best."""
        return self.p_values[self.recommended]

    def significantly_worse(self, name: str) -> bool:
        """Below the best's mean, and by more than the query draw explains (``p < alpha``)."""
        return self.means[name] < self.means[self.best] and self.p_values[name] < self.alpha

    @property
    def within_noise(self) -> tuple[str, ...]:
        """Every strategy not significantly worse than the best, the best included."""
        return tuple(name for name in self.p_values if not self.significantly_worse(name))


def recommend(
    per_query: Mapping[str, Mapping[str, float]],
    cost_key: Callable[[str], Any],
    *,
    best: str | None = None,
    alpha: float = ALPHA,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Recommendation:
    """The cheapest strategy whose mean is not significantly below the best's.

    ``per_query`` maps each strategy's name to ``{query_id: value}`` (every strategy over the same
    queries, as ``evaluate_per_query`` gives them for one metric). ``cost_key(name)`` returns
    something sortable, smaller meaning cheaper; among equally cheap strategies the higher mean
    wins, then the first given. ``best`` defaults to the strategy with the highest mean (the first
    of equals). Each strategy is compared with ``best`` by :func:`paired_test`; it is
    significantly worse when its mean is lower and ``p < alpha``.
    """
    if not per_query:
        raise ValueError("per_query holds no strategy; give at least one")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    names = list(per_query)
    queries = list(next(iter(per_query.values())))
    if not queries:
        raise ValueError("per_query holds no query; give at least one value per strategy")
    for name, values in per_query.items():
        if values.keys() != set(queries):
            raise ValueError(f"strategy {name!r} is scored on other queries than {names[0]!r}; align them first")
    arrays = {name: np.array([per_query[name][q] for q in queries], dtype=np.float64) for name in names}
    means = {name: float(values.mean()) for name, values in arrays.items()}
    if best is None:
        best = max(names, key=lambda name: means[name])
    elif best not in per_query:
        raise ValueError(f"best {best!r} is not one of the strategies given")
    p_values = {
        name: 1.0 if name == best else paired_test(arrays[name], arrays[best], resamples=resamples, seed=seed)
        for name in names
    }
    chosen = Recommendation(
        recommended=best, best=best, p_values=p_values, means=means, queries=len(queries), alpha=alpha
    )
    order = {name: i for i, name in enumerate(names)}
    cheapest = min(chosen.within_noise, key=lambda name: (cost_key(name), -means[name], order[name]))
    return Recommendation(
        recommended=cheapest, best=best, p_values=p_values, means=means, queries=len(queries), alpha=alpha
    )


def _values(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1 or len(data) == 0:
        raise ValueError(f"{name} must be a flat sequence of per-query values with at least one value")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{name} holds a value that is not a finite number")
    return data


def _signed_sums(values: np.ndarray) -> np.ndarray:
    """The ``2^len(values)`` sums of ``values`` under every assignment of signs."""
    signs = (np.arange(1 << len(values))[:, None] >> np.arange(len(values)) & 1) * 2 - 1
    return signs @ values


def _check_resamples(resamples: int) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples}")


def _blocks(total: int, width: int) -> Iterator[int]:
    """Row counts adding up to ``total``, each block ``rows x width`` about ``_CELLS`` numbers."""
    step = max(1, _CELLS // width)
    for start in range(0, total, step):
        yield min(step, total - start)
