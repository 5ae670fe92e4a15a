"""LlamaIndex adapters: a ``BaseEmbedding`` and a ``BaseRetriever`` over embedtune's own stack.

Needs ``pip install "embedtune[llamaindex]"`` (llama-index-core). Queries are embedded as queries
and texts as documents, so a model's prefixes hold, and every vector goes through the embedding
cache when one is given::

    from embedtune.integrations.llamaindex import EmbedtuneEmbedding, EmbedtuneRetriever

    embed_model = EmbedtuneEmbedding("local:all-MiniLM-L6-v2", cache="embeddings.sqlite")
    vectors = embed_model.get_text_embedding_batch(["A first passage.", "A second one."])
    query = embed_model.get_query_embedding("which passage comes first?")

    retriever = EmbedtuneRetriever("embedtune-index", similarity_top_k=5, where={"lang": "en"})
    for found in retriever.retrieve("how do cells divide?"):
        print(found.node.ref_doc_id, found.score, found.node.text[:80])
    retriever.close()

``EmbedtuneRetriever`` answers with the strategy the store was built with (``embedtune index``):
each ``NodeWithScore`` holds the best chunk of one found document as a ``TextNode`` whose id is
the chunk's id, whose text is the chunk's text, whose ``start_char_idx`` and ``end_char_idx`` are
its offsets in the document, whose source (``ref_doc_id``) is the document, and whose metadata is
the document's stored metadata with ``doc_id``, ``chunk_id``, ``start`` and ``end`` set over keys
of the same name (hidden from the LLM and from embedding). ``where`` is a metadata filter: a
mapping (every key must equal its value, or one of the values of a list) or ``MetadataFilters``
with ``==`` and ``in`` filters joined by AND.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import require

require("llama_index.core", "llamaindex")

from llama_index.core.base.base_retriever import BaseRetriever  # noqa: E402 (after the check that names the extra)
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.callbacks import CallbackManager  # noqa: E402
from llama_index.core.schema import NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilters  # noqa: E402
from pydantic import PrivateAttr  # noqa: E402

from ..embedder import Embedder  # noqa: E402
from ..ensemble import EnsembleRetriever  # noqa: E402
from ..errors import InputError  # noqa: E402
from ..factory import EmbedderSpec  # noqa: E402
from ..retriever import Hit, Retriever  # noqa: E402
from ..stores.base import Filter, Store  # noqa: E402
from ._common import (  # noqa: E402
    RESERVED_KEYS,
    ConfigLike,
    EmbeddingStack,
    PathLike,
    StoreSearch,
    hit_id,
    hit_metadata,
)

__all__ = ["EmbedtuneEmbedding", "EmbedtuneRetriever", "plain_filter"]

# LlamaIndex cuts a batch into slices of ``embed_batch_size`` before it reaches the stack; the
# stack's own batcher fills each model call (sorted by length), so the slices are made large.
_BATCH = 2048


class EmbedtuneEmbedding(BaseEmbedding):
    """A LlamaIndex embedding model backed by an embedtune stack.

    ``EmbedtuneEmbedding(model, *, config=None, cache=None)`` builds the stack for ``model`` (a
    URI, a name configured in ``config``, or an ``EmbedderSpec``) with its vectors cached in
    ``cache`` when a path is given, and closes it in :meth:`close`;
    ``EmbedtuneEmbedding(embedder=stack)`` uses a stack built elsewhere and leaves it open. Other
    keyword arguments (``embed_batch_size``, ``callback_manager``) go to ``BaseEmbedding``.
    ``model_name`` is the model's URI. The stack is built at once.
    """

    _stack: EmbeddingStack = PrivateAttr()

    def __init__(
        self,
        model: str | EmbedderSpec | None = None,
        *,
        embedder: Embedder | None = None,
        config: ConfigLike | None = None,
        cache: PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        stack = EmbeddingStack(model, embedder=embedder, config=config, cache=cache)
        kwargs.setdefault("embed_batch_size", _BATCH)
        super().__init__(model_name=stack.name, **kwargs)
        stack.open()
        self._stack = stack

    @classmethod
    def class_name(cls) -> str:
        return "EmbedtuneEmbedding"

    @property
    def embedder(self) -> Embedder:
        """The embedtune stack the vectors come from."""
        return self._stack.open()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._stack.embed([query], "query")[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return (await self._stack.aembed([query], "query"))[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._stack.embed([text], "document")[0]

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._stack.aembed([text], "document"))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._stack.embed(texts, "document")

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await self._stack.aembed(texts, "document")

    def close(self) -> None:
        """Close the stack if it was built here (its cache file, an HTTP client); a later call reopens it."""
        self._stack.close()


class EmbedtuneRetriever(BaseRetriever):
    """A LlamaIndex retriever over a store built by ``embedtune index``.

    ``store`` is a folder, a ``postgresql://`` URI (opened here and closed by :meth:`close`) or a
    ``Store`` (left open); the query embedder is built from the store's manifest, with ``cache``
    as its embedding cache, unless ``embedder`` is given. ``retriever=`` uses an embedtune
    ``Retriever`` as it is. ``similarity_top_k`` and ``where`` may be changed between calls.
    The store's manifest is read at once.
    """

    def __init__(
        self,
        store: PathLike | Store | None = None,
        *,
        retriever: Retriever | None = None,
        cache: PathLike | None = None,
        embedder: Embedder | None = None,
        similarity_top_k: int = 10,
        where: Filter | MetadataFilters | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        self.similarity_top_k = similarity_top_k
        self.where = where
        self._search = StoreSearch(store, retriever=retriever, cache=cache, embedder=embedder)
        self._search.open()

    @property
    def retriever(self) -> Retriever | EnsembleRetriever:
        """The embedtune ``Retriever`` that answers (an ``EnsembleRetriever`` for an ensemble's store)."""
        return self._search.open()

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self._search.search(query_bundle.query_str, self.similarity_top_k, plain_filter(self.where))
        return [_node(hit) for hit in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = await self._search.asearch(query_bundle.query_str, self.similarity_top_k, plain_filter(self.where))
        return [_node(hit) for hit in hits]

    def close(self) -> None:
        """Release what was opened here (a store opened from a URI, an embedder built from its manifest)."""
        self._search.close()


def plain_filter(where: Filter | MetadataFilters | None) -> Filter | None:
    """embedtune's filter (key -> value, or key -> list of values) for ``where``.

    ``MetadataFilters`` translate when every filter is ``==`` or ``in`` and they are joined by AND
    (each key once); anything else raises ``InputError``, as embedtune's stores cannot apply it.
    """
    if where is None or isinstance(where, Mapping):
        return where
    condition = where.condition or FilterCondition.AND
    if condition is FilterCondition.NOT or (condition is FilterCondition.OR and len(where.filters) > 1):
        raise InputError(f"embedtune filters join conditions by AND only, not {condition.value}")
    plain: dict[str, Any] = {}
    for item in where.filters:
        if isinstance(item, MetadataFilters):
            raise InputError("embedtune filters cannot nest MetadataFilters; give one flat list of filters")
        if item.key in plain:
            raise InputError(f"metadata filter key {item.key!r} appears twice; give it once (a list for any of)")
        if item.operator is FilterOperator.EQ:
            plain[item.key] = item.value
        elif item.operator is FilterOperator.IN and isinstance(item.value, list):
            plain[item.key] = list(item.value)
        else:
            raise InputError(
                f"metadata filter on {item.key!r}: embedtune filters support == and in, not {item.operator.value}"
            )
    return plain


def _node(hit: Hit) -> NodeWithScore:
    node = TextNode(
        id_=hit_id(hit),
        text=hit.text,
        metadata=hit_metadata(hit),
        start_char_idx=hit.start,
        end_char_idx=hit.end,
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=hit.doc_id)},
        excluded_embed_metadata_keys=list(RESERVED_KEYS),
        excluded_llm_metadata_keys=list(RESERVED_KEYS),
    )
    return NodeWithScore(node=node, score=hit.score)
