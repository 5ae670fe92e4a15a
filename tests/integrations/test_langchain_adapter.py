"""The LangChain adapters with the real langchain-core: vectors equal the library's, the cache
holds, prefixes follow the kind, and the retriever returns the Retriever's hits as Documents."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from _integration_data import PREFIXED, QUERY, TEXTS
from langchain_core.documents import Document

from embedtune.errors import ConfigError
from embedtune.factory import build_embedder
from embedtune.integrations.langchain import EmbedtuneEmbeddings, EmbedtuneRetriever
from embedtune.stores.embedded import EmbeddedStore


def test_embeddings_equal_the_library_and_a_second_call_embeds_nothing(counted_minilm):
    embeddings = EmbedtuneEmbeddings(embedder=counted_minilm.stack)
    documents = embeddings.embed_documents(TEXTS)
    query = embeddings.embed_query(QUERY)
    reference = counted_minilm.reference
    np.testing.assert_allclose(documents, reference.embed(TEXTS, "document"), atol=1e-6)
    np.testing.assert_allclose([query], reference.embed([QUERY], "query"), atol=1e-6)
    assert counted_minilm.counter.texts == dict.fromkeys([*TEXTS, QUERY], 1)

    calls = counted_minilm.counter.calls
    assert embeddings.embed_documents(TEXTS) == documents and embeddings.embed_query(QUERY) == query
    assert counted_minilm.counter.calls == calls  # all from the cache
    embeddings.close()  # handed in: stays open
    assert embeddings.embed_query(QUERY) == query


def test_queries_and_documents_take_their_own_prefix_also_async_and_from_threads(tmp_path, open_files):
    text = "mitochondria make energy"
    library = build_embedder(PREFIXED)
    as_query, as_document = library.embed([text], "query")[0], library.embed([text], "document")[0]
    assert not np.allclose(as_query, as_document)

    embeddings = EmbedtuneEmbeddings(PREFIXED, cache=tmp_path / "cache.sqlite")  # built here, with a cache
    np.testing.assert_allclose(embeddings.embed_query(text), as_query, atol=1e-6)
    np.testing.assert_allclose(embeddings.embed_documents([text])[0], as_document, atol=1e-6)

    async def both() -> tuple[list[float], list[list[float]]]:
        return await embeddings.aembed_query(text), await embeddings.aembed_documents([text, "other"])

    query, documents = asyncio.run(both())  # another thread than the sync calls': the cache follows
    np.testing.assert_allclose(query, as_query, atol=1e-6)
    np.testing.assert_allclose(documents[0], as_document, atol=1e-6)

    assert open_files(tmp_path)  # the cache file
    embeddings.close()
    assert not open_files(tmp_path)


def test_a_configured_name_and_a_missing_model_choice():
    embeddings = EmbedtuneEmbeddings("e5ish", config={"e5ish": PREFIXED})
    assert embeddings.embedder.fingerprint("query") != embeddings.embedder.fingerprint("document")
    with pytest.raises(ConfigError, match="either a model"):
        EmbedtuneEmbeddings()


def test_retriever_returns_the_retrievers_hits_as_documents_with_the_filter(minilm_store, open_files):
    where = {"topic": "biology"}
    retriever = EmbedtuneRetriever(minilm_store.path, k=3, where=where, embedder=minilm_store.embedder)
    found = retriever.invoke(QUERY)
    expected = minilm_store.expected(QUERY, 3, where)
    assert [d.id for d in found] == [h.chunk_id for h in expected] and len(found) == 3
    for document, hit in zip(found, expected):
        assert isinstance(document, Document)
        assert document.page_content == hit.text == _text_of(minilm_store, hit)[hit.start : hit.end]
        score = document.metadata.pop("score")
        assert score == pytest.approx(hit.score, abs=1e-6)
        assert document.metadata == {
            **hit.metadata,
            "doc_id": hit.doc_id,
            "chunk_id": hit.chunk_id,
            "start": hit.start,
            "end": hit.end,
        }
        assert document.metadata["topic"] == "biology"

    retriever.where, retriever.k = None, 5  # fields, changed between calls
    unfiltered = asyncio.run(retriever.ainvoke("why does bread rise?"))
    assert [d.id for d in unfiltered] == [h.chunk_id for h in minilm_store.expected("why does bread rise?", 5)]
    assert unfiltered[0].metadata["topic"] == "cooking"

    assert open_files(minilm_store.path)
    retriever.close()  # the store was opened here from its path
    assert not open_files(minilm_store.path)


def test_retriever_closes_what_it_opened_and_leaves_what_was_handed_in(fake_store, tmp_path, open_files):
    owned = EmbedtuneRetriever(fake_store.path, k=2, cache=tmp_path / "cache.sqlite")  # embedder from the manifest
    queries = ["cells divide", "black hole light"]
    expected = [[h.chunk_id for h in fake_store.expected(q, 2)] for q in queries]
    assert [[d.id for d in found] for found in owned.batch(queries)] == expected  # from LangChain's threads
    assert [d.id for d in asyncio.run(owned.ainvoke(queries[0]))] == expected[0]
    assert open_files(tmp_path / "cache.sqlite")
    owned.close()
    assert not open_files(tmp_path)

    with EmbeddedStore(fake_store.path) as store:
        lent = EmbedtuneRetriever(store, k=2, embedder=fake_store.embedder)
        assert [d.id for d in lent.invoke(queries[0])] == expected[0]
        lent.close()
        assert open_files(fake_store.path)  # a store handed in stays open
        assert store.count() == len(TEXTS)


def _text_of(built, hit) -> str:
    with EmbeddedStore(built.path) as store:
        return store.read_records([hit.doc_id])[0].text
