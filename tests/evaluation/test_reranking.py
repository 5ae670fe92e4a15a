"""compare's reranked rows: what they cost a batch of queries, and one query served, rerank included."""

import json
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from embedtune.evaluation import load_beir
from embedtune.evaluation.compare import LATENCY_QUERIES, evaluate_strategies
from embedtune.evaluation.report import comparison_to_dict
from embedtune.factory import EmbedderSpec
from embedtune.search.rerank import CrossEncoderScorer, RerankSpec

SAMPLE = Path(str(resources.files("embedtune") / "data" / "sample"))
FAKE = EmbedderSpec(model="fake:hash-256")  # the rows' plumbing is under test, not the vectors


@pytest.fixture(scope="module")
def sample():
    return load_beir(SAMPLE)


class QueriesSeen:
    """The tiny cross-encoder, remembering which queries each call scored pairs for."""

    def __init__(self, folder: Path) -> None:
        self.model = CrossEncoderScorer(folder)
        self.calls: list[frozenset[str]] = []

    def __call__(self, pairs):
        self.calls.append(frozenset(query for query, _ in pairs))
        return self.model(pairs)


def test_reranked_rows_are_timed_one_query_at_a_time_rerank_included_when_the_fused_rows_are(
    sample, tiny_cross_encoder
):
    scorer = QueriesSeen(tiny_cross_encoder)
    result = evaluate_strategies(
        sample,
        [FAKE],
        hybrid=["rrf"],
        fuse=True,
        rerank=[RerankSpec(model=str(tiny_cross_encoder), top=5)],
        reranker=scorer,
    )
    bases = ["bm25", "fake:hash-256", "fake:hash-256 + bm25 (rrf)", "rrf(bm25, fake:hash-256)"]
    reranked = [row for row in result.strategies if row.strategy is not None and row.strategy.rerank is not None]
    assert [row.name for row in reranked][:4] == [f"{name} > rerank@5" for name in bases]
    assert len(reranked) == 5  # and the convex fusion's
    for row in reranked:
        assert isinstance(row.query_ms, float) and row.query_ms > 0
        assert isinstance(row.rerank_ms, float) and row.rerank_ms > 0
        assert any(row.name in note and "served one at a time" in note for note in result.notes)

    # Every reranked row answered the fused rows' latency texts one at a time through its reranker.
    queries = {**sample.split("test")[0], **sample.split("train")[0]}
    latency_texts = list(queries.values())[: LATENCY_QUERIES + 1]
    singles = Counter(next(iter(call)) for call in scorer.calls if len(call) == 1)
    assert singles == {text: len(reranked) for text in latency_texts}
    assert sum(len(call) == len(queries) for call in scorer.calls) == len(reranked)  # and the batch each

    written = json.loads(json.dumps(comparison_to_dict(result)))
    rows = {row["name"]: row for row in written["strategies"]}
    for row in reranked:
        assert (rows[row.name]["query_ms"], rows[row.name]["rerank_ms"]) == (row.query_ms, row.rerank_ms)
    for name in bases[:3]:  # rows not served one at a time, not reranked
        assert (rows[name]["query_ms"], rows[name]["rerank_ms"]) == (None, None)
    assert rows[bases[3]]["query_ms"] > 0 and rows[bases[3]]["rerank_ms"] is None


def test_reranked_rows_are_not_timed_when_no_other_row_is(sample, tiny_cross_encoder):
    spec = RerankSpec(model=str(tiny_cross_encoder), top=5)
    result = evaluate_strategies(sample, [], rerank=[spec], reranker=CrossEncoderScorer(tiny_cross_encoder))
    row = result.strategy("bm25 > rerank@5")
    assert row.query_ms is None and row.rerank_ms is not None and row.rerank_ms > 0
    assert comparison_to_dict(result)["strategies"][1]["rerank_ms"] == row.rerank_ms
