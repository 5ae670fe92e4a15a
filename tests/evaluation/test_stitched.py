"""Stitched collections: spans that round-trip, span metrics checked by hand, the chunker benchmark."""

from dataclasses import replace
from importlib import resources
from itertools import pairwise
from pathlib import Path

import pytest

from embedtune.errors import InputError
from embedtune.evaluation import Document, load_beir
from embedtune.evaluation.stitched import SEPARATOR, TextRange, span_scores, stitch

SAMPLE = Path(str(resources.files("embedtune") / "data" / "sample"))


@pytest.fixture(scope="module")
def sample():
    return load_beir(SAMPLE)


def test_every_original_document_round_trips_through_its_span(sample):
    stitched = stitch(sample, per_text=5, seed=3)
    assert set(stitched.placements) == set(sample.corpus)
    for doc_id, placed in stitched.placements.items():
        assert stitched.texts[placed.text_id][placed.start : placed.end] == sample.documents_text(doc_id)
    assert len(stitched.texts) == 120 // 5
    for text_id, text in stitched.texts.items():
        inside = sorted((r.start, r.end) for r in stitched.placements.values() if r.text_id == text_id)
        assert len(inside) == 5 and inside[0][0] == 0 and inside[-1][1] == len(text)
        # neighbours are separated by exactly one blank line, and nothing else lies between
        assert all(text[a_end:b_start] == SEPARATOR for (_, a_end), (b_start, _) in pairwise(inside))


def test_the_order_depends_on_the_seed_only(sample):
    once, again = stitch(sample, seed=1), stitch(sample, seed=1)
    assert once.texts == again.texts and once.placements == again.placements
    assert stitch(sample, seed=2).texts != once.texts
    reordered = replace(sample, corpus=dict(reversed(list(sample.corpus.items()))))
    assert stitch(reordered, seed=1).texts == once.texts


def test_queries_qrels_and_evidence_come_from_the_split(sample):
    stitched = stitch(sample, split="test")
    queries, qrels = sample.split("test")
    assert stitched.queries == queries and stitched.qrels == qrels
    qid, judged = next(iter(qrels.items()))
    relevant = [doc for doc, rel in judged.items() if rel >= 1]
    assert sorted(stitched.evidence(qid)) == sorted(stitched.placements[d] for d in relevant)
    assert stitched.evidence("no-such-query") == []


def test_empty_documents_are_skipped_and_named(sample):
    corpus = {**sample.corpus, "empty": Document(title="", text="")}
    stitched = stitch(replace(sample, corpus=corpus), per_text=4)
    assert stitched.skipped == ("empty",) and "empty" not in stitched.placements
    assert len(stitched.placements) == 120
    with pytest.raises(InputError, match="per_text must be at least 1"):
        stitch(sample, per_text=0)


def test_documents_in_a_range():
    from embedtune.evaluation import Collection

    corpus = {
        "a": Document(title="", text="aaaa"),
        "b": Document(title="", text="bb"),
        "c": Document(title="", text="c"),
    }
    toy = Collection(name="toy", corpus=corpus, queries={"q": "x"}, qrels={"test": {"q": {"b": 1, "c": 0}}})
    stitched = stitch(toy, per_text=3, seed=0)
    (text_id,) = stitched.texts
    text = stitched.texts[text_id]
    for doc, document in corpus.items():
        r = stitched.placements[doc]
        assert text[r.start : r.end] == document.text
        assert stitched.documents_in(r) == (doc,)
        # the first character after a document is a separator (or past the end): no document there
        assert stitched.documents_in(TextRange(text_id, r.end, r.end + 1)) == ()
    assert set(stitched.documents_in(TextRange(text_id, 0, len(text)))) == {"a", "b", "c"}
    assert stitched.evidence("q") == [stitched.placements["b"]]  # relevance 0 is not evidence


def test_span_scores_by_hand():
    evidence = [TextRange("t", 10, 30)]  # 20 characters
    retrieved = [TextRange("t", 0, 15), TextRange("t", 12, 20), TextRange("t", 25, 40), TextRange("u", 0, 10)]
    # union of retrieved: t[0,20) + t[25,40) + u[0,10) = 20 + 15 + 10 = 45 characters
    # covered evidence: t[10,20) + t[25,30) = 15 characters
    scores = span_scores(retrieved, evidence)
    assert scores.recall == pytest.approx(15 / 20)
    assert scores.precision == pytest.approx(15 / 45)
    assert scores.iou == pytest.approx(15 / (45 + 20 - 15))


def test_span_scores_edge_cases():
    evidence = [TextRange("t", 0, 10), TextRange("t", 5, 15)]  # overlapping evidence: 15 characters
    exact = span_scores([TextRange("t", 0, 15)], evidence)
    assert exact == (1.0, 1.0, 1.0)
    # the same range twice counts once; a range in another text covers nothing
    assert span_scores([TextRange("t", 0, 15)] * 2, evidence) == exact
    assert span_scores([TextRange("other", 0, 15)], evidence) == (0.0, 0.0, 0.0)
    assert span_scores([], evidence) == (0.0, 0.0, 0.0)
    assert span_scores([TextRange("t", 0, 5)], []) == (0.0, 0.0, 0.0)
    half = span_scores([TextRange("t", 0, 30)], evidence)
    assert half == pytest.approx((1.0, 0.5, 0.5))


def toy_collection():
    from embedtune.evaluation import Collection

    corpus = {
        "a": Document(title="", text="alpha beta gamma."),
        "b": Document(title="", text="delta epsilon zeta."),
        "c": Document(title="", text="eta theta iota."),
    }
    queries = {"qa": "alpha beta gamma", "qc": "eta theta iota"}
    return Collection(name="toy", corpus=corpus, queries=queries, qrels={"test": {"qa": {"a": 1}, "qc": {"c": 2}}})


def test_a_chunker_that_finds_each_document_exactly_scores_one():
    from embedtune.chunking import make_chunker
    from embedtune.evaluation.stitched import evaluate_stitched
    from embedtune.providers.fake import HashEmbedder

    embedder = HashEmbedder(dim=256, max_tokens=40)
    # 3 words + 2 special tokens = 5: one document per chunk, as two would be 10 > 6
    chunker = make_chunker("sentence:max_tokens=6", embedder)
    stitched = stitch(toy_collection(), per_text=3)
    result = evaluate_stitched(stitched, chunker, embedder, k=1)
    assert (result.chunks, result.queries, result.k) == (3, 2, 1)
    assert (result.recall, result.precision, result.iou, result.ndcg_at_10) == (1.0, 1.0, 1.0, 1.0)
    # the top 3 chunks hold all the text: recall stays 1, precision falls to evidence / all chunk text
    wide = evaluate_stitched(stitched, chunker, embedder, k=3)
    doc_chars = [len(t) for t in ("alpha beta gamma.", "delta epsilon zeta.", "eta theta iota.")]
    expected = ((doc_chars[0] / sum(doc_chars)) + (doc_chars[2] / sum(doc_chars))) / 2
    assert wide.recall == 1.0
    assert wide.precision == pytest.approx(expected) and wide.iou == pytest.approx(expected)


def test_fake_model_plumbing_on_the_stitched_sample(sample):
    from embedtune.chunking import make_chunker
    from embedtune.evaluation.stitched import evaluate_stitched
    from embedtune.factory import EmbedderSpec, build_embedder

    embedder = build_embedder(EmbedderSpec(model="fake:hash-256"))
    stitched = stitch(sample, per_text=5)
    chunker = make_chunker("fixed:size=40,overlap=10", embedder)
    result = evaluate_stitched(stitched, chunker, embedder, k=5)
    expected_chunks = sum(len(c) for c in chunker.chunk_many(list(stitched.texts.values())))
    assert result.chunker == "fixed-40-o10" and result.chunks == expected_chunks
    assert 0 < result.mean_tokens <= 40
    assert result.queries == 20
    for value in (result.recall, result.precision, result.iou, result.ndcg_at_10):
        assert 0.0 < value < 1.0
    assert result.iou <= min(result.recall, result.precision)  # |R ∩ E| / |R ∪ E| is below both
