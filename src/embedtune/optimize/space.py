"""The strategy space the search samples: models x chunkers x retrieval x vector precision and size.

:meth:`SearchSpace.suggest` turns one optuna trial into a :class:`~embedtune.strategy.Strategy`
(or an :class:`~embedtune.ensemble.Ensemble`), asking only the questions that apply (BM25 asks no
model; only convex fusion asks a weight):

- ``retrieval``: ``dense``, ``bm25``, ``rrf`` (hybrid, reciprocal rank fusion) or ``convex``
  (hybrid, weight ``alpha`` on the dense run); with a learned sparse model among ``sparse``,
  ``sparse`` (its run alone) and ``ensemble`` (convex fusion of ``members``: BM25, the dense run
  and the sparse run, or two of them with the sparse run, through
  :class:`~embedtune.ensemble.EnsembleRetriever`). optuna picks the discrete, costly choices; the
  convex weights, continuous and free (a new sum of cached runs), are fitted inside the trial on the
  same tuning queries, on a grid of ``alpha_step`` (see :meth:`TrialScorer.fit`). Asked of
  the sampler, a weight was sampled again and again near one value while the other choices went unexplored;
- ``feedback:<retrieval>``, with ``feedback`` methods given: ``none`` or a method that applies
  (``rocchio`` moves a dense query vector, ``rm3`` expands a BM25 query). Its parameters
  (documents, weight, terms) are fitted inside the trial like the convex weight: the point of
  :data:`~embedtune.evaluation.tuning.FEEDBACK_GRIDS` that scores best on the tuning queries;
- ``rerank``, with a ``reranker`` folder given: ``none`` or the first N (of ``rerank_tops``) of the
  answer reordered by that cross-encoder (its time counted in the query latency);
- ``model`` and ``chunker`` for every mode that embeds, and the stored ``vectors`` in
  :func:`~embedtune.strategy.vector_options`' short form (``float32``, ``float16``, ``int8``,
  ``binary``, ``pca=128+int8``...), asked per model so a size over a model's own is never offered;
- ``dims`` for a model whose catalogue row says it was trained to be cut (Matryoshka): its full
  size, a half and a quarter.

Every choice but ``model``, ``chunker`` and ``dims`` reuses vectors: a stored size or precision is
made from the cached float32 vectors, a fusion weight is a new sum of the same runs. Adaptation
and engines are not in the space yet; the seam is :meth:`SearchSpace.suggest`.

The default space is the first four retrievals, no feedback and no rerank: ``sparse``,
``ensemble``, feedback and rerank are asked for (``--retrieval``, ``--feedback``, ``--reranker``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from embedtune.catalogue import CATALOGUE, find_card
from embedtune.engine import OverLimit
from embedtune.ensemble import Ensemble
from embedtune.errors import ConfigError
from embedtune.factory import EmbedderSpec
from embedtune.search.feedback import Feedback, FeedbackMethod
from embedtune.search.rerank import RerankSpec
from embedtune.sparse.spec import SparseSpec
from embedtune.strategy import WHOLE_DOCUMENTS, Fusion, Mode, Strategy, vector_options

if TYPE_CHECKING:
    import optuna

__all__ = [
    "DEFAULT_CHUNKERS",
    "DEFAULT_RETRIEVALS",
    "DEFAULT_VECTORS",
    "ENSEMBLE_MEMBERS",
    "RERANK_TOPS",
    "RETRIEVALS",
    "SearchSpace",
    "offline_models",
]

DEFAULT_RETRIEVALS: tuple[str, ...] = ("dense", "bm25", "rrf", "convex")
RETRIEVALS: tuple[str, ...] = (*DEFAULT_RETRIEVALS, "sparse", "ensemble")
# What an ensemble fuses: always the sparse run (dense + BM25 alone is the convex hybrid).
ENSEMBLE_MEMBERS: tuple[str, ...] = ("bm25+dense+sparse", "dense+sparse", "bm25+sparse")
RERANK_TOPS: tuple[int, ...] = (20, 50)
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
    retrievals: tuple[str, ...] = DEFAULT_RETRIEVALS
    vectors: tuple[str, ...] = DEFAULT_VECTORS
    alpha_step: float = 0.05
    depth: int = 100
    sparse: tuple[str, ...] = ()
    feedback: tuple[str, ...] = ()
    reranker: str | None = None
    rerank_tops: tuple[int, ...] = RERANK_TOPS
    _by_model: dict[str, EmbedderSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("models", "chunkers", "retrievals", "vectors", "sparse", "feedback", "rerank_tops"):
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
        embeds = any(r in ("dense", "rrf", "convex") for r in self.retrievals)
        if embeds and not self.models:
            raise ConfigError("dense and hybrid retrieval need a model; give --models, or search --retrieval bm25")
        self._check_levers()
        for spec in self.models:
            find_card(spec.model)  # an unknown model fails before any work
        for chunker in self.chunkers:
            Strategy(embedder=EmbedderSpec(model="fake:hash-256"), chunker=chunker)  # one line for a bad spec
        if not 0 < self.alpha_step <= 1:
            raise ConfigError(f"alpha_step must be in (0, 1], not {self.alpha_step}")
        object.__setattr__(self, "_by_model", {spec.model: spec for spec in self.models})
        if len(self._by_model) != len(self.models):
            raise ConfigError("a model is listed twice; list each model once")

    def _check_levers(self) -> None:
        """The sparse models, feedback methods and reranker: one line for each bad one."""
        for uri in self.sparse:
            SparseSpec(model=uri)  # one line for an unknown one
        if any(r in ("sparse", "ensemble") for r in self.retrievals):
            if not self.sparse:
                raise ConfigError(
                    "sparse and ensemble retrieval need a learned sparse model; add sparse:splade-tiny to --models"
                )
            from embedtune.sparse.encoder import sparse_folder

            for uri in self.sparse:
                sparse_folder(uri)  # its weights must be here: one line saying what to install
        if "ensemble" in self.retrievals and not self.models:
            raise ConfigError("ensemble retrieval fuses a dense model's run too; give a model in --models")
        for method in self.feedback:
            if method not in [m.value for m in FeedbackMethod]:
                raise ConfigError(f"unknown feedback method {method!r}; use rocchio or rm3")
        if self.reranker is not None:
            from embedtune.search.rerank import check_cross_encoder

            check_cross_encoder(self.reranker)
        for top in self.rerank_tops:
            if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= self.depth:
                raise ConfigError(f"a rerank depth must be a whole number from 1 to {self.depth}, not {top!r}")
        if self.reranker is not None and not self.rerank_tops:
            raise ConfigError("give at least one rerank depth (how many of the answer's first documents)")

    def suggest(self, trial: optuna.trial.Trial) -> Strategy | Ensemble:
        """The strategy this trial tries; optuna records each answer as a parameter."""
        chosen = self._retrieval(trial)
        if self.reranker is None:
            return chosen
        top = str(trial.suggest_categorical("rerank", ["none", *(str(t) for t in self.rerank_tops)]))
        if top == "none":
            return chosen
        return replace(chosen, rerank=RerankSpec(model=self.reranker, top=int(top)))

    def _retrieval(self, trial: optuna.trial.Trial) -> Strategy | Ensemble:
        retrieval = trial.suggest_categorical("retrieval", list(self.retrievals))
        if retrieval == "bm25":
            return Strategy(mode=Mode.BM25, depth=self.depth, feedback=self._feedback(trial, "bm25", ("rm3",)))
        if retrieval == "sparse":
            return self._sparse(trial)
        if retrieval == "ensemble":
            return self._ensemble(trial)
        dense = self._dense(trial)
        if retrieval == "dense":
            return replace(dense, feedback=self._feedback(trial, "dense", ("rocchio",)))
        alpha = 0.5 if retrieval == "convex" else None  # fitted in the trial on the tuning queries
        feedback = self._feedback(trial, "hybrid", ("rocchio", "rm3"))
        return replace(dense, mode=Mode.HYBRID, fusion=Fusion(retrieval), alpha=alpha, feedback=feedback)

    def _feedback(self, trial: optuna.trial.Trial, retrieval: str, applies: tuple[str, ...]) -> Feedback | None:
        """``none`` or a feedback method that applies; its parameters are fitted in the trial.

        A question per retrieval: optuna keeps one set of choices per question for the whole study.
        """
        methods = [m for m in self.feedback if m in applies]
        if not methods:
            return None
        method = str(trial.suggest_categorical(f"feedback:{retrieval}", ["none", *methods]))
        return None if method == "none" else Feedback(method=FeedbackMethod(method))

    def _sparse(self, trial: optuna.trial.Trial) -> Strategy:
        model = self.sparse[0] if len(self.sparse) == 1 else str(trial.suggest_categorical("sparse", list(self.sparse)))
        return Strategy(mode=Mode.SPARSE, sparse=SparseSpec(model=model), depth=self.depth)

    def _ensemble(self, trial: optuna.trial.Trial) -> Ensemble:
        """Convex fusion of the sparse run with BM25's, the dense run's or both; the weights are
        fitted in the trial (equal until then)."""
        parts = str(trial.suggest_categorical("members", list(ENSEMBLE_MEMBERS))).split("+")
        members = []
        for part in parts:
            if part == "bm25":
                members.append(Strategy(mode=Mode.BM25, depth=self.depth))
            elif part == "dense":
                members.append(self._dense(trial))
            else:
                members.append(self._sparse(trial))
        weights = tuple(1.0 / len(members) for _ in members)
        return Ensemble(members=tuple(members), method=Fusion.CONVEX, weights=weights, depth=self.depth)

    def _dense(self, trial: optuna.trial.Trial) -> Strategy:
        """A dense strategy: the model, its Matryoshka size, the chunker and the stored vectors."""
        spec = self._by_model[str(trial.suggest_categorical("model", list(self._by_model)))]
        spec = replace(spec, over_limit=OverLimit.TRUNCATE)  # as compare scores it: long texts cut, and counted
        card = find_card(spec.model)
        if card is not None and card.matryoshka and spec.dims is None:
            sizes = [card.dim, card.dim // 2, card.dim // 4]
            dims = int(trial.suggest_categorical(f"dims:{spec.model}", sizes))
            spec = replace(spec, dims=None if dims == card.dim else dims)
        chunker = str(trial.suggest_categorical("chunker", list(self.chunkers)))
        vectors = vector_options(str(trial.suggest_categorical(f"vectors:{spec.model}", self._vectors_for(spec))))
        return Strategy(embedder=spec, chunker=chunker, **vectors, depth=self.depth)

    def _vectors_for(self, spec: EmbedderSpec) -> list[str]:
        """The vector settings that fit ``spec``: none whose size reaches the model's own (when known)."""
        card = find_card(spec.model)
        size = spec.dims or (None if card is None else card.dim)
        fitting = [v for v in self.vectors if size is None or vector_options(v).get("dims", 0) < size]
        return fitting or ["float32"]

    def describe(self) -> dict[str, Any]:
        """The space as plain data: part of what names the study, so another space starts another study."""
        described: dict[str, Any] = {
            "models": [json.loads(json.dumps(vars(spec), default=str)) for spec in self.models],
            "chunkers": list(self.chunkers),
            "retrievals": list(self.retrievals),
            "vectors": list(self.vectors),
            "alpha_step": self.alpha_step,
            "depth": self.depth,
        }
        # Only when asked for: a space without them names the same study as before they existed.
        levers: dict[str, Any] = {"sparse": list(self.sparse), "feedback": list(self.feedback)}
        if self.reranker is not None:
            levers |= {"reranker": self.reranker, "rerank_tops": list(self.rerank_tops)}
        return described | {key: value for key, value in levers.items() if value}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()[:12]


def parse_list(text: str | Sequence[str] | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; a list passes through stripped."""
    items = text.split(",") if isinstance(text, str) else (text or [])
    return [item.strip() for item in items if item and item.strip()]
