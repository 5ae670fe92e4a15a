"""LangChain adapters: an ``Embeddings`` and a ``BaseRetriever`` over embedtune's own stack.

Needs ``pip install "embedtune[langchain]"`` (langchain-core). Queries are embedded as queries and
documents as documents, so a model's prefixes hold, and every vector goes through the embedding
cache when one is given::

    from embedtune.integrations.langchain import EmbedtuneEmbeddings, EmbedtuneRetriever

    embeddings = EmbedtuneEmbeddings("local:all-MiniLM-L6-v2", cache="embeddings.sqlite")
    vectors = embeddings.embed_documents(["A first passage.", "A second one."])
    query = embeddings.embed_query("which passage comes first?")

    retriever = EmbedtuneRetriever("embedtune-index", k=5, where={"lang": "en"})
    for document in retriever.invoke("how do cells divide?"):
        print(document.metadata["doc_id"], document.metadata["score"], document.page_content[:80])
    retriever.close()

``EmbedtuneRetriever`` answers with the strategy the store was built with (``embedtune index``):
each ``Document`` is the best chunk of one found document, its ``page_content`` the chunk's text,
its ``id`` the chunk's id, and its ``metadata`` the document's stored metadata with ``doc_id``,
``score``, ``chunk_id``, ``start`` and ``end`` (character offsets of the chunk in the document)
set over keys of the same name. ``k`` and ``where`` (a metadata filter: every key must equal its
value, or one of the values of a list) are fields, and may be changed between calls.
"""

from __future__ import annotations

from typing import Any

from ..errors import require

require("langchain_core", "langchain")

from langchain_core.callbacks import (  # noqa: E402 (after the check that names the extra)
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from pydantic import Field, PrivateAttr  # noqa: E402

from ..embedder import Embedder  # noqa: E402
from ..ensemble import EnsembleRetriever  # noqa: E402
from ..factory import EmbedderSpec  # noqa: E402
from ..retriever import Hit, Retriever  # noqa: E402
from ..stores.base import Store  # noqa: E402
from ._common import ConfigLike, EmbeddingStack, PathLike, StoreSearch, hit_id, hit_metadata  # noqa: E402

__all__ = ["EmbedtuneEmbeddings", "EmbedtuneRetriever"]


class EmbedtuneEmbeddings(Embeddings):
    """LangChain ``Embeddings`` backed by an embedtune stack.

    ``EmbedtuneEmbeddings(model, *, config=None, cache=None)`` builds the stack for ``model`` (a
    URI, a name configured in ``config``, or an ``EmbedderSpec``) with its vectors cached in
    ``cache`` when a path is given, and closes it in :meth:`close`;
    ``EmbedtuneEmbeddings(embedder=stack)`` uses a stack built elsewhere and leaves it open.
    The stack is built at once, so a model that cannot load fails here.
    """

    def __init__(
        self,
        model: str | EmbedderSpec | None = None,
        *,
        embedder: Embedder | None = None,
        config: ConfigLike | None = None,
        cache: PathLike | None = None,
    ) -> None:
        self._stack = EmbeddingStack(model, embedder=embedder, config=config, cache=cache)
        self._stack.open()

    @property
    def embedder(self) -> Embedder:
        """The embedtune stack the vectors come from."""
        return self._stack.open()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, embedded as documents (the model's document prefix, if any)."""
        return self._stack.embed(texts, "document")

    def embed_query(self, text: str) -> list[float]:
        """The vector of ``text`` embedded as a query (the model's query prefix, if any)."""
        return self._stack.embed([text], "query")[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """As :meth:`embed_documents`, on another thread while the event loop goes on."""
        return await self._stack.aembed(texts, "document")

    async def aembed_query(self, text: str) -> list[float]:
        """As :meth:`embed_query`, on another thread while the event loop goes on."""
        return (await self._stack.aembed([text], "query"))[0]

    def close(self) -> None:
        """Close the stack if it was built here (its cache file, an HTTP client); a later call reopens it."""
        self._stack.close()

    def __enter__(self) -> EmbedtuneEmbeddings:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EmbedtuneRetriever(BaseRetriever):
    """A LangChain retriever over a store built by ``embedtune index``.

    ``EmbedtuneRetriever(store, *, k=10, where=None, cache=None, embedder=None)``: ``store`` is a
    folder, a ``postgresql://`` URI (opened here and closed by :meth:`close`) or a ``Store``
    (left open); the query embedder is built from the store's manifest, with ``cache`` as its
    embedding cache, unless ``embedder`` is given. ``EmbedtuneRetriever(retriever=r, k=...)``
    uses an embedtune ``Retriever`` as it is. The store's manifest is read at once.
    """

    k: int = Field(default=10, ge=1)
    """How many documents each query returns."""
    where: dict[str, Any] | None = None
    """A metadata filter: every key must equal its value (a list value: any of its items)."""

    _search: StoreSearch = PrivateAttr()

    def __init__(
        self,
        store: PathLike | Store | None = None,
        *,
        retriever: Retriever | None = None,
        cache: PathLike | None = None,
        embedder: Embedder | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(**fields)
        self._search = StoreSearch(store, retriever=retriever, cache=cache, embedder=embedder)
        self._search.open()

    @property
    def retriever(self) -> Retriever | EnsembleRetriever:
        """The embedtune ``Retriever`` that answers (an ``EnsembleRetriever`` for an ensemble's store)."""
        return self._search.open()

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [_document(hit) for hit in self._search.search(query, self.k, self.where)]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [_document(hit) for hit in await self._search.asearch(query, self.k, self.where)]

    def close(self) -> None:
        """Release what was opened here (a store opened from a URI, an embedder built from its manifest)."""
        self._search.close()


def _document(hit: Hit) -> Document:
    return Document(id=hit_id(hit), page_content=hit.text, metadata={**hit_metadata(hit), "score": hit.score})
