"""Lexical retrieval with BM25, through bm25s and PyStemmer (install ``embedtune[eval]``).

The configuration is the one whose published figures the project reproduces (BEIR SciFact test,
nDCG@10 0.6874, Recall@100 0.9127): bm25s's Lucene variant of BM25 with ``k1 = 1.5`` and
``b = 0.75``, lower-cased words of two or more word characters, bm25s's English stopwords removed,
the English Snowball stemmer applied, documents indexed as title + " " + text.

Lucene's BM25 (Robertson and Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond",
2009; Kamphuis et al., "Which BM25 Do You Mean? A Large-Scale Reproducibility Study of Scoring
Variants", ECIR 2020) scores a document ``D`` for query terms ``t``::

    score(D) = sum_t idf(t) * tf(t, D) / (tf(t, D) + k1 * (1 - b + b * |D| / avgdl))
    idf(t)   = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

bm25s (Lù, "BM25S: Orders of magnitude faster lexical search via eager sparse scoring", 2024)
precomputes these scores per term and document; this module only wires it up. Every Lucene score
of a matching document is positive, so runs leave out documents with score 0 (no query term).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedtune.errors import InputError, require
from embedtune.search.runs import Run
from embedtune.search.saved import read_manifest

__all__ = ["BM25Index"]

_FORMAT = "embedtune.bm25"
_VERSION = 1
_IDS = "ids.json"
_MANIFEST = "manifest.json"
_METHOD = "lucene"
_LANGUAGE = "english"
_STOPWORDS = "en"
_QUERY_BATCH = 1024


class BM25Index:
    """A BM25 index over documents with ids; search it with query texts.

    Build one with :meth:`build` or open a saved folder with :meth:`load`. A saved index is
    bm25s's own files (the score matrix as ``.npy`` arrays, memory-mappable, its vocabulary and
    parameters) plus ``ids.json`` and ``manifest.json``.
    """

    def __init__(self, *, ids: Sequence[str], retriever: Any, k1: float, b: float) -> None:
        """Wrap a fitted ``bm25s.BM25``; prefer :meth:`build` and :meth:`load`."""
        self._ids = tuple(ids)
        self._retriever = retriever
        self._k1 = k1
        self._b = b
        self._positions: dict[str, int] | None = None
        self._doc_terms: dict[str, list[str]] = {}  # documents tokenized for feedback, kept for the index's life

    @classmethod
    def build(cls, ids: Sequence[str], texts: Sequence[str], *, k1: float = 1.5, b: float = 0.75) -> BM25Index:
        """Index ``texts`` (one per id; for a BEIR document, title + " " + text)."""
        bm25s = require("bm25s", "eval")
        if len(ids) != len(texts):
            raise InputError(f"{len(ids)} document ids but {len(texts)} texts; give one text per id")
        if not ids:
            raise InputError("no documents to index; give at least one")
        if len(set(ids)) != len(ids):
            raise InputError("document ids repeat; give each text its own id")
        tokens = bm25s.tokenize(list(texts), stopwords=_STOPWORDS, stemmer=_stemmer(), show_progress=False)
        retriever = bm25s.BM25(k1=k1, b=b, method=_METHOD)
        retriever.index(tokens, show_progress=False)
        return cls(ids=ids, retriever=retriever, k1=k1, b=b)

    @property
    def ids(self) -> tuple[str, ...]:
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def search(self, queries: Mapping[str, str], k: int = 100, *, only: Collection[str] | None = None) -> Run:
        """A run ``{query_id: {doc_id: BM25 score}}`` of each query's top ``k`` matching documents.

        Documents sharing no term with the query are left out, so a query may get fewer than
        ``k`` documents (none when all its words are stopwords or unknown to the index).
        ``only`` restricts the run to those document ids (a metadata filter's result), exactly:
        the others score 0 before the top ``k`` are taken.
        """
        bm25s = require("bm25s", "eval")
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        depth = min(k, len(self._ids))
        mask = self._mask(only) if only is not None else None
        query_ids = list(queries)
        stemmer = _stemmer()
        run: Run = {}
        for start in range(0, len(query_ids), _QUERY_BATCH):
            batch = query_ids[start : start + _QUERY_BATCH]
            tokens = bm25s.tokenize(
                [queries[qid] for qid in batch],
                stopwords=_STOPWORDS,
                stemmer=stemmer,
                return_ids=False,
                show_progress=False,
            )
            for qid, query_tokens in zip(batch, tokens):
                ids = self._retriever.get_tokens_ids(list(query_tokens))
                scores = self._retriever.get_scores_from_ids(ids, weight_mask=mask) if ids else None
                run[qid] = {} if scores is None else self._top(scores, depth)
        return run

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        """``texts`` as this index reads them: its stopwords removed, its stemmer applied."""
        bm25s = require("bm25s", "eval")
        tokens = bm25s.tokenize(
            list(texts), stopwords=_STOPWORDS, stemmer=_stemmer(), return_ids=False, show_progress=False
        )
        return [list(t) for t in tokens]

    def document_terms(
        self, doc_ids: Sequence[str], texts_of: Callable[[Sequence[str]], Mapping[str, str]]
    ) -> dict[str, list[str]]:
        """Each document's tokens as :meth:`tokenize` reads its text (what RM3 feeds back).

        ``texts_of(ids)`` gives the texts of documents not asked for before; each is tokenized
        once for the index's life: its documents' texts are the ones it was built from (a store
        opens a new index when they change). A document without a text has no tokens.
        """
        missing = [doc for doc in dict.fromkeys(doc_ids) if doc not in self._doc_terms]
        if missing:
            texts = texts_of(missing)
            known = [doc for doc in missing if doc in texts]
            self._doc_terms.update(zip(known, self.tokenize([texts[doc] for doc in known])))
        return {doc: self._doc_terms.get(doc, []) for doc in doc_ids}

    def search_weighted(
        self, queries: Mapping[str, Mapping[str, float]], k: int = 100, *, only: Collection[str] | None = None
    ) -> Run:
        """As :meth:`search`, for queries of weighted terms: ``sum_t weight(t) * bm25(t, D)``.

        Terms are the index's own tokens (see :meth:`tokenize`); terms it does not hold score
        nothing. A query whose terms all weigh 1 scores as :meth:`search` scores its tokens.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        depth = min(k, len(self._ids))
        mask = self._mask(only) if only is not None else None
        vocab = self._retriever.vocab_dict
        matrix = self._retriever.scores
        data, indices, indptr = matrix["data"], matrix["indices"], matrix["indptr"]
        run: Run = {}
        for qid, terms in queries.items():
            scores = np.zeros(len(self._ids), dtype=np.float32)
            for term, weight in terms.items():
                token = vocab.get(term)
                if token is None or weight == 0:
                    continue
                start, end = int(indptr[token]), int(indptr[token + 1])
                # A term's column holds each document once, so a plain fancy-index add is exact.
                scores[indices[start:end]] += np.float32(weight) * data[start:end]
            if mask is not None:
                scores *= mask
            run[qid] = self._top(scores, depth)
        return run

    def _top(self, scores: np.ndarray, depth: int) -> dict[str, float]:
        """The ``depth`` best matching documents, score descending, equal scores by index.

        Only documents with a positive score are ranked: most of a large corpus scores 0 for a
        given query, and numpy's partition slows down tenfold on that many equal values.
        """
        matching = np.flatnonzero(scores > 0)
        if len(matching) > depth:
            matching = matching[np.argpartition(-scores[matching], depth - 1)[:depth]]
            # The partition picks arbitrarily among scores equal to the last one kept; take the
            # lowest indices among those, as the full sort below would.
            floor = scores[matching].min()
            tied = np.flatnonzero(scores == floor)
            above = matching[scores[matching] > floor]
            matching = np.concatenate([above, tied[: depth - len(above)]])
        order = np.lexsort((matching, -scores[matching]))
        return {self._ids[i]: float(scores[i]) for i in matching[order].tolist()}

    def _mask(self, only: Collection[str]) -> np.ndarray:
        if self._positions is None:
            self._positions = {doc: i for i, doc in enumerate(self._ids)}
        mask = np.zeros(len(self._ids), dtype=np.float32)
        rows = [self._positions[doc] for doc in only if doc in self._positions]
        mask[rows] = 1.0
        return mask

    def save(self, folder: str | Path) -> Path:
        """Write bm25s's files, ``ids.json`` and ``manifest.json`` (last) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._retriever.save(str(folder), show_progress=False)
        (folder / _IDS).write_text(json.dumps(list(self._ids), ensure_ascii=False), encoding="utf-8")
        manifest = {
            "format": _FORMAT,
            "version": _VERSION,
            "method": _METHOD,
            "k1": self._k1,
            "b": self._b,
            "stemmer": _LANGUAGE,
            "stopwords": _STOPWORDS,
            "count": len(self._ids),
        }
        (folder / _MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, mmap: bool = True) -> BM25Index:
        """Open an index written by :meth:`save`; ``mmap=True`` maps its score arrays read-only."""
        bm25s = require("bm25s", "eval")
        folder = Path(folder)
        manifest, ids = read_manifest(folder, fmt=_FORMAT, version=_VERSION, what="BM25 index")
        try:
            retriever = bm25s.BM25.load(str(folder), mmap=mmap)
        except FileNotFoundError as exc:
            raise InputError(f"{folder} lacks a file of the bm25s index ({exc.filename}); rebuild the index") from exc
        if retriever.scores["num_docs"] != len(ids):
            raise InputError(
                f"{folder} is inconsistent: the bm25s index has {retriever.scores['num_docs']} documents "
                f"but ids.json has {len(ids)}; rebuild the index"
            )
        return cls(ids=ids, retriever=retriever, k1=manifest["k1"], b=manifest["b"])


def _stemmer() -> Any:
    stemmer_module = require("Stemmer", "eval")
    return stemmer_module.Stemmer(_LANGUAGE)
