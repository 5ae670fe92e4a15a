"""The embedded store: exact and HNSW search against brute force, writes, filters, the derived
indexes catching up, corrupt manifests, and kill -9 at any moment of a write."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedtune.errors import InputError
from embedtune.stores.base import DocumentRecord, Store, StoreManifest, metadata_matches
from embedtune.stores.embedded import EmbeddedStore

WRITER_PATH = Path(__file__).with_name("_crash_writer.py")
_spec = importlib.util.spec_from_file_location("_crash_writer", WRITER_PATH)
assert _spec is not None and _spec.loader is not None
writer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(writer)


# -- helpers -------------------------------------------------------------------------------------


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def manifest(dims: int, precision: str = "float32", mode: str = "dense") -> StoreManifest:
    return StoreManifest(
        strategy={"version": 1, "retrieval": {"mode": mode}},
        model="fake:test" if dims else None,
        embedder_fingerprint="fake:test" if dims else None,
        dims=dims,
        precision=precision if dims else "none",
        chunker="fixed",
    )


def open_store(path: Path, dims: int, precision: str = "float32", mode: str = "dense", **options) -> EmbeddedStore:
    store = EmbeddedStore(path, **options)
    store.write_manifest(manifest(dims, precision, mode))
    return store


def records_for(vectors: np.ndarray, per_doc: int = 3, metadata=None) -> list[DocumentRecord]:
    """Documents of ``per_doc`` chunks each (the last may have fewer), one vector per chunk."""
    records = []
    for d, start in enumerate(range(0, len(vectors), per_doc)):
        rows = vectors[start : start + per_doc]
        text = " ".join(f"w{d}n{n}" for n in range(len(rows)))
        spans = []
        offset = 0
        for word in text.split(" "):
            spans.append((offset, offset + len(word)))
            offset += len(word) + 1
        meta = metadata(d) if metadata else {"d": d}
        records.append(DocumentRecord(doc_id=f"doc{d:05d}", text=text, metadata=meta, spans=spans, vectors=rows))
    return records


def held_vectors(records: list[DocumentRecord]) -> dict[str, np.ndarray]:
    out = {}
    for record in records:
        for cid, row in zip(record.chunk_ids, record.vectors if record.vectors is not None else []):
            out[cid] = np.asarray(row, dtype=np.float32)
    return out


def brute_force(held: dict[str, np.ndarray], queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    """Every score, sorted: descending, ties by chunk id."""
    ids = sorted(held)
    matrix = np.stack([held[cid] for cid in ids])
    results = []
    for query in queries:
        scores = matrix @ query
        order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))[:k]
        results.append([(ids[i], float(scores[i])) for i in order])
    return results


def assert_same_results(found, expected) -> None:
    assert len(found) == len(expected)
    for got, want in zip(found, expected):
        assert [cid for cid, _ in got] == [cid for cid, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-6)


def recall(found, expected) -> float:
    hits = sum(len({c for c, _ in g} & {c for c, _ in w}) for g, w in zip(found, expected))
    return hits / sum(len(w) for w in expected)


def clustered(rng: np.random.Generator, n: int, dims: int, clusters: int = 40, spread: float = 0.35) -> np.ndarray:
    """Points around ``clusters`` centres that depend only on ``dims`` and ``clusters``: documents and
    queries drawn by separate calls share them."""
    centres = np.random.default_rng([dims, clusters]).standard_normal((clusters, dims))
    return unit(centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dims)))


def stamp_generation(path: Path) -> int:
    return json.loads((path / "hnsw.json").read_text())["generation"]


def generation(path: Path) -> int:
    with closing(sqlite3.connect(path / "store.sqlite")) as conn:
        return conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]


def vectors_on_disk(path: Path, dims: int, dtype=np.float32) -> dict[str, np.ndarray]:
    """Each chunk's vector as the files hold it: its slot's row of vectors.bin."""
    rows = np.fromfile(path / "vectors.bin", dtype=dtype).reshape(-1, dims)
    with closing(sqlite3.connect(path / "store.sqlite")) as conn:
        return {cid: rows[slot].astype(np.float32) for slot, cid in conn.execute("SELECT slot, id FROM chunks")}


def files_state(path: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()}


# -- search against brute force ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_exact_search_equals_brute_force(tmp_path, kind) -> None:
    rng = np.random.default_rng(1)
    vectors = unit(rng.standard_normal((1500, 32))) if kind == "random" else clustered(rng, 1500, 32)
    records = records_for(vectors)
    with open_store(tmp_path / "s", 32) as store:
        store.upsert(records[:200])
        store.upsert(records[200:])
        assert isinstance(store, Store)
        assert store.count() == len(records) and store.count_chunks() == 1500
        queries = unit(rng.standard_normal((7, 32))) if kind == "random" else clustered(rng, 7, 32)
        held = held_vectors(records)
        for k in (1, 10, 37):
            assert_same_results(store.search(queries, k), brute_force(held, queries, k))
        assert len(store.search(queries[:1], 5000)[0]) == 1500  # k past the end: every chunk, ranked
        assert not (tmp_path / "s" / "hnsw.json").exists()  # below exact_below: no graph


def test_ties_rank_by_chunk_id(tmp_path) -> None:
    # One-hot vectors: every product is exact, so equal scores are truly equal.
    eye = np.eye(8, dtype=np.float32)
    vectors = eye[np.arange(200) % 8]
    records = records_for(vectors, per_doc=5)
    with open_store(tmp_path / "s", 8) as store:
        store.upsert(records[::-1])  # slot order differs from chunk-id order
        queries = unit(np.random.default_rng(2).standard_normal((5, 8)))
        assert_same_results(store.search(queries, 30), brute_force(held_vectors(records), queries, 30))


def test_upsert_replaces_a_documents_chunks_and_reuses_slots(tmp_path) -> None:
    rng = np.random.default_rng(3)
    with open_store(tmp_path / "s", 16) as store:
        first = DocumentRecord(
            doc_id="a",
            text="one two three",
            spans=[(0, 3), (4, 7), (8, 13)],
            vectors=unit(rng.standard_normal((3, 16))),
        )
        other = DocumentRecord(doc_id="b", text="other", spans=[(0, 5)], vectors=unit(rng.standard_normal((1, 16))))
        store.upsert([first, other])
        second = DocumentRecord(
            doc_id="a", text="new", metadata={"v": 2}, spans=[(0, 3)], vectors=unit(rng.standard_normal((1, 16)))
        )
        store.upsert([second])
        assert store.count() == 2 and store.count_chunks() == 2
        assert store.chunk_spans() == {"a": [(0, 3)], "b": [(0, 5)]}
        assert set(store.chunks(["a#0", "a#1", "a#2", "b#0"])) == {"a#0", "b#0"}
        chunk = store.chunks(["a#0"])["a#0"]
        assert (chunk.doc_id, chunk.start, chunk.end, chunk.text, dict(chunk.metadata)) == ("a", 0, 3, "new", {"v": 2})
        assert store.content_hashes()["a"] == second.content_hash
        held = held_vectors([second, other])
        assert_same_results(store.search(second.vectors, 5), brute_force(held, second.vectors, 5))
        # Replacing one document again and again reuses the slots it frees: the file stays small.
        for _ in range(50):
            vectors = unit(rng.standard_normal((3, 16)))
            store.upsert([DocumentRecord(doc_id="a", text="x y z", spans=[(0, 1), (2, 3), (4, 5)], vectors=vectors)])
        assert (tmp_path / "s" / "vectors.bin").stat().st_size <= 8 * 16 * 4
        assert_same_results(
            store.search(vectors, 4),
            brute_force({**held_vectors([other]), **{f"a#{n}": vectors[n] for n in range(3)}}, vectors, 4),
        )
        assert vectors_on_disk(tmp_path / "s", 16)["a#2"].tolist() == vectors[2].tolist()


@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_read_records_round_trip_into_another_store(tmp_path, precision) -> None:
    rng = np.random.default_rng(16)
    records = records_for(unit(rng.standard_normal((40, 8))), per_doc=4)
    records.append(DocumentRecord(doc_id="empty", text="", metadata={"e": True}))
    with open_store(tmp_path / "a", 8, precision) as source, open_store(tmp_path / "b", 8, precision) as copy:
        source.upsert(records[::-1])
        assert source.doc_ids() == sorted(r.doc_id for r in records)
        back = source.read_records(["nope", *reversed(source.doc_ids())])
        assert [r.doc_id for r in back] == sorted(r.doc_id for r in records)
        for got in back:
            want = next(r for r in records if r.doc_id == got.doc_id)
            assert (got.text, dict(got.metadata), list(got.spans), got.content_hash) == (
                want.text,
                dict(want.metadata),
                list(want.spans),
                want.content_hash,
            )
            expected = np.zeros((0, 8)) if want.vectors is None else want.vectors.astype(precision)
            np.testing.assert_array_equal(got.vectors, expected.astype(np.float32))
        copy.upsert(back)
        queries = unit(rng.standard_normal((3, 8)))
        assert copy.search(queries, 12) == source.search(queries, 12)
        assert copy.content_hashes() == source.content_hashes()


def test_delete(tmp_path) -> None:
    rng = np.random.default_rng(4)
    records = records_for(unit(rng.standard_normal((300, 16))))
    with open_store(tmp_path / "s", 16) as store:
        store.upsert(records)
        before = generation(tmp_path / "s")
        store.delete(["nope"])  # unknown ids are ignored, and no write happens
        assert generation(tmp_path / "s") == before
        gone = [r.doc_id for r in records[::2]]
        store.delete(gone + ["nope"])
        kept = records[1::2]
        assert store.count() == len(kept) and set(store.content_hashes()) == {r.doc_id for r in kept}
        assert store.count_chunks() == sum(len(r.spans) for r in kept)
        queries = unit(rng.standard_normal((4, 16)))
        assert_same_results(store.search(queries, 10), brute_force(held_vectors(kept), queries, 10))
        assert not store.chunks([records[0].chunk_ids[0]])


def test_empty_documents_are_kept_without_chunks(tmp_path) -> None:
    with open_store(tmp_path / "s", 4) as store:
        store.upsert([DocumentRecord(doc_id="e", text="", metadata={"k": 1}, spans=[], vectors=None)])
        assert store.count() == 1 and store.count_chunks() == 0
        assert store.content_hashes() == {"e": DocumentRecord(doc_id="e", text="", metadata={"k": 1}).content_hash}
        assert store.search(unit(np.ones((1, 4))), 3) == [[]]
        assert store.documents_matching({"k": 1}) == {"e"}


def test_reopen_gives_the_same_results(tmp_path) -> None:
    rng = np.random.default_rng(5)
    records = records_for(clustered(rng, 3000, 24))
    queries = clustered(rng, 10, 24)
    for exact_below in (100_000, 500):
        path = tmp_path / f"s{exact_below}"
        with open_store(path, 24, exact_below=exact_below) as store:
            store.upsert(records)
            store.finish()
            before = store.search(queries, 10)
        saved = files_state(path)
        with EmbeddedStore(path, exact_below=exact_below) as again:
            assert again.search(queries, 10) == before
            assert again.content_hashes() == {r.doc_id: r.content_hash for r in records}
        after = files_state(path)
        # The graph is loaded from its file, not rebuilt (the database's WAL files may change).
        assert {n: s for n, s in after.items() if "sqlite" not in n} == {
            n: s for n, s in saved.items() if "sqlite" not in n
        }


def test_float16_vectors(tmp_path) -> None:
    rng = np.random.default_rng(6)
    vectors = clustered(rng, 2000, 32)
    records = records_for(vectors)
    rounded = {cid: v.astype(np.float16).astype(np.float32) for cid, v in held_vectors(records).items()}
    queries = clustered(rng, 200, 32)
    path = tmp_path / "s"
    with open_store(path, 32, precision="float16") as store:
        store.upsert(records)
        assert (path / "vectors.bin").stat().st_size == 2000 * 32 * 2
        assert_same_results(store.search(queries, 10), brute_force(rounded, queries, 10))
    with EmbeddedStore(path, exact_below=300) as graph:  # the same folder through an f16 graph
        assert recall(graph.search(queries, 10), brute_force(rounded, queries, 10)) >= 0.99
        assert json.loads((path / "hnsw.json").read_text())["dtype"] == "f16"


# -- filters ---------------------------------------------------------------------------------------


def test_filters_equality_list_bool_and_missing_keys(tmp_path) -> None:
    metadata = {
        "t": {"flag": True, "n": 1, "s": "1"},
        "f": {"flag": False, "n": 0, "s": "0"},
        "one": {"n": 1.0, "lang": "en"},
        "int": {"flag": 1, "lang": "de"},
        "none": {"flag": None, "lang": None},
        "nested": {"lang": ["en"], "n": {"x": 1}},
        "odd key": {'we"ird.key': "v", "": "empty"},
    }
    with open_store(tmp_path / "s", 0) as store:
        store.upsert([DocumentRecord(doc_id=d, text=d, metadata=m, spans=[(0, len(d))]) for d, m in metadata.items()])
        cases = {
            "flag=True": ({"flag": True}, {"t"}),
            "flag=1 (true is not 1)": ({"flag": 1}, {"int"}),
            "flag=False": ({"flag": False}, {"f"}),
            "n=1 (1 is 1.0, but not '1' or true)": ({"n": 1}, {"t", "one"}),
            "s=1 ('1' is not 1)": ({"s": 1}, set()),
            "s='1'": ({"s": "1"}, {"t"}),
            "any of a list": ({"lang": ["en", "de"]}, {"one", "int"}),
            "two keys": ({"lang": "en", "n": 1}, {"one"}),
            "missing key": ({"colour": "red"}, set()),
            "odd key": ({'we"ird.key': "v"}, {"odd key"}),
            "nothing": ({}, set(metadata)),
        }
        for name, (where, expected) in cases.items():
            assert store.documents_matching(where) == expected, name
            assert expected == {d for d, m in metadata.items() if metadata_matches(m, where)}, name
        with pytest.raises(InputError):
            store.documents_matching({"k": {"nested": 1}})


json_scalars = st.one_of(
    st.booleans(), st.integers(-3, 3), st.sampled_from([0.0, 1.0, 2.5, -1.0]), st.sampled_from(["0", "1", "a", "b", ""])
)
metadata_values = st.one_of(json_scalars, st.none(), st.lists(json_scalars, max_size=2))
keys = st.sampled_from(["a", "b", "c", "a.b", '"'])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.dictionaries(keys, metadata_values, max_size=3), min_size=1, max_size=12),
    st.lists(
        st.dictionaries(keys, st.one_of(json_scalars, st.lists(json_scalars, min_size=1, max_size=3)), max_size=2),
        min_size=1,
        max_size=5,
    ),
)
def test_filter_semantics_equal_metadata_matches(metadatas, filters) -> None:
    with tempfile.TemporaryDirectory() as folder, open_store(Path(folder), 0) as store:
        store.upsert([DocumentRecord(doc_id=f"d{i}", text="x", metadata=m) for i, m in enumerate(metadatas)])
        for where in filters:
            expected = {f"d{i}" for i, m in enumerate(metadatas) if metadata_matches(m, where)}
            assert store.documents_matching(where) == expected


@pytest.mark.parametrize("exact_below", [100_000, 400])
def test_filtered_search_returns_k_matching_rows(tmp_path, exact_below) -> None:
    rng = np.random.default_rng(8)
    vectors = clustered(rng, 5000, 32)
    records = records_for(vectors, per_doc=2, metadata=lambda d: {"bucket": d % 10, "rare": d % 500 == 0})
    queries = clustered(rng, 200, 32)
    with open_store(tmp_path / "s", 32, exact_below=exact_below) as store:
        store.upsert(records)
        for where, check in (
            ({"bucket": 3}, lambda m: m["bucket"] == 3),  # 10% of the chunks: the graph path when exact_below=400
            ({"bucket": [1, 2, 3]}, lambda m: m["bucket"] in (1, 2, 3)),
            ({"rare": True}, lambda m: m["rare"]),  # 5 documents, 10 chunks: fewer than k match
        ):
            held = held_vectors([r for r in records if check(r.metadata)])
            expected = brute_force(held, queries, 20)
            found = store.search(queries, 20, where=where)
            assert all(len(hits) == min(20, len(held)) for hits in found)
            assert all(cid in held for hits in found for cid, _ in hits)
            if exact_below > len(vectors):
                assert_same_results(found, expected)
            else:
                assert recall(found, expected) >= 0.99
        if exact_below < len(vectors):
            assert (tmp_path / "s" / "hnsw.json").exists()


# -- the HNSW path -----------------------------------------------------------------------------------


def test_hnsw_recall_against_exact(tmp_path) -> None:
    rng = np.random.default_rng(9)
    records = records_for(clustered(rng, 4000, 48, clusters=60))
    queries = clustered(rng, 200, 48, clusters=60)
    path = tmp_path / "s"
    with open_store(path, 48, exact_below=1000) as graph:
        graph.upsert(records)
        approximate = graph.search(queries, 10)
        assert stamp_generation(path) == generation(path)  # built on first search, saved
    with EmbeddedStore(path, exact_below=10**9) as exact:
        truth = exact.search(queries, 10)
    assert_same_results(truth, brute_force(held_vectors(records), queries, 10))
    assert recall(approximate, truth) >= 0.99
    for got, want in zip(approximate, truth):  # rescored exactly: a hit's score is its true score
        want_scores = dict(want)
        assert all(abs(s - want_scores[c]) < 1e-6 for c, s in got if c in want_scores)


def test_stale_hnsw_is_brought_up_to_date(tmp_path) -> None:
    rng = np.random.default_rng(10)
    records = records_for(clustered(rng, 4000, 32))
    path = tmp_path / "s"
    with open_store(path, 32, exact_below=500) as store:
        store.upsert(records[:300])
        store.finish()
        assert stamp_generation(path) == generation(path)
        # Writes after the graph was saved: new documents, a replacement, a deletion.
        store.upsert(records[300:350])
        changed = records_for(clustered(rng, 3, 32))[0]
        changed = DocumentRecord(
            doc_id=records[0].doc_id, text=changed.text, spans=changed.spans, vectors=changed.vectors
        )
        store.upsert([changed])
        store.delete([records[1].doc_id])
        current = [changed, *records[2:350]]
        queries = np.concatenate([records[320].vectors, changed.vectors, clustered(rng, 200, 32)])
        truth = brute_force(held_vectors(current), queries, 10)
        found = store.search(queries, 10)  # a small delta: scanned exactly beside the old graph
        assert recall(found, truth) >= 0.99
        assert found[0][0][0] == records[320].chunk_ids[0] and found[3][0][0] == changed.chunk_ids[0]
        assert stamp_generation(path) < generation(path)
        store.finish()  # patched, not rebuilt from scratch
        assert stamp_generation(path) == generation(path)
        assert json.loads((path / "hnsw.json").read_text())["removed"] > 0
        assert recall(store.search(queries, 10), truth) >= 0.99
        # Many writes and no finish (as after a crash): the next reader catches the graph up itself.
        store.upsert(records[350:])
    with EmbeddedStore(path, exact_below=500) as reader:
        truth = brute_force(held_vectors([changed, *records[2:]]), queries, 10)
        assert recall(reader.search(queries, 10), truth) >= 0.99
        assert stamp_generation(path) == generation(path)  # 2,950 new chunks: past the delta limit
        assert len(list(path.glob("hnsw-g*.usearch"))) == 1  # older graphs are cleaned up


def test_damaged_hnsw_is_rebuilt(tmp_path) -> None:
    rng = np.random.default_rng(11)
    records = records_for(clustered(rng, 1500, 16))
    queries = clustered(rng, 200, 16)
    path = tmp_path / "s"
    with open_store(path, 16, exact_below=200) as store:
        store.upsert(records)
        store.finish()
    graph = path / json.loads((path / "hnsw.json").read_text())["file"]
    graph.write_bytes(b"not a graph" * 100)
    with EmbeddedStore(path, exact_below=200) as store:
        assert recall(store.search(queries, 10), brute_force(held_vectors(records), queries, 10)) >= 0.99
    assert graph.read_bytes() != b"not a graph" * 100


def test_concurrent_searches_while_writing(tmp_path) -> None:
    rng = np.random.default_rng(12)
    dims = 16
    records = records_for(unit(rng.standard_normal((600, dims))), per_doc=2)
    written: dict[str, list[np.ndarray]] = {cid: [v] for cid, v in held_vectors(records).items()}
    queries = unit(rng.standard_normal((8, dims)))
    problems: list[str] = []
    stop = threading.Event()
    with open_store(tmp_path / "s", dims, exact_below=400) as store:
        store.upsert(records)

        def read() -> None:
            while not stop.is_set():
                for query in queries:
                    hits = store.search(query[None, :], 5)[0]
                    scores = [s for _, s in hits]
                    if len(hits) != 5 or scores != sorted(scores, reverse=True):
                        problems.append(f"bad ranking {hits}")
                    for cid, score in hits:  # the score of a vector that chunk really held
                        if not any(abs(float(v @ query) - score) < 1e-5 for v in list(written[cid])):
                            problems.append(f"{cid} scored {score} but never held such a vector")

        readers = [threading.Thread(target=read) for _ in range(3)]
        for thread in readers:
            thread.start()
        try:
            for round_ in range(40):
                batch = records[(round_ * 7) % 250 : (round_ * 7) % 250 + 6]
                fresh = []
                for record in batch:
                    vectors = unit(rng.standard_normal((len(record.spans), dims)))
                    for cid, v in zip(record.chunk_ids, vectors):
                        written[cid].append(v)  # before the write: a reader may see it at once
                    fresh.append(
                        DocumentRecord(doc_id=record.doc_id, text=record.text, spans=record.spans, vectors=vectors)
                    )
                store.upsert(fresh)
        finally:
            stop.set()
            for thread in readers:
                thread.join()
    assert not problems, problems[:3]


# -- the lexical index -------------------------------------------------------------------------------


def test_lexical_index_follows_the_documents(tmp_path) -> None:
    path = tmp_path / "s"
    docs = {
        "a": "the cat sat on the mat",
        "b": "dogs chase cats in the park",
        "c": "quantum chromodynamics of quarks",
    }
    with open_store(path, 0, mode="bm25") as store:
        with pytest.raises(InputError, match="no documents") as error:
            store.lexical_index()
        assert "\n" not in str(error.value)
        store.upsert([DocumentRecord(doc_id=d, text=t, spans=[(0, len(t))]) for d, t in docs.items()])
        store.finish()
        assert (path / "bm25" / f"g{generation(path)}").is_dir()
        index = store.lexical_index()
        assert index.ids == ("a", "b", "c")
        assert set(index.search({"q": "quarks"}, 3)["q"]) == {"c"}
        store.upsert([DocumentRecord(doc_id="c", text="gluons bind quarks and gluons", spans=[(0, 29)])])
        store.delete(["a"])
        index = store.lexical_index()
        assert index.ids == ("b", "c")
        assert set(index.search({"q": "gluons"}, 3)["q"]) == {"c"}
        assert set(index.search({"q": "mat"}, 3)["q"]) == set()
        with pytest.raises(InputError, match="no vectors"):
            store.search(np.ones((1, 4), dtype=np.float32), 3)
    folders = sorted(p.name for p in (path / "bm25").iterdir())
    assert folders == [f"g{generation(path)}"]  # the older generation's index is gone
    with EmbeddedStore(path) as again:
        assert again.lexical_index().ids == ("b", "c")
    assert sorted(p.name for p in (path / "bm25").iterdir()) == folders  # loaded, not rebuilt


# -- manifests and bad input -------------------------------------------------------------------------


def test_read_manifest_of_a_missing_store_changes_nothing(tmp_path) -> None:
    assert EmbeddedStore(tmp_path / "nothing").read_manifest() is None
    assert not (tmp_path / "nothing").exists()
    (tmp_path / "empty").mkdir()
    store = EmbeddedStore(tmp_path / "empty")
    assert store.read_manifest() is None
    assert store.count() == 0 and store.content_hashes() == {}
    assert list((tmp_path / "empty").iterdir()) == []


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe garbage", b"[1, 2]", b'{"format": "embedtune.store", "version": 1}', b""],
    ids=["broken", "binary", "list", "missing-fields", "empty"],
)
def test_corrupt_manifest_is_one_line_and_changes_nothing(tmp_path, content) -> None:
    rng = np.random.default_rng(13)
    path = tmp_path / "s"
    with open_store(path, 8, exact_below=50) as store:
        store.upsert(records_for(unit(rng.standard_normal((120, 8)))))
        store.finish()
    (path / "manifest.json").write_bytes(content)
    before = files_state(path)
    time.sleep(0.01)
    for call in (
        lambda s: s.read_manifest(),
        lambda s: s.search(unit(np.ones((1, 8))), 3),
        lambda s: s.upsert(records_for(unit(np.ones((1, 8))))),
        lambda s: s.finish(),
    ):
        with EmbeddedStore(path) as store, pytest.raises(InputError) as error:
            call(store)
        message = str(error.value)
        assert "manifest.json" in message and "\n" not in message
    assert files_state(path) == before


def test_bad_records_are_refused_before_anything_is_written(tmp_path) -> None:
    path = tmp_path / "s"
    good = unit(np.ones((1, 4)))
    with open_store(path, 4) as store:
        store.upsert([DocumentRecord(doc_id="ok", text="fine", spans=[(0, 4)], vectors=good)])
        bad = {
            "wrong dims": DocumentRecord(doc_id="x", text="t", spans=[(0, 1)], vectors=unit(np.ones((1, 5)))),
            "not normalised": DocumentRecord(doc_id="x", text="t", spans=[(0, 1)], vectors=np.ones((1, 4), np.float32)),
            "nan": DocumentRecord(doc_id="x", text="t", spans=[(0, 1)], vectors=np.full((1, 4), np.nan, np.float32)),
            "no vectors": DocumentRecord(doc_id="x", text="t", spans=[(0, 1)]),
            "span outside": DocumentRecord(doc_id="x", text="t", spans=[(0, 5)], vectors=good),
            "not json": DocumentRecord(doc_id="x", text="t", metadata={"k": object()}, spans=[(0, 1)], vectors=good),
        }
        for name, record in bad.items():
            with pytest.raises(InputError) as error:
                store.upsert([DocumentRecord(doc_id="y", text="y", spans=[(0, 1)], vectors=good), record])
            assert "\n" not in str(error.value), name
        with pytest.raises(InputError, match="twice"):
            store.upsert([DocumentRecord(doc_id="ok", text="a"), DocumentRecord(doc_id="ok", text="b")])
        with pytest.raises(InputError, match="shape"):
            store.search(np.ones((1, 3), np.float32), 2)
        assert store.content_hashes().keys() == {"ok"} and generation(path) == 1
    with open_store(tmp_path / "bm25", 0) as lexical, pytest.raises(InputError, match="holds none"):
        lexical.upsert([DocumentRecord(doc_id="x", text="t", spans=[(0, 1)], vectors=good)])


def test_manifest_with_other_dims_cannot_replace_a_store_with_vectors(tmp_path) -> None:
    with open_store(tmp_path / "s", 4) as store:
        store.write_manifest(manifest(4, mode="hybrid"))  # a query-time change is fine
        assert store.read_manifest().strategy["retrieval"]["mode"] == "hybrid"
        store.upsert([DocumentRecord(doc_id="a", text="a", spans=[(0, 1)], vectors=unit(np.ones((1, 4))))])
        with pytest.raises(InputError, match="cannot replace"):
            store.write_manifest(manifest(8))
        assert store.read_manifest().dims == 4


# -- random writes against a model ---------------------------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("upsert"),
            st.lists(st.tuples(st.integers(0, 9), st.lists(st.integers(0, 5), max_size=3)), max_size=4),
        ),
        st.tuples(st.just("delete"), st.lists(st.integers(0, 9), max_size=3)),
    ),
    max_size=12,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations, st.integers(1, 12))
def test_random_writes_match_a_model(ops, k) -> None:
    """Upserts and deletes in any order leave exactly the model's chunks, each with its own vector."""
    axes = np.eye(6, dtype=np.float32)  # one-hot vectors: exact products, many ties
    model: dict[str, DocumentRecord] = {}
    queries = unit(np.random.default_rng(14).standard_normal((3, 6)))
    with tempfile.TemporaryDirectory() as folder, open_store(Path(folder), 6) as store:
        for op, args in ops:
            if op == "upsert":
                batch = {}
                for doc, axis_ids in args:
                    text = "x" * len(axis_ids)
                    spans = [(n, n + 1) for n in range(len(axis_ids))]
                    batch[f"d{doc}"] = DocumentRecord(doc_id=f"d{doc}", text=text, spans=spans, vectors=axes[axis_ids])
                store.upsert(list(batch.values()))
                model.update(batch)
            else:
                store.delete([f"d{doc}" for doc in args])
                for doc in args:
                    model.pop(f"d{doc}", None)
        assert store.content_hashes() == {d: r.content_hash for d, r in model.items()}
        held = held_vectors(list(model.values()))
        assert store.count_chunks() == len(held)
        if held:
            on_disk = vectors_on_disk(Path(folder), 6)
            assert on_disk.keys() == held.keys()
            assert all(np.array_equal(on_disk[c], v) for c, v in held.items())
            assert_same_results(store.search(queries, k), brute_force(held, queries, k))


# -- kill -9 ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The store the crash writer's whole plan leaves when nothing interrupts it."""
    path = tmp_path_factory.mktemp("uninterrupted") / "store"
    writer.run(str(path), 0, writer.BATCHES)
    return path


def check_consistent(path: Path) -> dict[str, tuple[int, int]]:
    """Every chunk row points at its own vector; each document is whole. Returns what it holds."""
    with closing(sqlite3.connect(path / "store.sqlite")) as conn:
        total, ids, slots = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT id), COUNT(DISTINCT slot) FROM chunks"
        ).fetchone()
        assert total == ids == slots
        documents = conn.execute("SELECT doc_id, metadata FROM documents").fetchall()
        chunks = conn.execute('SELECT doc_id, n, id, start, "end", text FROM chunks ORDER BY doc_id, n').fetchall()
    on_disk = vectors_on_disk(path, writer.DIMS)
    state = {}
    per_doc: dict[str, list] = {}
    for doc_id, n, cid, start, end, text in chunks:
        per_doc.setdefault(doc_id, []).append((n, cid, start, end, text))
    for doc_id, metadata in documents:
        version = json.loads(metadata)["version"]
        rows = per_doc.pop(doc_id, [])
        expected = writer.document_of(doc_id, version, dict(writer.plan(version)[0])[doc_id])
        assert [(n, cid) for n, cid, *_ in rows] == list(enumerate(expected.chunk_ids))
        assert [(s, e) for _, _, s, e, _ in rows] == list(expected.spans)
        for n, cid, start, end, text in rows:
            assert text == expected.text[start:end]
            np.testing.assert_array_equal(on_disk[cid], expected.vectors[n])
        state[doc_id] = (version, len(rows))
    assert not per_doc, f"chunks without a document: {sorted(per_doc)[:3]}"
    return state


def logical_store(path: Path) -> tuple:
    """What a user can see of a store, slots aside."""
    with EmbeddedStore(path) as store:
        queries = unit(np.random.default_rng(15).standard_normal((5, writer.DIMS)))
        return (
            store.content_hashes(),
            store.chunk_spans(),
            {c: v.tolist() for c, v in vectors_on_disk(path, writer.DIMS).items()},
            store.search(queries, 20),
        )


@pytest.mark.parametrize(
    ("mode", "moment"),
    [("after", (1, 0.0)), ("after", (6, 0.003)), ("after", (12, 0.011)), ("fsync", 4), ("fsync", 9)],
    ids=["early", "mid", "late", "fsync-a", "fsync-b"],
)
def test_kill_9_leaves_a_consistent_store(tmp_path, uninterrupted, mode, moment) -> None:
    path = tmp_path / "store"
    command = [sys.executable, str(WRITER_PATH), str(path), "0", str(writer.BATCHES)]
    if mode == "fsync":  # after an upsert's vectors are flushed, before its commit
        command += ["--die-at-fsync", str(moment)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    done = -1
    try:
        if mode == "after":
            wait_for, delay = moment
            assert process.stdout is not None
            for line in process.stdout:
                done = int(line.split()[1])
                if done >= wait_for:
                    break
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    done = max([done, *(int(line.split()[1]) for line in rest.splitlines())])
    state = check_consistent(path)
    if mode == "fsync":
        assert state == writer.expected_state(done)  # the killed upsert left no trace
        resume = done + 1
    else:  # killed after batch `done` printed: the state it left, or a later transaction's
        candidates = [
            (writer.expected_state(done), done + 1),
            (writer.expected_state(done + 1, deletes=False), done + 1),  # batch done + 1 half way
            (writer.expected_state(done + 1), done + 2),
        ]
        resume = next(at for expected, at in candidates if expected == state)
    assert resume < writer.BATCHES, "the writer finished before it was killed; kill it sooner"
    writer.run(str(path), resume, writer.BATCHES)  # finish the writes (a batch again is harmless)
    check_consistent(path)
    assert logical_store(path) == logical_store(uninterrupted)


def test_protocol_errors_are_one_line(tmp_path) -> None:
    with open_store(tmp_path / "s", 4) as store:
        with pytest.raises(ValueError, match="k must be"):
            store.search(unit(np.ones((1, 4))), 0)
        with pytest.raises(InputError) as error:
            store.search(unit(np.ones((1, 4))), 3, where={"k": {"nested": True}})
        assert "\n" not in str(error.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a store folder"):
        EmbeddedStore(tmp_path / "file" / "s").read_manifest()
    assert os.path.getsize(tmp_path / "file") == 1
