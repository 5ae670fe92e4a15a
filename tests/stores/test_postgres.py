"""PostgresStore against a real PostgreSQL 18 with pgvector (started once per session by conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest

from embedtune.errors import ConfigError, InputError, StoreError
from embedtune.search.bm25 import BM25Index
from embedtune.stores import Store, open_store
from embedtune.stores.base import DocumentRecord, StoreManifest, metadata_matches
from embedtune.stores.postgres import PostgresStore
from embedtune.stores.sharded import ShardedStore

pytest.importorskip("psycopg")
pytest.importorskip("pgvector")

REPO = Path(__file__).resolve().parents[2]
WORDS = "wing lift drag shock flow plate heat boundary layer supersonic pressure nozzle jet turbulent".split()


def manifest(dims: int, *, precision: str = "float32", mode: str = "hybrid") -> StoreManifest:
    return StoreManifest(
        strategy={"version": 1, "retrieval": {"mode": mode}},
        model="fake:test",
        embedder_fingerprint="fake-fingerprint",
        dims=dims,
        precision=precision,
        chunker="none",
    )


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def corpus(n: int, dims: int, *, seed: int = 0, prefix: str = "doc") -> list[DocumentRecord]:
    """Documents with 0 to 3 chunks, random unit vectors, a few metadata fields and word texts."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        chunks = int(rng.integers(0, 4))
        words = [WORDS[int(j)] for j in rng.integers(0, len(WORDS), size=4 * chunks)]
        text = " ".join(words)
        spans = [
            (len(" ".join(words[: 4 * c])) + (1 if c else 0), len(" ".join(words[: 4 * c + 4]))) for c in range(chunks)
        ]
        records.append(
            DocumentRecord(
                doc_id=f"{prefix}{i:04d}",
                text=text,
                metadata={"bucket": i % 10, "lang": "en" if i % 3 else "de"},
                spans=spans,
                vectors=unit(rng.standard_normal((chunks, dims))) if chunks else np.empty((0, dims), np.float32),
            )
        )
    return records


def brute_force(
    records: Sequence[DocumentRecord], queries: np.ndarray, k: int, keep: Callable[[DocumentRecord], bool] = bool
) -> list[list[tuple[str, float]]]:
    """The exact answer: cosine similarity of every chunk, best first, ties by chunk id."""
    ids = [cid for r in records if keep(r) for cid in r.chunk_ids]
    vectors = np.concatenate([r.vectors for r in records if keep(r) and len(r.spans)]).astype(np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # float16 rows are no longer unit length
    # Rounded: BLAS may differ in the last bits between equal rows, and equal vectors must tie.
    scores = np.round(np.asarray(queries, dtype=np.float64) @ vectors.T, 12)
    out = []
    for row in scores:
        order = sorted(range(len(ids)), key=lambda j: (-row[j], ids[j]))[:k]
        out.append([(ids[j], float(row[j])) for j in order])
    return out


def assert_same_hits(got: list[list[tuple[str, float]]], want: list[list[tuple[str, float]]]) -> None:
    assert len(got) == len(want)
    for got_hits, want_hits in zip(got, want):
        assert [chunk for chunk, _ in got_hits] == [chunk for chunk, _ in want_hits]
        np.testing.assert_allclose([s for _, s in got_hits], [s for _, s in want_hits], atol=1e-5)


@pytest.fixture()
def store(postgres_uri: str) -> Iterator[PostgresStore]:
    with PostgresStore(postgres_uri) as opened:
        yield opened


def test_nothing_connects_before_first_use() -> None:
    store = PostgresStore("postgresql://embedtune:s3cret@127.0.0.1:1/db?table=mine")
    assert isinstance(store, Store)
    assert store.location == "postgresql://embedtune:***@127.0.0.1:1/db?table=mine"
    assert PostgresStore("postgresql://u@h/db?password=s3cret&sslmode=require").location == (
        "postgresql://u@h/db?password=***&sslmode=require"
    )
    assert isinstance(open_store("postgresql://u@h/db"), PostgresStore)
    assert isinstance(open_store("postgresql://u@h/a, postgresql://u@h/b"), ShardedStore)


def test_unreachable_server_is_one_line_without_the_password() -> None:
    store = PostgresStore("postgresql://embedtune:s3cret@127.0.0.1:1/db")
    with pytest.raises(StoreError) as caught:
        store.read_manifest()
    message = str(caught.value)
    assert "s3cret" not in message and "\n" not in message
    assert message.startswith("cannot connect to PostgreSQL at postgresql://embedtune:***@127.0.0.1:1/db (")
    assert message.endswith("); check that the server is running and the URI")


def test_upsert_and_search_equal_a_brute_force_scan(store: PostgresStore) -> None:
    assert store.read_manifest() is None
    assert store.count() == 0 and store.content_hashes() == {}
    store.write_manifest(manifest(24))
    records = corpus(300, 24)
    twin = next(r for r in records if r.spans)  # a copy of it ties with it: the lower chunk id first
    records.append(DocumentRecord(doc_id=f"{twin.doc_id}b", text=twin.text, spans=twin.spans, vectors=twin.vectors))
    store.upsert(records[:150])
    store.upsert(records[150:])
    assert store.read_manifest() == manifest(24)
    assert store.count() == len(records)
    assert store.count_chunks() == sum(len(r.spans) for r in records)
    assert store.content_hashes() == {r.doc_id: r.content_hash for r in records}
    assert store.chunk_spans() == {r.doc_id: list(r.spans) for r in records if r.spans}

    rng = np.random.default_rng(1)
    queries = unit(np.concatenate([rng.standard_normal((40, 24)), twin.vectors[:1]]))
    assert_same_hits(store.search(queries, 10), brute_force(records, queries, 10))
    assert_same_hits(store.search(queries[:3], 5000), brute_force(records, queries[:3], 5000))  # all chunks
    assert store.search(queries[-1:], 2)[0] == [
        (f"{twin.doc_id}#0", pytest.approx(1.0)),
        (f"{twin.doc_id}b#0", pytest.approx(1.0)),
    ]
    assert store.search(queries[:0], 10) == []

    record = next(r for r in records if len(r.spans) == 3)
    chunks = store.chunks([*record.chunk_ids, "doc9999#0"])
    assert sorted(chunks) == record.chunk_ids  # the unknown id left out
    for (start, end), cid in zip(record.spans, record.chunk_ids):
        chunk = chunks[cid]
        assert (chunk.id, chunk.doc_id, chunk.start, chunk.end) == (cid, record.doc_id, start, end)
        assert chunk.text == record.text[start:end] and dict(chunk.metadata) == record.metadata


def test_replace_and_delete(store: PostgresStore) -> None:
    store.write_manifest(manifest(8))
    records = corpus(40, 8)
    store.upsert(records)
    generation = store.generation()
    old = next(r for r in records if len(r.spans) == 3)
    new = DocumentRecord(doc_id=old.doc_id, text="replaced text", spans=[(0, 8)], vectors=unit(np.ones((1, 8))))
    store.upsert([new])
    assert store.generation() == generation + 1
    assert store.chunk_spans()[old.doc_id] == [(0, 8)]
    assert set(store.chunks(old.chunk_ids)) == {f"{old.doc_id}#0"}
    assert store.content_hashes()[old.doc_id] == new.content_hash
    assert store.count_chunks() == sum(len(r.spans) for r in records) - 2

    other = next(r for r in records if r.doc_id != old.doc_id)
    gone = [other.doc_id, old.doc_id, "never-there"]
    store.delete(gone)
    assert store.count() == len(records) - 2
    assert not set(gone) & set(store.content_hashes())
    hits = store.search(unit(np.ones((1, 8))), 1000)[0]
    assert not {chunk.rpartition("#")[0] for chunk, _ in hits} & set(gone)
    assert len(hits) == store.count_chunks() == sum(len(r.spans) for r in records if r.doc_id not in gone)
    generation = store.generation()
    store.delete(["never-there"])
    assert store.generation() == generation  # nothing changed, nothing to rebuild

    with pytest.raises(InputError, match="appears twice"):
        store.upsert([records[1], records[1]])
    with pytest.raises(InputError, match="8-dim"):
        store.upsert([DocumentRecord(doc_id="x", text="abc", spans=[(0, 3)], vectors=unit(np.ones((1, 4))))])
    with pytest.raises(InputError, match="NUL"):
        store.upsert([DocumentRecord(doc_id="x", text="a\x00c", spans=[(0, 3)], vectors=unit(np.ones((1, 8))))])


def test_float16_is_stored_as_halfvec(store: PostgresStore, postgres_uri: str) -> None:
    import psycopg

    store.write_manifest(manifest(16, precision="float16"))
    records = corpus(120, 16)
    store.upsert(records)
    with psycopg.connect(postgres_uri) as conn:
        kind = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'embedtune_chunks'::regclass AND attname = 'embedding'"
        ).fetchone()
    assert kind == ("halfvec(16)",)
    halved = [
        DocumentRecord(
            doc_id=r.doc_id, text=r.text, spans=r.spans, vectors=r.vectors.astype(np.float16).astype(np.float32)
        )
        for r in records
    ]
    queries = unit(np.random.default_rng(3).standard_normal((20, 16)))
    assert_same_hits(store.search(queries, 10), brute_force(halved, queries, 10))
    back = store.read_records([records[4].doc_id])[0]
    assert back.vectors.dtype == np.float32
    np.testing.assert_array_equal(back.vectors, halved[4].vectors)


def clustered(n: int, dims: int, clusters: int, seed: int) -> tuple[list[DocumentRecord], np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((clusters, dims)))
    labels = rng.integers(0, clusters, size=n)
    vectors = unit(centres[labels] + 0.35 * rng.standard_normal((n, dims)))
    records = [
        DocumentRecord(
            doc_id=f"v{i:05d}",
            text=f"vector {i}",
            metadata={"bucket": i % 10},
            spans=[(0, 6)],
            vectors=vectors[i : i + 1],
        )
        for i in range(n)
    ]
    queries = unit(centres[rng.integers(0, clusters, size=60)] + 0.35 * rng.standard_normal((60, dims)))
    return records, queries


def index_scans(admin_uri: str, index: str) -> int:
    import psycopg

    with psycopg.connect(admin_uri, autocommit=True) as conn:
        row = conn.execute("SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = %s", [index]).fetchone()
    return 0 if row is None else int(row[0])


def wait_for_scans(admin_uri: str, index: str, above: int) -> int:
    """The index's scan count once the closed session's statistics arrived (or after 5 s)."""
    deadline = time.monotonic() + 5
    scans = index_scans(admin_uri, index)
    while scans <= above and time.monotonic() < deadline:
        time.sleep(0.1)
        scans = index_scans(admin_uri, index)
    return scans


@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_hnsw_path_recall_and_filtered_searches_return_k_rows(postgres_uri: str, precision: str) -> None:
    records, queries = clustered(3000, 32, clusters=30, seed=5)
    with PostgresStore(postgres_uri, exact_below=0) as store:
        store.write_manifest(manifest(32, precision=precision))
        store.upsert(records)
        store.finish()
    scans = index_scans(postgres_uri, "embedtune_chunks_hnsw")
    stored = records
    if precision == "float16":
        stored = [
            DocumentRecord(
                doc_id=r.doc_id, text=r.text, metadata=r.metadata, spans=r.spans, vectors=r.vectors.astype(np.float16)
            )
            for r in records
        ]
    with PostgresStore(postgres_uri, exact_below=0) as store:
        approximate = store.search(queries, 10)
        exact = brute_force(stored, queries, 10)
        found = sum(len({c for c, _ in a} & {c for c, _ in e}) for a, e in zip(approximate, exact))
        assert found / (10 * len(queries)) >= 0.99
        for hits in approximate:  # rescored exactly: the scores are the true cosine similarities
            assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)

        where = {"bucket": 3}  # 10 % of the vectors
        for k in (10, 60):
            filtered = store.search(queries, k, where)
            assert all(len(hits) == k for hits in filtered)
            assert all(int(c[1:6]) % 10 == 3 for hits in filtered for c, _ in hits)
        exact = brute_force(stored, queries, 10, keep=lambda r: r.metadata["bucket"] == 3)
        filtered = store.search(queries, 10, where)
        found = sum(len({c for c, _ in a} & {c for c, _ in e}) for a, e in zip(filtered, exact))
        assert found / (10 * len(queries)) >= 0.95
    assert wait_for_scans(postgres_uri, "embedtune_chunks_hnsw", scans) > scans  # the index served them

    scans = index_scans(postgres_uri, "embedtune_chunks_hnsw")
    with PostgresStore(postgres_uri) as store:  # 3,000 chunks < 20,000: exact, index untouched
        assert_same_hits(store.search(queries[:10], 10), brute_force(stored, queries[:10], 10))
    time.sleep(0.5)
    assert index_scans(postgres_uri, "embedtune_chunks_hnsw") == scans


FILTER_METADATA = [
    {"n": 1, "lang": "en"},
    {"n": 1.0, "lang": "de"},
    {"n": True, "lang": "en"},
    {"n": "1", "lang": "en"},
    {"n": [1, 2], "lang": "en"},
    {"n": {"v": 1}},
    {"n": 2.5, "lang": "fr"},
    {"lang": "en"},
    {},
    {"n": False, "tags": "a"},
    {"n": 0, "tags": "b"},
]
FILTERS = [
    {"n": 1},
    {"n": True},
    {"n": False},
    {"n": 0},
    {"n": "1"},
    {"n": [1, "1"]},
    {"n": [2.5, True]},
    {"n": 2},
    {"lang": "en", "n": 1},
    {"lang": ["de", "fr"]},
    {"missing": "x"},
    {"n": float("nan")},
    {},
]


def test_filter_semantics_equal_metadata_matches(store: PostgresStore) -> None:
    store.write_manifest(manifest(4))
    vectors = unit(np.random.default_rng(2).standard_normal((len(FILTER_METADATA), 4)))
    records = [
        DocumentRecord(doc_id=f"m{i:02d}", text="text", metadata=meta, spans=[(0, 4)], vectors=vectors[i : i + 1])
        for i, meta in enumerate(FILTER_METADATA)
    ]
    store.upsert(records)
    for where in FILTERS:
        expected = {r.doc_id for r in records if metadata_matches(r.metadata, where)}
        assert store.documents_matching(where) == expected, where
        hits = store.search(vectors[:2], 100, where)
        assert all({chunk.partition("#")[0] for chunk, _ in h} == expected for h in hits), where
    with pytest.raises(InputError, match="values must be"):
        store.search(vectors[:1], 5, {"n": None})


def test_lexical_index_follows_changes_and_equals_a_fresh_build(
    store: PostgresStore, postgres_uri: str, monkeypatch
) -> None:
    pytest.importorskip("bm25s")
    store.write_manifest(manifest(8))
    records = corpus(80, 8)
    store.upsert(records)
    queries = {"a": "wing lift", "b": "shock plate boundary", "c": "turbulent jet nozzle"}

    def fresh(held: dict[str, str]) -> BM25Index:
        ids = sorted(held)
        return BM25Index.build(ids, [held[doc] for doc in ids])

    texts = {r.doc_id: r.text for r in records}
    index = store.lexical_index()
    assert index.ids == fresh(texts).ids
    assert index.search(queries, 20) == fresh(texts).search(queries, 20)
    assert store.lexical_index() is index  # unchanged documents: the same index

    changed = DocumentRecord(
        doc_id=records[3].doc_id, text="supersonic supersonic wing", spans=[(0, 5)], vectors=unit(np.ones((1, 8)))
    )
    store.upsert([changed])
    store.delete([records[4].doc_id])
    texts[changed.doc_id] = changed.text
    del texts[records[4].doc_id]
    store.finish()  # a hybrid strategy: the lexical index is brought up to date and stored
    reflects, _ = store.load_lexical("store")
    assert reflects == {"generation": store.generation()}
    assert store.lexical_index().search(queries, 20) == fresh(texts).search(queries, 20)

    def no_build(*args, **kwargs):
        raise AssertionError("the stored index is current; it must be loaded, not rebuilt")

    monkeypatch.setattr(BM25Index, "build", no_build)
    with PostgresStore(postgres_uri) as other:
        assert other.lexical_index().search(queries, 20) == store.lexical_index().search(queries, 20)


def test_a_store_without_vectors_keeps_documents_for_bm25(store: PostgresStore) -> None:
    pytest.importorskip("bm25s")
    store.write_manifest(manifest(0, precision="none", mode="bm25"))
    store.upsert([DocumentRecord(doc_id=f"t{i}", text=f"heat flow {WORDS[i]}", spans=[(0, 9)]) for i in range(5)])
    assert store.count_chunks() == 5
    assert store.lexical_index().search({"q": WORDS[2]}, 3)["q"].keys() == {"t2"}
    with pytest.raises(InputError, match="holds no vectors"):
        store.search(np.ones((1, 4), np.float32), 3)


def test_table_parameter_names_the_tables(postgres_uri: str) -> None:
    parts = urlsplit(postgres_uri)
    first = urlunsplit(parts._replace(query=f"{parts.query}&table=first"))
    second = urlunsplit(parts._replace(query=f"table=second&{parts.query}"))
    with PostgresStore(first) as a, PostgresStore(second) as b:
        a.write_manifest(manifest(4))
        a.upsert(corpus(5, 4))
        assert b.read_manifest() is None and b.count() == 0
        assert a.count() == 5 and a.table == "first"
    with pytest.raises(ConfigError, match="table name"):
        PostgresStore(urlunsplit(parts._replace(query=f"{parts.query}&table=bad;name")))


def test_a_database_without_pgvector_is_one_line(postgres_server: str, new_postgres_database) -> None:
    import psycopg

    uri = new_postgres_database()
    role = f"reader_{os.getpid()}"
    with psycopg.connect(uri, autocommit=True) as admin:
        admin.execute("DROP EXTENSION vector")
        admin.execute(f"CREATE ROLE {role} LOGIN")
    try:
        parts = urlsplit(uri)
        as_reader = urlunsplit(parts._replace(netloc=f"{role}:@{parts.hostname or ''}"))
        with pytest.raises(StoreError) as caught, PostgresStore(as_reader) as store:
            store.read_manifest()
        message = str(caught.value)
        assert "pgvector" in message and "CREATE EXTENSION vector" in message and "\n" not in message
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_concurrent_searches_share_the_store(store: PostgresStore) -> None:
    store.write_manifest(manifest(16))
    records = corpus(200, 16)
    store.upsert(records)
    queries = unit(np.random.default_rng(4).standard_normal((8, 16)))
    expected = store.search(queries, 10)
    results: dict[int, list] = {}

    def search(i: int) -> None:
        results[i] = store.search(queries[i : i + 1], 10)[0]

    threads = [threading.Thread(target=search, args=(i,)) for i in range(len(queries)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(len(queries))] == expected


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from embedtune.stores.base import DocumentRecord
    from embedtune.stores.postgres import PostgresStore

    uri, n, batch, dims = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    vectors = np.zeros((3, dims), np.float32)
    vectors[:, 1] = 1.0
    store = PostgresStore(uri)
    for start in range(0, n, batch):
        print(f"batch {start}", flush=True)
        store.upsert([
            DocumentRecord(doc_id=f"k{i:05d}", text=f"new {i:05d} version", spans=[(0, 3), (4, 9), (10, 17)], vectors=vectors)
            for i in range(start, min(n, start + batch))
        ])
    print("done", flush=True)
    """
)


def copy_in_progress(uri: str, timeout: float = 30.0) -> bool:
    """Wait until another session of this database is in the middle of a COPY (inside its transaction)."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(uri, autocommit=True) as conn:
        while time.monotonic() < deadline:
            active = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state = 'active' AND query LIKE 'COPY %'"
            ).fetchone()
            if active[0]:
                return True
    return False


def test_kill_9_during_a_large_upsert_leaves_each_document_old_or_new(store: PostgresStore, postgres_uri: str) -> None:
    dims, batch = 128, 1500
    n = 3 * batch
    store.write_manifest(manifest(dims))
    old_vectors = np.zeros((2, dims), np.float32)
    old_vectors[:, 0] = 1.0
    store.upsert(
        [
            DocumentRecord(doc_id=f"k{i:05d}", text=f"old {i}", spans=[(0, 3), (4, 5)], vectors=old_vectors)
            for i in range(n)
        ]
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, "-c", WRITER, postgres_uri, str(n), str(batch), str(dims)]
    writer = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().startswith("batch 0")
        assert writer.stdout.readline().startswith(f"batch {batch}")  # the first transaction committed
        assert copy_in_progress(postgres_uri)  # the second is copying its chunks in
    finally:
        writer.kill()  # SIGKILL
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()

    def check() -> tuple[int, int]:
        records = store.read_records(store.doc_ids())
        assert len(records) == n
        versions = []
        for record in records:
            version = record.text.split()[0]
            versions.append(version)
            chunks = 2 if version == "old" else 3
            assert len(record.spans) == chunks and record.vectors.shape == (chunks, dims)
            assert record.vectors[:, 0 if version == "old" else 1].tolist() == [1.0] * chunks
        assert store.count_chunks() == sum(len(r.spans) for r in records)
        return versions.count("old"), versions.count("new")

    old, new = check()
    assert (old, new) in {(2 * batch, batch), (batch, 2 * batch)}  # whole transactions, the open one lost
    finished = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=True)
    assert finished.stdout.strip().endswith("done")
    assert check() == (0, n)
