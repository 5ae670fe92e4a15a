"""The quality levers as choices of the search: a learned sparse run, ensembles, feedback and rerank.

Each is drawn from the space, fitted and scored through the code ``search`` runs (on a SciFact
slice with MiniLM and SPLADE-tiny), and an ensemble winner is a file that ``index`` builds.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from _slices import write_scifact_slice
from embedtune.documents import corpus_documents
from embedtune.ensemble import Ensemble, index_ensemble, load_strategy, open_ensemble
from embedtune.errors import ConfigError
from embedtune.evaluation import evaluate, load_beir
from embedtune.evaluation.tuning import feedback_grid
from embedtune.evaluation.workspace import workspace
from embedtune.factory import EmbedderSpec
from embedtune.optimize import SearchSpace, optimize
from embedtune.optimize.trials import TrialScorer, plan_rungs
from embedtune.search.feedback import FeedbackMethod
from embedtune.stores import open_store
from embedtune.strategy import Mode, Strategy

MINILM = "local:all-MiniLM-L6-v2"
SPLADE = "sparse:splade-tiny"
DENSE = {"model": MINILM, "chunker": "none", f"vectors:{MINILM}": "float32"}


@pytest.fixture(scope="module")
def collection(shared_datasets, tmp_path_factory):
    """10 test and 30 train queries of SciFact and the documents they judge, with a few others: 60 in all
    (SPLADE's vocabulary-wide head is the slow part, per document)."""
    folder = write_scifact_slice(shared_datasets, tmp_path_factory.mktemp("slice"), tests=10, trains=30, documents=60)
    return load_beir(folder)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One embedding cache for the module: each text is embedded (or encoded) once, by the first test."""
    return tmp_path_factory.mktemp("cache") / "c.sqlite"


def space(reranker: Path | None = None, **changes) -> SearchSpace:
    settings = {
        "models": (EmbedderSpec(model=MINILM),),
        "chunkers": ("none",),
        "vectors": ("float32",),
        "retrievals": ("dense", "bm25", "convex", "sparse", "ensemble"),
        "sparse": (SPLADE,),
        "feedback": ("rocchio", "rm3"),
        "reranker": None if reranker is None else str(reranker),
        "rerank_tops": (10,),
    }
    return SearchSpace(**(settings | changes))


def drawn(searched: SearchSpace, **params):
    return searched.suggest(optuna.trial.FixedTrial(params))


def test_each_lever_is_a_choice_the_space_draws(tiny_cross_encoder):
    searched = space(tiny_cross_encoder)
    sparse = drawn(searched, retrieval="sparse", rerank="none")
    assert sparse.mode is Mode.SPARSE and sparse.sparse.model == SPLADE
    fused = drawn(searched, retrieval="ensemble", members="bm25+dense+sparse", rerank="10", **DENSE)
    assert isinstance(fused, Ensemble) and [m.mode for m in fused.members] == [Mode.BM25, Mode.DENSE, Mode.SPARSE]
    assert fused.rerank.top == 10 and fused.rerank.model == str(tiny_cross_encoder)
    assert drawn(searched, retrieval="bm25", **{"feedback:bm25": "rm3"}, rerank="none").feedback.method is (
        FeedbackMethod.RM3
    )
    hybrid = drawn(searched, retrieval="convex", **DENSE, **{"feedback:hybrid": "rocchio"}, rerank="none")
    assert hybrid.feedback.method is FeedbackMethod.ROCCHIO and hybrid.rerank is None
    # Without the levers asked for, the space asks none of their questions.
    plain = SearchSpace(models=(EmbedderSpec(model=MINILM),), chunkers=("none",), vectors=("float32",))
    assert drawn(plain, retrieval="dense", **DENSE).feedback is None
    assert "sparse" not in plain.describe() and "feedback" not in plain.describe()


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"sparse": ()}, "sparse and ensemble retrieval need a learned sparse model"),
        ({"feedback": ("prf",)}, "unknown feedback method 'prf'"),
        ({"reranker": "/no/such/folder"}, "reranker folder /no/such/folder does not exist"),
        ({"rerank_tops": (0,)}, "a rerank depth must be a whole number from 1 to 100"),
        ({"sparse": ("sparse:splade-huge",)}, "unknown sparse model"),
    ],
)
def test_a_bad_lever_is_one_line(changes, says):
    with pytest.raises(ConfigError) as caught:
        space(**changes)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_each_lever_is_fitted_and_scored_through_the_retrievers_with_its_costs(
    collection, tmp_path, cache, minilm, tiny_cross_encoder
):
    searched = space(tiny_cross_encoder)
    documents = corpus_documents(collection.corpus)
    queries, qrels = collection.split("train")
    rungs = plan_rungs(documents, queries, qrels)
    with workspace(tmp_path / "stores", collection.name, documents) as stores:
        scorer = TrialScorer(rungs, stores, cache=cache, providers={MINILM: minilm})
        try:
            candidates = {
                "sparse": drawn(searched, retrieval="sparse", rerank="none"),
                "ensemble": drawn(searched, retrieval="ensemble", members="bm25+dense+sparse", rerank="none", **DENSE),
                "rm3": drawn(searched, retrieval="bm25", **{"feedback:bm25": "rm3"}, rerank="none"),
                "rocchio": drawn(searched, retrieval="dense", **DENSE, **{"feedback:dense": "rocchio"}, rerank="none"),
                "reranked": drawn(searched, retrieval="bm25", **{"feedback:bm25": "none"}, rerank="10"),
            }
            fitted = {}
            for name, candidate in candidates.items():
                for rung in rungs:
                    candidate = scorer.fit(candidate, rung, searched.alpha_step)
                    assert 0 < scorer.quality(candidate, rung) <= 1
                fitted[name] = candidate
            final = rungs[-1]
            ensemble = fitted["ensemble"]
            assert sum(ensemble.weights) == pytest.approx(1)
            # The weights are fitted on the tuning queries: at least as good there as equal weights.
            equal = replace(ensemble, weights=(1.0, 1.0, 1.0))
            assert scorer.quality(ensemble, final) >= scorer.quality(equal, final)
            # Feedback parameters are the grid's best point on the tuning queries.
            for name, method in (("rm3", "rm3"), ("rocchio", "rocchio")):
                grid = feedback_grid(method)
                chosen = fitted[name]
                assert chosen.feedback in grid
                scores = [scorer.quality(replace(chosen, feedback=point), final) for point in grid]
                assert scorer.quality(chosen, final) == pytest.approx(max(scores))
            costs = {name: scorer.costs(candidate) for name, candidate in fitted.items()}
            sparse_bytes = costs["sparse"].vectors_bytes
            assert sparse_bytes > 0 and costs["sparse"].index_bytes == sparse_bytes  # the sparse index is counted
            bm25_bytes = costs["rm3"].index_bytes
            dense_bytes = costs["rocchio"].vectors_bytes
            assert costs["ensemble"].index_bytes == bm25_bytes + dense_bytes + sparse_bytes
            assert costs["ensemble"].vectors_bytes == dense_bytes + sparse_bytes
            assert all(c.query_ms > 0 and c.usd == 0 for c in costs.values())
            assert fitted["reranked"].rerank.top == 10
        finally:
            scorer.close()


def test_an_ensemble_winner_is_a_file_index_builds_and_its_reported_figure_is_the_built_ones(
    collection, tmp_path, cache, minilm
):
    searched = space(retrievals=("ensemble",), feedback=())
    result = optimize(collection, searched, out=tmp_path / "out", trials=2, cache=cache, providers={MINILM: minilm})
    chosen = result.chosen
    assert isinstance(chosen.strategy, Ensemble) and chosen.state == "complete"
    assert chosen.query_ms > 0 and chosen.index_mb >= chosen.vectors_mb > 0
    loaded = load_strategy(tmp_path / "out" / "strategy.toml")
    assert loaded == chosen.strategy  # the file round-trips
    index_ensemble(corpus_documents(collection.corpus), loaded, str(tmp_path / "built"), cache=cache)
    retriever = open_ensemble(open_store(str(tmp_path / "built")), cache=cache)
    try:
        queries, qrels = collection.split("test")
        built = evaluate(qrels, retriever.search(queries, k=100), ["ndcg@10"])["ndcg@10"]
    finally:
        retriever.close()
    assert built == pytest.approx(result.reported[chosen.number]["ndcg@10"], abs=1e-9)


def test_a_sparse_winner_is_a_strategy_file_index_builds(collection, tmp_path, cache):
    result = optimize(collection, space(retrievals=("sparse",), feedback=()), out=tmp_path / "o", trials=1, cache=cache)
    chosen = result.chosen
    assert chosen.strategy.mode is Mode.SPARSE
    assert chosen.vectors_bytes == chosen.index_bytes > 0 and chosen.query_ms > 0
    strategy = Strategy.load(tmp_path / "o" / "strategy.toml")
    assert strategy == chosen.strategy
    from embedtune.indexer import index_documents, open_retriever
    from embedtune.sparse.encoder import open_sparse_encoder
    from embedtune.stores.embedded import EmbeddedStore

    with EmbeddedStore(tmp_path / "built") as store:
        index_documents(
            corpus_documents(collection.corpus), strategy, store, None, sparse=open_sparse_encoder(strategy.sparse)
        )
        retriever = open_retriever(store, cache=cache)
        queries, qrels = collection.split("test")
        built = evaluate(qrels, retriever.search(queries, k=100), ["ndcg@10"])["ndcg@10"]
        retriever.close()
    assert built == pytest.approx(result.reported[chosen.number]["ndcg@10"], abs=1e-9)
