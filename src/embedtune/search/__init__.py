"""Search: exact dense top-k, BM25 (bm25s, extra ``eval``) and fusion, all returning TREC-shaped runs.

Importing this package imports numpy only; bm25s and PyStemmer are imported when a BM25 index is
built, searched or loaded.
"""

from embedtune.search.bm25 import BM25Index
from embedtune.search.chunks import doc_run_from_chunk_run, search_by_chunks
from embedtune.search.dense import DenseIndex, dense_run, l2_normalize, top_k_inner_product
from embedtune.search.fusion import convex, normalize, rrf
from embedtune.search.runs import Run, cut, ranked

__all__ = [
    "BM25Index",
    "DenseIndex",
    "Run",
    "convex",
    "cut",
    "dense_run",
    "doc_run_from_chunk_run",
    "l2_normalize",
    "normalize",
    "ranked",
    "rrf",
    "search_by_chunks",
    "top_k_inner_product",
]
