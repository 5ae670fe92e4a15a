"""Exact dense retrieval: top-k by inner product, in bounded memory, and a folder-backed index.

With L2-normalised vectors the inner product is the cosine similarity. Scores are computed one
block of queries against one block of documents at a time, so memory stays at
``query_block * document_block`` floats whatever the corpus size; each block keeps its best ``k``
by ``np.argpartition`` and the blocks' winners are merged.

Ties are broken by the lower document index (the earlier document), so the result does not depend
on the block sizes. A run built from it is then ranked by :func:`embedtune.search.runs.ranked`
(ties by document id), like every other run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedtune.errors import InputError
from embedtune.search.runs import Run
from embedtune.search.saved import read_manifest

__all__ = ["DenseIndex", "dense_run", "l2_normalize", "top_k_inner_product"]

_FORMAT = "embedtune.dense"
_VERSION = 1
_VECTORS = "vectors.npy"
_IDS = "ids.json"
_MANIFEST = "manifest.json"


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm as a new float32 array; all-zero rows stay zero."""
    array = np.array(vectors, dtype=np.float32, copy=True, ndmin=2)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    np.divide(array, norms, out=array, where=norms > 0)
    return array


def top_k_inner_product(
    queries: np.ndarray,
    documents: np.ndarray,
    k: int,
    *,
    query_block: int = 256,
    document_block: int = 65_536,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` documents with the largest inner product for each query, exactly.

    Returns ``(scores, indices)``, both of shape ``(n_queries, min(k, n_documents))``: each row
    sorted by score descending, equal scores by document index ascending. Inputs are used as
    given (normalise them first for cosine similarity); ``documents`` may be a memory map.
    """
    queries = _as_matrix(queries, "query vectors")
    documents = _as_matrix(documents, "document vectors")
    if queries.shape[1] != documents.shape[1]:
        raise InputError(
            f"query vectors have {queries.shape[1]} dims but document vectors have "
            f"{documents.shape[1]}; embed both with the same model"
        )
    for name, value in (("k", k), ("query_block", query_block), ("document_block", document_block)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, not {value}")
    depth = min(k, documents.shape[0])
    scores = np.empty((queries.shape[0], depth), dtype=np.float32)
    indices = np.empty((queries.shape[0], depth), dtype=np.int64)
    for q_start in range(0, queries.shape[0], query_block):
        q_block = queries[q_start : q_start + query_block]
        best_scores = np.empty((len(q_block), 0), dtype=np.float32)
        best_indices = np.empty((len(q_block), 0), dtype=np.int64)
        for d_start in range(0, documents.shape[0], document_block):
            block_scores = q_block @ np.asarray(documents[d_start : d_start + document_block]).T
            top_scores, top_indices = _block_top_k(block_scores, depth)
            best_scores, best_indices = _best_k(
                np.concatenate([best_scores, top_scores], axis=1),
                np.concatenate([best_indices, top_indices + d_start], axis=1),
                depth,
            )
        scores[q_start : q_start + len(q_block)] = best_scores
        indices[q_start : q_start + len(q_block)] = best_indices
    return scores, indices


def dense_run(
    query_ids: Sequence[str],
    query_vectors: np.ndarray,
    doc_ids: Sequence[str],
    doc_vectors: np.ndarray,
    k: int,
    *,
    query_block: int = 256,
    document_block: int = 65_536,
) -> Run:
    """A run ``{query_id: {doc_id: inner product}}`` of each query's top ``k`` documents."""
    if len(query_ids) != len(query_vectors):
        raise InputError(f"{len(query_ids)} query ids but {len(query_vectors)} query vectors; give one id per row")
    if len(doc_ids) != len(doc_vectors):
        raise InputError(f"{len(doc_ids)} document ids but {len(doc_vectors)} document vectors; give one id per row")
    scores, indices = top_k_inner_product(
        query_vectors, doc_vectors, k, query_block=query_block, document_block=document_block
    )
    return _as_run(query_ids, doc_ids, scores, indices)


def _as_run(query_ids: Sequence[str], doc_ids: Sequence[str], scores: np.ndarray, indices: np.ndarray) -> Run:
    return {
        qid: {doc_ids[i]: float(s) for i, s in zip(row_indices.tolist(), row_scores.tolist())}
        for qid, row_scores, row_indices in zip(query_ids, scores, indices)
    }


# A float16 product is fast for a few queries (memory-bound); for many, the float32 matrix
# product is compute-bound and the exact scan is the faster one.
_HALF_SCAN_MAX_QUERIES = 8
_HALF_SCAN_DEPTH = 2  # candidates per wanted result, rescored exactly


def _half_copy(vectors: np.ndarray):
    try:
        import torch
    except ImportError:
        return None
    return torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float16))


def _top_k_half_scan(queries: np.ndarray, documents: np.ndarray, half, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidates from the float16 copy, then exact float32 scores and the exact tie order."""
    import torch

    depth = min(k, documents.shape[0])
    wanted = min(documents.shape[0], depth * _HALF_SCAN_DEPTH)
    scores = np.empty((len(queries), depth), dtype=np.float32)
    indices = np.empty((len(queries), depth), dtype=np.int64)
    with torch.no_grad():
        for row, query in enumerate(queries):
            # One matrix-vector product per query: torch's float16 gemv is the fast kernel.
            rough = torch.mv(half, torch.from_numpy(query.astype(np.float16)))
            rows = np.sort(torch.topk(rough, wanted).indices.numpy())
            exact = np.asarray(documents[rows]) @ query
            order = np.lexsort((rows, -exact))[:depth]  # score descending, then lower index
            scores[row] = exact[order]
            indices[row] = rows[order]
    return scores, indices


class DenseIndex:
    """Document vectors with their ids, searched exactly by cosine similarity.

    Build one with :meth:`build` (which L2-normalises the vectors) or :meth:`load` a saved folder:
    ``vectors.npy`` (float32, memory-mappable), ``ids.json`` and ``manifest.json`` (format,
    version, model, dim, count). The index never embeds: pass vectors from the model named by
    ``model``, and queries from the same model.
    """

    def __init__(self, *, ids: Sequence[str], vectors: np.ndarray, model: str, scan: str = "exact") -> None:
        """Wrap vectors that are already L2-normalised float32 rows; prefer :meth:`build`.

        ``scan="float16"`` answers small batches of queries (a service's one query at a time) by
        scanning a float16 copy for candidates, then scoring those exactly in float32: half the
        memory traffic of the exact scan, which is what a one-query scan is bound by. It needs
        torch (numpy has no fast float16 product) and falls back to the exact scan without it.
        """
        if scan not in ("exact", "float16"):
            raise ValueError(f"scan must be 'exact' or 'float16', not {scan!r}")
        vectors = _as_matrix(vectors, "document vectors")
        if len(ids) != vectors.shape[0]:
            raise InputError(f"{len(ids)} document ids but {vectors.shape[0]} vectors; give one id per row")
        if len(set(ids)) != len(ids):
            raise InputError("document ids repeat; give each vector its own id")
        self._ids = tuple(ids)
        self._vectors = vectors
        self._model = model
        self._half = _half_copy(vectors) if scan == "float16" else None

    @classmethod
    def build(cls, ids: Sequence[str], vectors: np.ndarray, *, model: str, scan: str = "exact") -> DenseIndex:
        """An index of ``vectors`` (one row per id), L2-normalised, checked to be finite."""
        vectors = _as_matrix(vectors, "document vectors")
        if not np.isfinite(vectors).all():
            raise InputError("document vectors hold NaN or infinite values; check the embedder's output")
        return cls(ids=ids, vectors=l2_normalize(vectors), model=model, scan=scan)

    @property
    def ids(self) -> tuple[str, ...]:
        return self._ids

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors

    @property
    def model(self) -> str:
        return self._model

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1])

    def __len__(self) -> int:
        return len(self._ids)

    def search(self, query_ids: Sequence[str], query_vectors: np.ndarray, k: int) -> Run:
        """The top ``k`` documents of each query by cosine similarity (queries are normalised here)."""
        query_vectors = _as_matrix(query_vectors, "query vectors")
        if query_vectors.shape[1] != self.dim:
            raise InputError(
                f"query vectors have {query_vectors.shape[1]} dims but the index of {self._model!r} "
                f"has {self.dim}; embed the queries with the index's model"
            )
        if not np.isfinite(query_vectors).all():
            raise InputError("query vectors hold NaN or infinite values; check the embedder's output")
        query_vectors = l2_normalize(query_vectors)
        if self._half is not None and len(query_vectors) <= _HALF_SCAN_MAX_QUERIES:
            scores, indices = _top_k_half_scan(query_vectors, self._vectors, self._half, k)
            return _as_run(query_ids, self._ids, scores, indices)
        return dense_run(query_ids, query_vectors, self._ids, self._vectors, k)

    def save(self, folder: str | Path) -> Path:
        """Write ``vectors.npy``, ``ids.json`` and ``manifest.json`` (last) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / _VECTORS, np.ascontiguousarray(self._vectors, dtype=np.float32), allow_pickle=False)
        (folder / _IDS).write_text(json.dumps(list(self._ids), ensure_ascii=False), encoding="utf-8")
        manifest = {
            "format": _FORMAT,
            "version": _VERSION,
            "model": self._model,
            "dim": self.dim,
            "count": len(self),
            "dtype": "float32",
            "normalized": True,
        }
        (folder / _MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        return folder

    @classmethod
    def load(
        cls,
        folder: str | Path,
        *,
        mmap: bool = True,
        model: str | None = None,
        dim: int | None = None,
    ) -> DenseIndex:
        """Open a saved index; with ``model``/``dim`` given, refuse an index built by another model.

        ``mmap=True`` maps ``vectors.npy`` read-only instead of reading it into memory.
        """
        folder = Path(folder)
        manifest, ids = read_manifest(folder, fmt=_FORMAT, version=_VERSION, what="dense index", files=(_VECTORS,))
        saved_model, saved_dim = manifest["model"], int(manifest["dim"])
        if dim is not None and dim != saved_dim:
            raise InputError(
                f"index {folder} holds {saved_dim}-dim vectors of {saved_model!r} but the model gives "
                f"{dim}-dim vectors; rebuild the index with this model or search with {saved_model!r}"
            )
        if model is not None and model != saved_model:
            raise InputError(
                f"index {folder} was built with {saved_model!r}, not {model!r}; vectors of different "
                f"models are not comparable: rebuild the index or search with {saved_model!r}"
            )
        vectors = np.load(folder / _VECTORS, mmap_mode="r" if mmap else None, allow_pickle=False)
        if vectors.ndim != 2 or vectors.shape != (manifest["count"], saved_dim) or len(ids) != vectors.shape[0]:
            raise InputError(
                f"{folder} is inconsistent: manifest says {manifest['count']} x {saved_dim}, vectors.npy "
                f"is {vectors.shape}, ids.json has {len(ids)} ids; rebuild the index"
            )
        return cls(ids=ids, vectors=vectors, model=saved_model)


def _as_matrix(vectors: np.ndarray, what: str) -> np.ndarray:
    if isinstance(vectors, np.ndarray) and vectors.dtype == np.float32:
        array = vectors  # as given: a memory map stays one
    else:
        array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise InputError(f"{what} must be a 2-D array (rows, dim), not shape {array.shape}")
    if array.shape[1] == 0:
        raise InputError(f"{what} have 0 dims; embed with a model first")
    return array


def _block_top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` largest columns (ties by lower column), unsorted; all columns if fewer."""
    n_rows, n_cols = scores.shape
    if k >= n_cols:
        return scores, np.broadcast_to(np.arange(n_cols, dtype=np.int64), (n_rows, n_cols))
    top = np.argpartition(scores, n_cols - k, axis=1)[:, n_cols - k :]
    top_scores = np.take_along_axis(scores, top, axis=1)
    # argpartition picks arbitrarily among columns tied with the k-th largest value; redo the rows
    # where such a tie crosses the boundary so the lower column indices win, as in a full sort.
    kth = top_scores.min(axis=1)
    ambiguous = np.flatnonzero((scores >= kth[:, None]).sum(axis=1) > k)
    for row in ambiguous:
        order = np.lexsort((np.arange(n_cols), -scores[row]))[:k]
        top[row] = order
        top_scores[row] = scores[row, order]
    return top_scores, top.astype(np.int64, copy=False)


def _best_k(scores: np.ndarray, indices: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` best (score descending, index ascending), sorted."""
    order = np.lexsort((indices, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(indices, order, axis=1)
