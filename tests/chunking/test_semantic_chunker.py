"""The semantic chunker: one batched embed call, through the cache; breakpoint rules; hard limits."""

from __future__ import annotations

import pytest

from embedtune.chunking import SemanticChunker, SentenceChunker, split_sentences
from embedtune.chunking.semantic import RULES
from embedtune.engine import CountingEmbedder
from embedtune.factory import EmbedderSpec, build_embedder, open_provider
from embedtune.providers.fake import HashEmbedder

FRUIT = "Apples and pears grow in the orchard."  # 7 words: 9 hashed tokens
ROCKETS = "Rockets carry satellites into orbit."  # 5 words: 7 hashed tokens


def topics(a: int, b: int) -> str:
    return " ".join([FRUIT] * a + [ROCKETS] * b)


def stack(cache):
    """The usual stack over the hashing embedder, counted below the cache (what reaches the model)."""
    spec = EmbedderSpec(model="fake:hash-256")
    model = CountingEmbedder(open_provider(spec))
    return build_embedder(spec, cache=cache, provider=model), model


def expected_windows(text: str, window: int) -> set[str]:
    spans = split_sentences(text)
    return {text[spans[max(0, i - window)][0] : spans[min(len(spans) - 1, i + window)][1]] for i in range(len(spans))}


def test_each_window_is_embedded_once_in_one_call_and_then_comes_from_the_cache(
    tmp_path,
):
    text = " ".join(f"Sentence {i} talks about topic {i // 4} and item {i}." for i in range(12))
    embedder, model = stack(tmp_path / "cache.sqlite")
    seen = CountingEmbedder(embedder)
    chunks = SemanticChunker(seen, max_tokens=64, min_tokens=0).chunk(text)
    windows = expected_windows(text, 1)
    assert len(windows) == 12
    assert seen.calls == 1 and dict(seen.texts) == dict.fromkeys(windows, 1)
    assert dict(model.texts) == dict.fromkeys(windows, 1)  # all of them reached the model, once

    again, model_again = stack(tmp_path / "cache.sqlite")
    assert SemanticChunker(again, max_tokens=64, min_tokens=0).chunk(text) == chunks
    assert model_again.calls == 0  # second run: every window from the cache


def test_chunk_many_embeds_the_windows_of_all_texts_in_one_call(tmp_path):
    texts = [
        topics(3, 3),
        "Just one sentence here.",
        "",
        "Two sentences. About nothing much.",
    ]
    seen = CountingEmbedder(HashEmbedder())
    chunker = SemanticChunker(seen, max_tokens=64, min_tokens=0)
    many = chunker.chunk_many(texts)
    assert seen.calls == 1
    wanted = set().union(*(expected_windows(t, 1) for t in texts if len(split_sentences(t)) > 1))
    assert set(seen.texts) == wanted and all(n == 1 for n in seen.texts.values())
    assert many == [SemanticChunker(HashEmbedder(), max_tokens=64, min_tokens=0).chunk(t) for t in texts]
    assert many[1][0].text == "Just one sentence here." and many[2] == []


@pytest.mark.parametrize(
    ("rule", "threshold"),
    [
        ("percentile", None),
        ("stdev", None),
        ("iqr", None),
        ("gradient", None),
        ("absolute", None),
    ],
)
def test_every_rule_breaks_where_the_topic_changes(rule, threshold):
    text = topics(10, 10)
    chunker = SemanticChunker(
        HashEmbedder(),
        max_tokens=256,
        rule=rule,
        threshold=threshold,
        min_tokens=0,
        window=0,
    )
    assert [c.text for c in chunker.chunk(text)] == [
        " ".join([FRUIT] * 10),
        " ".join([ROCKETS] * 10),
    ]


def test_a_group_over_the_limit_is_cut_at_its_weakest_link():
    # absolute threshold 2 never breaks; 3 + 3 sentences (2 + 21 + 15 tokens) do not fit in 30.
    text = topics(3, 3)
    chunks = SemanticChunker(
        HashEmbedder(),
        max_tokens=30,
        rule="absolute",
        threshold=2,
        min_tokens=0,
        window=0,
    ).chunk(text)
    assert [c.text for c in chunks] == [" ".join([FRUIT] * 3), " ".join([ROCKETS] * 3)]
    assert all(c.tokens <= 30 for c in chunks)
    # Uncapped, the same rule would have made one chunk of the whole text.
    assert len(SemanticChunker(HashEmbedder(), max_tokens=512, rule="absolute", threshold=2, window=0).chunk(text)) == 1


def test_a_tiny_group_joins_its_more_similar_neighbour_if_that_stays_under_the_limit():
    text = " ".join([FRUIT] * 3 + ["Pears."] + [ROCKETS] * 3)

    def make(limit: int) -> SemanticChunker:
        return SemanticChunker(HashEmbedder(), max_tokens=limit, rule="absolute", threshold=0.5, min_tokens=5, window=0)

    # "Pears." (3 tokens) is closer to the fruit (distance 0.62, a shared word) than to the rockets
    # (1.0), and both are past the threshold: it joins the fruit.
    assert [c.text for c in make(64).chunk(text)] == [
        " ".join([FRUIT] * 3 + ["Pears."]),
        " ".join([ROCKETS] * 3),
    ]
    # With the fruit at the limit already (3 x 7 words + 2 = 23), it joins the rockets instead.
    assert [c.text for c in make(23).chunk(text)] == [
        " ".join([FRUIT] * 3),
        " ".join(["Pears."] + [ROCKETS] * 3),
    ]
    # Without a minimum it stays alone.
    alone = SemanticChunker(
        HashEmbedder(),
        max_tokens=64,
        rule="absolute",
        threshold=0.5,
        min_tokens=0,
        window=0,
    )
    assert "Pears." in [c.text for c in alone.chunk(text)]


def test_a_sentence_far_over_the_limit_is_cut_by_tokens_and_said_so():
    text = "Short start. " + " ".join(f"word{i}" for i in range(300)) + ". Short end."
    for chunker in (
        SemanticChunker(HashEmbedder(), max_tokens=64),
        SentenceChunker(HashEmbedder(), max_tokens=64),
    ):
        chunks = chunker.chunk(text)
        assert all(c.tokens <= 64 for c in chunks) and len(chunks) >= 5
        assert chunker.fallbacks == 1
        assert chunker.notices == ["1 sentence longer than 64 tokens was split by tokens"]


def test_names_are_stable_and_name_every_setting():
    fake = HashEmbedder()
    assert SemanticChunker(fake, max_tokens=256).name == "semantic-percentile95-256"
    assert SemanticChunker(fake, max_tokens=128, rule="iqr").name == "semantic-iqr1.5-128"
    assert (
        SemanticChunker(
            fake,
            max_tokens=128,
            rule="absolute",
            threshold=0.35,
            min_tokens=16,
            window=2,
        ).name
        == "semantic-absolute0.35-128-min16-w2"
    )
    assert set(RULES) == {"percentile", "stdev", "iqr", "gradient", "absolute"}


def test_real_minilm_breaks_between_two_topics(minilm):
    cooking = [
        "Chop the onions finely and fry them in butter.",
        "Add the garlic once the onions turn golden.",
        "Stir in the tomatoes and let the sauce simmer.",
        "Season the sauce with salt, pepper and basil.",
    ]
    space = [
        "The telescope observed a distant spiral galaxy.",
        "Its light left the galaxy millions of years ago.",
        "Astronomers measured how fast the galaxy recedes.",
        "The redshift reveals the expansion of the universe.",
    ]
    text = " ".join(cooking + space)
    chunks = SemanticChunker(minilm, max_tokens=256, min_tokens=0, window=0).chunk(text)
    assert [c.text for c in chunks] == [" ".join(cooking), " ".join(space)]
    assert all(c.tokens == minilm.count_tokens(c.text) for c in chunks)
    # Windows of one neighbour each side blur the change over three gaps: the cut lands within one
    # sentence of it.
    blurred = SemanticChunker(minilm, max_tokens=256, min_tokens=0).chunk(text)
    assert len(blurred) == 2
    assert abs(blurred[1].start - chunks[1].start) <= max(len(s) for s in cooking + space) + 1


def test_windows_are_cut_back_to_what_the_model_reads():
    """With a chunk limit allowed above the model's, windows still reach the model whole: the
    length policy (error on anything over 16 tokens) never fires."""
    from embedtune.chunking import make_chunker
    from embedtune.engine import LengthPolicy

    model = LengthPolicy(HashEmbedder(max_tokens=16), "error")
    text = " ".join([FRUIT] * 3 + [" ".join(["orbit"] * 20) + "."] + [ROCKETS] * 3)
    chunker = make_chunker("semantic:min_tokens=0", model, max_tokens=40, over_model_limit="allow")
    chunks = chunker.chunk(text)
    assert all(c.tokens <= 40 for c in chunks) and "".join(c.text for c in chunks).replace(" ", "") == text.replace(
        " ", ""
    )
