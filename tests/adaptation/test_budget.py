"""Adapting within a budget, judged on an honest dev split: sampling, the time limit, checkpoints."""

import json
from collections import Counter
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest

from embedtune.adaptation.devsplit import held_out_qrels, hold_out_documents, honest_dev
from embedtune.adaptation.finetune import CARD_FILE, fine_tune
from embedtune.adaptation.generate import generate_pairs
from embedtune.adaptation.pairs import Pair, pairs_from_qrels, sample_pairs
from embedtune.adaptation.training import base_folder, weights_hash
from embedtune.errors import ConfigError
from embedtune.evaluation import load_beir

TINY = {"batch_size": 4, "max_seq_length": 24, "seed": 0}


@pytest.fixture(scope="module")
def sample():
    return load_beir(Path(str(resources.files("embedtune") / "data" / "sample")))


def _pairs(counts):
    """Query ``q{i}`` with ``counts[i]`` pairs, each on a document of its own."""
    return [
        Pair(query=f"q{i}", positive=f"d{i}-{j}", positive_id=f"d{i}-{j}")
        for i, n in enumerate(counts)
        for j in range(n)
    ]


def test_sampling_keeps_every_query_before_any_gets_a_second():
    pairs = _pairs([1, 9, 3, 5, 1, 6])  # 25 pairs, 6 queries
    kept = sample_pairs(pairs, 10, seed=1)
    per_query = Counter(p.query for p in kept)
    assert len(kept) == 10 and len(per_query) == 6  # every query kept
    assert max(per_query.values()) - min(per_query.values()) <= 1  # rounds: one each, then a second each
    assert kept == [p for p in pairs if p in kept]  # input order
    assert sample_pairs(pairs, 10, seed=1) == kept and sample_pairs(pairs, 10, seed=2) != kept
    few = sample_pairs(pairs, 4, seed=1)  # fewer slots than queries: one pair each of 4 queries
    assert len(few) == 4 and len({p.query for p in few}) == 4
    assert sample_pairs(pairs, 100) == pairs


def test_held_out_documents_are_never_training_positives():
    pairs = _pairs([2] * 30)
    # q0 and q1 share a document: they must land on the same side.
    pairs.append(Pair(query="q1", positive="d0-0", positive_id="d0-0"))
    train, held = hold_out_documents(pairs, 0.2, seed=3)
    assert len({p.query for p in held}) >= 6 and train and len(train) + len(held) == len(pairs)
    assert not {p.positive_id for p in held} & {p.positive_id for p in train}
    assert ({"q0", "q1"} <= {p.query for p in held}) or not ({"q0", "q1"} & {p.query for p in held})
    with pytest.raises(ValueError, match="fraction"):
        hold_out_documents(pairs, 1.0)


def test_honest_dev_prefers_the_collections_dev_split(sample):
    with_dev = replace(sample, qrels={**sample.qrels, "dev": sample.qrels["test"]})
    split = honest_dev(pairs_from_qrels(sample, "train"), collection=with_dev)
    assert split.verified and "own dev split" in split.kind
    assert {p.query for p in split.dev} == {sample.queries[q] for q in sample.qrels["test"]}
    labelled = honest_dev(pairs_from_qrels(sample, "train"), collection=sample)
    assert labelled.verified and "labelled" in labelled.kind


def test_held_out_qrels_are_the_dev_queries_no_training_pair_uses(sample):
    split = honest_dev(pairs_from_qrels(sample, "train"), collection=sample, seed=0)
    held = held_out_qrels(sample, "train", seed=0)
    assert held and set(held) < set(sample.qrels["train"])  # some train queries, not all
    assert {sample.queries[q] for q in held} == {p.query for p in split.dev}
    trained = {p.positive_id for p in split.train}
    assert not {doc for judged in held.values() for doc in judged} & trained
    assert all(held[q] == sample.qrels["train"][q] for q in held)
    assert held_out_qrels(sample, "train", seed=1) != held  # the seed adapt was given picks them
    with_dev = replace(sample, qrels={**sample.qrels, "dev": sample.qrels["test"]})
    assert held_out_qrels(with_dev, "train") == sample.qrels["test"]


def test_generated_pairs_get_another_generators_dev_queries_marked_unverified(sample):
    titles = generate_pairs(sample.corpus, "title", seed=0)
    split = honest_dev(titles, collection=sample, fraction=0.3, seed=0)
    assert not split.verified
    assert {p.source for p in split.dev} == {"span"} and "another generator" in split.kind
    assert not {p.positive_id for p in split.dev} & {p.positive_id for p in split.train}


def test_time_limit_stops_training_and_keeps_the_best_checkpoint(sample, tmp_path):
    pairs = generate_pairs(sample.corpus, "span", seed=0)  # ~100 pairs: 25 steps an epoch at batch 4
    result = fine_tune(
        "local:all-MiniLM-L6-v2",
        pairs[:-12],
        out_dir=tmp_path / "m",
        dev=pairs[-12:],
        epochs=40,
        max_minutes=0.1,
        eval_every=1,
        **TINY,
    )
    planned = result.card["planned_steps"]
    # 6 s for 1,000 steps: the limit, not the plan, ended training (how many steps fit depends on the
    # machine's load, so the wall time itself is checked by benchmarks/adapt_budget.py).
    assert result.time_up and result.steps < planned // 4
    steps = [s for s, _ in result.checkpoints]
    assert steps[0] == 0 and steps == sorted(steps) and result.best_step in steps
    assert result.dev_after == max(f for _, f in result.checkpoints)  # the best, the first of equals
    assert result.card["time_up"] is True and result.card["best_step"] == result.best_step


def test_base_model_kept_when_no_checkpoint_beats_it(sample, tmp_path):
    train, dev = hold_out_documents(pairs_from_qrels(sample, "train"), 0.2, seed=0)
    # A learning rate this small moves no ranking: training cannot beat the base model on dev.
    result = fine_tune("local:all-MiniLM-L6-v2", train[:32], out_dir=tmp_path / "m", dev=dev, lr=1e-12, **TINY)
    assert result.kept_base and result.best_step == 0 and result.dev_after == result.dev_before
    from sentence_transformers import SentenceTransformer

    base = SentenceTransformer(str(base_folder("local:all-MiniLM-L6-v2")[0]), device="cpu")
    assert result.weights_hash == weights_hash(base)  # the folder holds the base's weights
    card = json.loads((result.out_dir / CARD_FILE).read_text(encoding="utf-8"))
    assert card["kept"].startswith("base model")
    assert "unchanged" in (result.out_dir / "README.md").read_text(encoding="utf-8")


def test_budget_settings_are_checked(sample, tmp_path):
    pairs = pairs_from_qrels(sample, "train")
    with pytest.raises(ConfigError, match="max_minutes"):
        fine_tune("local:all-MiniLM-L6-v2", pairs, out_dir=tmp_path / "a", max_minutes=0)
    with pytest.raises(ConfigError, match="eval_every"):
        fine_tune("local:all-MiniLM-L6-v2", pairs, out_dir=tmp_path / "b", eval_every=0)
