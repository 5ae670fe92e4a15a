"""An inverted index over sparse term-weight rows: documents x vocabulary, searched by dot product.

The documents' rows form a CSR matrix ``D`` (documents x vocabulary, float32). A query row ``q``
scores every document by ``D @ q``; the index keeps ``D`` transposed as well (vocabulary x
documents, CSR: one posting list per term), so a query touches only the posting lists of its own
terms and only documents sharing a term with it get a score. Only those are ranked, best first,
equal scores by document order; a query sharing no term with any document gets no documents.

Saved as a folder: ``postings.npz`` (the term x document matrix, scipy's own format),
``ids.json`` and ``manifest.json`` (written last: a folder without it is not an index).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from ..search.runs import Run

__all__ = ["SparseIndex"]

_FORMAT = "embedtune.sparse"
_VERSION = 1
_POSTINGS = "postings.npz"
_IDS = "ids.json"
_MANIFEST = "manifest.json"
_QUERY_BATCH = 256  # query rows scored at once: bounds the (queries x documents) score matrix


class SparseIndex:
    """Documents' sparse rows, searchable by query rows of the same vocabulary.

    ``about`` is free data kept in the manifest (the model's fingerprint, what the documents
    were), for whoever decides whether a saved index is still current.
    """

    def __init__(self, ids: Sequence[str], documents: sp.csr_matrix, *, about: dict[str, Any] | None = None) -> None:
        if documents.shape[0] != len(ids):
            raise InputError(f"{len(ids)} document ids but {documents.shape[0]} sparse rows; give one row per id")
        if len(set(ids)) != len(ids):
            raise InputError("document ids repeat; give each row its own id")
        self._ids = tuple(ids)
        self._postings = sp.csr_matrix(documents, dtype=np.float32).T.tocsr()  # vocabulary x documents
        self._postings.sort_indices()
        self.about = dict(about or {})
        self._positions: dict[str, int] | None = None

    @property
    def ids(self) -> tuple[str, ...]:
        return self._ids

    @property
    def vocab_size(self) -> int:
        return int(self._postings.shape[0])

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def nbytes(self) -> int:
        """Bytes of the posting lists in memory (weights, document numbers, term offsets)."""
        postings = self._postings
        return int(postings.data.nbytes + postings.indices.nbytes + postings.indptr.nbytes)

    def search(
        self, query_ids: Sequence[str], queries: sp.csr_matrix, depth: int, *, only: Collection[str] | None = None
    ) -> Run:
        """A run ``{query id: {doc id: score}}``: each query's ``depth`` best matching documents.

        ``queries`` holds one row per id, over this index's vocabulary. ``only`` restricts the
        run to those document ids (a metadata filter's result), before the top ``depth`` are taken.
        """
        check_queries(query_ids, queries, self.vocab_size, depth)
        allowed = None if only is None else self._mask(only)
        queries = sp.csr_matrix(queries, dtype=np.float32)
        run: Run = {}
        for start in range(0, len(query_ids), _QUERY_BATCH):
            scores = (queries[start : start + _QUERY_BATCH] @ self._postings).tocsr()  # queries x documents
            for row, qid in enumerate(query_ids[start : start + _QUERY_BATCH]):
                lo, hi = scores.indptr[row], scores.indptr[row + 1]
                docs, values = scores.indices[lo:hi], scores.data[lo:hi]
                keep = values > 0
                if allowed is not None:
                    keep &= allowed[docs]
                run[qid] = self._top(docs[keep], values[keep], depth)
        return run

    def _top(self, docs: np.ndarray, values: np.ndarray, depth: int) -> dict[str, float]:
        if len(docs) > depth:
            # Everything scoring at least the depth-th best score, then an exact sort: ties at
            # the cut are kept by document order, as a full sort would.
            floor = np.partition(values, len(values) - depth)[len(values) - depth]
            wanted = values >= floor
            docs, values = docs[wanted], values[wanted]
        order = np.lexsort((docs, -values))[:depth]
        return {self._ids[d]: float(values[i]) for i, d in zip(order.tolist(), docs[order].tolist())}

    def _mask(self, only: Collection[str]) -> np.ndarray:
        if self._positions is None:
            self._positions = {doc: i for i, doc in enumerate(self._ids)}
        mask = np.zeros(len(self._ids), dtype=bool)
        mask[[self._positions[doc] for doc in only if doc in self._positions]] = True
        return mask

    def save(self, folder: str | Path) -> Path:
        """Write the folder (the manifest last). Returns it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        sp.save_npz(folder / _POSTINGS, self._postings, compressed=False)
        (folder / _IDS).write_text(json.dumps(list(self._ids), ensure_ascii=False), encoding="utf-8")
        manifest = {
            "format": _FORMAT,
            "version": _VERSION,
            "documents": len(self._ids),
            "vocab_size": self.vocab_size,
            "about": self.about,
        }
        (folder / _MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> SparseIndex:
        """Open a folder written by :meth:`save`; anything missing or malformed is one line."""
        folder = Path(folder)
        try:
            manifest = json.loads((folder / _MANIFEST).read_text(encoding="utf-8"))
            ids = json.loads((folder / _IDS).read_text(encoding="utf-8"))
            postings = sp.load_npz(folder / _POSTINGS)
        except (OSError, ValueError) as exc:
            raise InputError(
                f"{folder} is not a readable sparse index ({exc}); rebuild it with embedtune index"
            ) from None
        if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT or manifest.get("version") != _VERSION:
            raise InputError(f"{folder} is not a sparse index this embedtune reads; rebuild it with embedtune index")
        if not isinstance(ids, list) or postings.shape[1] != len(ids):
            raise InputError(
                f"{folder} is inconsistent: its ids and postings disagree; rebuild it with embedtune index"
            )
        index = cls.__new__(cls)
        index._ids = tuple(ids)
        index._postings = postings.tocsr().astype(np.float32, copy=False)
        index.about = dict(manifest.get("about") or {})
        index._positions = None
        return index


def folder_bytes(folder: str | Path) -> int:
    """Bytes of a saved index on disk."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def check_queries(query_ids: Sequence[str], queries: sp.csr_matrix, vocab_size: int, depth: int) -> None:
    """Refuse a search whose depth is not positive or whose query rows are not over this vocabulary."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, not {depth}")
    if queries.shape != (len(query_ids), vocab_size):
        raise InputError(
            f"{len(query_ids)} queries over a {vocab_size}-term vocabulary expected, "
            f"got sparse rows of shape {queries.shape}: was the index built by another model?"
        )
