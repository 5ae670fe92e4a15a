"""Passages sized to the model, and passages that read their document's title first."""

import itertools

import pytest

from embedtune.chunking import FixedChunker, PassageChunker, chunk_documents, make_chunker
from embedtune.errors import ConfigError

TITLE = "Vitamin D and bone density in older adults"
BODY = " ".join(
    f"Sentence {i} reports that supplementation changed the measured density of the hip by {i} percent."
    for i in range(60)
)
DOCUMENT = f"{TITLE} {BODY}"  # a BEIR document: title, one space, text


def test_passages_fill_the_models_own_limit_with_an_eighth_of_overlap(minilm_hashed):
    chunker = make_chunker("passages", minilm_hashed)
    assert isinstance(chunker, PassageChunker)
    assert (chunker.name, chunker.max_tokens, chunker.overlap) == ("passages-256-o32", 256, 32)
    chunks = chunker.chunk(DOCUMENT)
    assert len(chunks) > 3
    assert all(c.text == DOCUMENT[c.start : c.end] and c.tokens <= 256 and not c.prefix for c in chunks)
    assert all(a.end > b.start for a, b in itertools.pairwise(chunks))  # they overlap
    # the windows are full: every one but the last holds within a few tokens of the limit
    assert min(c.tokens for c in chunks[:-1]) >= 250
    assert make_chunker("passages:overlap=0,title=true", minilm_hashed).name == "passages-256-title"


def test_title_is_read_before_every_passage_and_counts_towards_the_limit(minilm_hashed):
    chunker = make_chunker("passages:title=true", minilm_hashed)
    plain = make_chunker("passages", minilm_hashed).chunk(DOCUMENT)
    titled = chunk_documents(chunker, [DOCUMENT], [TITLE])[0]
    first, rest = titled[0], titled[1:]
    # the first passage holds the title where the text has it: no prefix, offsets from 0
    assert (first.start, first.prefix) == (0, "") and first.text.startswith(TITLE)
    assert rest and all(c.prefix == TITLE + "\n" and not c.text.startswith(TITLE) for c in rest)
    for c in titled:
        assert c.text == DOCUMENT[c.start : c.end]  # offsets into the document's own text
        assert c.tokens == minilm_hashed.count_tokens(c.embedded) <= 256
    # the title takes room: a passage holds less of the body than without it
    assert titled[1].end - titled[1].start < plain[1].end - plain[1].start
    # the body is covered whole
    assert titled[-1].end == len(DOCUMENT)


def test_a_text_without_its_title_gets_the_title_before_every_passage(hashed):
    chunker = FixedChunker(hashed, size=30, overlap=5, title=True)
    text = "alpha beta gamma delta " * 20
    chunks = chunker.chunk_titled([text, "no title here", ""], ["Greek letters", "", "Empty"])
    assert all(c.prefix == "Greek letters\n" for c in chunks[0])
    assert all(c.tokens == hashed.count_tokens(c.embedded) <= 30 for c in chunks[0])
    assert chunks[1] == chunker.chunk("no title here") and chunks[2] == []
    # a title of more than half a window is cut to half
    long_title = " ".join(["word"] * 40)
    cut = chunker.chunk_titled([text], [long_title])[0]
    assert all(hashed.count_tokens(c.prefix) - 2 <= 14 and c.tokens <= 30 for c in cut)


def test_chunkers_without_titles_chunk_the_text_alone(hashed):
    chunker = make_chunker("recursive", hashed)
    assert chunk_documents(chunker, [DOCUMENT], [TITLE]) == chunker.chunk_many([DOCUMENT])
    untitled = make_chunker("fixed:size=40", hashed)
    assert untitled.chunk_titled([DOCUMENT], [TITLE]) == [untitled.chunk(DOCUMENT)]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("passages:title=maybe", "title must be true or false"),
        ("recursive:title=true", "has no option 'title'"),
        ("passages:overlap=x", "must be a whole number"),
        ("passages:max_tokens=999", "above"),
        ("passages:overlap=300", "overlap must be"),
    ],
)
def test_bad_passage_specs_are_one_line(minilm_hashed, spec, message):
    with pytest.raises(ConfigError, match=message) as caught:
        make_chunker(spec, minilm_hashed)
    assert "\n" not in str(caught.value)
