"""The query adapter: it learns a map it can be shown to need, never leaves dev worse, and wraps a stack."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import pytest

from embedtune.adaptation.adapter import (
    AdaptedEmbedder,
    QueryAdapter,
    train_query_adapter,
)
from embedtune.adaptation.pairs import Pair
from embedtune.engine import CachingEmbedder, CountingEmbedder, find_layer
from embedtune.engine.wrapper import Wrapper
from embedtune.errors import ConfigError, InputError
from embedtune.factory import EmbedderSpec, build_embedder, load_config, open_provider
from embedtune.providers.fake import HashEmbedder


class DistortedQueries(Wrapper):
    """Query vectors pass through a fixed linear map: a model whose queries are off in a known way."""

    def __init__(self, inner, matrix: np.ndarray) -> None:
        super().__init__(inner)
        self.matrix = matrix.astype(np.float32)

    def fingerprint(self, kind="document") -> str:
        return self.inner.fingerprint(kind) + ("|distorted" if kind == "query" else "")

    def embed(self, texts: Sequence[str], kind="document") -> np.ndarray:
        vectors = self.inner.embed(texts, kind)
        return vectors @ self.matrix.T if kind == "query" and len(texts) else vectors


def make_pairs(n: int, seed: int) -> list[Pair]:
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        words = [f"w{rng.randrange(3000)}" for _ in range(12)]
        pairs.append(Pair(query=" ".join(rng.sample(words, 6)), positive=" ".join(words), positive_id=str(i)))
    return pairs


def rotation(dim: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    return q


TRAIN, DEV = make_pairs(240, 1), make_pairs(60, 2)


def mrr(embedder, pairs: list[Pair]) -> float:
    q = embedder.embed([p.query for p in pairs], "query")
    d = embedder.embed([p.positive for p in pairs], "document")
    order = np.argsort(-(q @ d.T), axis=1)
    return float(np.mean([1.0 / (1 + int(np.where(row == i)[0][0])) for i, row in enumerate(order)]))


def test_a_full_map_learns_to_undo_a_rotation():
    model = DistortedQueries(HashEmbedder(dim=32), rotation(32, 0))
    adapter = train_query_adapter(model, TRAIN, dev_pairs=DEV, epochs=40, lr=2e-2, batch_size=32)
    before, after = mrr(model, DEV), mrr(AdaptedEmbedder(model, adapter), DEV)
    assert before < 0.3 and after > before + 0.3
    assert adapter.info["dev"]["adapted"] > adapter.info["dev"]["base"] + 0.3
    assert adapter.rank is None and adapter.info["train_pairs"] == 240 and adapter.info["dev_pairs"] == 60


def test_a_low_rank_map_learns_a_low_rank_distortion():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(32, 2)), rng.normal(size=(32, 2))
    model = DistortedQueries(HashEmbedder(dim=32), np.eye(32) + 1.5 * a @ b.T / 32**0.5)
    adapter = train_query_adapter(model, TRAIN, dev_pairs=DEV, rank=4, epochs=60, lr=1e-2, batch_size=32)
    assert adapter.rank == 4 and adapter.u.shape == (32, 4)
    assert mrr(AdaptedEmbedder(model, adapter), DEV) > mrr(model, DEV) + 0.1


def test_nothing_to_learn_keeps_the_identity():
    model = HashEmbedder(dim=32)
    perfect = [Pair(query=p.positive, positive=p.positive, positive_id=p.positive_id) for p in TRAIN]
    adapter = train_query_adapter(model, perfect[:200], dev_pairs=perfect[200:], epochs=3)
    assert adapter.info["dev"]["best_epoch"] == 0 and adapter.info["dev"]["base"] == 1.0
    assert np.array_equal(adapter.matrix, np.eye(32, dtype=np.float32))


def test_same_seed_same_weights_and_documents_embedded_once(tmp_path):
    counted = CountingEmbedder(DistortedQueries(HashEmbedder(dim=32), rotation(32, 0)))
    stack = CachingEmbedder(counted, tmp_path / "cache.sqlite")
    first = train_query_adapter(stack, TRAIN, epochs=4, seed=7)
    calls = counted.calls
    assert calls == 2  # one call per kind: queries, documents
    assert first.digest == train_query_adapter(stack, TRAIN, epochs=4, seed=7).digest
    assert counted.calls == calls  # the second run came wholly from the cache
    low = [train_query_adapter(stack, TRAIN, rank=2, epochs=2, seed=s).digest for s in (1, 1, 2)]
    assert low[0] == low[1] != low[2]
    assert first.info["dev_pairs"] == 24  # 10 % of the queries held out when no dev pairs are given


def test_adapted_embedder_maps_queries_only(tmp_path):
    base = DistortedQueries(HashEmbedder(dim=32), rotation(32, 0))
    adapter = train_query_adapter(base, TRAIN, dev_pairs=DEV, epochs=5, lr=5e-3)
    adapted = AdaptedEmbedder(base, adapter)
    texts = ["pulsar magnetic fields", "wing stall"]
    assert np.array_equal(adapted.embed(texts, "document"), base.embed(texts, "document"))
    queries = adapted.embed(texts, "query")
    expected = base.embed(texts, "query") @ adapter.matrix.T
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(queries, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-6)
    assert adapted.fingerprint("document") == base.fingerprint("document")
    assert adapted.fingerprint("query") == base.fingerprint("query") + f"|adapter={adapter.digest[:16]}"
    assert adapted.embed([], "query").shape == (0, 32)

    loaded = QueryAdapter.load(adapter.save(tmp_path / "adapter"))
    assert loaded.digest == adapter.digest and loaded.info["dev"] == adapter.info["dev"]
    np.testing.assert_array_equal(AdaptedEmbedder(base, loaded).embed(texts, "query"), queries)


def test_an_adapter_for_another_model_is_refused(tmp_path):
    base = DistortedQueries(HashEmbedder(dim=32), rotation(32, 0))
    adapter = train_query_adapter(base, TRAIN, epochs=1)
    with pytest.raises(ConfigError, match="trained for 32-dim vectors but fake:hash-256 gives 256"):
        AdaptedEmbedder(HashEmbedder(), adapter)
    with pytest.raises(ConfigError, match="trained on another model or setting"):
        AdaptedEmbedder(HashEmbedder(dim=32), adapter)
    with pytest.raises(ConfigError, match="already carries a query adapter"):
        train_query_adapter(AdaptedEmbedder(base, adapter), TRAIN)
    folder = adapter.save(tmp_path / "a")
    weights = np.load(folder / "adapter.npz")["matrix"]
    np.savez(folder / "adapter.npz", matrix=weights * 2)
    with pytest.raises(ConfigError, match="does not match its recorded hash"):
        QueryAdapter.load(folder)
    with pytest.raises(ConfigError, match="is not a query adapter folder"):
        QueryAdapter.load(tmp_path)


def test_too_few_pairs_says_how_to_get_more():
    with pytest.raises(InputError, match="too few to train a query adapter.*generate_pairs"):
        train_query_adapter(HashEmbedder(dim=32), TRAIN[:5])


def test_the_factory_wraps_the_stack_in_the_adapter(tmp_path):
    spec = EmbedderSpec(model="fake:hash-256", dims=64)
    base = build_embedder(spec)
    adapter = train_query_adapter(base, TRAIN, dev_pairs=DEV, epochs=2)
    adapter.save(tmp_path / "models" / "adapter")
    (tmp_path / "embedtune.toml").write_text(
        '[embedders.tuned]\nmodel = "fake:hash-256"\ndims = 64\nadapter = "models/adapter"\n', encoding="utf-8"
    )
    tuned = load_config(tmp_path / "embedtune.toml")["tuned"]
    assert tuned.adapter == str(tmp_path / "models" / "adapter")
    counted = CountingEmbedder(open_provider(spec))
    stack = build_embedder(tuned, cache=tmp_path / "cache.sqlite", provider=counted)
    assert isinstance(stack, AdaptedEmbedder)  # outermost
    cache = find_layer(stack, CachingEmbedder)
    texts = ["a document about pulsars", "another about wings"]
    stack.embed(texts, "query")
    plain = build_embedder(spec, cache=tmp_path / "cache.sqlite", provider=counted)
    np.testing.assert_array_equal(plain.embed(texts, "query"), base.embed(texts, "query"))  # base vectors cached
    assert counted.texts.total() == 2  # the plain stack's queries came from the adapted stack's cache
    assert cache.stats.misses == 2
    with pytest.raises(ConfigError, match="trained for 64-dim vectors"):
        build_embedder(EmbedderSpec(model="fake:hash-256", adapter=str(tmp_path / "models" / "adapter")))
    with pytest.raises(ConfigError, match="is not a query adapter folder"):
        build_embedder(EmbedderSpec(model="fake:hash-256", adapter=str(tmp_path)))
