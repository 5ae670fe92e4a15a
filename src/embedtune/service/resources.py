"""What one service serves: an embedding stack, and with a store, the store and its strategy.

A store that holds an ensemble is served with its members opened (:func:`embedtune.ensemble.open_ensemble`:
one loaded model per distinct member embedder); ``/v1/embeddings`` then serves the model of its
first member that has one (a dense or hybrid member), and refuses in one line when none has.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..embedder import Embedder
from ..factory import EmbedderSpec
from ..stores.base import Store
from ..strategy import Strategy

if TYPE_CHECKING:
    from ..ensemble import Ensemble, EnsembleRetriever
    from ..sparse.encoder import SparseEncoder

__all__ = ["Served", "load_served"]


@dataclass(frozen=True, kw_only=True)
class Served:
    """``embedder`` is the library's full stack (length policy, cache, batching, provider), or
    ``None`` for a BM25 store; ``strategy`` and ``store`` are set together, by :func:`load_served`
    from a store's manifest. ``sparse`` is the encoder of a sparse strategy's model. For a store
    holding an ensemble, ``strategy`` is the :class:`~embedtune.ensemble.Ensemble`, ``ensemble``
    its members opened, and ``embedder`` the first member's model (``None`` when no member has one)."""

    embedder: Embedder | None
    strategy: Strategy | Ensemble | None = None
    store: Store | None = None
    sparse: SparseEncoder | None = None
    ensemble: EnsembleRetriever | None = None

    def __post_init__(self) -> None:
        if (self.strategy is None) != (self.store is None):
            raise ValueError("a strategy is served with its store: give both or neither")
        if self.embedder is None and self.store is None:
            raise ValueError("nothing to serve: give an embedder, a store, or both")

    @property
    def model(self) -> str | None:
        return self.embedder.name if self.embedder is not None else None


def load_served(
    *,
    spec: EmbedderSpec | None = None,
    store_uri: str | None = None,
    cache: str | os.PathLike[str] | None = None,
) -> Served:
    """Open what ``embedtune serve`` serves: a store (its strategy and model from its manifest,
    the model checked against the vectors', as ``search`` does) or, without one, the model of
    ``spec``. Model weights load on first use, not here."""
    from ..factory import build_embedder

    if store_uri is None:
        if spec is None:
            raise ValueError("give an embedder spec or a store")
        return Served(embedder=build_embedder(spec, cache=cache))
    from ..indexer import open_retriever
    from ..retriever import Retriever
    from ..stores import open_store

    store = open_store(store_uri)
    try:
        retriever = open_retriever(store, cache=cache)
    except BaseException:
        store.close()
        raise
    if not isinstance(retriever, Retriever):  # an ensemble: its members' stores and models, opened
        first = next((member.embedder for member in retriever.members if member.embedder is not None), None)
        return Served(embedder=first, strategy=retriever.strategy, store=store, ensemble=retriever)
    return Served(embedder=retriever.embedder, strategy=retriever.strategy, store=store, sparse=retriever.sparse)
