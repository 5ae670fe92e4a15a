"""The LlamaIndex adapters with the real llama-index-core: vectors equal the library's, the cache
holds, prefixes follow the kind, and the retriever returns the Retriever's hits as nodes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from _integration_data import PREFIXED, QUERY, TEXTS
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters

from embedtune.errors import InputError
from embedtune.factory import build_embedder
from embedtune.integrations.llamaindex import EmbedtuneEmbedding, EmbedtuneRetriever


def test_embedding_equals_the_library_and_a_second_call_embeds_nothing(counted_minilm):
    model = EmbedtuneEmbedding(embedder=counted_minilm.stack)
    assert model.model_name == "local:all-MiniLM-L6-v2"
    documents = model.get_text_embedding_batch(TEXTS)
    query = model.get_query_embedding(QUERY)
    reference = counted_minilm.reference
    np.testing.assert_allclose(documents, reference.embed(TEXTS, "document"), atol=1e-6)
    np.testing.assert_allclose([query], reference.embed([QUERY], "query"), atol=1e-6)
    assert counted_minilm.counter.calls == 2  # the whole batch in one call into the stack, then the query

    assert model.get_text_embedding(TEXTS[3]) == documents[3]
    assert model.get_text_embedding_batch(TEXTS[:5]) == documents[:5] and model.get_query_embedding(QUERY) == query
    assert counted_minilm.counter.calls == 2  # all from the cache


def test_queries_and_documents_take_their_own_prefix_also_async(tmp_path, open_files):
    text = "mitochondria make energy"
    library = build_embedder(PREFIXED)
    as_query, as_document = library.embed([text], "query")[0], library.embed([text], "document")[0]
    assert not np.allclose(as_query, as_document)

    model = EmbedtuneEmbedding(PREFIXED, cache=tmp_path / "cache.sqlite")
    np.testing.assert_allclose(model.get_query_embedding(text), as_query, atol=1e-6)
    np.testing.assert_allclose(model.get_text_embedding(text), as_document, atol=1e-6)

    async def all_async() -> list:
        return [
            await model.aget_query_embedding(text),
            await model.aget_text_embedding(text),
            (await model.aget_text_embedding_batch([text, "another text"]))[0],
        ]

    query, document, batched = asyncio.run(all_async())
    np.testing.assert_allclose(query, as_query, atol=1e-6)
    np.testing.assert_allclose(document, as_document, atol=1e-6)
    np.testing.assert_allclose(batched, as_document, atol=1e-6)

    assert open_files(tmp_path)
    model.close()
    assert not open_files(tmp_path)


def test_retriever_returns_the_retrievers_hits_as_nodes_with_the_filter(minilm_store, open_files):
    where = {"topic": ["biology", "physics"]}
    retriever = EmbedtuneRetriever(minilm_store.path, similarity_top_k=4, where=where, embedder=minilm_store.embedder)
    found = retriever.retrieve(QUERY)
    expected = minilm_store.expected(QUERY, 4, where)
    assert len(found) == 4 and [n.node.node_id for n in found] == [h.chunk_id for h in expected]
    for result, hit in zip(found, expected):
        assert isinstance(result, NodeWithScore) and isinstance(result.node, TextNode)
        node = result.node
        assert result.score == pytest.approx(hit.score, abs=1e-6)
        assert node.text == hit.text and (node.start_char_idx, node.end_char_idx) == (hit.start, hit.end)
        assert node.ref_doc_id == hit.doc_id
        assert node.metadata == {
            **hit.metadata,
            "doc_id": hit.doc_id,
            "chunk_id": hit.chunk_id,
            "start": hit.start,
            "end": hit.end,
        }
        assert node.metadata["topic"] in ("biology", "physics")
        shown = node.get_content(metadata_mode=MetadataMode.LLM)  # the stored metadata, not the bookkeeping
        assert f"topic: {hit.metadata['topic']}" in shown and "chunk_id" not in shown

    retriever.where = MetadataFilters(filters=[MetadataFilter(key="topic", value="cooking")])
    cooking = asyncio.run(retriever.aretrieve("why does bread rise?"))
    expected = minilm_store.expected("why does bread rise?", 4, {"topic": "cooking"})
    assert [n.node.node_id for n in cooking] == [h.chunk_id for h in expected]
    assert {n.node.metadata["topic"] for n in cooking} == {"cooking"}

    retriever.close()
    assert not open_files(minilm_store.path)


def test_metadata_filters_embedtune_cannot_apply_are_refused(fake_store):
    retriever = EmbedtuneRetriever(fake_store.path, embedder=fake_store.embedder)
    both = [
        MetadataFilter(key="topic", value="cooking"),
        MetadataFilter(key="n", value=[6, 7], operator=FilterOperator.IN),
    ]
    retriever.where = MetadataFilters(filters=both)
    assert {n.node.metadata["n"] for n in retriever.retrieve("meat")} == {6, 7}
    for refused in (
        MetadataFilters(filters=both, condition=FilterCondition.OR),
        MetadataFilters(filters=[MetadataFilter(key="n", value=3, operator=FilterOperator.GT)]),
    ):
        retriever.where = refused
        with pytest.raises(InputError, match="embedtune filters"):
            retriever.retrieve("meat")
    retriever.close()
