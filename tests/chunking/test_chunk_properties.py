"""Invariants every chunker keeps, for any text, under the target model's own tokenizer."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedtune.chunking import (
    FixedChunker,
    RecursiveChunker,
    SemanticChunker,
    SentenceChunker,
)
from embedtune.chunking.semantic import RULES

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# Pieces that trouble splitters: abbreviations, decimals, initials, ellipses, quotes, long words,
# accents, other scripts, emoji; joined by spaces, line breaks and blank lines.
ATOMS = [
    "the",
    "model",
    "reads",
    "tokens",
    "e.g.",
    "i.e.",
    "Dr.",
    "Fig.",
    "2",
    "3.5",
    "J.",
    "R.",
    "Smith",
    "et al.",
    "end.",
    "Why?",
    "Yes!",
    "wait...",
    "so…",
    '"Stop."',
    "(see above.)",
    "naïve",
    "日本語です。",
    "🙂",
    "x" * 70,
    "antidisestablishmentarianism" * 3,
    ",",
    ";",
    "-",
    "A",
    "The",
    "1998.",
]
SEPARATORS = [" ", " ", " ", "  ", "\n", "\n\n", "\t", ""]

words = st.one_of(st.sampled_from(ATOMS), st.text(min_size=1, max_size=6))
texts = st.lists(st.tuples(words, st.sampled_from(SEPARATORS)), max_size=90).map(
    lambda pairs: "".join(w + s for w, s in pairs)
)
# For exact overlap counts: no characters the tokenizer drops or Python counts as whitespace oddly.
plain_texts = st.lists(
    st.tuples(st.sampled_from(ATOMS), st.sampled_from(SEPARATORS)),
    min_size=1,
    max_size=90,
).map(lambda pairs: "".join(w + s for w, s in pairs))


def check_invariants(text, chunks, embedder, limit, *, overlapping=False):
    """Offsets true to the text, in order, covering it, each chunk within the limit."""
    covered = [False] * len(text)
    for c in chunks:
        assert text[c.start : c.end] == c.text
        assert c.text and not c.text[0].isspace() and not c.text[-1].isspace()
        assert c.tokens == embedder.count_tokens(c.text, "document") <= limit
        for i in range(c.start, c.end):
            covered[i] = True
    for a, b in itertools.pairwise(chunks):
        assert a.start < b.start and a.end < b.end  # never backwards
        if not overlapping:
            assert a.end <= b.start
    missing = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    assert not missing, f"characters {missing[:5]} of {text!r} are in no chunk"


def make(kind, embedder, limit, data):
    if kind == "fixed":
        return FixedChunker(
            embedder,
            size=limit,
            overlap=data.draw(st.integers(0, limit - 3), label="overlap"),
        )
    if kind == "recursive":
        return RecursiveChunker(embedder, max_tokens=limit)
    if kind == "sentence":
        return SentenceChunker(embedder, max_tokens=limit)
    rule = data.draw(st.sampled_from(sorted(RULES)), label="rule")
    return SemanticChunker(
        embedder,
        max_tokens=limit,
        rule=rule,
        min_tokens=data.draw(st.integers(0, limit - 1), label="min_tokens"),
        window=data.draw(st.integers(0, 2), label="window"),
    )


KINDS = ["fixed", "recursive", "sentence", "semantic"]


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(text=texts, limit=st.integers(3, 48), data=st.data())
def test_invariants_under_minilm_tokens(kind, text, limit, data, minilm_hashed):
    chunker = make(kind, minilm_hashed, limit, data)
    chunks = chunker.chunk(text)
    check_invariants(
        text,
        chunks,
        minilm_hashed,
        limit,
        overlapping=kind == "fixed" and chunker.overlap > 0,
    )
    assert chunker.chunk(text) == chunks  # the same chunker again
    assert make_again(chunker, minilm_hashed).chunk(text) == chunks  # a fresh one


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(text=texts, limit=st.integers(3, 48), data=st.data())
def test_invariants_when_words_are_packed_by_counting(kind, text, limit, data, hashed):
    """An embedder that cannot say where its tokens are: words packed by count, bisection."""
    chunker = make(kind, hashed, limit, data)
    chunks = chunker.chunk(text)
    check_invariants(text, chunks, hashed, limit, overlapping=kind == "fixed" and chunker.overlap > 0)
    assert make_again(chunker, hashed).chunk(text) == chunks


def make_again(chunker, embedder):
    if isinstance(chunker, FixedChunker):
        return FixedChunker(embedder, size=chunker.max_tokens, overlap=chunker.overlap)
    if isinstance(chunker, SemanticChunker):
        return SemanticChunker(
            embedder,
            max_tokens=chunker.max_tokens,
            rule=chunker.rule,
            threshold=chunker.threshold,
            min_tokens=chunker.min_tokens,
            window=chunker.window,
        )
    return type(chunker)(embedder, max_tokens=chunker.max_tokens)


@SETTINGS
@given(text=plain_texts, size=st.integers(6, 48), data=st.data())
def test_fixed_chunks_overlap_by_exactly_the_configured_tokens(text, size, data, minilm):
    overlap = data.draw(st.integers(1, size - 4), label="overlap")
    chunks = FixedChunker(minilm, size=size, overlap=overlap).chunk(text)
    offsets = minilm.token_offsets(text)
    for a, b in itertools.pairwise(chunks):
        shared = [t for t in offsets if t[0] >= b.start and t[1] <= a.end]
        assert len(shared) == overlap, (a, b)
    # Without overlap the same text falls into chunks that meet end to start.
    plain = FixedChunker(minilm, size=size).chunk(text)
    assert all(a.end <= b.start for a, b in itertools.pairwise(plain))
    if len(plain) > 1:
        assert len(chunks) >= len(plain)


@pytest.mark.parametrize("kind", KINDS)
def test_chunk_many_equals_chunk_one_by_one(kind, minilm_hashed):
    texts = [
        "First doc. It has two sentences.",
        "",
        "Second one is here.\n\nWith a paragraph. " * 12,
    ]
    chunker = make_fixed_kind(kind, minilm_hashed)
    assert chunker.chunk_many(texts) == [chunker.chunk(t) for t in texts]
    assert chunker.chunk_many(texts)[1] == []


def make_fixed_kind(kind, embedder):
    return {
        "fixed": lambda: FixedChunker(embedder, size=20, overlap=5),
        "recursive": lambda: RecursiveChunker(embedder, max_tokens=20),
        "sentence": lambda: SentenceChunker(embedder, max_tokens=20),
        "semantic": lambda: SemanticChunker(embedder, max_tokens=20, min_tokens=4),
    }[kind]()


def test_overlap_that_leaves_no_room_for_new_text_is_dropped(hashed):
    """Found by hypothesis: with one token of overlap and a next word too long to join it, the
    second chunk once lay wholly inside the first."""
    text = "the the e.g. "
    chunks = FixedChunker(hashed, size=4, overlap=1).chunk(text)
    check_invariants(text, chunks, hashed, 4, overlapping=True)
    assert [c.text for c in chunks] == ["the the", "e.g."]
