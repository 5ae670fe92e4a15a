"""Pseudo-relevance feedback: Rocchio on a constructed store, RM3 on a tiny corpus, the [feedback] table."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from embedtune.documents import SourceDocument
from embedtune.errors import ConfigError
from embedtune.evaluation import load_beir
from embedtune.evaluation.tuning import feedback_grid, tune_feedback
from embedtune.factory import EmbedderSpec
from embedtune.indexer import index_documents
from embedtune.providers.fake import HashEmbedder
from embedtune.retriever import Retriever
from embedtune.search.bm25 import BM25Index
from embedtune.search.feedback import Feedback, FeedbackMethod, relevance_model, rm3_query, rm3_run, rocchio
from embedtune.search.runs import ranked
from embedtune.stores.embedded import EmbeddedStore
from embedtune.strategy import Mode, Strategy

TEXTS = {
    "d1": "Solar panels convert sunlight into electricity panels",
    "d2": "solar energy storage batteries",
    "d3": "wind turbines electricity",
    "d4": "cooking recipes pasta",
}

# -- Rocchio -------------------------------------------------------------------------------


def test_rocchio_is_the_query_moved_toward_the_mean_of_the_feedback_vectors_and_renormalised():
    query = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    rows = np.array([[0.0, 1.0, 0.0], [0.0, 0.6, 0.8]], dtype=np.float32)
    moved = rocchio(query, rows, 0.5)
    expected = np.array([1.0, 0.4, 0.2]) / np.linalg.norm([1.0, 0.4, 0.2])  # q + 0.5 * (0, 0.8, 0.4)
    assert moved == pytest.approx(expected, abs=1e-6)
    mean = rows.mean(axis=0) / np.linalg.norm(rows.mean(axis=0))
    assert float(moved @ mean) > float(query @ mean)
    assert rocchio(query, rows, 0.0) is query
    assert rocchio(query, rows[:0], 2.0) is query


CORPUS = [f"document {i} about {word}" for i, word in enumerate("apples pears plums apples grapes pears figs".split())]


@pytest.fixture(params=["float32", "float16", "int8", "binary"])
def store(request, tmp_path):
    """A store of hashed-word vectors at each precision; the hits and vectors are the store's own."""
    embedder = HashEmbedder(dim=32)
    strategy = Strategy(embedder=EmbedderSpec(model="fake:hash-32"), precision=request.param, depth=5)
    held = EmbeddedStore(tmp_path / "store")
    index_documents([SourceDocument(id=f"d{i}", text=t) for i, t in enumerate(CORPUS)], strategy, held, embedder)
    yield strategy, held, embedder
    held.close()


def test_rocchio_searches_again_with_the_query_moved_toward_its_top_documents_stored_vectors(store):
    strategy, held, embedder = store
    query = embedder.embed(["apples and pears"], "query")
    plain = Retriever(strategy, held, embedder)
    first = plain.dense_run_from_vectors(["q"], query, 3)["q"]
    stored = {r.doc_id: r.vectors[0] for r in held.read_records(list(first))}
    expected = rocchio(query[0] / np.linalg.norm(query[0]), np.stack([stored[d] for d in first]), 0.7)

    with_feedback = Retriever(
        Strategy(**{**_fields(strategy), "feedback": Feedback(method="rocchio", docs=3, weight=0.7)}), held, embedder
    )
    moved = with_feedback.dense_run_from_vectors(["q"], query, 5)["q"]
    searched = plain.dense_run_from_vectors(["q"], expected[None, :], 5)["q"]
    assert list(moved) == list(searched)
    assert list(moved.values()) == pytest.approx(list(searched.values()), abs=1e-5)
    assert moved != plain.dense_run_from_vectors(["q"], query, 5)["q"]


@pytest.mark.parametrize("feedback", [{"docs": 0, "weight": 1.0}, {"docs": 3, "weight": 0.0}])
def test_rocchio_with_no_documents_or_no_weight_gives_the_first_run_back_exactly(store, feedback):
    strategy, held, embedder = store
    queries = {"q1": "apples", "q2": "figs and plums"}
    plain = Retriever(strategy, held, embedder).search(queries, 5)
    off = Strategy(**{**_fields(strategy), "feedback": Feedback(method="rocchio", **feedback)})
    assert Retriever(off, held, embedder).search(queries, 5) == plain


# -- RM3 -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> BM25Index:
    return BM25Index.build(list(TEXTS), list(TEXTS.values()))


def test_the_relevance_model_weighs_term_frequency_by_the_documents_first_run_score(tiny):
    # The index's own tokens: stopwords out ("into"), Snowball stems.
    d1, d2 = tiny.tokenize([TEXTS["d1"], TEXTS["d2"]])
    assert d1 == ["solar", "panel", "convert", "sunlight", "electr", "panel"]
    assert d2 == ["solar", "energi", "storag", "batteri"]
    first = tiny.search({"q": "solar"}, 2)["q"]
    assert list(first) == ["d2", "d1"]  # the shorter document first
    p2, p1 = (s / sum(first.values()) for s in first.values())
    # P(t|R) = sum_D P(D|q) tf(t, D) / |D|, its top 3 renormalised.
    full = {"solar": p1 / 6 + p2 / 4, "panel": p1 * 2 / 6, "energi": p2 / 4, "storag": p2 / 4, "batteri": p2 / 4}
    top = dict(sorted(full.items(), key=lambda item: (-item[1], item[0]))[:3])
    model = relevance_model([d1, d2], [first["d1"], first["d2"]], 3)
    assert model == pytest.approx({t: p / sum(top.values()) for t, p in top.items()})
    assert list(model) == ["solar", "panel", "batteri"]  # equal P(t|R): the term that sorts first


def test_the_expanded_query_mixes_the_original_by_weight_on_bm25s_scale():
    weighted = rm3_query(["solar", "panel", "solar"], {"solar": 0.5, "electr": 0.5}, 0.6)
    assert weighted == pytest.approx({"solar": 0.6 * 2 + 0.4 * 0.5 * 3, "panel": 0.6, "electr": 0.4 * 0.5 * 3})


def test_rm3_finds_a_document_through_an_expansion_term_the_query_lacks(tiny):
    plain = tiny.search({"q": "solar panels"}, 4)["q"]
    assert "d3" not in plain  # "wind turbines electricity" shares no word with the query
    expanded = rm3_run(tiny, {"q": "solar panels"}, 4, Feedback(method="rm3", docs=2, terms=10, weight=0.5), texts_of)
    assert set(expanded["q"]) == {"d1", "d2", "d3"}  # found through "electr", a term of d1
    assert list(expanded["q"])[:2] == list(plain)[:2]


@pytest.mark.parametrize("feedback", [{"docs": 0, "weight": 0.5}, {"docs": 2, "weight": 1.0}, {"terms": 0}])
def test_rm3_with_no_documents_or_the_whole_weight_on_the_query_gives_bm25_back_exactly(tiny, feedback):
    queries = {"q1": "solar panels", "q2": "electricity", "q3": "the"}
    off = Feedback(method="rm3", **feedback)
    assert rm3_run(tiny, queries, 3, off, texts_of) == tiny.search(queries, 3)


def test_weighted_search_with_unit_weights_scores_as_bm25_does(tiny):
    plain = tiny.search({"q": "solar electricity panels"}, 4)["q"]
    weighted = tiny.search_weighted({"q": {"solar": 1.0, "electr": 1.0, "panel": 1.0}}, 4)["q"]
    assert list(weighted) == list(plain)
    assert list(weighted.values()) == pytest.approx(list(plain.values()), rel=1e-6)


def rm3_by_hand(index: BM25Index, queries, depth, feedback, texts) -> dict:
    """RM3 with every fed-back document's text tokenized again for each query (the first way it ran)."""
    first = index.search(queries, feedback.docs)
    weighted = {}
    for qid, text in queries.items():
        hits = [(doc, first[qid][doc]) for doc in ranked(first[qid], feedback.docs)]
        doc_terms = index.tokenize([texts[doc] for doc, _ in hits])
        expansion = relevance_model(doc_terms, [score for _, score in hits], feedback.terms)
        weighted[qid] = rm3_query(index.tokenize([text])[0], expansion, feedback.weight)
    return index.search_weighted(weighted, depth)


@pytest.fixture(scope="module")
def sample():
    return load_beir(Path(str(resources.files("embedtune") / "data" / "sample")))


@pytest.mark.parametrize("saved", [False, True], ids=["built", "loaded"])
def test_rm3_tokenizes_a_fed_back_document_at_most_once_in_the_indexs_life(sample, tmp_path, saved, monkeypatch):
    texts = {doc_id: doc.full_text for doc_id, doc in sample.corpus.items()}
    index = BM25Index.build(list(texts), list(texts.values()))
    if saved:
        index = BM25Index.load(index.save(tmp_path / "bm25"))
    queries = dict(list(sample.queries.items())[:10])
    rm3 = Feedback(method="rm3", docs=5, terms=10, weight=0.5)
    expected = rm3_by_hand(index, queries, 10, rm3, texts)
    asked: list[str] = []
    tokenized: list[str] = []
    real = index.tokenize
    monkeypatch.setattr(index, "tokenize", lambda given: tokenized.extend(given) or real(given))

    def texts_of(ids):
        asked.extend(ids)
        return {doc: texts[doc] for doc in ids}

    assert rm3_run(index, queries, 10, rm3, texts_of) == expected
    fed_back = {doc for run in index.search(queries, rm3.docs).values() for doc in run}
    assert sorted(asked) == sorted(fed_back)  # each fed-back document's text asked for once
    assert sorted(tokenized) == sorted([*queries.values(), *(texts[doc] for doc in asked)])
    asked.clear()
    tokenized.clear()
    assert rm3_run(index, queries, 10, rm3, texts_of) == expected
    assert asked == [] and sorted(tokenized) == sorted(queries.values())  # only the queries, this time


def test_the_retriever_runs_rm3_over_the_stores_own_texts(tmp_path):
    strategy = Strategy(mode=Mode.BM25, depth=4)
    with EmbeddedStore(tmp_path / "bm25") as held:
        index_documents([SourceDocument(id=d, text=t) for d, t in TEXTS.items()], strategy, held, None)
        rm3 = Feedback(method="rm3", docs=2, terms=10, weight=0.5)
        run = Retriever(Strategy(mode=Mode.BM25, depth=4, feedback=rm3), held).search({"q": "solar panels"}, 4)
        assert run == rm3_run(held.lexical_index(), {"q": "solar panels"}, 4, rm3, texts_of)
        # A metadata filter holds in the feedback search as in the plain one.
        hits = Retriever(Strategy(mode=Mode.BM25, feedback=rm3), held).search({"q": "solar"}, 4, where={"x": 1})
        assert hits == {"q": {}}


# -- tuning --------------------------------------------------------------------------------


def test_feedback_is_tuned_on_the_tuning_queries_only():
    seen: list[str] = []

    def search(feedback, queries):
        seen.extend(queries)
        # Scores a judged document highest with docs=5, weight 0.5 only.
        hit = feedback.docs == 5 and feedback.weight == 0.5
        return {qid: {"rel" if hit else "other": 1.0, "x": 0.5} for qid in queries}

    queries = {"t1": "tune me", "t2": "and me", "r1": "reported", "r2": "reported too"}
    best, table = tune_feedback(
        {"t1": {"rel": 1}, "t2": {"rel": 1}}, queries, search, feedback_grid(FeedbackMethod.ROCCHIO)
    )
    assert set(seen) == {"t1", "t2"}
    assert (best.docs, best.weight) == (5, 0.5)
    assert len(table) == len(feedback_grid("rocchio")) == 16
    assert len(feedback_grid("rm3")) == 24


# -- the [feedback] table ------------------------------------------------------------------


def test_a_strategy_with_feedback_round_trips_through_its_file(tmp_path):
    spec = EmbedderSpec(model="local:all-MiniLM-L6-v2")
    for strategy in (
        Strategy(embedder=spec, feedback=Feedback(method="rocchio", docs=3, weight=0.25)),
        Strategy(mode=Mode.BM25, feedback=Feedback(method="rm3", docs=10, weight=0.7, terms=20)),
        Strategy(embedder=spec, mode="hybrid", fusion="rrf", feedback=Feedback(method="rm3")),
    ):
        assert Strategy.load(strategy.save(tmp_path / "s.toml")) == strategy
        assert "[feedback]" in strategy.to_toml()
        assert strategy.index_settings() == Strategy(**{**_fields(strategy), "feedback": None}).index_settings()
    assert Strategy(mode=Mode.BM25, feedback=Feedback(method="rm3")).name == "bm25 + rm3"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('method = "prf"', "feedback.method must be rocchio | rm3, not 'prf'"),
        ('method = "rm3"\nweight = 1.5', "between 0 and 1"),
        ('method = "rocchio"\nweight = -1', "rocchio's beta, at least 0"),
        ('method = "rocchio"\ndocs = -2', "feedback.docs must be a whole number of at least 0"),
        ('method = "rm3"\nterms = 2.5', "feedback.terms must be a whole number"),
        ('method = "rocchio"\nterms = 20', "feedback.terms applies to rm3 only"),
        ('method = "rm3"\nweight = "high"', "feedback.weight must be a number"),
        ("docs = 5", "[feedback] needs a method"),
        ('method = "rm3"\nexpand = 3', "unknown key feedback.expand"),
        ('method = "rocchio"', "rocchio feedback moves the query vector: a bm25 strategy has none"),
    ],
)
def test_bad_feedback_is_refused_in_one_line(table, message):
    with pytest.raises(ConfigError) as caught:
        Strategy.from_toml(f'version = 1\n[retrieval]\nmode = "bm25"\n[feedback]\n{table}\n', source="s.toml")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_rm3_on_a_dense_strategy_is_refused():
    with pytest.raises(ConfigError, match="rm3 feedback expands the BM25 query"):
        Strategy(embedder=EmbedderSpec(model="fake:x"), feedback=Feedback(method="rm3"))


def texts_of(doc_ids):
    return {doc: TEXTS[doc] for doc in doc_ids}


def _fields(strategy: Strategy) -> dict:
    return {name: getattr(strategy, name) for name in strategy.__dataclass_fields__}
