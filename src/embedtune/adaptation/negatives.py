"""Hard negatives: documents that rank high for a query but are not its answer.

For each pair, the corpus is ranked for its query by BM25 or by the base model (through the
Embedder given, so a caching stack embeds the corpus once), with the pair's positive standing in
for its source document (see ``_ranking``). Candidates are taken from the top down, after
``skip_top`` places, leaving out:

- the positive, and every document that another pair with the same query text names as its
  positive (a query judged relevant to several documents keeps all of them out);
- likely false negatives: a candidate that scores above ``positive_score - margin * |positive_score|``.
  This is the "margin relative to the positive" rule (NV-Retriever's TopK-PercPos, Moreira et al.,
  2024, which found 95 % of the positive's score, i.e. ``margin=0.05``, best; sentence-transformers'
  ``mine_hard_negatives(relative_margin=...)`` applies the same rule). Being relative, it suits
  BM25's unbounded scores as well as cosine similarities. When the positive does not rank within
  the candidates at all, every candidate outscores it and the pair gets no negatives.

Ties are broken as trec_eval does (by document id), so the result is deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from ..embedder import Embedder
from ..errors import ConfigError
from ..evaluation.collections import Document
from ._ranking import rank_with_positives
from .pairs import Pair

__all__ = ["mine_hard_negatives"]


def mine_hard_negatives(
    pairs: Sequence[Pair],
    corpus: Mapping[str, Document],
    *,
    by: str | Embedder = "bm25",
    count: int = 3,
    margin: float = 0.05,
    skip_top: int = 0,
    depth: int = 50,
) -> list[Pair]:
    """The pairs with up to ``count`` negatives each (document texts, ``title + " " + text``).

    ``by`` is ``"bm25"`` or an Embedder; ``depth`` is how far down the ranking candidates are
    sought. Negatives a pair already has are replaced.
    """
    if count < 1:
        raise ConfigError(f"count must be at least 1, not {count}")
    if not 0.0 <= margin < 1.0:
        raise ConfigError(f"margin is a share of the positive's score, from 0 up to 1, not {margin!r}")
    if skip_top < 0:
        raise ConfigError(f"skip_top must not be negative, not {skip_top}")
    if depth < skip_top + count:
        raise ConfigError(f"depth ({depth}) must reach past skip_top + count ({skip_top + count})")
    rankings = rank_with_positives(pairs, corpus, by=by, depth=depth)
    positives_of: dict[str, set[str]] = {}
    for pair, ranking in zip(pairs, rankings):
        positives_of.setdefault(pair.query, set()).add(ranking.positive)
    mined = []
    for pair, ranking in zip(pairs, rankings):
        negatives: list[str] = []
        positive_score = ranking.scores.get(ranking.positive)
        if positive_score is not None:
            ceiling = positive_score - margin * abs(positive_score)
            excluded = positives_of[pair.query]
            candidates = [d for d in ranking.ranked if d not in excluded and d in corpus][skip_top:]
            for doc_id in candidates:
                if ranking.scores[doc_id] > ceiling:
                    continue
                negatives.append(corpus[doc_id].full_text)
                if len(negatives) == count:
                    break
        mined.append(replace(pair, negatives=tuple(negatives)))
    return mined
