"""What ``compare`` and ``optimize`` share to build and cost strategies: a folder of stores, a timed model.

:class:`Workspace` keeps the stores of one corpus (a folder named by a hash of its documents, so
a store never outlives its corpus); :func:`workspace` opens one, kept under a root or temporary.
:class:`TimedEmbedder` times the model's own calls under the cache; :func:`bm25_bytes` is the
size of a BM25 index as saved; :func:`slug` turns a name into a folder name. :func:`uncached` and
:func:`median_query_ms` measure a query's latency as a served retriever answers it;
:func:`served_query_ms` does both for a Retriever or an EnsembleRetriever.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedtune.embedder import Embedder, Kind, embed_images
from embedtune.engine.wrapper import Wrapper
from embedtune.ensemble import EnsembleRetriever
from embedtune.errors import InputError
from embedtune.indexer import store_manifest
from embedtune.retriever import Retriever
from embedtune.search.bm25 import BM25Index
from embedtune.stores.base import Store
from embedtune.strategy import Strategy

if TYPE_CHECKING:
    from embedtune.documents import SourceDocument
    from embedtune.images import Image

__all__ = [
    "CountedOnce",
    "TimedEmbedder",
    "Workspace",
    "bm25_bytes",
    "median_query_ms",
    "served_query_ms",
    "slug",
    "uncached",
    "workspace",
]


def bm25_bytes(index: BM25Index) -> int:
    """Bytes of the BM25 index as saved on disk (score matrix, vocabulary, ids, manifest)."""
    with tempfile.TemporaryDirectory(prefix="embedtune-bm25-") as folder:
        index.save(folder)
        return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


class Workspace:
    """The stores of one corpus: ``ROOT/<collection>-<hash of its documents>/<name>``.

    The folder name changes whenever a document does, so a store never outlives its corpus. A
    kept store built another way (another revision of the model, other dims) is rebuilt: these
    stores are a cache of the caller's work.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._opened: list[Store] = []

    def store(self, name: str, strategy: Strategy, embedder: Embedder | None) -> Store:
        from embedtune.stores.embedded import EmbeddedStore

        path = self.folder / name
        store = EmbeddedStore(path)
        try:
            held = store.read_manifest()
            stale = held is not None and held.conflicts(store_manifest(strategy, embedder)) is not None
        except InputError:  # not a store this embedtune reads (an older layout, a damaged file)
            stale = True
        if stale:
            store.close()
            shutil.rmtree(path)
            store = EmbeddedStore(path)
        self._opened.append(store)
        return store

    def close(self) -> None:
        for store in self._opened:
            store.close()
        self._opened.clear()


@contextmanager
def workspace(root: str | Path | None, name: str, documents: Sequence[SourceDocument]) -> Iterator[Workspace]:
    """The workspace of ``documents`` under ``root`` (kept), or in a temporary folder when ``root`` is None."""
    if root is None:
        with tempfile.TemporaryDirectory(prefix="embedtune-compare-") as folder:
            space = Workspace(Path(folder))
            try:
                yield space
            finally:
                space.close()
        return
    digest = hashlib.sha256()
    for doc in documents:
        digest.update(doc.id.encode() + b"\x00" + doc.text.encode() + b"\x00")
    space = Workspace(Path(root) / f"{slug(name)}-{digest.hexdigest()[:12]}")
    try:
        yield space
    finally:
        space.close()


def slug(text: str) -> str:
    """``text`` as a folder name: runs of other characters than letters, digits, ``._-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "index"


class CountedOnce(Wrapper):
    """Remembers each text's token count while one model is compared, so the layers that each
    count a text (chunker, length policy, batcher, cost) run the tokenizer on it once."""

    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner)
        self._counts: dict[tuple[str, Kind], int] = {}

    def count_tokens(self, text: str, kind: Kind = "document") -> int:
        key = (text, kind)
        count = self._counts.get(key)
        if count is None:
            count = self._counts[key] = self.inner.count_tokens(text, kind)
        return count


class TimedEmbedder(Wrapper):
    """Times the model's own calls; the first call is preceded by an untimed one-text warm-up.

    It sits under the cache, so it sees (and times) only texts the model really embeds, and a run
    served from the cache never calls it, so never loads the model.
    """

    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner)
        self.seconds = 0.0
        self.texts = 0
        self._warm = False

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        if not self._warm and texts:
            self.inner.embed(list(texts[:1]), kind)  # loads weights, warms caches: not timed
            self._warm = True
        start = time.perf_counter()
        vectors = self.inner.embed(texts, kind)
        self.seconds += time.perf_counter() - start
        self.texts += len(texts)
        return vectors

    def embed_images(self, images: Sequence[Image], kind: Kind = "document") -> np.ndarray:
        start = time.perf_counter()
        vectors = embed_images(self.inner, images, kind)
        self.seconds += time.perf_counter() - start
        return vectors


def uncached(retriever: Retriever) -> Retriever:
    """``retriever`` as a served one answers: its queries embedded (or encoded) by the model, no cache.

    The model behind the cache is the one already opened (the timed provider's, or the sparse
    encoder's inner one), so nothing is loaded twice. The store is shared.
    """
    from embedtune.engine import find_layer
    from embedtune.factory import build_embedder

    strategy = retriever.strategy
    embedder = retriever.embedder
    if embedder is not None and strategy.embedder is not None:
        timer = find_layer(embedder, TimedEmbedder)
        if timer is not None:
            embedder = build_embedder(strategy.embedder, cache=None, provider=timer.inner)
    sparse = retriever.sparse
    sparse = getattr(sparse, "inner", sparse)  # a CachingSparseEncoder's model
    return Retriever(strategy, retriever.store, embedder, reranker=retriever.reranker, sparse=sparse)


def median_query_ms(retriever: Any, texts: Sequence[str], k: int = 10) -> float:
    """Median milliseconds of ``retriever.search_one(text, k)`` over ``texts``, the first untimed.

    The served path: a Retriever or an EnsembleRetriever, one query at a time (embedded, searched,
    fused, reranked). The first query loads weights and warms the store, so it is not counted.
    """
    times = []
    for i, text in enumerate(texts):
        start = time.perf_counter()
        retriever.search_one(text, k)
        if i:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times) if times else 0.0


def served_query_ms(retriever: Retriever | EnsembleRetriever, texts: Sequence[str]) -> float:
    """:func:`median_query_ms` of ``retriever`` answering as ``serve`` does: an :func:`uncached` copy
    of it (of each member, for an EnsembleRetriever, fused and reranked as it is), closed after.
    ``retriever`` itself is left as it was."""
    served: Retriever | EnsembleRetriever
    if isinstance(retriever, EnsembleRetriever):
        members = [uncached(member) for member in retriever.members]
        served = EnsembleRetriever(retriever.strategy, members, reranker=retriever.reranker)
    else:
        served = uncached(retriever)
    try:
        return median_query_ms(served, texts)
    finally:
        served.close()
