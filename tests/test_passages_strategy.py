"""Passage-level strategies in the TOML file and on the command line: round trip and one-line refusals."""

import json

import pytest

from _cli import run_cli as cli
from embedtune.errors import ConfigError
from embedtune.factory import EmbedderSpec
from embedtune.strategy import Strategy

MINILM = EmbedderSpec(model="local:all-MiniLM-L6-v2", over_limit="truncate")


@pytest.mark.parametrize("score", ["first", "max", "sum2"])
def test_passage_strategies_round_trip_through_toml(score):
    strategy = Strategy(embedder=MINILM, chunker="passages:title=true", chunk_score=score)
    text = strategy.to_toml()
    assert 'chunker = "passages:title=true"' in text and f'score = "{score}"' in text
    assert Strategy.from_toml(text) == strategy


@pytest.mark.parametrize(
    ("chunking", "message"),
    [
        ('chunker = "passages"\nscore = "mean"', "unknown chunk score 'mean'"),
        ('chunker = "passages"\nscore = "first2"', "unknown chunk score"),
        ('chunker = "passages:title=perhaps"', "title must be true or false"),
        ('chunker = "recursive:title=true"', "has no option 'title'"),
        ('chunker = "passages:size=100"', "has no option 'size'"),
    ],
)
def test_bad_scores_and_options_are_one_line(chunking, message):
    text = f'version = 1\n[embedder]\nmodel = "{MINILM.model}"\n[chunking]\n{chunking}\n'
    with pytest.raises(ConfigError, match=message) as caught:
        Strategy.from_toml(text, source="s.toml")
    assert str(caught.value).startswith("s.toml: ") and "\n" not in str(caught.value)


def test_compare_puts_chunk_scores_side_by_side_and_refuses_a_bad_one(tmp_path):
    ok = cli(
        "compare",
        "--models",
        "fake:hash-256",
        "--chunker",
        "fixed:size=40,overlap=10,title=true",
        "--chunk-score",
        "first,max,sum2",
        "--out-dir",
        tmp_path / "r",
        home=tmp_path / "h",
    )
    assert ok.returncode == 0, ok.stderr
    data = json.loads((tmp_path / "r" / "comparison.json").read_text())
    names = [s["name"] for s in data["strategies"]]
    assert names == [f"fake:hash-256 @ fixed-40-o10-title by {score}" for score in ("first", "max", "sum2")]
    assert "documents are longer than its 512-token limit" in ok.stdout
    bad = cli(
        "compare", "--models", "fake:hash-256", "--chunker", "passages", "--chunk-score", "max,avg", home=tmp_path
    )
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode != 0 and len(lines) == 1 and lines[0].startswith("error:") and "'avg'" in lines[0]
