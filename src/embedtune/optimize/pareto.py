"""The budget, the Pareto front of finished trials, and the choice of one strategy.

Pure functions over plain records: nothing here embeds, searches or talks to optuna.

- :class:`Budget` is what a user allows: ``index_mb``, ``vectors_mb``, ``query_ms`` and ``usd``
  ceilings, read from ``"index_mb<=200,query_ms<=50,usd<=1"``. ``index_mb`` is the whole store a
  strategy needs (its vectors and the BM25 index beside them); ``vectors_mb`` the vector index
  alone, as "a quarter of the float32 index" reads it (a hybrid's BM25 index is not counted). Each ceiling becomes one constraint value, the
  relative excess ``(figure - limit) / limit``: zero or less is within it (optuna's convention).
- :func:`pareto_front` keeps the trials no other trial beats on every axis at once: higher quality,
  smaller index, faster query, fewer dollars.
- :func:`choose` picks the strategy to hand over: for now the best quality among those within the
  budget. It is the seam where a significance-aware recommendation (the cheapest strategy not
  significantly worse than the best) replaces the plain maximum.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Protocol, TypeVar

from embedtune.errors import ConfigError

__all__ = ["BUDGET_KEYS", "Budget", "Costed", "NoStrategyFitsError", "choose", "pareto_front"]

BUDGET_KEYS: dict[str, str] = {
    "index_mb": "megabytes of index (vectors at their precision, plus the BM25 index)",
    "vectors_mb": "megabytes of vector index alone (vectors at their precision, what was fitted for them)",
    "query_ms": "milliseconds per query (median, one query at a time, embedding included)",
    "usd": "dollars to embed the corpus (paid APIs; local models cost 0)",
}
T = TypeVar("T", bound="Costed")
_ITEM = re.compile(r"^\s*([A-Za-z_]\w*)\s*<=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")


class Costed(Protocol):
    """What the front and the choice read from a trial (``None``: not measured, counted as 0)."""

    @property
    def quality(self) -> float | None: ...

    @property
    def index_mb(self) -> float | None: ...

    @property
    def vectors_mb(self) -> float | None: ...

    @property
    def query_ms(self) -> float | None: ...

    @property
    def usd(self) -> float | None: ...


def _figure(record: Costed, key: str) -> float:
    value = getattr(record, key)
    return 0.0 if value is None else float(value)


class NoStrategyFitsError(ConfigError):
    """No finished trial meets the budget; the message names the closest one and its figures."""


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Ceilings on a strategy's costs; ``None`` leaves that cost free."""

    index_mb: float | None = None
    vectors_mb: float | None = None
    query_ms: float | None = None
    usd: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
                raise ConfigError(f"budget {f.name} must be a number of at least 0, not {value!r}")

    @classmethod
    def parse(cls, text: str | None) -> Budget:
        """``"index_mb<=200,query_ms<=50"`` -> ``Budget(index_mb=200, query_ms=50)``; empty: no limits."""
        limits: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in (text or "").split(","))):
            match = _ITEM.match(item)
            name = re.match(r"\s*([A-Za-z_]\w*)", item)
            key = match.group(1) if match else (name.group(1) if name else item)
            if key not in BUDGET_KEYS:
                raise ConfigError(
                    f"unknown budget key {key!r}; use {', '.join(BUDGET_KEYS)} as in index_mb<=200,query_ms<=50,usd<=1"
                )
            if match is None:
                raise ConfigError(f"budget item {item!r} must read KEY<=NUMBER, as in {key}<=50")
            if key in limits:
                raise ConfigError(f"budget key {key} is given twice; give each limit once")
            limits[key] = float(match.group(2))
        return cls(**limits)

    @property
    def limits(self) -> dict[str, float]:
        """The ceilings that are set, by key."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def excess(self, figures: Costed) -> dict[str, float]:
        """Each set ceiling's relative excess: ``(figure - limit) / limit``; zero or less is within it."""
        out = {}
        for key, limit in self.limits.items():
            value = _figure(figures, key)
            out[key] = (value - limit) / limit if limit > 0 else value
        return out

    def allows(self, figures: Costed) -> bool:
        return all(value <= 0 for value in self.excess(figures).values())

    def __str__(self) -> str:
        return ",".join(f"{key}<={limit:g}" for key, limit in self.limits.items()) or "none"


def _dominates(a: Costed, b: Costed) -> bool:
    """``a`` is at least as good as ``b`` on every axis and better on one."""
    pairs = [(_figure(a, "quality"), _figure(b, "quality"))]
    pairs += [(-_figure(a, key), -_figure(b, key)) for key in BUDGET_KEYS]
    return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)


def pareto_front(records: Sequence[T]) -> list[T]:
    """The records no other record dominates, best quality first."""
    front = [r for r in records if not any(_dominates(other, r) for other in records if other is not r)]
    return sorted(front, key=lambda r: (-_figure(r, "quality"), *(_figure(r, key) for key in BUDGET_KEYS)))


def choose(records: Sequence[T], budget: Budget, *, describe: Mapping[int, str] | None = None) -> T:
    """The strategy to hand over: the best quality within ``budget``; of equals, the cheapest.

    The recommendation (the cheapest strategy not significantly worse than this one) is decided
    after it, in ``workflow._recommend``, from per-query scores. Raises
    :class:`NoStrategyFitsError` naming the closest strategy (the smallest total excess) and its
    figures when none fits; ``describe`` maps ``id(record)`` to its name for that line.
    """
    if not records:
        raise ConfigError("no trial finished, so there is nothing to choose; give the search more --time or --trials")
    within = [r for r in records if budget.allows(r)]
    if within:
        # Equal quality: the smaller index, then the faster query, then the cheaper corpus.
        return max(within, key=lambda r: (_figure(r, "quality"), *(-_figure(r, key) for key in BUDGET_KEYS)))
    closest = min(records, key=lambda r: (sum(max(0.0, v) for v in budget.excess(r).values()), -_figure(r, "quality")))
    name = (describe or {}).get(id(closest), "the closest strategy")
    figures = ", ".join(f"{key} {_figure(closest, key):.4g}" for key in budget.limits)
    # A trial stopped over budget on the smallest sample has estimated costs and no full score.
    quality = "" if closest.quality is None else f" (nDCG@10 {closest.quality:.4f})"
    raise NoStrategyFitsError(
        f"no strategy meets the budget {budget} (of {len(records)} trials); the closest is {name} with "
        f"{figures}{quality}; loosen the budget or widen the search"
    )
