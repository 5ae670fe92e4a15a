"""Reranking a run's head: the order it makes, what it leaves alone, the [rerank] table and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedtune.errors import ConfigError
from embedtune.search.rerank import CrossEncoderScorer, RerankSpec, check_cross_encoder, rerank_run
from embedtune.search.runs import ranked
from embedtune.strategy import Strategy


def overlap(pairs):
    """Scores a pair by the query words its document holds: a reranker whose answer is known."""
    return np.array([len(set(q.split()) & set(d.split())) for q, d in pairs], dtype=np.float32)


TEXTS = {
    "a": "bananas are yellow",
    "b": "the sky is blue",
    "c": "why is the sky blue at noon",
    "d": "grass is green",
    "e": "blue whales are large",
}
QUERIES = {"q": "why is the sky blue"}


def test_rerank_moves_the_relevant_document_up():
    first_stage = {"q": {"a": 5.0, "b": 4.0, "d": 3.0, "c": 2.0, "e": 1.0}}
    reranked = rerank_run(first_stage, QUERIES, TEXTS, overlap, top=4)
    assert ranked(reranked["q"])[:3] == ["c", "b", "d"]  # c holds all 5 query words, b 4, d 1, a 0


def test_documents_below_top_keep_their_order_below_every_reranked_one():
    first_stage = {"q": {"a": 5.0, "d": 4.0, "b": 3.0, "e": 2.0, "c": 1.0}}
    calls = []

    def scorer(pairs):
        calls.append(list(pairs))
        return overlap(pairs)

    reranked = rerank_run(first_stage, QUERIES, TEXTS, scorer, top=2)
    assert [text for _, text in calls[0]] == [TEXTS["a"], TEXTS["d"]]  # only the head is read
    assert ranked(reranked["q"]) == ["d", "a", "b", "e", "c"]  # c, the best text, stays below: it was not in the top 2
    assert min(reranked["q"][d] for d in "da") > max(reranked["q"][d] for d in "bec")


def test_one_call_for_all_queries_and_empty_runs():
    calls = []

    def scorer(pairs):
        calls.append(len(pairs))
        return overlap(pairs)

    run = {"q": {"a": 2.0, "c": 1.0}, "r": {"b": 1.0}, "s": {}}
    reranked = rerank_run(run, {"q": "sky", "r": "sky", "s": "sky"}, TEXTS, scorer, top=10)
    assert calls == [3] and reranked["s"] == {}
    with pytest.raises(ConfigError, match="at least 1"):
        rerank_run(run, QUERIES, TEXTS, overlap, top=0)


def test_strategy_file_round_trips_the_rerank_table(tmp_path):
    strategy = Strategy(mode="bm25", rerank=RerankSpec(model=str(tmp_path / "ce"), top=20, batch=8))
    again = Strategy.from_toml(strategy.to_toml())
    assert again == strategy and again.rerank == RerankSpec(model=str(tmp_path / "ce"), top=20, batch=8)
    assert "[rerank]" in strategy.to_toml() and strategy.name == "bm25 > rerank@20"
    assert Strategy.from_toml(Strategy(mode="bm25").to_toml()).rerank is None
    assert strategy.index_settings() == Strategy(mode="bm25").index_settings()  # reranking needs no new index


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("top = 10", "[rerank] needs a model"),
        ('model = "x"\ntop = 0', "rerank.top must be a whole number of at least 1"),
        ('model = "x"\ntop = "ten"', "rerank.top must be a whole number"),
        ('model = "x"\nbatch = -1', "rerank.batch must be"),
        ('model = "x"\ndepth = 3', "unknown key rerank.depth"),
    ],
)
def test_bad_rerank_tables_are_one_line(table, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as caught:
        Strategy.from_toml(f'version = 1\n[retrieval]\nmode = "bm25"\n[rerank]\n{table}\n', source="s.toml")
    assert "\n" not in str(caught.value)


def test_a_folder_that_is_missing_or_not_a_cross_encoder_is_refused(tmp_path, minilm_folder):
    with pytest.raises(ConfigError, match="does not exist"):
        check_cross_encoder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no readable config.json"):
        CrossEncoderScorer(tmp_path / "empty")
    with pytest.raises(ConfigError, match="is not a cross-encoder"):
        check_cross_encoder(minilm_folder)  # a bi-encoder: its config names no classifier
    fake = tmp_path / "two-labels"
    fake.mkdir()
    (fake / "config.json").write_text(
        json.dumps({"architectures": ["BertForSequenceClassification"], "id2label": {"0": "a", "1": "b"}})
    )
    with pytest.raises(ConfigError, match="one output"):
        check_cross_encoder(fake)


@pytest.fixture(scope="module")
def minilm_folder():
    from embedtune.adaptation.training import base_folder

    return base_folder("local:all-MiniLM-L6-v2")[0]
