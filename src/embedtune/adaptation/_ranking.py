"""Rank a corpus for each pair's query, with the pair's own positive standing in for its document.

Both the consistency filter and the hard-negative miner ask the same question: where does a pair's
positive rank among the corpus for its query, and what ranks above and around it? The positive
may differ from its corpus document (a generated pair's positive leaves out the query's own
sentence or title), so for each pair the source document is ranked as the positive's text, not
as the corpus holds it. A positive that names no corpus document is ranked as an extra document.

With BM25 the texts must be indexed: pairs are put into rounds, each with at most one
replacement per document, and one index is built per round (one round when every document has
at most one pair). With a model, each document's score is independent of the others, so the
positive's score simply replaces its document's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..embedder import Embedder
from ..errors import ConfigError
from ..evaluation.collections import Document
from ..search.bm25 import BM25Index
from ..search.dense import top_k_inner_product
from ..search.runs import ranked
from .pairs import Pair

_EXTRA = "\x00positive:"  # id prefix of positives that are no corpus document


@dataclass(frozen=True)
class Ranking:
    """One query's top documents: ``ranked`` ids best first, with ``scores``.

    ``positive`` is the id the pair's positive goes by here: its ``positive_id``, or a private id
    when it names no corpus document.
    """

    positive: str
    ranked: list[str]
    scores: dict[str, float]


def rank_with_positives(
    pairs: Sequence[Pair], corpus: Mapping[str, Document], *, by: str | Embedder, depth: int
) -> list[Ranking]:
    """Each pair's top ``depth`` documents (plus its positive when that ranks within them)."""
    keys, replaced = _positive_keys(pairs, corpus)
    if isinstance(by, str):
        if by != "bm25":
            raise ConfigError(f"rank by 'bm25' or an Embedder, not {by!r}")
        runs = _bm25_runs(pairs, corpus, keys, replaced, depth)
    else:
        runs = _dense_runs(pairs, corpus, keys, replaced, depth, by)
    return [Ranking(positive=key, ranked=ranked(run)[: depth + 1], scores=run) for key, run in zip(keys, runs)]


def _positive_keys(pairs: Sequence[Pair], corpus: Mapping[str, Document]) -> tuple[list[str], list[bool]]:
    """Each pair's positive id, and whether its text differs from what the corpus holds for it."""
    by_text: dict[str, str] = {}
    for doc_id, doc in corpus.items():
        by_text.setdefault(doc.full_text, doc_id)
    keys, replaced = [], []
    for i, pair in enumerate(pairs):
        found = pair.positive_id if pair.positive_id in corpus else by_text.get(pair.positive)
        if found is None:
            keys.append(f"{_EXTRA}{i}")
            replaced.append(True)
        else:
            keys.append(found)
            replaced.append(corpus[found].full_text != pair.positive)
    return keys, replaced


def _bm25_runs(
    pairs: Sequence[Pair], corpus: Mapping[str, Document], keys: list[str], replaced: list[bool], depth: int
) -> list[dict[str, float]]:
    rounds: list[list[int]] = []
    uses: dict[str, int] = {}
    for i, key in enumerate(keys):
        r = uses.get(key, 0) if replaced[i] else 0
        if replaced[i]:
            uses[key] = r + 1
        while len(rounds) <= r:
            rounds.append([])
        rounds[r].append(i)
    runs: list[dict[str, float]] = [{} for _ in pairs]
    for members in rounds:
        texts = {doc_id: doc.full_text for doc_id, doc in corpus.items()}
        extras = []
        for i in members:
            if replaced[i]:
                texts[keys[i]] = pairs[i].positive
                if keys[i].startswith(_EXTRA):
                    extras.append(keys[i])
        index = BM25Index.build(list(texts), list(texts.values()))
        # Other pairs' extra positives may rank in a query's list; fetch enough to drop them.
        found = index.search({str(i): pairs[i].query for i in members}, k=depth + 1 + len(extras))
        extra_set = set(extras)
        for i in members:
            run = found[str(i)]
            runs[i] = {d: s for d, s in run.items() if d not in extra_set or d == keys[i]}
    return runs


def _dense_runs(
    pairs: Sequence[Pair],
    corpus: Mapping[str, Document],
    keys: list[str],
    replaced: list[bool],
    depth: int,
    embedder: Embedder,
) -> list[dict[str, float]]:
    doc_ids = list(corpus)
    documents = embedder.embed([corpus[d].full_text for d in doc_ids], "document")
    queries = embedder.embed([p.query for p in pairs], "query")
    moved = [i for i, r in enumerate(replaced) if r]
    positives = embedder.embed([pairs[i].positive for i in moved], "document") if moved else None
    scores, indices = top_k_inner_product(queries, documents, depth + 1)
    runs = []
    for i in range(len(pairs)):
        run = {doc_ids[j]: float(s) for j, s in zip(indices[i].tolist(), scores[i].tolist())}
        runs.append(run)
    for row, i in enumerate(moved):
        runs[i].pop(keys[i], None)  # the corpus text of the source document does not count
        runs[i][keys[i]] = float(np.dot(queries[i], positives[row]))  # type: ignore[index]
    return runs
