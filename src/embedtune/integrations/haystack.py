"""Haystack components over embedtune's own stack: a text embedder, a document embedder, a retriever.

Needs ``pip install "embedtune[haystack]"`` (haystack-ai 2.x or later). The text embedder embeds
queries and the document embedder documents, so a model's prefixes hold, and every vector goes
through the embedding cache when one is given::

    from haystack import Document
    from embedtune.integrations.haystack import EmbedtuneDocumentEmbedder, EmbedtuneRetriever, EmbedtuneTextEmbedder

    docs = EmbedtuneDocumentEmbedder("local:all-MiniLM-L6-v2", cache="embeddings.sqlite").run(
        [Document(content="A first passage."), Document(content="A second one.")]
    )["documents"]
    query = EmbedtuneTextEmbedder("local:all-MiniLM-L6-v2", cache="embeddings.sqlite").run("which one?")["embedding"]

    retriever = EmbedtuneRetriever("embedtune-index", top_k=5)
    for document in retriever.run("how do cells divide?", filters={"lang": "en"})["documents"]:
        print(document.meta["doc_id"], document.score, document.content[:80])
    retriever.close()

The model or store opens in ``warm_up`` (a pipeline calls it; ``run`` calls it when nobody did),
and ``close`` releases what a component opened (``Pipeline.close`` calls it); an embedder or store
handed in stays open. Components given only text arguments serialise with the pipeline.

``EmbedtuneRetriever`` answers with the strategy the store was built with (``embedtune index``):
each ``Document`` is the best chunk of one found document, its ``id`` the chunk's id, its
``content`` the chunk's text, its ``score`` the document's score, and its ``meta`` the document's
stored metadata with ``doc_id``, ``chunk_id``, ``start`` and ``end`` (the chunk's offsets in the
document) set over keys of the same name. Filters given to ``run`` replace those given to the
component; either embedtune's form (every key must equal its value, or one of a list's values)
or Haystack's, with ``==`` and ``in`` comparisons on ``meta.`` fields joined by ``AND``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..errors import require

require("haystack", "haystack")

from haystack import Document, component  # noqa: E402 (after the check that names the extra)

from ..embedder import Embedder  # noqa: E402
from ..errors import ConfigError, InputError  # noqa: E402
from ..retriever import Hit, Retriever  # noqa: E402
from ..stores.base import Filter, Store  # noqa: E402
from ._common import ConfigLike, EmbeddingStack, PathLike, StoreSearch, hit_id, hit_metadata  # noqa: E402

__all__ = ["EmbedtuneDocumentEmbedder", "EmbedtuneRetriever", "EmbedtuneTextEmbedder", "plain_filter"]


class _StackComponent:
    """What both embedders share: a stack opened in ``warm_up`` and closed in ``close``."""

    def __init__(
        self,
        model: str | None = None,
        *,
        config: ConfigLike | None = None,
        cache: PathLike | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.cache = cache
        self.embedder = embedder
        self._stack = EmbeddingStack(model, embedder=embedder, config=config, cache=cache)

    def warm_up(self) -> None:
        """Build the stack (load the model) now rather than on the first ``run``."""
        self._stack.open()

    def close(self) -> None:
        """Close the stack if it was built here (its cache file, an HTTP client); a later run reopens it."""
        self._stack.close()


@component
class EmbedtuneTextEmbedder(_StackComponent):
    """Embeds one query text with an embedtune stack (the model's query prefix, if any).

    ``EmbedtuneTextEmbedder(model, *, config=None, cache=None)`` builds the stack for ``model``
    (a URI or a name configured in the TOML file ``config``), its vectors cached in ``cache``
    when a path is given; ``EmbedtuneTextEmbedder(embedder=stack)`` uses a stack built elsewhere.
    """

    @component.output_types(embedding=list[float])
    def run(self, text: str) -> dict[str, Any]:
        """Embed ``text`` as a query.

        :param text: The query to embed.
        :returns: ``{"embedding": [float, ...]}``.
        """
        _check_text(text, "embed documents with EmbedtuneDocumentEmbedder")
        return {"embedding": self._stack.embed([text], "query")[0]}

    @component.output_types(embedding=list[float])
    async def run_async(self, text: str) -> dict[str, Any]:
        """As ``run``, on another thread while the event loop goes on."""
        _check_text(text, "embed documents with EmbedtuneDocumentEmbedder")
        return {"embedding": (await self._stack.aembed([text], "query"))[0]}


@component
class EmbedtuneDocumentEmbedder(_StackComponent):
    """Embeds documents' content with an embedtune stack (the model's document prefix, if any).

    Built as :class:`EmbedtuneTextEmbedder` is. Returns copies of the documents with
    ``embedding`` set (a document without content is embedded as the empty text).
    """

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, Any]:
        """Embed each document's content as a document.

        :param documents: The documents to embed.
        :returns: ``{"documents": [...]}``, the documents in order, each with its ``embedding``.
        """
        vectors = self._stack.embed(_contents(documents), "document")
        return {"documents": [dataclasses.replace(d, embedding=v) for d, v in zip(documents, vectors)]}

    @component.output_types(documents=list[Document])
    async def run_async(self, documents: list[Document]) -> dict[str, Any]:
        """As ``run``, on another thread while the event loop goes on."""
        vectors = await self._stack.aembed(_contents(documents), "document")
        return {"documents": [dataclasses.replace(d, embedding=v) for d, v in zip(documents, vectors)]}


@component
class EmbedtuneRetriever:
    """Finds documents for a query in a store built by ``embedtune index``.

    ``EmbedtuneRetriever(store, *, top_k=10, filters=None, cache=None, embedder=None)``:
    ``store`` is a folder, a ``postgresql://`` URI (opened in ``warm_up``, closed by ``close``) or
    a ``Store`` (left open); the query embedder is built from the store's manifest, with
    ``cache`` as its embedding cache, unless ``embedder`` is given. ``retriever=`` uses an
    embedtune ``Retriever`` as it is.
    """

    def __init__(
        self,
        store: str | Store | None = None,
        *,
        top_k: int = 10,
        filters: dict[str, Any] | None = None,
        cache: str | None = None,
        embedder: Embedder | None = None,
        retriever: Retriever | None = None,
    ) -> None:
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, not {top_k}")
        self.store = store
        self.top_k = top_k
        self.filters = filters
        self.cache = cache
        self.embedder = embedder
        self.retriever = retriever
        self._search = StoreSearch(store, retriever=retriever, cache=cache, embedder=embedder)

    def warm_up(self) -> None:
        """Open the store and the query embedder now rather than on the first ``run``."""
        self._search.open()

    @component.output_types(documents=list[Document])
    def run(self, query: str, top_k: int | None = None, filters: dict[str, Any] | None = None) -> dict[str, Any]:
        """The best documents for ``query``, best first.

        :param query: The query text.
        :param top_k: How many documents to return (default: the component's ``top_k``).
        :param filters: A metadata filter replacing the component's ``filters``.
        :returns: ``{"documents": [...]}``, each with ``id``, ``content``, ``meta`` and ``score``.
        """
        _check_text(query, "give one query per run")
        hits = self._search.search(query, self._top_k(top_k), self._filter(filters))
        return {"documents": [_document(hit) for hit in hits]}

    @component.output_types(documents=list[Document])
    async def run_async(
        self, query: str, top_k: int | None = None, filters: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """As ``run``, on another thread while the event loop goes on."""
        _check_text(query, "give one query per run")
        hits = await self._search.asearch(query, self._top_k(top_k), self._filter(filters))
        return {"documents": [_document(hit) for hit in hits]}

    def _top_k(self, top_k: int | None) -> int:
        top_k = self.top_k if top_k is None else top_k
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, not {top_k}")
        return top_k

    def _filter(self, filters: dict[str, Any] | None) -> Filter | None:
        return plain_filter(filters if filters is not None else self.filters)

    def close(self) -> None:
        """Release what was opened here (a store opened from a URI, an embedder built from its manifest)."""
        self._search.close()


def plain_filter(filters: Mapping[str, Any] | None) -> Filter | None:
    """embedtune's filter (key -> value, or key -> list of values) for a Haystack or embedtune filter.

    A Haystack filter (``{"field": "meta.lang", "operator": "==", "value": "en"}``, or
    ``{"operator": "AND", "conditions": [...]}``) translates when it compares ``meta.`` fields
    with ``==`` or ``in`` under ``AND``, each field once; anything else raises ``InputError``.
    Any other mapping is taken as embedtune's form.
    """
    if filters is None:
        return None
    if not _is_haystack_filter(filters):
        return filters
    plain: dict[str, Any] = {}
    _gather(filters, plain)
    return plain


def _is_haystack_filter(filters: Mapping[str, Any]) -> bool:
    return set(filters) in ({"operator", "conditions"}, {"field", "operator", "value"})


def _gather(node: Mapping[str, Any], plain: dict[str, Any]) -> None:
    operator = node.get("operator")
    if "conditions" in node:
        if operator != "AND":
            raise InputError(f"embedtune filters join conditions by AND only, not {operator}")
        for condition in node["conditions"]:
            if not isinstance(condition, Mapping) or not _is_haystack_filter(condition):
                raise InputError(f"not a Haystack filter condition: {condition!r}")
            _gather(condition, plain)
        return
    field = str(node["field"])
    if not field.startswith("meta."):
        raise InputError(f"embedtune filters apply to metadata fields (meta.NAME), not {field!r}")
    key = field.removeprefix("meta.")
    if key in plain:
        raise InputError(f"metadata filter field {field!r} appears twice; give it once (in: for any of)")
    value = node["value"]
    if operator == "==":
        plain[key] = value
    elif operator == "in" and isinstance(value, list):
        plain[key] = list(value)
    else:
        raise InputError(f"metadata filter on {field!r}: embedtune filters support == and in, not {operator}")


def _check_text(text: object, hint: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"expected one text (str), not {type(text).__name__}; {hint}")


def _contents(documents: list[Document]) -> list[str]:
    if not isinstance(documents, list) or not all(isinstance(d, Document) for d in documents):
        raise TypeError("expected a list of haystack Documents; embed one query text with EmbedtuneTextEmbedder")
    return [d.content or "" for d in documents]


def _document(hit: Hit) -> Document:
    return Document(id=hit_id(hit), content=hit.text, meta=hit_metadata(hit), score=hit.score)
