"""Chunker specs: names, defaults, and one clear error for each mistake."""

from __future__ import annotations

import pytest

from embedtune.chunking import (
    CHUNKER_NAMES,
    Chunker,
    FixedChunker,
    SemanticChunker,
    make_chunker,
    parse_chunker_spec,
)
from embedtune.errors import ConfigError


@pytest.mark.parametrize(
    ("spec", "max_tokens", "name"),
    [
        ("fixed:size=200,overlap=50", None, "fixed-200-o50"),
        ("fixed:size=200", None, "fixed-200"),
        ("fixed", None, "fixed-256"),
        ("fixed:overlap=32", 128, "fixed-128-o32"),
        ("recursive", None, "recursive-256"),
        ("recursive", 128, "recursive-128"),
        ("sentence:max_tokens=100", 128, "sentence-100"),  # the spec's own limit wins
        ("semantic", None, "semantic-percentile95-256"),
        (
            "semantic:rule=percentile,threshold=95,min_tokens=32",
            None,
            "semantic-percentile95-256",
        ),
        (" Semantic : rule=gradient, threshold=90 ", 200, "semantic-gradient90-200"),
        (
            "semantic:rule=stdev,min_tokens=8,window=2",
            None,
            "semantic-stdev3-256-min8-w2",
        ),
    ],
)
def test_specs_give_stable_names(spec, max_tokens, name, minilm):
    chunker = make_chunker(spec, minilm, max_tokens=max_tokens)
    assert chunker.name == name
    assert isinstance(chunker, Chunker)
    assert chunker.max_tokens == int(name.split("-")[2] if name.startswith("semantic") else name.split("-")[1])


def test_every_name_is_known():
    assert CHUNKER_NAMES == ("fixed", "passages", "recursive", "sentence", "semantic")
    assert parse_chunker_spec("fixed:size=200,overlap=50") == (
        "fixed",
        {"size": 200, "overlap": 50},
    )
    assert parse_chunker_spec("semantic:threshold=1.5") == (
        "semantic",
        {"threshold": 1.5},
    )


def test_a_limit_above_the_model_is_an_error_unless_allowed(minilm):
    with pytest.raises(ConfigError) as error:
        make_chunker("fixed:size=400", minilm)
    message = str(error.value)
    assert "400" in message and "256" in message and "size=" in message and "\n" not in message
    with pytest.raises(ConfigError, match="--max-tokens to 256 or less"):
        make_chunker("semantic", minilm, max_tokens=512)
    allowed = make_chunker("fixed:size=800", minilm, over_model_limit="allow")
    assert isinstance(allowed, FixedChunker) and allowed.name == "fixed-800"
    text = "word " * 1000
    assert max(c.tokens for c in allowed.chunk(text)) == 800  # the model will truncate these: the point of "allow"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "bogus",
            "unknown chunker 'bogus'; choose one of fixed, passages, recursive, sentence, semantic",
        ),
        (
            "fixed:sizes=3",
            "chunker fixed has no option 'sizes'; its options: size, overlap",
        ),
        ("recursive:overlap=3", "chunker recursive has no option 'overlap'"),
        ("fixed:size=big", "chunker option size must be a whole number, not 'big'"),
        ("fixed:size", "chunker option size needs a value"),
        (
            "fixed:size=100,overlap=98",
            "overlap must be at least 0 and below the 98 tokens",
        ),
        ("fixed:size=2", "leaves no room for text"),
        ("semantic:rule=magic", "unknown breakpoint rule 'magic'"),
        (
            "semantic:threshold=120",
            "threshold for rule percentile must be between 0 and 100",
        ),
        (
            "semantic:min_tokens=300",
            "min_tokens must be at least 0 and below max_tokens (256)",
        ),
        ("semantic:window=-1", "window must be a whole number of neighbours"),
    ],
)
def test_mistakes_are_one_clear_line(spec, message, minilm):
    with pytest.raises(ConfigError) as error:
        make_chunker(spec, minilm)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_over_model_limit_takes_two_values(minilm):
    with pytest.raises(ConfigError, match="'error' or 'allow'"):
        make_chunker("fixed", minilm, over_model_limit="truncate")


def test_the_semantic_chunker_gets_the_embedder_it_was_given(minilm):
    chunker = make_chunker("semantic", minilm)
    assert isinstance(chunker, SemanticChunker) and chunker.embedder is minilm
