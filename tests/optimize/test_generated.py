"""A corpus without judgments: the search selects on queries generated from the corpus, and says so."""

from importlib import resources
from pathlib import Path

import pytest

from embedtune.errors import ConfigError
from embedtune.evaluation import load_beir
from embedtune.factory import EmbedderSpec
from embedtune.optimize import SearchSpace, generated_search_collection, optimize

SAMPLE = Path(str(resources.files("embedtune") / "data" / "sample"))


def test_the_search_selects_on_generated_queries_alone_and_its_note_says_so(tmp_path):
    real = load_beir(SAMPLE)
    data, note = generated_search_collection(real.corpus, "title", queries=20, seed=0, name="sample")
    # Only the documents were read: every query is generated, judging the document it came from.
    assert set(data.qrels) == {"train", "test"} and not set(data.queries) & set(real.queries)
    assert set(data.qrels["train"]).isdisjoint(data.qrels["test"])
    assert all(qid.startswith("gen-") for split in data.qrels.values() for qid in split)
    assert "no judgments were read" in note and "favour strategies that match a document's own words" in note

    space = SearchSpace(models=(EmbedderSpec(model="fake:hash-256"),), chunkers=("none",))
    result = optimize(data, space, out=tmp_path / "out", trials=2, notes=(note,))
    assert (result.tune_split, result.report_split) == ("train", "test")
    assert result.notes[0] == note and result.chosen.strategy is not None


def test_an_unknown_generator_is_one_line():
    with pytest.raises(ConfigError, match=r"^--generate-queries llm: use title or span$"):
        generated_search_collection(load_beir(SAMPLE).corpus, "llm", name="sample")
