"""Training pairs from qrels and from JSONL files, and the seeded dev split."""

import json
from importlib import resources
from pathlib import Path

import pytest

from embedtune.adaptation.pairs import Pair, pairs_from_qrels, read_pairs, split_dev
from embedtune.errors import InputError
from embedtune.evaluation import load_beir


@pytest.fixture(scope="module")
def sample():
    return load_beir(Path(str(resources.files("embedtune") / "data" / "sample")))


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    return path


def test_pairs_from_qrels_one_per_relevant_judgment(sample):
    pairs = pairs_from_qrels(sample, "train")
    queries, qrels = sample.split("train")
    expected = [(qid, doc) for qid, judged in qrels.items() for doc, rel in judged.items() if rel >= 1]
    assert len(pairs) == len(expected)
    for pair, (qid, doc) in zip(pairs, expected):
        assert pair.query == queries[qid]
        assert pair.positive_id == doc
        assert pair.positive == sample.corpus[doc].title + " " + sample.corpus[doc].text
        assert pair.source == "labels" and pair.negatives == ()


def test_pairs_from_qrels_unknown_split_names_the_splits(sample):
    with pytest.raises(InputError, match="splits: test, train"):
        pairs_from_qrels(sample, "dev")


def test_read_pairs_texts(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"query": "q one", "positive": "doc one"},
            {"query": "q two", "positive": "doc two", "negatives": ["bad a", "bad b"]},
        ],
    )
    assert read_pairs(path) == [
        Pair(query="q one", positive="doc one", source="jsonl"),
        Pair(query="q two", positive="doc two", negatives=("bad a", "bad b"), source="jsonl"),
    ]


def test_read_pairs_ids_resolve_to_document_texts(tmp_path, sample):
    path = write_jsonl(tmp_path / "p.jsonl", [{"query": "paging", "positive_id": "d001", "negative_ids": ["d002"]}])
    (pair,) = read_pairs(path, sample)
    assert pair.positive == sample.documents_text("d001")
    assert pair.negatives == (sample.documents_text("d002"),)
    assert pair.positive_id == "d001"


def test_read_pairs_unknown_ids_one_line_with_count_and_examples(tmp_path, sample):
    rows = [{"query": f"q{i}", "positive_id": f"nope{i}"} for i in range(5)] + [
        {"query": "ok", "positive_id": "d001", "negative_ids": ["nope0", "gone"]}
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(InputError) as info:
        read_pairs(path, sample)
    message = str(info.value)
    assert "\n" not in message
    assert "6 document id(s)" in message and "'nope0', 'nope1', 'nope2' and 3 more" in message


def test_read_pairs_ids_without_a_collection(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"query": "q", "positive_id": "d1"}])
    with pytest.raises(InputError, match="give the collection"):
        read_pairs(path)


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "p.jsonl:2: not valid JSON"),
        ('{"positive": "x"}', 'line 2 has no "query"'),
        ('{"query": "q"}', 'neither a "positive"'),
        ('{"query": "q", "positive": "p", "negatives": "one"}', "must be a list"),
    ],
)
def test_read_pairs_bad_lines_name_the_line(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text('{"query": "fine", "positive": "text"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=message):
        read_pairs(path)


def test_read_pairs_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_pairs(tmp_path / "none.jsonl")


def test_split_dev_by_query_seeded(sample):
    pairs = pairs_from_qrels(sample, "train")
    train, dev = split_dev(pairs, 0.25, seed=3)
    train_queries, dev_queries = {p.query for p in train}, {p.query for p in dev}
    assert not train_queries & dev_queries
    assert sorted(map(repr, train + dev)) == sorted(map(repr, pairs))
    assert len(dev_queries) == round(0.25 * len({p.query for p in pairs}))
    assert split_dev(pairs, 0.25, seed=3) == (train, dev)
    assert split_dev(pairs, 0.25, seed=4)[1] != dev
    with pytest.raises(ValueError):
        split_dev(pairs, 1.0)
