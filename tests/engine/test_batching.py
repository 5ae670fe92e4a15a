import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedtune.engine import BatchingEmbedder, CachingEmbedder, CountingEmbedder, LengthPolicy, OverLimit
from embedtune.engine.batching import plan_batches
from embedtune.engine.limits import split_to_fit
from embedtune.errors import TextTooLongError
from embedtune.providers.fake import HashEmbedder

words = st.sampled_from("alpha beta gamma delta cache vector token batch query index shard".split())
texts_strategy = st.lists(st.lists(words, min_size=0, max_size=12).map(" ".join), min_size=1, max_size=40)


@given(
    lengths=st.lists(st.integers(1, 50), max_size=60),
    max_batch=st.integers(1, 10),
    max_tokens=st.integers(1, 120),
    sort=st.booleans(),
)
def test_plan_batches_covers_every_index_once_within_bounds(lengths, max_batch, max_tokens, sort):
    batches = plan_batches(lengths, max_batch=max_batch, max_tokens=max_tokens, sort=sort)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert 1 <= len(batch) <= max_batch
        # Only a single text over the budget may exceed it, alone in its batch.
        assert sum(lengths[i] for i in batch) <= max_tokens or len(batch) == 1


def test_sorted_batches_group_similar_lengths():
    lengths = [5, 100, 6, 99, 7, 98]
    batches = plan_batches(lengths, max_batch=3, max_tokens=10_000, sort=True)
    assert [sorted(lengths[i] for i in b) for b in batches] == [[98, 99, 100], [5, 6, 7]]


@settings(max_examples=60, deadline=None)
@given(texts=texts_strategy, max_batch=st.integers(1, 50), budget=st.integers(1, 400), sort=st.booleans())
def test_output_does_not_depend_on_batch_size_or_budget(texts, max_batch, budget, sort):
    model = HashEmbedder(dim=32)
    reference = model.embed(texts)
    batched = BatchingEmbedder(model, max_batch=max_batch, max_batch_tokens=budget, sort_by_length=sort)
    np.testing.assert_array_equal(batched.embed(texts), reference)
    np.testing.assert_array_equal(batched.embed(texts, "query"), model.embed(texts, "query"))


def test_inner_calls_respect_both_limits():
    counted = CountingEmbedder(HashEmbedder(dim=16))
    sizes = []
    inner_embed = counted.embed

    class Spy:
        name, dim, max_tokens = counted.name, counted.dim, counted.max_tokens
        fingerprint = counted.fingerprint
        count_tokens = counted.count_tokens

        def embed(self, texts, kind="document"):
            sizes.append((len(texts), sum(counted.count_tokens(t) for t in texts)))
            return inner_embed(texts, kind)

    texts = [" ".join(["word"] * (i % 17 + 1)) for i in range(100)]
    BatchingEmbedder(Spy(), max_batch=8, max_batch_tokens=60).embed(texts)
    assert sum(n for n, _ in sizes) == 100
    assert all(n <= 8 and tokens <= 60 for n, tokens in sizes)


def test_progress_reports_every_text_once():
    seen = []
    batcher = BatchingEmbedder(HashEmbedder(dim=8), max_batch=7, on_progress=seen.append)
    batcher.embed([f"text {i}" for i in range(50)])
    assert sum(seen) == 50 and len(seen) == 8


def test_over_limit_error_names_the_text_and_embeds_nothing():
    counted = CountingEmbedder(HashEmbedder(dim=8, max_tokens=10))
    policy = LengthPolicy(BatchingEmbedder(counted), over_limit="error")
    with pytest.raises(TextTooLongError, match=r"text 2 has 14 tokens, over .* limit of 10 \(and 1 more\)") as info:
        policy.embed(["short", "also short", " ".join(["w"] * 12), " ".join(["w"] * 20)])
    assert info.value.index == 2 and counted.calls == 0


def test_over_limit_truncate_is_counted():
    model = HashEmbedder(dim=8, max_tokens=10)
    policy = LengthPolicy(BatchingEmbedder(model), over_limit=OverLimit.TRUNCATE)
    long_text = " ".join(f"w{i}" for i in range(30))
    vectors = policy.embed(["short", long_text])
    assert policy.stats.truncated == 1
    np.testing.assert_array_equal(vectors, model.embed(["short", long_text]))


def test_over_limit_split_averages_pieces_and_renormalises():
    model = HashEmbedder(dim=64, max_tokens=10)
    policy = LengthPolicy(model, over_limit="split")
    long_text = " ".join(f"w{i}" for i in range(20))  # 22 tokens: pieces of at most 8 words
    vector = policy.embed(["short", long_text])[1]
    pieces = split_to_fit(long_text, lambda s: model.count_tokens(s) <= 10)
    assert [len(p.split()) for p in pieces] == [8, 8, 4]
    expected = model.embed(pieces).mean(axis=0)
    np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), atol=1e-6)
    assert policy.stats.split == 1
    assert np.isclose(np.linalg.norm(vector), 1.0, atol=1e-6)


@given(text=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300), limit=st.integers(3, 40))
def test_split_pieces_fit_and_keep_the_text(text, limit):
    fits = lambda s: len(s) <= limit  # noqa: E731
    pieces = split_to_fit(text, fits)
    assert all(fits(p) for p in pieces)
    # Pieces come in order and keep every non-space character: only whitespace may be dropped.
    assert re.sub(r"\s", "", "".join(pieces)) == re.sub(r"\s", "", text)
    position = 0
    for piece in pieces:
        position = text.index(piece, position) + len(piece)


def test_a_vector_cached_under_one_policy_is_never_served_under_another(tmp_path):
    model = HashEmbedder(dim=32, max_tokens=10)
    long_text = " ".join(f"w{i}" for i in range(20))
    cache = CachingEmbedder(model, tmp_path / "c.sqlite")
    truncated = LengthPolicy(cache, "truncate").embed([long_text])
    split = LengthPolicy(cache, "split").embed([long_text])
    assert not np.allclose(truncated, split)
    np.testing.assert_array_equal(split, LengthPolicy(model, "split").embed([long_text]))
    np.testing.assert_array_equal(truncated, LengthPolicy(cache, "truncate").embed([long_text]))
