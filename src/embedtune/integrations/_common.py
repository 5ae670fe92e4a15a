"""What the framework adapters share; imports no framework.

- :class:`EmbeddingStack`: an embedding stack built from a model URI, a configured name or an
  :class:`~embedtune.factory.EmbedderSpec` (the adapter owns and closes it), or handed in.
- :class:`StoreSearch`: a store's :class:`~embedtune.retriever.Retriever`, from a store URI or
  :class:`~embedtune.stores.Store` (strategy and embedder from its manifest), or handed in.
- :func:`hit_id` and :func:`hit_metadata`: a hit's id and metadata as every adapter shows them.

Threads. The frameworks call adapters from any thread (their async variants and LangChain's
``batch`` run in thread pools); the stack and the stores take calls from several threads, and the
awaited variants run the call in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..embedder import Embedder, Kind
from ..engine import close_stack
from ..errors import ConfigError
from ..factory import EmbedderSpec, build_embedder, load_config, resolve_spec
from ..retriever import Hit, Retriever

if TYPE_CHECKING:
    from ..ensemble import EnsembleRetriever
from ..stores.base import Filter, Store

__all__ = ["RESERVED_KEYS", "ConfigLike", "EmbeddingStack", "PathLike", "StoreSearch", "hit_id", "hit_metadata"]

PathLike = str | os.PathLike[str]
ConfigLike = PathLike | Mapping[str, EmbedderSpec]
"""A TOML file with ``[embedders.NAME]`` tables, or the specs :func:`~embedtune.factory.load_config` read."""

# -- embedding -----------------------------------------------------------------------------


class EmbeddingStack:
    """An embedtune stack (length policy, cache, batching, provider) that adapters embed through.

    Give either ``model`` (a URI such as ``local:all-MiniLM-L6-v2``, a name configured in
    ``config``, or an :class:`~embedtune.factory.EmbedderSpec`), with ``cache`` the path of the
    SQLite embedding cache (none when omitted); or ``embedder``, an Embedder already built (usually
    by :func:`~embedtune.factory.build_embedder`). A stack built here is opened on first use (or by
    :meth:`open`) and closed by :meth:`close`; a stack handed in is never closed here.
    """

    def __init__(
        self,
        model: str | EmbedderSpec | None = None,
        *,
        embedder: Embedder | None = None,
        config: ConfigLike | None = None,
        cache: PathLike | None = None,
    ) -> None:
        if (model is None) == (embedder is None):
            raise ConfigError("give either a model (a URI, a configured name or an EmbedderSpec) or an embedder")
        if embedder is not None and (config is not None or cache is not None):
            raise ConfigError("config and cache apply to a model given by name; an embedder handed in has its own")
        self.spec = None if model is None else _resolve(model, config)
        self.cache = cache
        self.owned = embedder is None
        self._embedder = embedder
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """The model's URI."""
        return self.spec.model if self.spec is not None else self.open().name

    def open(self) -> Embedder:
        """The stack, built now if it was given by model and is not open yet."""
        with self._lock:
            if self._embedder is None and self.spec is not None:
                self._embedder = build_embedder(self.spec, cache=self.cache)
            if self._embedder is None:  # unreachable: a stack handed in is never dropped
                raise ConfigError("this embedding stack was handed in and is gone")
            return self._embedder

    def embed(self, texts: Sequence[str], kind: Kind) -> list[list[float]]:
        """The stack's vectors for ``texts`` as ``kind``, one list of floats per text, in order."""
        return self.open().embed(list(texts), kind).tolist()

    async def aembed(self, texts: Sequence[str], kind: Kind) -> list[list[float]]:
        """As :meth:`embed`, awaited."""
        embedder = self.open()
        return (await asyncio.to_thread(embedder.embed, list(texts), kind)).tolist()

    def close(self) -> None:
        """Close the stack if it was built here (cache file, HTTP client); it reopens on next use."""
        with self._lock:
            if not self.owned or self._embedder is None:
                return
            embedder, self._embedder = self._embedder, None
        close_stack(embedder)


def _resolve(model: str | EmbedderSpec, config: ConfigLike | None) -> EmbedderSpec:
    if isinstance(model, EmbedderSpec):
        if config is not None:
            raise ConfigError("config names embedders; give a model name or URI with it, not an EmbedderSpec")
        return model
    specs = load_config(config) if isinstance(config, (str, os.PathLike)) else config
    return resolve_spec(model, specs)


# -- searching -----------------------------------------------------------------------------


class StoreSearch:
    """A built store's :class:`~embedtune.retriever.Retriever`, as the adapters' retrievers use it.

    Give either ``store`` (a path or URI that :func:`~embedtune.stores.open_store` opens, or a
    :class:`~embedtune.stores.Store`), its strategy and embedder read from its manifest by
    :func:`~embedtune.indexer.open_retriever` (``embedder`` replaces the one the manifest names,
    ``cache`` is the embedding cache of the one built from it); or ``retriever``, one already open.
    Closing releases what was opened here: a store opened from a URI, an embedder built from the
    manifest, the retriever's thread; never what was handed in.
    """

    def __init__(
        self,
        store: PathLike | Store | None = None,
        *,
        retriever: Retriever | None = None,
        cache: PathLike | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        if (store is None) == (retriever is None):
            raise ConfigError("give either a store (a path, a URI or a Store) or a retriever")
        if retriever is not None and (cache is not None or embedder is not None):
            raise ConfigError("cache and embedder apply to a store; a retriever handed in has its own embedder")
        if isinstance(store, (str, os.PathLike)) and not os.fspath(store).strip():
            raise ConfigError("the store is empty; give a folder or a postgresql:// URI")
        self._store = store
        self._cache = cache
        self._embedder = embedder
        self._retriever: Retriever | EnsembleRetriever | None = retriever
        self._opened_store: Store | None = None
        self._lock = threading.Lock()

    def open(self) -> Retriever | EnsembleRetriever:
        """The retriever, opened now if it was given by store and is not open yet."""
        from ..indexer import open_retriever
        from ..stores import open_store

        with self._lock:
            if self._retriever is None and self._store is not None:
                given = self._store
                store = open_store(os.fspath(given)) if isinstance(given, (str, os.PathLike)) else given
                try:
                    retriever = open_retriever(store, cache=self._cache, embedder=self._embedder)
                except BaseException:
                    if store is not given:
                        store.close()
                    raise
                self._retriever = retriever
                self._opened_store = store if store is not given else None
            if self._retriever is None:  # unreachable: a retriever handed in is never dropped
                raise ConfigError("this retriever was handed in and is gone")
            return self._retriever

    def search(self, text: str, k: int, where: Filter | None = None) -> list[Hit]:
        """:meth:`Retriever.search_one`: the ``k`` best documents for ``text`` with ``where`` applied."""
        return self.open().search_one(text, k, where=where)

    async def asearch(self, text: str, k: int, where: Filter | None = None) -> list[Hit]:
        """As :meth:`search`, awaited."""
        retriever = self.open()
        return await asyncio.to_thread(retriever.search_one, text, k, where=where)

    def close(self) -> None:
        """Release what was opened here; the next search opens it again."""
        with self._lock:
            if self._store is None or self._retriever is None:  # handed in, or not open
                return
            retriever, store = self._retriever, self._opened_store
            self._retriever, self._opened_store = None, None
        try:
            retriever.close()
            if self._embedder is None and retriever.embedder is not None:
                close_stack(retriever.embedder)
        finally:
            if store is not None:
                store.close()


# -- hits as the frameworks show them ------------------------------------------------------

RESERVED_KEYS = ("doc_id", "chunk_id", "start", "end")
"""Metadata keys the adapters set on every hit; they replace stored metadata of the same name."""


def hit_id(hit: Hit) -> str:
    """A hit's id in a framework: its chunk's id, or its document's when it has no chunk."""
    return hit.chunk_id or hit.doc_id


def hit_metadata(hit: Hit) -> dict[str, Any]:
    """The stored metadata of a hit's document, with its ``doc_id``, ``chunk_id``, ``start`` and ``end``."""
    return {**hit.metadata, "doc_id": hit.doc_id, "chunk_id": hit.chunk_id, "start": hit.start, "end": hit.end}
