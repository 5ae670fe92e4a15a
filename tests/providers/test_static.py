"""A static (model2vec) folder as ``local:DIR``: the factory's stack over it, its tokens, its fingerprint.

The folder is MiniLM distilled once per session (the ``static_minilm`` fixture) with a small
vocabulary: lowercase words of up to three letters, so the texts here are made of such words.
"""

import shutil
import subprocess
import sys

import numpy as np
import pytest

from embedtune.engine import BatchingEmbedder, CachingEmbedder, LengthPolicy, find_layer
from embedtune.errors import ModelLoadError, TextTooLongError
from embedtune.factory import EmbedderSpec, build_embedder, open_provider
from embedtune.providers.static import STATIC_MAX_TOKENS, StaticEmbedder, is_static_folder

TEXTS = ["the cat sat on a mat", "a dog ran to the car", "tax law and the bar", "the cat and the dog", "cat"]


def _cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture()
def static(static_minilm):
    return open_provider(EmbedderSpec(model=f"local:{static_minilm.folder}"))


def test_the_factory_opens_a_static_folder_as_a_static_model(static, static_minilm):
    assert is_static_folder(static_minilm.folder)
    assert isinstance(static, StaticEmbedder)
    assert (static.dim, static.max_tokens) == (64, STATIC_MAX_TOKENS)
    vectors = static.embed(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # No prefixes: a query and a document of the same text are the same vector.
    np.testing.assert_array_equal(static.embed(TEXTS, "query"), vectors)
    # Deterministic: a provider opened afresh gives the same vectors, bit for bit.
    np.testing.assert_array_equal(open_provider(EmbedderSpec(model=static.name)).embed(TEXTS), vectors)


def test_cache_and_batching_over_a_static_model(static, tmp_path):
    reference = static.embed(TEXTS)
    stack = build_embedder(EmbedderSpec(model=static.name, max_batch=2), cache=tmp_path / "c.sqlite")
    first, again = stack.embed(TEXTS), stack.embed(TEXTS)
    np.testing.assert_allclose(first, reference, atol=1e-6)  # batches of 2, sorted by length, same rows
    np.testing.assert_array_equal(again, first)
    assert find_layer(stack, BatchingEmbedder).stats.batches == 3
    assert find_layer(stack, CachingEmbedder).stats.hits == len(TEXTS)


def test_related_texts_are_closer_than_unrelated_ones(static):
    pets, more_pets, law = static.embed(["cat dog pet", "the dog and the cat", "tax law sue"])
    assert _cosine(pets, more_pets) > _cosine(pets, law) + 0.1


def test_a_text_with_no_known_token_is_the_zero_vector(static):
    # Nothing of "Ünïcödé" is in the small vocabulary: there is no token to average.
    vectors = static.embed(["Ünïcödé", "cat"])
    assert not vectors[0].any() and np.isclose(np.linalg.norm(vectors[1]), 1.0, atol=1e-5)


def test_tokens_are_counted_as_the_model_reads_them(static, static_minilm):
    assert static.count_tokens("the cat sat") == 3  # no special tokens in a static model
    prefixed = open_provider(EmbedderSpec(model=static.name, query_prefix="the "))
    assert prefixed.count_tokens("cat", "query") == 2 and prefixed.count_tokens("cat", "document") == 1
    assert static.token_offsets("the cat") == [(0, 3), (4, 7)]
    with pytest.raises(
        TextTooLongError, match=f"text 1 has {STATIC_MAX_TOKENS + 1} tokens, over .*limit of {STATIC_MAX_TOKENS}"
    ):
        LengthPolicy(BatchingEmbedder(static)).embed(["cat", "cat " * (STATIC_MAX_TOKENS + 1)])
    truncated = LengthPolicy(BatchingEmbedder(static), over_limit="truncate").embed(["cat " * (STATIC_MAX_TOKENS + 1)])
    np.testing.assert_allclose(truncated, static.embed(["cat"]), atol=1e-6)


def test_fingerprint_names_the_weights_dims_and_prefix(static, static_minilm, tmp_path):
    from safetensors.numpy import load_file, save_file

    assert "static" in static.fingerprint() and f"rev={static.revision}" in static.fingerprint()
    # Other weights, same everything else: another revision, other vectors.
    changed = tmp_path / "changed"
    shutil.copytree(static_minilm.folder, changed)
    tensors = load_file(changed / "model.safetensors")
    save_file({name: (t * 1.5 + 0.01).astype(t.dtype) for name, t in tensors.items()}, changed / "model.safetensors")
    other = open_provider(EmbedderSpec(model=f"local:{changed}"))
    assert other.revision != static.revision
    assert not np.allclose(other.embed(TEXTS), static.embed(TEXTS), atol=1e-3)

    small = open_provider(EmbedderSpec(model=static.name, dims=32))
    assert small.dim == 32 and "dim=32" in small.fingerprint() and small.fingerprint() != static.fingerprint()
    full = static.embed(TEXTS)[:, :32]
    np.testing.assert_allclose(small.embed(TEXTS), full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-5)
    prefixed = open_provider(EmbedderSpec(model=static.name, query_prefix="the "))
    assert prefixed.fingerprint("query") != prefixed.fingerprint("document") == static.fingerprint()
    with pytest.raises(ModelLoadError, match="dims=65 is not possible"):
        open_provider(EmbedderSpec(model=static.name, dims=65))


def test_embedding_with_a_static_model_never_imports_torch(static_minilm):
    code = (
        "import sys\n"
        "from embedtune.factory import EmbedderSpec, build_embedder\n"
        f"embedder = build_embedder(EmbedderSpec(model='local:{static_minilm.folder}'))\n"
        "assert embedder.embed(['the cat sat']).shape == (1, 64)\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
