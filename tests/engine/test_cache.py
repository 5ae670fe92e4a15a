import sqlite3

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedtune.engine import BatchingEmbedder, CachingEmbedder, CountingEmbedder
from embedtune.errors import CacheError, ProviderError
from embedtune.providers.fake import HashEmbedder


def test_second_call_is_served_from_cache(tmp_path):
    counted = CountingEmbedder(HashEmbedder(dim=16))
    with CachingEmbedder(counted, tmp_path / "c.sqlite") as cache:
        first = cache.embed(["a b", "c d", "e f"])
        second = cache.embed(["e f", "a b", "c d"])
    assert counted.calls == 1
    np.testing.assert_array_equal(second, first[[2, 0, 1]])


def test_duplicates_within_a_call_are_embedded_once(tmp_path):
    counted = CountingEmbedder(HashEmbedder(dim=16))
    with CachingEmbedder(counted, tmp_path / "c.sqlite") as cache:
        vectors = cache.embed(["x", "y", "x", "x", "y"])
        assert cache.stats.misses == 2 and cache.stats.hits == 3
    assert counted.texts == {"x": 1, "y": 1}
    np.testing.assert_array_equal(vectors[0], vectors[3])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(max_size=40), min_size=1, max_size=20), kind=st.sampled_from(["document", "query"]))
def test_cache_hit_equals_fresh_computation(tmp_path_factory, texts, kind):
    model = HashEmbedder(dim=16, query_prefix="q: ")
    path = tmp_path_factory.mktemp("cache") / "c.sqlite"
    with CachingEmbedder(model, path) as cache:
        cache.embed(texts, kind)
    counted = CountingEmbedder(model)
    with CachingEmbedder(counted, path) as cache:  # a new connection reads what was committed
        np.testing.assert_array_equal(cache.embed(texts, kind), model.embed(texts, kind))
    assert counted.calls == 0


def test_key_names_the_prefix_so_queries_and_documents_differ(tmp_path):
    prefixed = CountingEmbedder(HashEmbedder(dim=16, query_prefix="query: "))
    with CachingEmbedder(prefixed, tmp_path / "p.sqlite") as cache:
        doc, query = cache.embed(["same text"], "document"), cache.embed(["same text"], "query")
    assert prefixed.calls == 2 and not np.array_equal(doc, query)

    plain = CountingEmbedder(HashEmbedder(dim=16))
    with CachingEmbedder(plain, tmp_path / "n.sqlite") as cache:
        cache.embed(["same text"], "document")
        cache.embed(["same text"], "query")
    assert plain.calls == 1  # no prefixes: the two kinds share one vector


def test_another_model_in_the_same_file_misses(tmp_path):
    path = tmp_path / "c.sqlite"
    with CachingEmbedder(HashEmbedder(dim=16), path) as cache:
        cache.embed(["t"])
    other = CountingEmbedder(HashEmbedder(dim=16, name="fake:other"))
    with CachingEmbedder(other, path) as cache:
        cache.embed(["t"])
    assert other.calls == 1


def test_commits_every_slice(tmp_path):
    path = tmp_path / "c.sqlite"

    class FailsOnThirdCall(CountingEmbedder):
        def embed(self, texts, kind="document"):
            if self.calls == 2:
                raise RuntimeError("boom")
            return super().embed(texts, kind)

    cache = CachingEmbedder(FailsOnThirdCall(HashEmbedder(dim=8)), path, write_every=10)
    with pytest.raises(RuntimeError):
        cache.embed([f"t{i}" for i in range(35)])
    cache.close()
    assert sqlite3.connect(path).execute("SELECT count(*) FROM vectors").fetchone()[0] == 20


def test_malformed_vectors_are_never_stored(tmp_path):
    class NaNs(HashEmbedder):
        def embed(self, texts, kind="document"):
            out = super().embed(texts, kind)
            out[0, 0] = np.nan
            return out

    with CachingEmbedder(NaNs(dim=8), tmp_path / "c.sqlite") as cache:
        with pytest.raises(ProviderError, match="NaN"):
            cache.embed(["a"])
        assert len(cache) == 0


def test_corrupt_file_is_moved_aside_and_rebuilt(tmp_path):
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with CachingEmbedder(HashEmbedder(dim=8), path) as cache:
        vectors = cache.embed(["a"])
        assert len(cache) == 1
        assert cache.notices and "was corrupt" in cache.notices[0] and "moved it aside" in cache.notices[0]
    assert vectors.shape == (1, 8)
    assert len(list(tmp_path.glob("c.sqlite.corrupt-*"))) == 1


def test_unopenable_path_is_one_clear_error(tmp_path):
    path = tmp_path / "dir.sqlite"
    path.mkdir()
    with pytest.raises(CacheError, match="cannot open the embedding cache"):
        CachingEmbedder(HashEmbedder(dim=8), path).embed(["a"])


def test_cache_over_batcher_passes_only_misses(tmp_path):
    counted = CountingEmbedder(HashEmbedder(dim=8))
    stack = CachingEmbedder(BatchingEmbedder(counted, max_batch=2), tmp_path / "c.sqlite")
    stack.embed(["a", "b", "c"])
    stack.embed(["a", "b", "c", "d"])
    assert counted.texts == {"a": 1, "b": 1, "c": 1, "d": 1}


def test_one_stack_serves_several_threads_and_closes_from_another(tmp_path):
    """A service's workers and a framework's async calls share one cache connection."""
    from concurrent.futures import ThreadPoolExecutor

    cache = CachingEmbedder(HashEmbedder(dim=8), tmp_path / "c.sqlite", write_every=3)
    texts = [f"text {i}" for i in range(40)]
    expected = HashEmbedder(dim=8).embed(texts)
    with ThreadPoolExecutor(max_workers=4) as pool:
        parts = list(pool.map(lambda i: cache.embed(texts[i : i + 10]), range(0, 40, 10)))
        again = list(pool.map(lambda i: cache.embed(texts[i : i + 10]), range(0, 40, 10)))
        np.testing.assert_allclose(np.concatenate(parts), expected, atol=1e-6)
        np.testing.assert_allclose(np.concatenate(again), expected, atol=1e-6)
        pool.submit(cache.close).result()
    assert len(CachingEmbedder(HashEmbedder(dim=8), tmp_path / "c.sqlite")) == 40
