"""Query generation from a corpus: title, span, chat (over real HTTP), de-duplication, consistency filter."""

from __future__ import annotations

import re

import pytest

from embedtune.adaptation.generate import (
    ChatConfig,
    ChatQueryGenerator,
    dedupe,
    filter_consistent,
    generate_pairs,
    generated_collection,
)
from embedtune.adaptation.pairs import Pair
from embedtune.engine import CachingEmbedder, CountingEmbedder
from embedtune.engine.http import RetryPolicy
from embedtune.errors import AuthenticationError, ConfigError, InputError
from embedtune.evaluation import Document, load_beir
from embedtune.testing import FaultConfig, FaultServer

WORDS = re.compile(r"\w+")


@pytest.fixture(scope="module")
def scifact_slice(shared_datasets):
    corpus = load_beir(shared_datasets / "scifact", splits=["test"]).corpus
    return {doc_id: corpus[doc_id] for doc_id in sorted(corpus)[:150]}


@pytest.fixture(scope="module")
def cranfield(shared_datasets):
    return load_beir(shared_datasets / "cranfield").corpus


def test_title_queries_find_the_body(scifact_slice):
    pairs = generate_pairs(scifact_slice, "title")
    assert 0 < len(pairs) <= len(scifact_slice)
    for pair in pairs:
        doc = scifact_slice[pair.positive_id]
        assert pair.query == " ".join(doc.title.split())
        assert pair.positive == " ".join(doc.text.split())
        assert pair.source == "title" and pair.negatives == ()
        assert len(WORDS.findall(pair.query)) >= 3


def test_title_is_cut_from_a_body_that_repeats_it(cranfield):
    doc = cranfield["1"]  # Cranfield's text starts with its title
    assert doc.text.startswith(doc.title)
    (pair,) = generate_pairs({"1": doc}, "title")
    assert not pair.positive.lower().startswith(pair.query.lower())
    assert pair.positive and pair.positive in " ".join(doc.text.split())


def test_short_and_empty_titles_are_skipped():
    corpus = {
        "a": Document(title="", text="A body with words."),
        "b": Document(title="Two words", text="A body with words."),
        "c": Document(title="Three real words", text=""),
        "d": Document(title="Magnetic fields of pulsars", text="Pulsars spin fast."),
    }
    assert [p.positive_id for p in generate_pairs(corpus, "title")] == ["d"]


def test_span_query_is_a_sentence_left_out_of_its_positive(scifact_slice):
    pairs = generate_pairs(scifact_slice, "span", seed=3)
    assert len(pairs) > 100
    for pair in pairs[:50]:
        doc = scifact_slice[pair.positive_id]
        flat = " ".join(doc.text.split())
        assert pair.query in flat  # a copy of the document's words...
        assert pair.query not in pair.positive  # ...that the positive no longer holds
        assert len(WORDS.findall(pair.query)) >= 6
        assert pair.positive.startswith(doc.title.strip())


def test_span_is_seeded_and_per_doc_gives_distinct_sentences(scifact_slice):
    first = generate_pairs(scifact_slice, "span", seed=1, limit=40)
    assert first == generate_pairs(scifact_slice, "span", seed=1, limit=40)
    assert first != generate_pairs(scifact_slice, "span", seed=2, limit=40)
    two = generate_pairs(scifact_slice, "span", per_doc=2, seed=1)
    by_doc: dict[str, list[str]] = {}
    for pair in two:
        by_doc.setdefault(pair.positive_id, []).append(pair.query)
    assert max(len(q) for q in by_doc.values()) == 2
    assert all(len(set(q)) == len(q) for q in by_doc.values())
    assert len(generate_pairs(scifact_slice, "span", limit=7)) == 7


def test_dedupe_keeps_the_first_of_each_normalised_query():
    pairs = [
        Pair(query="Magnetic fields?", positive="x", positive_id="1"),
        Pair(query="magnetic   FIELDS", positive="y", positive_id="2"),
        Pair(query="other query", positive="z", positive_id="3"),
        Pair(query="...", positive="w", positive_id="4"),  # no words at all
    ]
    assert [p.positive_id for p in dedupe(pairs)] == ["1", "3"]
    corpus = {
        "1": Document(title="Same title here", text="Body one."),
        "2": Document(title="same title  here", text="Body two."),
    }
    assert len(generate_pairs(corpus, "title")) == 1


def test_unknown_generator_and_missing_chat_are_one_line():
    corpus = {"1": Document(title="A B C", text="d")}
    with pytest.raises(ConfigError, match="unknown query generator 'llm'; use one of title, span, chat"):
        generate_pairs(corpus, "llm")
    with pytest.raises(ConfigError, match="needs a chat endpoint"):
        generate_pairs(corpus, "chat")


# -- the consistency filter ------------------------------------------------------------------------

CORPUS = {
    "mag": Document(title="", text="Pulsars have strong magnetic fields. Their rotation slows over millions of years."),
    "wing": Document(title="", text="Wing lift rises with the angle of attack. Stall follows at high angles."),
    "heat": Document(title="", text="Heat transfer in boundary layers depends on the Prandtl number of the fluid."),
    "cell": Document(title="", text="Stem cells differentiate into neurons when exposed to retinoic acid."),
}


def test_filter_keeps_queries_that_find_their_document(fake):
    pairs = [
        Pair(query="pulsar magnetic fields rotation", positive=CORPUS["mag"].text, positive_id="mag"),
        Pair(query="wing stall angle", positive=CORPUS["wing"].text, positive_id="wing"),
        # Generated from "heat" but about cells: BM25 ranks "cell" first, "heat" not at all.
        Pair(query="stem cells neurons retinoic acid", positive=CORPUS["heat"].text, positive_id="heat"),
    ]
    kept = filter_consistent(pairs, CORPUS, by="bm25", top_k=1)
    assert [p.positive_id for p in kept] == ["mag", "wing"]
    assert [p.positive_id for p in filter_consistent(pairs, CORPUS, by=fake, top_k=1)] == ["mag", "wing"]
    assert len(filter_consistent(pairs, CORPUS, by="bm25", top_k=4)) == 2  # "heat" shares no word at all


def test_filter_ranks_the_positive_not_the_copy_it_came_from():
    # The query is copied from "mag"; the positive is "mag" without it, which is about rotation only.
    pair = Pair(
        query="Pulsars have strong magnetic fields.",
        positive="Their rotation slows over millions of years.",
        positive_id="mag",
    )
    assert filter_consistent([pair], CORPUS, by="bm25", top_k=3) == []
    whole = Pair(query="Pulsars have strong magnetic fields.", positive=CORPUS["mag"].full_text, positive_id="mag")
    assert filter_consistent([whole], CORPUS, by="bm25", top_k=1) == [whole]


def test_filter_refuses_pairs_without_a_corpus_document():
    with pytest.raises(InputError, match="pair 0 names no document of the corpus"):
        filter_consistent([Pair(query="q", positive="p")], CORPUS)


def test_filter_on_scifact_keeps_most_titles_with_bm25_and_minilm(scifact_slice, minilm, tmp_path):
    corpus = {doc_id: scifact_slice[doc_id] for doc_id in list(scifact_slice)[:60]}
    pairs = generate_pairs(corpus, "title", limit=30)
    model = CountingEmbedder(CachingEmbedder(CountingEmbedder(minilm), tmp_path / "cache.sqlite"))
    by_bm25 = filter_consistent(pairs, corpus, by="bm25", top_k=10)
    by_model = filter_consistent(pairs, corpus, by=model, top_k=10)
    assert 0.8 * len(pairs) <= len(by_bm25) <= len(pairs)
    assert 0.8 * len(pairs) <= len(by_model) <= len(pairs)
    strict = filter_consistent(pairs, corpus, by=model, top_k=1)
    assert set(map(id, strict)) <= set(map(id, by_model))
    # The corpus and the positives went to the model once; the second filter took them from the cache.
    assert model.inner.inner.texts.total() == len(corpus) + 2 * len(pairs)


# -- a collection of generated queries -------------------------------------------------------------


def test_generated_collection_has_disjoint_splits_and_no_copies(scifact_slice):
    collection = generated_collection(scifact_slice, "span", queries=20, seed=0)
    assert "generated" in collection.name and "span" in collection.name
    test_queries, test_qrels = collection.split("test")
    train_queries, train_qrels = collection.split("train")
    assert len(test_queries) == 20 and len(train_queries) == 20
    test_docs = {d for judged in test_qrels.values() for d in judged}
    train_docs = {d for judged in train_qrels.values() for d in judged}
    assert not test_docs & train_docs
    for qid, judged in {**test_qrels, **train_qrels}.items():
        (doc_id,) = judged
        assert collection.queries[qid] not in collection.corpus[doc_id].full_text
    assert set(collection.corpus) == set(scifact_slice)
    untouched = set(scifact_slice) - test_docs - train_docs
    assert all(collection.corpus[d] == scifact_slice[d] for d in untouched)


# -- chat: doc2query over a real loopback server ---------------------------------------------------


def _expected(text: str, n: int) -> list[str]:
    words = [w for w in WORDS.findall(text) if len(w) >= 4]
    return [" ".join(words[i * 5 : i * 5 + 5]) for i in range(n)]


def test_chat_generates_queries_through_the_endpoint(monkeypatch):
    monkeypatch.setenv("CHAT_TEST_KEY", "sk-secret-123")
    with FaultServer(FaultConfig(api_key="sk-secret-123", chat_queries=3)) as server:
        config = ChatConfig(model="doc2query", base_url=server.url + "/v1", api_key_env="CHAT_TEST_KEY")
        pairs = generate_pairs(CORPUS, "chat", per_doc=2, chat=config)
        stats = server.stats
    assert stats.requests[("/v1/chat/completions", 200)] == len(CORPUS)
    assert len(pairs) == 2 * len(CORPUS)
    for doc_id, doc in CORPUS.items():
        mine = [p for p in pairs if p.positive_id == doc_id]
        assert [p.query for p in mine] == _expected(doc.full_text, 2)  # two of the three lines
        assert all(p.positive == doc.full_text and p.source == "chat" for p in mine)


def test_chat_retries_throttling_and_server_errors():
    with FaultServer(FaultConfig(seed=4, rate_429=0.4, rate_500=0.2, retry_after_s=0.01)) as server:
        generator = ChatQueryGenerator(
            ChatConfig(model="m", base_url=server.url + "/v1", concurrency=2),
            retry=RetryPolicy(max_attempts=20, base_delay=0.001, max_delay=0.01),
        )
        try:
            pairs = generate_pairs(CORPUS, "chat", chat=generator)
        finally:
            generator.close()
        stats = server.stats
    assert stats.faults["429"] + stats.faults["500"] > 0
    assert [p.query for p in sorted(pairs, key=lambda p: p.positive_id)] == [
        _expected(CORPUS[d].full_text, 1)[0] for d in sorted(CORPUS)
    ]


def test_chat_refused_key_is_one_line_without_the_key(monkeypatch):
    monkeypatch.setenv("CHAT_TEST_KEY", "sk-wrong-456")
    with FaultServer(FaultConfig(api_key="sk-right")) as server:
        config = ChatConfig(model="m", base_url=server.url + "/v1", api_key_env="CHAT_TEST_KEY")
        with pytest.raises(AuthenticationError) as caught:
            generate_pairs(CORPUS, "chat", chat=config)
    message = str(caught.value)
    assert "\n" not in message and "sk-wrong-456" not in message and "sk-right" not in message
    monkeypatch.delenv("CHAT_TEST_KEY")
    with pytest.raises(ConfigError, match="set CHAT_TEST_KEY"):
        ChatQueryGenerator(config)


def test_eval_on_generated_queries_says_so(shared_datasets, home):
    from typer.testing import CliRunner

    from embedtune import cli

    args = [
        "eval",
        str(shared_datasets / "adi"),
        "--model",
        "fake:hash-256",
        "--bm25",
        "--hybrid",
        "convex",
        "--generate-queries",
        "title",
        "--queries",
        "10",
    ]
    result = CliRunner().invoke(cli.app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "adi (queries generated by title): test split, 10 queries" in result.output
    assert "the queries are generated, not judged by people: 'title' generator" in result.output
    assert "convex" in result.output  # tuned on the generated train split
    refused = CliRunner().invoke(cli.app, [*args[:-4], "--generate-queries", "llm"])
    assert refused.exit_code != 0 and "use title or span" in str(refused.exception or refused.output)


def test_span_cuts_unpunctuated_text_into_runs_of_words():
    text = " ".join(f"w{i}" for i in range(23))  # NPL-like: lower case, no sentence marks
    pairs = generate_pairs({"d": Document(title="", text=text)}, "span", per_doc=2, seed=0)
    assert len(pairs) == 2
    for pair in pairs:
        assert len(pair.query.split()) in (10, 13) and pair.query not in pair.positive
        assert sorted(pair.query.split() + pair.positive.split()) == sorted(text.split())
    one_sentence = "A single sentence with enough words in it to count."
    assert generate_pairs({"d": Document(title="", text=one_sentence)}, "span", seed=0) == []
