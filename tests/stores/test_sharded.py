"""ShardedStore and add_shard over several real PostgreSQL databases (one server, started by conftest)."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import pytest

from embedtune.errors import InputError
from embedtune.stores.base import DocumentRecord, StoreManifest
from embedtune.stores.postgres import PostgresStore
from embedtune.stores.sharded import ShardedStore, add_shard, merge_hits, owner

pytest.importorskip("psycopg")
pytest.importorskip("pgvector")

DIMS = 16
WORDS = "wing lift drag shock flow plate heat boundary layer supersonic pressure nozzle jet turbulent".split()
QUERIES = {"a": "wing lift", "b": "shock plate boundary", "c": "turbulent jet nozzle", "d": "heat flow"}
MANIFEST = StoreManifest(
    strategy={"version": 1, "retrieval": {"mode": "hybrid"}},
    model="fake:test",
    embedder_fingerprint="fake-fingerprint",
    dims=DIMS,
    precision="float32",
    chunker="none",
)


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def corpus(n: int, *, seed: int = 0, version: str = "") -> list[DocumentRecord]:
    """Documents of 1 to 3 chunks with random unit vectors and word texts."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        chunks = int(rng.integers(1, 4))
        text = " ".join(WORDS[int(j)] for j in rng.integers(0, len(WORDS), size=6)) + version
        step = len(text) // chunks
        spans = [(c * step, (c + 1) * step if c < chunks - 1 else len(text)) for c in range(chunks)]
        records.append(
            DocumentRecord(
                doc_id=f"doc{i:04d}",
                text=text,
                metadata={"bucket": i % 5},
                spans=spans,
                vectors=unit(rng.standard_normal((chunks, DIMS))),
            )
        )
    return records


def queries(n: int, seed: int = 1) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, DIMS)))


@pytest.fixture()
def databases(new_postgres_database: Callable[[], str]) -> Callable[[int], list[str]]:
    return lambda n: [new_postgres_database() for _ in range(n)]


@pytest.fixture()
def sharded(databases) -> Iterator[ShardedStore]:
    with ShardedStore.from_uris(databases(3)) as store:
        yield store


def test_placement_is_rendezvous_hashing() -> None:
    ids = [f"shard-{i}" for i in range(4)]
    docs = [f"doc{i}" for i in range(4000)]
    before = [owner(doc, ids) for doc in docs]
    assert before == [owner(doc, ids) for doc in docs]  # stable
    counts = collections.Counter(before)
    assert all(800 <= counts[i] <= 1200 for i in range(4))
    after = [owner(doc, [*ids, "shard-new"]) for doc in docs]
    moved = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert all(after[i] == 4 for i in moved)  # only to the new shard
    assert 650 <= len(moved) <= 950  # about 1/5
    assert [owner(doc, list(reversed(ids))) for doc in docs] == [3 - b for b in before]  # by id, not position


def test_merge_is_exact_and_counts_a_chunk_once() -> None:
    lists = [[("b#0", 0.9), ("a#0", 0.5)], [("c#0", 0.9), ("d#0", 0.7)], [("a#0", 0.5), ("e#0", 0.1)]]
    assert merge_hits(lists, 4, lambda doc: 0) == [("b#0", 0.9), ("c#0", 0.9), ("d#0", 0.7), ("a#0", 0.5)]
    stale = [[("a#0", 0.8)], [("a#0", 0.2)]]  # mid-rebalance: the owner's copy wins
    assert merge_hits(stale, 5, lambda doc: 1) == [("a#0", 0.2)]


def test_three_shards_answer_as_one_database(sharded, postgres_uri: str) -> None:
    pytest.importorskip("bm25s")
    store = sharded
    records = corpus(400)
    with PostgresStore(postgres_uri) as single:
        for target in (single, store):
            assert target.read_manifest() is None
            target.write_manifest(MANIFEST)
            target.upsert(records[:250])
            target.upsert(records[250:])
            target.delete([records[3].doc_id, "absent"])
        manifests = [shard.read_manifest() for shard in store.shards]
        infos = [m.shard for m in manifests if m is not None]
        assert sorted(info["index"] for info in infos) == [0, 1, 2]
        assert {info["count"] for info in infos} == {3} and len({info["store"] for info in infos}) == 1
        assert len({info["id"] for info in infos}) == 3
        read = store.read_manifest()
        assert read is not None and read.shard == {"store": infos[0]["store"], "count": 3}
        assert store.read_manifest().conflicts(MANIFEST) is None

        held = [shard.count() for shard in store.shards]
        assert sum(held) == 399 and min(held) > 90  # spread over every shard
        for pos, shard in enumerate(store.shards):
            ids = [info["id"] for info in infos]
            assert all(owner(doc, ids) == pos for doc in shard.doc_ids())

        vectors = queries(60)
        for where in (None, {"bucket": 2}):
            got, want = store.search(vectors, 10, where), single.search(vectors, 10, where)
            assert [[c for c, _ in hits] for hits in got] == [[c for c, _ in hits] for hits in want]
            np.testing.assert_allclose([s for h in got for _, s in h], [s for h in want for _, s in h], atol=1e-5)
        assert store.count() == single.count() and store.count_chunks() == single.count_chunks()
        assert store.content_hashes() == single.content_hashes()
        assert store.chunk_spans() == single.chunk_spans()
        assert store.documents_matching({"bucket": [1, 4]}) == single.documents_matching({"bucket": [1, 4]})
        wanted = ["doc0001#0", "doc0002#1", "doc0003#0", "nope#0"]
        assert store.chunks(wanted) == single.chunks(wanted)

        lexical = store.lexical_index()
        assert lexical.ids == single.lexical_index().ids
        assert lexical.search(QUERIES, 50) == single.lexical_index().search(QUERIES, 50)
        home = next(shard for shard, info in zip(store.shards, infos) if info["index"] == 0)
        assert home.load_lexical(f"sharded:{infos[0]['store']}") is not None

        changed = DocumentRecord(
            doc_id="doc0010", text="nozzle nozzle", spans=[(0, 6)], vectors=unit(np.ones((1, DIMS)))
        )
        for target in (single, store):
            target.upsert([changed])
        assert store.lexical_index().search(QUERIES, 50) == single.lexical_index().search(QUERIES, 50)
        assert store.search(vectors[:5], 10) == single.search(vectors[:5], 10)


def test_mismatched_shard_lists_are_refused(databases) -> None:
    uris = databases(5)
    with ShardedStore.from_uris(uris[:3]) as store:
        store.write_manifest(MANIFEST)
    with ShardedStore.from_uris(uris[3:]) as other:
        other.write_manifest(MANIFEST)
    cases = {
        "one of 3 shards, but 2": uris[:2],
        "another store": [uris[0], uris[1], uris[3]],
        "listed twice": [uris[0], uris[1], uris[1]],
    }
    for message, given in cases.items():
        with ShardedStore.from_uris(given) as store, pytest.raises(InputError, match=message) as caught:
            store.read_manifest()
        assert "\n" not in str(caught.value)
    fresh = databases(1)[0]
    with ShardedStore.from_uris([*uris[:3], fresh]) as store, pytest.raises(InputError, match="holds no embedtune"):
        store.read_manifest()
    with PostgresStore(fresh) as single:
        single.write_manifest(MANIFEST)
    with ShardedStore.from_uris([uris[3], fresh]) as store, pytest.raises(InputError, match="single-database"):
        store.read_manifest()
    with ShardedStore.from_uris(uris[:2]) as store, pytest.raises(InputError, match="one of 3 shards"):
        store.upsert(corpus(3))


def test_upsert_removes_copies_left_on_other_shards(sharded) -> None:
    store = sharded
    store.write_manifest(MANIFEST)
    records = corpus(30)
    store.upsert(records)
    ids = [m.shard["id"] for m in (shard.read_manifest() for shard in store.shards) if m and m.shard]
    stale = DocumentRecord(doc_id="?", text="stale copy", spans=[(0, 5)], vectors=unit(np.ones((1, DIMS))))
    strays = records[:6]
    for record in strays:  # a copy on every other shard, as an interrupted rebalance leaves them
        for pos, shard in enumerate(store.shards):
            if pos != owner(record.doc_id, ids):
                shard.upsert([replace(stale, doc_id=record.doc_id)])
    hashes = store.content_hashes()
    found = store.chunks([f"{record.doc_id}#0" for record in strays])
    for record in strays:  # the owner's copy wins, whichever shard answers first
        assert hashes[record.doc_id] == record.content_hash
        assert found[f"{record.doc_id}#0"].text == record.text[slice(*record.spans[0])]
    assert store.count() == 30 + 2 * len(strays)
    store.upsert(strays)
    assert store.count() == 30
    assert store.content_hashes() == {record.doc_id: record.content_hash for record in records}


def snapshot(store: ShardedStore) -> tuple:
    vectors = queries(40, seed=7)
    return (
        store.search(vectors, 10),
        store.search(vectors, 10, {"bucket": 3}),
        store.content_hashes(),
        store.chunk_spans(),
        store.lexical_index().search(QUERIES, 30),
    )


def test_add_shard_moves_only_the_documents_whose_owner_changed(databases) -> None:
    pytest.importorskip("bm25s")
    uris = databases(3)
    with ShardedStore.from_uris(uris[:2]) as store:
        store.write_manifest(MANIFEST)
        store.upsert(corpus(300))
        before = snapshot(store)
        placed = {pos: set(shard.doc_ids()) for pos, shard in enumerate(store.shards)}
    progress: list[tuple[int, int]] = []
    result = add_shard(uris[:2], uris[2], on_progress=lambda done, total: progress.append((done, total)))

    with ShardedStore.from_uris(uris) as store:
        ids = [store.shards[pos].read_manifest().shard["id"] for pos in range(3)]
        after = {pos: set(shard.doc_ids()) for pos, shard in enumerate(store.shards)}
        should_move = {doc for docs in placed.values() for doc in docs if owner(doc, ids) == 2}
        assert after[2] == should_move and 0 < len(should_move) < 150
        for pos in (0, 1):
            assert after[pos] == placed[pos] - should_move  # nothing else moved
        assert sum(len(docs) for docs in after.values()) == 300  # nothing lost, nothing twice
        assert result.moved == len(should_move) and result.documents == 300 and result.shards == 3
        assert progress[0] == (0, len(should_move)) and progress[-1] == (len(should_move), len(should_move))
        assert store.count_chunks() == sum(len(spans) for spans in before[3].values())
        assert snapshot(store) == before
    with ShardedStore.from_uris(uris[:2]) as old, pytest.raises(InputError, match="one of 3 shards"):
        old.read_manifest()


class Crash(Exception):
    pass


def test_add_shard_resumes_after_being_interrupted(databases, monkeypatch) -> None:
    pytest.importorskip("bm25s")
    monkeypatch.setattr("embedtune.stores.sharded._MOVE_BATCH", 10)
    uris = databases(3)
    with ShardedStore.from_uris(uris[:2]) as store:
        store.write_manifest(MANIFEST)
        store.upsert(corpus(200))
        before = snapshot(store)

    def crash(done: int, total: int) -> None:
        if done >= 20:
            raise Crash

    with pytest.raises(Crash):
        add_shard(uris[:2], uris[2], on_progress=crash)
    with ShardedStore.from_uris(uris) as store:  # the topology is written; half-moved documents still show
        assert snapshot(store)[:4] == before[:4]
        # A copy that committed on the new shard before its deletion on the old one (a kill in between):
        ids = [shard.read_manifest().shard["id"] for shard in store.shards]
        # (which old shard still holds documents to move depends on the random shard ids)
        source = max(store.shards[:2], key=lambda shard: sum(owner(doc, ids) == 2 for doc in shard.doc_ids()))
        pending = [doc for doc in source.doc_ids() if owner(doc, ids) == 2][:5]
        assert pending
        store.shards[2].write(source.read_records(pending))
        assert store.count() == 200 + len(pending)
    result = add_shard(uris[:2], uris[2])
    assert 0 < result.moved < 200 and result.documents == 200
    with ShardedStore.from_uris(uris) as store:
        assert store.count() == 200
        ids = [shard.read_manifest().shard["id"] for shard in store.shards]
        for pos, shard in enumerate(store.shards):
            assert all(owner(doc, ids) == pos for doc in shard.doc_ids())
        assert snapshot(store) == before


def test_add_shard_moves_each_documents_sparse_row_with_it(databases) -> None:
    uris, vocab, fingerprint = databases(3), 40, "sparse-test-model"
    records = corpus(120)
    rng = np.random.default_rng(3)
    rows = [
        (
            r.doc_id,
            r.content_hash,
            np.sort(rng.choice(vocab, 5, replace=False)),
            rng.uniform(0.1, 2, 5).astype(np.float32),
        )
        for r in records
    ]
    probes = [(np.array([t]), np.array([1.0], dtype=np.float32)) for t in range(0, vocab, 3)]
    with ShardedStore.from_uris(uris[:2]) as store:
        store.write_manifest(MANIFEST)
        store.upsert(records)
        store.sparse_todo(fingerprint, vocab)
        store.write_sparse(rows, vocab)
        before = store.search_sparse(probes, vocab, 200)
    result = add_shard(uris[:2], uris[2])
    assert result.moved > 0
    with ShardedStore.from_uris(uris) as store:
        assert store.sparse_current(fingerprint)  # every shard's documents have their rows, the new one's too
        assert store.sparse_todo(fingerprint, vocab) == []
        assert store.search_sparse(probes, vocab, 200) == before
        for shard in store.shards:  # each row sits beside its document, as written
            held = shard.read_sparse(shard.doc_ids())
            assert [row[0] for row in held] == shard.doc_ids()
            for doc_id, content, terms, weights in held:
                _, want_content, want_terms, want_weights = rows[int(doc_id[3:])]
                assert content == want_content and terms.tolist() == want_terms.tolist()
                assert weights.tolist() == want_weights.tolist()


def test_a_single_database_becomes_the_first_shard(databases) -> None:
    pytest.importorskip("bm25s")
    uris = databases(2)
    with PostgresStore(uris[0]) as single:
        single.write_manifest(MANIFEST)
        single.upsert(corpus(120))
        vectors = queries(20)
        before = (single.search(vectors, 10), single.lexical_index().search(QUERIES, 20), single.content_hashes())
    result = add_shard(uris[:1], uris[1])
    assert 0 < result.moved < 120
    with ShardedStore.from_uris(uris) as store:
        after = (store.search(vectors, 10), store.lexical_index().search(QUERIES, 20), store.content_hashes())
        assert after == before
        assert all(shard.count() > 0 for shard in store.shards)


def test_write_manifest_completes_an_interrupted_creation(databases) -> None:
    uris = databases(4)
    with ShardedStore.from_uris(uris[:3]) as store:
        store.write_manifest(MANIFEST)
        before = {shard.location: shard.read_manifest().shard for shard in store.shards}
    home = next(uri for uri, shard in zip(uris, before.values()) if shard["index"] == 0)
    others = [uri for uri in uris[:3] if uri != home]
    given = [others[0], uris[3], home]  # shard index 0 kept, one shard never written (uris[3] is empty)
    with ShardedStore.from_uris(given) as store:
        with pytest.raises(InputError, match="holds no embedtune store"):
            store.read_manifest()
        store.write_manifest(MANIFEST)
        infos = [shard.read_manifest().shard for shard in store.shards]
        assert infos[0] == before[store.shards[0].location] and infos[2] == before[store.shards[2].location]
        assert sorted(info["index"] for info in infos) == [0, 1, 2]
        assert {info["store"] for info in infos} == {infos[0]["store"]}
        store.upsert(corpus(30))
        assert store.count() == 30 and store.read_manifest().conflicts(MANIFEST) is None
