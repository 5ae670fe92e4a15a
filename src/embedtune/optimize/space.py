"""The strategy space the search samples: models x chunkers x retrieval x vector precision and size.

:meth:`SearchSpace.suggest` turns one optuna trial into a :class:`~embedtune.strategy.Strategy`,
asking only the questions that apply (BM25 asks no model; only convex fusion asks a weight):

- ``retrieval``: ``dense``, ``bm25``, ``rrf`` (hybrid, reciprocal rank fusion) or ``convex``
  (hybrid, weight ``alpha`` on the dense run). optuna picks the discrete, costly choices; the
  convex weight, continuous and free (a new sum of cached runs), is fitted inside the trial on the
  same tuning queries, on a grid of ``alpha_step`` (see :meth:`TrialScorer.fit_alpha`). Asked of
  the sampler, it was sampled again and again near one value while the other choices went unexplored;
- ``model`` and ``chunker`` for every mode that embeds, and the stored ``vectors`` in
  :func:`~embedtune.strategy.vector_options`' short form (``float32``, ``float16``, ``int8``,
  ``binary``, ``pca=128+int8``...), asked per model so a size over a model's own is never offered;
- ``dims`` for a model whose catalogue row says it was trained to be cut (Matryoshka): its full
  size, a half and a quarter.

Every choice but ``model``, ``chunker`` and ``dims`` reuses vectors: a stored size or precision is
made from the cached float32 vectors, a fusion weight is a new sum of the same runs. Adaptation
and engines are not in the space yet; the seam is :meth:`SearchSpace.suggest`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from embedtune.catalogue import CATALOGUE, find_card
from embedtune.engine import OverLimit
from embedtune.errors import ConfigError
from embedtune.factory import EmbedderSpec
from embedtune.strategy import WHOLE_DOCUMENTS, Fusion, Mode, Strategy, vector_options

if TYPE_CHECKING:
    import optuna

__all__ = ["DEFAULT_CHUNKERS", "DEFAULT_VECTORS", "RETRIEVALS", "SearchSpace", "offline_models"]

RETRIEVALS: tuple[str, ...] = ("dense", "bm25", "rrf", "convex")
# Full vectors, half and a quarter of their bytes, then PCA to 256 and 128 dims in int8 and binary.
# int8 at full size is a quarter of float32 plus its calibration, a little over a strict quarter:
# PCA to 256 dims in int8 is the setting that fits one (for a 384-dim model, projection counted).
DEFAULT_VECTORS: tuple[str, ...] = ("float32", "float16", "int8", "pca=256+int8", "pca=128+int8", "binary")
# Whole documents, the recursive splitter at the model's limit, fixed windows with overlap, semantic.
DEFAULT_CHUNKERS: tuple[str, ...] = (WHOLE_DOCUMENTS, "recursive", "fixed:size=128,overlap=32", "semantic")


def offline_models() -> list[EmbedderSpec]:
    """Every catalogue model this machine runs without a network (the fake hashing model left out)."""
    return [
        EmbedderSpec(model=c.uri) for c in CATALOGUE if c.provider not in ("fake", "sparse") and c.available_offline()
    ]


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """What the search may choose from. ``models`` may be empty only when ``retrievals`` is BM25 alone."""

    models: tuple[EmbedderSpec, ...]
    chunkers: tuple[str, ...] = DEFAULT_CHUNKERS
    retrievals: tuple[str, ...] = RETRIEVALS
    vectors: tuple[str, ...] = DEFAULT_VECTORS
    alpha_step: float = 0.05
    depth: int = 100
    _by_model: dict[str, EmbedderSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("models", "chunkers", "retrievals", "vectors"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ConfigError(f"{name} must be a list, not one string")
            object.__setattr__(self, name, tuple(dict.fromkeys(value)))
        unknown = [r for r in self.retrievals if r not in RETRIEVALS]
        if unknown or not self.retrievals:
            raise ConfigError(
                f"unknown retrieval {unknown[0] if unknown else ''!r}; choose from {', '.join(RETRIEVALS)}"
            )
        for vectors in self.vectors:
            vector_options(vectors)  # one line for an unknown setting
        if not self.vectors or not self.chunkers:
            raise ConfigError("give at least one vector setting and one chunker (none stands for whole documents)")
        embeds = any(r != "bm25" for r in self.retrievals)
        if embeds and not self.models:
            raise ConfigError("dense and hybrid retrieval need a model; give --models, or search --retrieval bm25")
        for spec in self.models:
            find_card(spec.model)  # an unknown model fails before any work
        for chunker in self.chunkers:
            Strategy(embedder=EmbedderSpec(model="fake:hash-256"), chunker=chunker)  # one line for a bad spec
        if not 0 < self.alpha_step <= 1:
            raise ConfigError(f"alpha_step must be in (0, 1], not {self.alpha_step}")
        object.__setattr__(self, "_by_model", {spec.model: spec for spec in self.models})
        if len(self._by_model) != len(self.models):
            raise ConfigError("a model is listed twice; list each model once")

    def suggest(self, trial: optuna.trial.Trial) -> Strategy:
        """The strategy this trial tries; optuna records each answer as a parameter."""
        retrieval = trial.suggest_categorical("retrieval", list(self.retrievals))
        if retrieval == "bm25":
            return Strategy(mode=Mode.BM25, depth=self.depth)
        spec = self._by_model[str(trial.suggest_categorical("model", list(self._by_model)))]
        spec = replace(spec, over_limit=OverLimit.TRUNCATE)  # as compare scores it: long texts cut, and counted
        card = find_card(spec.model)
        if card is not None and card.matryoshka and spec.dims is None:
            sizes = [card.dim, card.dim // 2, card.dim // 4]
            dims = int(trial.suggest_categorical(f"dims:{spec.model}", sizes))
            spec = replace(spec, dims=None if dims == card.dim else dims)
        chunker = str(trial.suggest_categorical("chunker", list(self.chunkers)))
        vectors = vector_options(str(trial.suggest_categorical(f"vectors:{spec.model}", self._vectors_for(spec))))
        if retrieval == "dense":
            return Strategy(embedder=spec, chunker=chunker, **vectors, depth=self.depth)
        alpha = 0.5 if retrieval == "convex" else None  # fitted in the trial on the tuning queries
        return Strategy(
            embedder=spec,
            chunker=chunker,
            **vectors,
            mode=Mode.HYBRID,
            fusion=Fusion(retrieval),
            alpha=alpha,
            depth=self.depth,
        )

    def _vectors_for(self, spec: EmbedderSpec) -> list[str]:
        """The vector settings that fit ``spec``: none whose size reaches the model's own (when known)."""
        card = find_card(spec.model)
        size = spec.dims or (None if card is None else card.dim)
        fitting = [v for v in self.vectors if size is None or vector_options(v).get("dims", 0) < size]
        return fitting or ["float32"]

    def describe(self) -> dict[str, Any]:
        """The space as plain data: part of what names the study, so another space starts another study."""
        return {
            "models": [json.loads(json.dumps(vars(spec), default=str)) for spec in self.models],
            "chunkers": list(self.chunkers),
            "retrievals": list(self.retrievals),
            "vectors": list(self.vectors),
            "alpha_step": self.alpha_step,
            "depth": self.depth,
        }

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()[:12]


def parse_list(text: str | Sequence[str] | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; a list passes through stripped."""
    items = text.split(",") if isinstance(text, str) else (text or [])
    return [item.strip() for item in items if item and item.strip()]
