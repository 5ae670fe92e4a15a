"""compare with passages: one row per chunk score from one store, and the count of documents over the limit."""

import pytest

from embedtune.errors import ConfigError
from embedtune.evaluation import load_beir
from embedtune.evaluation.collections import Collection
from embedtune.evaluation.compare import evaluate_strategies
from embedtune.factory import EmbedderSpec

MINILM = EmbedderSpec(model="local:all-MiniLM-L6-v2", engine="torch")


@pytest.fixture(scope="module")
def scifact_slice(shared_datasets) -> Collection:
    """8 test and 8 train queries of SciFact, their relevant documents and 40 others."""
    full = load_beir(shared_datasets / "scifact")
    qrels = {split: dict(sorted(full.qrels[split].items())[:8]) for split in ("test", "train")}
    relevant = {doc for judged in qrels.values() for rels in judged.values() for doc in rels}
    others = [doc for doc in sorted(full.corpus) if doc not in relevant][:40]
    corpus = {doc: full.corpus[doc] for doc in sorted(relevant | set(others))}
    queries = {qid: full.queries[qid] for judged in qrels.values() for qid in judged}
    return Collection(name="scifact-slice", corpus=corpus, queries=queries, qrels=qrels)


def test_each_chunk_score_is_a_row_from_one_store_and_long_documents_are_counted(scifact_slice, minilm):
    result = evaluate_strategies(
        scifact_slice,
        [MINILM],
        bm25=False,
        chunkers=["passages:title=true"],
        chunk_score=["first", "max", "sum2"],
        providers={MINILM.label: minilm},
    )
    passages = f"{MINILM.model} @ passages-256-o32-title"
    names = [s.name for s in result.strategies]
    assert names == [f"{passages} by {score}" for score in ("first", "max", "sum2")]
    rows = [result.strategy(f"{passages} by {score}") for score in ("first", "max", "sum2")]
    assert [row.strategy.chunk_score for row in rows] == ["first", "max", "sum2"]
    assert len({row.chunks for row in rows}) == 1 and rows[0].chunks > len(scifact_slice.corpus)
    # the scores rank documents differently: max and sum2 see passages that first does not
    assert rows[0].per_query != rows[1].per_query or rows[0].per_query != rows[2].per_query
    assert all(row.selection is not None for row in rows)  # selected on train, as every row
    assert result.winner in names and result.chunk_score == "first, max, sum2"
    over = sum(
        minilm.count_tokens(doc.full_text, "document") > minilm.max_tokens for doc in scifact_slice.corpus.values()
    )
    assert over > 0
    wanted = f"{over} of {len(scifact_slice.corpus)} documents are longer than its 256-token limit"
    assert any(wanted in note for note in result.notes)


@pytest.mark.parametrize(("score", "message"), [("mean", "unknown chunk score"), ("", "at least one chunk score")])
def test_a_bad_chunk_score_fails_before_any_work(scifact_slice, score, message):
    with pytest.raises(ConfigError, match=message):
        evaluate_strategies(scifact_slice, [MINILM], bm25=False, chunkers=["passages"], chunk_score=score)
