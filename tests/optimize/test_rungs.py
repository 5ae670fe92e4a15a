"""The samples trials are promoted through: nested, growing by the reduction factor, the last one whole."""

import itertools

from embedtune.documents import SourceDocument
from embedtune.optimize.trials import plan_rungs


def collection(queries: int, documents: int):
    docs = [SourceDocument(id=f"d{i}", text=f"document {i}", metadata={}) for i in range(documents)]
    texts = {f"q{i}": f"query {i}" for i in range(queries)}
    qrels = {f"q{i}": {f"d{(7 * i) % documents}": 1} for i in range(queries)}
    return docs, texts, qrels


def test_rungs_are_nested_samples_that_end_with_every_query_and_document():
    docs, queries, qrels = collection(queries=200, documents=900)
    rungs = plan_rungs(docs, queries, qrels, seed=3)
    assert [len(r.queries) for r in rungs] == [23, 67, 200]  # a ninth, a third, all (rounded up)
    assert [r.step for r in rungs] == [1, 3, 9]
    assert rungs[-1].documents == docs and rungs[-1].qrels == qrels
    for small, large in itertools.pairwise(rungs):
        assert set(small.queries) < set(large.queries)
        assert {d.id for d in small.documents} < {d.id for d in large.documents}
    for rung in rungs:  # every judged document of a rung's queries is in its corpus
        held = {d.id for d in rung.documents}
        assert all(doc in held for judged in rung.qrels.values() for doc in judged)
        assert set(rung.qrels) == set(rung.queries)
    assert len(rungs[0].documents) >= 100  # a ninth of the corpus, plus the judged ones
    assert plan_rungs(docs, queries, qrels, seed=3) == rungs  # seeded: a rerun scores the same samples


def test_few_queries_make_fewer_rungs_and_unjudged_queries_are_left_out():
    docs, queries, qrels = collection(queries=40, documents=120)
    assert [len(r.queries) for r in plan_rungs(docs, queries, qrels)] == [14, 40]
    docs, queries, qrels = collection(queries=25, documents=50)
    queries["unjudged"] = "no judgment"
    (only,) = plan_rungs(docs, queries, qrels)
    assert len(only.queries) == 25 and "unjudged" not in only.queries
