"""Pseudo-relevance feedback: a query rewritten from its own first results, then searched again.

Both methods assume the top ``docs`` documents of a first search are relevant, and move the query
toward them before a second search. Neither needs judgments; their parameters are tuned on a
tuning split (:func:`embedtune.evaluation.tuning.tune_feedback`).

- **Rocchio** (dense; Rocchio, "Relevance feedback in information retrieval", 1971): the query
  vector ``q`` (reduced and normalised as the store's vectors are) becomes
  ``normalise(q + weight * mean(d_1 .. d_docs))``, where ``d_i`` is the stored vector of the best
  chunk of the ``i``-th document found. ``weight`` is Rocchio's beta (alpha fixed at 1).
- **RM3** (lexical; Lavrenko and Croft, "Relevance-based language models", SIGIR 2001; the
  interpolation of Abdul-Jaleel et al., "UMass at TREC 2004"): a relevance model
  ``P(t|R) = sum_D P(t|D) * P(D|q)`` over the top ``docs`` BM25 documents, ``P(t|D)`` the term's
  frequency in ``D`` over ``|D|`` and ``P(D|q)`` the document's BM25 score over the scores of all
  ``docs``. Its ``terms`` most likely terms, renormalised, are mixed with the original query:
  ``P(t|q') = weight * P(t|q) + (1 - weight) * P(t|R)``, and BM25 scores documents by
  ``sum_t P(t|q') * bm25(t, D)``. Terms are the BM25 index's own (its tokenizer, stopwords and
  stemmer), so every expansion term is a term of the index.

``docs = 0`` (and, for Rocchio, ``weight = 0``; for RM3, ``weight = 1``) is no feedback: the
first run comes back exactly.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np

from embedtune.errors import ConfigError
from embedtune.search.runs import Run, ranked

if TYPE_CHECKING:
    from embedtune.search.bm25 import BM25Index

__all__ = ["Feedback", "FeedbackMethod", "relevance_model", "rm3_query", "rm3_run", "rocchio"]


class FeedbackMethod(str, Enum):
    ROCCHIO = "rocchio"  # dense: the query vector moves toward its top documents' vectors
    RM3 = "rm3"  # lexical: expansion terms from the top documents' words


DEFAULT_TERMS = 10


@dataclass(frozen=True, kw_only=True)
class Feedback:
    """The ``[feedback]`` table of a strategy file.

    ``docs`` top documents feed back; ``weight`` is Rocchio's beta (how far the query moves, at
    least 0) or RM3's original-query weight (between 0 and 1); ``terms`` is how many expansion
    terms RM3 adds (Rocchio takes none).
    """

    method: FeedbackMethod
    docs: int = 5
    weight: float = 0.5
    terms: int = DEFAULT_TERMS

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "method", FeedbackMethod(self.method))
        except ValueError:
            choices = " | ".join(m.value for m in FeedbackMethod)
            raise ConfigError(f"feedback.method must be {choices}, not {self.method!r}") from None
        for name, value in (("docs", self.docs), ("terms", self.terms)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"feedback.{name} must be a whole number of at least 0, not {value!r}")
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ConfigError(f"feedback.weight must be a number, not {weight!r}")
        if self.method is FeedbackMethod.RM3 and not 0.0 <= weight <= 1.0:
            raise ConfigError(f"feedback.weight is rm3's original-query weight, between 0 and 1, not {weight!r}")
        if self.method is FeedbackMethod.ROCCHIO:
            if weight < 0:
                raise ConfigError(f"feedback.weight is rocchio's beta, at least 0, not {weight!r}")
            if self.terms != DEFAULT_TERMS:
                raise ConfigError("feedback.terms applies to rm3 only; rocchio moves the query vector")
        object.__setattr__(self, "weight", float(weight))

    @property
    def active(self) -> bool:
        """False when the parameters make it a no-op: the first run is the answer."""
        if self.docs == 0:
            return False
        if self.method is FeedbackMethod.ROCCHIO:
            return self.weight > 0
        return self.weight < 1 and self.terms > 0

    @property
    def label(self) -> str:
        """``rocchio(docs=5,weight=0.5)`` for tables."""
        terms = f",terms={self.terms}" if self.method is FeedbackMethod.RM3 else ""
        return f"{self.method.value}(docs={self.docs},weight={self.weight:g}{terms})"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"method": self.method.value, "docs": self.docs, "weight": self.weight}
        if self.method is FeedbackMethod.RM3:
            data["terms"] = self.terms
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Feedback:
        known = {"method", "docs", "weight", "terms"}
        extra = sorted(set(data) - known)
        if extra:
            raise ConfigError(f"unknown key feedback.{extra[0]}; known keys: {', '.join(sorted(known))}")
        if "method" not in data:
            raise ConfigError('[feedback] needs a method = "rocchio" or "rm3" line')
        return cls(**data)


def rocchio(query: np.ndarray, feedback: np.ndarray, weight: float) -> np.ndarray:
    """``normalise(query + weight * mean(feedback rows))``; the query itself when there are no rows.

    ``query`` is one normalised vector (dims,), ``feedback`` the feedback documents' vectors
    (n, dims) in the same space.
    """
    if len(feedback) == 0 or weight == 0:
        return query
    moved = query.astype(np.float32) + np.float32(weight) * feedback.astype(np.float32).mean(axis=0)
    norm = float(np.linalg.norm(moved))
    return query if norm == 0 else (moved / norm).astype(np.float32)


def relevance_model(doc_terms: Sequence[Sequence[str]], doc_scores: Sequence[float], terms: int) -> dict[str, float]:
    """The ``terms`` likeliest terms of the relevance model of the feedback documents, summing to 1.

    ``doc_terms`` are each document's tokens (as the index tokenizes them), ``doc_scores`` their
    first-run scores. Ties go to the term that sorts first, so the model is deterministic.
    """
    total = math.fsum(max(s, 0.0) for s in doc_scores)
    model: dict[str, float] = {}
    for tokens, score in zip(doc_terms, doc_scores):
        if not tokens:
            continue
        p_doc = max(score, 0.0) / total if total > 0 else 1.0 / len(doc_scores)
        for term, count in Counter(tokens).items():
            model[term] = model.get(term, 0.0) + p_doc * count / len(tokens)
    top = sorted(model.items(), key=lambda item: (-item[1], item[0]))[:terms]
    mass = math.fsum(p for _, p in top)
    return {term: p / mass for term, p in top} if mass > 0 else {}


def rm3_query(query_terms: Sequence[str], expansion: Mapping[str, float], weight: float) -> dict[str, float]:
    """The weighted query ``weight * P(t|q) + (1 - weight) * P(t|R)``, scaled by the query's length.

    Scaling keeps the original part scored as plain BM25 scores it (one unit per query token), so
    scores stay on BM25's scale for fusion.
    """
    if not query_terms:
        return {}
    n = len(query_terms)
    weighted: dict[str, float] = {}
    for term, count in Counter(query_terms).items():
        weighted[term] = weight * count
    for term, p in expansion.items():
        weighted[term] = weighted.get(term, 0.0) + (1.0 - weight) * p * n
    return weighted


def rm3_run(
    index: BM25Index,
    queries: Mapping[str, str],
    depth: int,
    feedback: Feedback,
    texts_of: Callable[[Sequence[str]], Mapping[str, str]],
    *,
    only: Collection[str] | None = None,
) -> Run:
    """Each query's ``depth`` best documents by BM25 with RM3 expansion (see the module docstring).

    ``texts_of(doc_ids)`` gives the feedback documents' texts as the index was built from them;
    it is asked only for documents the index has not tokenized before
    (:meth:`~embedtune.search.bm25.BM25Index.document_terms`).
    """
    if not feedback.active:
        return index.search(queries, depth, only=only)
    first = index.search(queries, feedback.docs, only=only)
    top = {qid: [(doc, run[doc]) for doc in ranked(run, feedback.docs)] for qid, run in first.items()}
    wanted = sorted({doc for hits in top.values() for doc, _ in hits})
    doc_tokens = index.document_terms(wanted, texts_of)
    query_ids = list(queries)
    weighted = {}
    for qid, tokens in zip(query_ids, index.tokenize([queries[q] for q in query_ids])):
        hits = top.get(qid, [])
        expansion = relevance_model([doc_tokens[doc] for doc, _ in hits], [s for _, s in hits], feedback.terms)
        weighted[qid] = rm3_query(tokens, expansion, feedback.weight)
    return index.search_weighted(weighted, depth, only=only)
