"""The Haystack components with the real haystack-ai: vectors equal the library's, the cache holds,
prefixes follow the kind, and the retriever returns the Retriever's hits as Documents."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from _integration_data import PREFIXED, QUERY, TEXTS
from haystack import Document, Pipeline
from haystack.core.serialization import component_to_dict

from embedtune.errors import InputError
from embedtune.factory import build_embedder
from embedtune.integrations.haystack import (
    EmbedtuneDocumentEmbedder,
    EmbedtuneRetriever,
    EmbedtuneTextEmbedder,
    plain_filter,
)


def test_embedders_equal_the_library_and_a_second_run_embeds_nothing(counted_minilm):
    documents = [Document(id=f"d{i}", content=text, meta={"i": i}) for i, text in enumerate(TEXTS)]
    embedded = EmbedtuneDocumentEmbedder(embedder=counted_minilm.stack).run(documents)["documents"]
    query = EmbedtuneTextEmbedder(embedder=counted_minilm.stack).run(QUERY)["embedding"]
    reference = counted_minilm.reference
    np.testing.assert_allclose([d.embedding for d in embedded], reference.embed(TEXTS, "document"), atol=1e-6)
    np.testing.assert_allclose([query], reference.embed([QUERY], "query"), atol=1e-6)
    assert [(d.id, d.content, d.meta) for d in embedded] == [(d.id, d.content, d.meta) for d in documents]
    assert all(d.embedding is None for d in documents)  # copies, the inputs untouched

    calls = counted_minilm.counter.calls
    pipeline = Pipeline()
    pipeline.add_component("embedder", EmbedtuneDocumentEmbedder(embedder=counted_minilm.stack))
    again = pipeline.run({"embedder": {"documents": documents}})["embedder"]["documents"]
    assert [d.embedding for d in again] == [d.embedding for d in embedded]
    assert counted_minilm.counter.calls == calls  # all from the cache


def test_the_text_embedder_takes_the_query_prefix_and_the_document_embedder_the_document_one(tmp_path, open_files):
    text = "mitochondria make energy"
    library = build_embedder(PREFIXED)
    as_query, as_document = library.embed([text], "query")[0], library.embed([text], "document")[0]
    assert not np.allclose(as_query, as_document)

    config = tmp_path / "embedders.toml"
    config.write_text(
        '[embedders.e5ish]\nmodel = "fake:hash-256"\nquery_prefix = "query: "\ndocument_prefix = "passage: "\n'
    )
    cache = str(tmp_path / "cache.sqlite")
    text_embedder = EmbedtuneTextEmbedder("e5ish", config=str(config), cache=cache)
    document_embedder = EmbedtuneDocumentEmbedder("e5ish", config=str(config), cache=cache)
    assert component_to_dict(text_embedder, "q")["init_parameters"] == {
        "model": "e5ish",
        "config": str(config),
        "cache": cache,
        "embedder": None,
    }

    pipeline = Pipeline()  # run_async calls the components' run_async
    pipeline.add_component("query", text_embedder)
    pipeline.add_component("documents", document_embedder)
    result = asyncio.run(
        pipeline.run_async({"query": {"text": text}, "documents": {"documents": [Document(content=text)]}})
    )
    np.testing.assert_allclose(result["query"]["embedding"], as_query, atol=1e-6)
    np.testing.assert_allclose(result["documents"]["documents"][0].embedding, as_document, atol=1e-6)
    np.testing.assert_allclose(text_embedder.run(text)["embedding"], as_query, atol=1e-6)  # sync, after async

    with pytest.raises(TypeError, match="EmbedtuneDocumentEmbedder"):
        text_embedder.run([text])  # type: ignore[arg-type]
    assert open_files(tmp_path)
    pipeline.close()
    assert not open_files(tmp_path)


def test_retriever_returns_the_retrievers_hits_as_documents_with_the_filter(minilm_store, open_files):
    retriever = EmbedtuneRetriever(
        str(minilm_store.path), top_k=3, filters={"topic": "physics"}, embedder=minilm_store.embedder
    )
    pipeline = Pipeline()
    pipeline.add_component("retriever", retriever)
    found = pipeline.run({"retriever": {"query": "what escapes a black hole?"}})["retriever"]["documents"]
    expected = minilm_store.expected("what escapes a black hole?", 3, {"topic": "physics"})
    assert len(found) == 3 and [d.id for d in found] == [h.chunk_id for h in expected]
    for document, hit in zip(found, expected):
        assert document.content == hit.text and document.score == pytest.approx(hit.score, abs=1e-6)
        assert document.meta == {
            **hit.metadata,
            "doc_id": hit.doc_id,
            "chunk_id": hit.chunk_id,
            "start": hit.start,
            "end": hit.end,
        }
        assert document.meta["topic"] == "physics"

    # Filters given to run replace the component's; Haystack's own form translates.
    haystack_filter = {
        "operator": "AND",
        "conditions": [{"field": "meta.topic", "operator": "in", "value": ["cooking"]}],
    }
    cooking = asyncio.run(retriever.run_async(QUERY, top_k=2, filters=haystack_filter))["documents"]
    assert [d.id for d in cooking] == [h.chunk_id for h in minilm_store.expected(QUERY, 2, {"topic": ["cooking"]})]

    pipeline.close()
    assert not open_files(minilm_store.path)


def test_haystack_filters_translate_or_are_refused():
    comparison = {"field": "meta.topic", "operator": "==", "value": "physics"}
    assert plain_filter(comparison) == {"topic": "physics"}
    assert plain_filter(
        {"operator": "AND", "conditions": [comparison, {"field": "meta.n", "operator": "in", "value": [1, 2]}]}
    ) == {
        "topic": "physics",
        "n": [1, 2],
    }
    assert plain_filter({"topic": "physics"}) == {"topic": "physics"}
    for refused in (
        {"operator": "OR", "conditions": [comparison]},
        {"field": "meta.n", "operator": ">", "value": 1},
        {"field": "content", "operator": "==", "value": "x"},
        {"operator": "AND", "conditions": [comparison, comparison]},
    ):
        with pytest.raises(InputError, match="embedtune filters|appears twice"):
            plain_filter(refused)
