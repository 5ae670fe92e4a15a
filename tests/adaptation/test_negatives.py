"""Hard-negative mining with BM25 and with a model: exclusions, the margin rule, determinism."""

from __future__ import annotations

import pytest

from embedtune.adaptation.negatives import mine_hard_negatives
from embedtune.adaptation.pairs import Pair
from embedtune.engine import CachingEmbedder
from embedtune.errors import ConfigError
from embedtune.evaluation import Document, load_beir

CORPUS = {
    "pos": Document(title="", text="Pulsar magnetic fields decay slowly over millions of years."),
    "twin": Document(title="", text="Pulsar magnetic fields decay slowly over millions of years!"),  # a copy
    "near": Document(title="", text="Magnetic fields of neutron stars and pulsar spin down."),
    "also": Document(title="", text="Pulsar glitches and the magnetic field of the crust."),
    "far": Document(title="", text="Magnetic tape storage for early computers."),
    "off": Document(title="", text="Wing lift and stall at high angles of attack."),
}
QUERY = "pulsar magnetic fields decay"


def texts(*ids: str) -> tuple[str, ...]:
    return tuple(CORPUS[i].full_text for i in ids)


def test_bm25_negatives_leave_out_the_positive_and_copies_of_it():
    (mined,) = mine_hard_negatives([Pair(query=QUERY, positive=CORPUS["pos"].text, positive_id="pos")], CORPUS, count=2)
    # "twin" scores as high as the positive: a likely false negative, dropped by the margin.
    assert mined.negatives == texts("also", "near")
    assert mined.query == QUERY and mined.positive_id == "pos"
    (none_dropped,) = mine_hard_negatives(
        [Pair(query=QUERY, positive=CORPUS["pos"].text, positive_id="pos")], CORPUS, count=2, margin=0.0
    )
    assert none_dropped.negatives == texts("twin", "also")  # no margin: only what outscores the positive goes


def test_every_positive_of_the_same_query_is_excluded():
    pairs = [
        Pair(query=QUERY, positive=CORPUS["pos"].text, positive_id="pos"),
        Pair(query=QUERY, positive=CORPUS["near"].text, positive_id="near"),
    ]
    mined = mine_hard_negatives(pairs, CORPUS, count=3)
    for pair in mined:
        assert texts("pos")[0] not in pair.negatives and texts("near")[0] not in pair.negatives
    assert mined[0].negatives[:2] == texts("also", "far")


def test_skip_top_and_count():
    pair = Pair(query=QUERY, positive=CORPUS["pos"].text, positive_id="pos")
    (skipped,) = mine_hard_negatives([pair], CORPUS, count=1, skip_top=2)
    # Candidates in order: twin, also, near, far; skipping two leaves near first.
    assert skipped.negatives == texts("near")


def test_a_positive_that_does_not_rank_gets_no_negatives():
    pair = Pair(query="wing stall", positive="Tape drives.", positive_id="far")
    (mined,) = mine_hard_negatives([pair], CORPUS)
    assert mined.negatives == ()


def test_a_positive_outside_the_corpus_is_ranked_as_its_text():
    pair = Pair(query=QUERY, positive="Pulsar magnetic fields decay, and decay again, over aeons.")
    (mined,) = mine_hard_negatives([pair], CORPUS, count=2, margin=0.5)
    assert len(mined.negatives) >= 1 and pair.positive not in mined.negatives


def test_model_negatives_follow_the_same_rules(fake):
    pair = Pair(query=QUERY, positive=CORPUS["pos"].text, positive_id="pos")
    (mined,) = mine_hard_negatives([pair], CORPUS, by=fake, count=2, margin=0.01)
    assert texts("pos")[0] not in mined.negatives and texts("twin")[0] not in mined.negatives
    assert len(mined.negatives) == 2
    positive = fake.embed([QUERY], "query") @ fake.embed([pair.positive], "document").T
    scores = fake.embed([QUERY], "query") @ fake.embed(list(mined.negatives), "document").T
    assert (scores <= positive[0, 0] * 0.99 + 1e-6).all()
    assert scores[0, 0] >= scores[0, 1]  # best candidates first


def test_mining_scifact_is_deterministic_and_respects_the_margin(shared_datasets, minilm, tmp_path):
    collection = load_beir(shared_datasets / "scifact", splits=["train"])
    queries, qrels = collection.split("train")
    asked = list(qrels)[:15]
    corpus_ids = sorted({d for q in asked for d in qrels[q]} | set(sorted(collection.corpus)[:30]))
    corpus = {d: collection.corpus[d] for d in corpus_ids}
    pairs = [Pair(query=queries[q], positive=corpus[d].full_text, positive_id=d) for q in asked for d in qrels[q]]
    first = mine_hard_negatives(pairs, corpus, by="bm25", count=3)
    assert first == mine_hard_negatives(pairs, corpus, by="bm25", count=3)
    assert sum(len(p.negatives) for p in first) > len(pairs)
    model = CachingEmbedder(minilm, tmp_path / "cache.sqlite")  # the checks below reuse the miner's vectors
    dense = mine_hard_negatives(pairs, corpus, by=model, count=2, margin=0.05)
    assert sum(len(p.negatives) for p in dense) > len(pairs)
    q = model.embed([p.query for p in dense], "query")
    pos = model.embed([p.positive for p in dense], "document")
    for i, pair in enumerate(dense):
        assert pair.positive not in pair.negatives
        if pair.negatives:
            neg = model.embed(list(pair.negatives), "document")
            bound = float(q[i] @ pos[i])
            assert (neg @ q[i] <= bound - 0.05 * abs(bound) + 1e-5).all()


def test_bad_settings_are_one_line():
    pair = [Pair(query=QUERY, positive="x", positive_id="pos")]
    with pytest.raises(ConfigError, match="margin"):
        mine_hard_negatives(pair, CORPUS, margin=1.5)
    with pytest.raises(ConfigError, match="count"):
        mine_hard_negatives(pair, CORPUS, count=0)
    with pytest.raises(ConfigError, match="rank by 'bm25' or an Embedder"):
        mine_hard_negatives(pair, CORPUS, by="splade")
