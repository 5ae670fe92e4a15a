"""The embedded store, the default: a folder on disk that needs no server.

The folder::

    manifest.json         what the store was built with (StoreManifest), replaced atomically
    store.sqlite          the truth, in WAL mode: documents, chunks, and a generation counter
    vectors.bin           one raw row per slot, at the manifest's precision: float32 or float16,
                          int8 codes (calibrated per dimension, the calibration in the manifest),
                          or binary (a sign bit per dimension, eight to a byte)
    hnsw-g<N>.usearch     derived: an HNSW graph (usearch) over the slots live at generation N
    hnsw.json             derived: which graph file is current, and the generation it reflects
    bm25/g<N>/            derived: the BM25 index over every document's text at generation N

A chunk row names its *slot*, the row of ``vectors.bin`` that holds its vector, and the
generation that wrote it. Every committed write increments the generation, and the derived
indexes carry the generation they reflect, so a stale one is recognised and brought up to date
(the graph is patched when few slots changed, else rebuilt); deleting them loses nothing.

Durability. An upsert writes its vectors only into slots that no committed chunk references (free
slots of the committed state, or past the last slot in use), flushes them to disk, and only then
commits the SQLite transaction that points chunks at them. A slot freed by a transaction is
reused by later transactions only. A process killed at any moment therefore leaves every chunk
pointing at its own intact vector, and each document as it was before the upsert or as written.

Search. Below ``exact_below`` live chunks every vector is scanned exactly, in blocks. At or above
it, the graph proposes candidates (``max(4k, 64)``, more under a filter) that are rescored exactly
from ``vectors.bin``; chunks written after the graph's generation are scanned exactly beside it,
and the graph is patched once they pass 2,048 or a tenth of its entries are dead (and by
:meth:`EmbeddedStore.finish`), or rebuilt when more than a quarter of it changed.
Ties rank by chunk id, so the order never depends on slots.

Int8 and binary vectors are scored against the float query (their codes decoded: the query is
never quantised). A binary store first takes ``rescore * k`` candidates by Hamming distance
(popcounts of XOR-ed bit rows; the graph, built over the same signs, proposes them above
``exact_below``), then ranks those by the float query against their bits.

Concurrency. Searches, chunk lookups and the lexical index may be used from several threads at
once; writes come from one writer (a second writing process waits for SQLite's write lock). A
search reads a snapshot of the chunk table and the memory-mapped vectors, and checks afterwards
that no write committed meanwhile (one could have reused a slot it read); if one did, it
searches again.
"""

from __future__ import annotations

import functools
import heapq
import json
import logging
import math
import os
import re
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy as np

from ..errors import InputError, StoreError, require
from ..search.bm25 import BM25Index
from ..search.compress import Int8Codec, hamming, pack_bits, unpack_bits
from ..search.dense import l2_normalize
from .base import (
    DocumentRecord,
    Filter,
    SearchResult,
    StoredChunk,
    StoreManifest,
    check_filter,
    chunk_id,
)

__all__ = ["EmbeddedStore"]

_log = logging.getLogger(__name__)

_MANIFEST = "manifest.json"
_DATABASE = "store.sqlite"
_VECTORS = "vectors.bin"
_ANN_STAMP = "hnsw.json"
_ANN_FORMAT = "embedtune.hnsw"
_ANN_FILE = re.compile(r"hnsw-g(\d+)\.usearch")
_LEXICAL = "bm25"
_LEXICAL_FOLDER = re.compile(r"g(\d+)")
_FORMAT_VERSION = 1
_PRECISIONS: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "int8": np.dtype(np.int8),
    "binary": np.dtype(np.uint8),  # sign bits, packed
}
_DEFAULT_RESCORE = 4

_SQL_BATCH = 500  # ids per `IN (...)`, well under SQLite's parameter limit
_SCAN_ROWS = 16_384  # vectors per block of the exact scan
_QUERY_BLOCK = 256  # queries per block of the exact scan
_OVERSAMPLE = 4  # graph candidates per wanted result, rescored exactly
_MIN_CANDIDATES = 64
_DELTA_ROWS = 2_048  # chunks written since the graph that are scanned beside it before it is patched
_DEAD_FRACTION = 0.1  # graph entries no longer live (deleted, replaced) before it is patched
_REBUILD_FRACTION = 0.25  # rebuild rather than patch when more of the graph than this changed
_SEARCH_ATTEMPTS = 4
_NORM_TOLERANCE = 1e-3
_FILTER_CACHE = 32

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('generation', 0), ('schema', 1);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    slot INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    doc_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    text TEXT NOT NULL,
    generation INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks (doc_id);
"""

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _sqlite_errors(
    method: Callable[Concatenate[EmbeddedStore, _P], _R],
) -> Callable[Concatenate[EmbeddedStore, _P], _R]:
    """Translate SQLite's errors into ours, in one place: I/O and locks apart from corruption."""

    @functools.wraps(method)
    def wrapper(self: EmbeddedStore, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            raise StoreError(
                f"store {self.location} cannot be read or written ({exc}); check the disk, its permissions, "
                "and that no other process holds the store's write lock"
            ) from exc
        except sqlite3.DatabaseError as exc:
            raise InputError(
                f"{self.path / _DATABASE} is damaged ({exc}); rebuild the store with embedtune index"
            ) from exc

    return wrapper


# -- plain values ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """How vectors are stored: ``dims`` per row (0 in a store without vectors) at ``precision``.

    ``codec`` is the int8 calibration of an int8 store; ``rescore`` the candidates per wanted hit
    a binary store takes by Hamming distance. Neither changes what a row is, so neither compares.
    """

    dims: int
    precision: str
    codec: Int8Codec | None = field(default=None, compare=False)
    rescore: int = field(default=_DEFAULT_RESCORE, compare=False)

    @property
    def dtype(self) -> np.dtype:
        return _PRECISIONS[self.precision]

    @property
    def binary(self) -> bool:
        return self.precision == "binary"

    @property
    def width(self) -> int:
        """Stored elements per row: ``dims``, or the bytes holding ``dims`` bits."""
        return (self.dims + 7) // 8 if self.binary else self.dims

    @property
    def row_bytes(self) -> int:
        return self.width * self.dtype.itemsize

    @property
    def ann_dtype(self) -> str:
        # The graph holds the decoded rows: int8 at one byte per dimension (binary rows are
        # ±1/sqrt(dims), whose cosine ranks as Hamming distance does).
        return {"float16": "f16", "int8": "i8", "binary": "i8"}.get(self.precision, "f32")

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """Float32 rows as stored."""
        if self.binary:
            return pack_bits(vectors)
        if self.precision == "int8":
            return self._int8().encode(vectors)
        return np.asarray(vectors).astype(self.dtype, copy=False)

    def decode(self, rows: np.ndarray) -> np.ndarray:
        """Stored rows as float32, what a float query scores against."""
        if self.binary:
            return unpack_bits(rows, self.dims)
        if self.precision == "int8":
            return self._int8().decode(rows)
        return np.asarray(rows, dtype=np.float32)

    def _int8(self) -> Int8Codec:
        if self.codec is None:  # the indexer fits it before the first write
            raise InputError("this int8 store has no calibration in its manifest; rebuild it with embedtune index")
        return self.codec


def _layout_of(manifest: StoreManifest, where: str) -> _Layout:
    if manifest.dims < 0:
        raise InputError(f"{where} is corrupt: dims {manifest.dims} is negative; rebuild the store")
    if manifest.dims == 0:
        return _Layout(0, "float32")
    if manifest.precision not in _PRECISIONS:
        raise InputError(
            f"{where}: precision {manifest.precision!r} is not one of {', '.join(_PRECISIONS)}; "
            "rebuild the store with a supported precision"
        )
    codec = manifest.int8_codec() if manifest.precision == "int8" else None
    if codec is not None and codec.dims != manifest.dims:
        raise InputError(f"{where} is corrupt: its int8 calibration has the wrong size; rebuild the store")
    vectors = manifest.strategy.get("vectors")
    rescore = vectors.get("rescore", _DEFAULT_RESCORE) if isinstance(vectors, dict) else _DEFAULT_RESCORE
    if isinstance(rescore, bool) or not isinstance(rescore, int) or rescore < 1:
        rescore = _DEFAULT_RESCORE
    return _Layout(manifest.dims, manifest.precision, codec, rescore)


class _Decoded:
    """A map of int8 or binary rows that reads as float32 (the codes decoded), as a float map does."""

    def __init__(self, raw: np.ndarray, layout: _Layout) -> None:
        self.raw = raw
        self.layout = layout
        self.shape = (len(raw), layout.dims)

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index: Any) -> np.ndarray:
        return self.layout.decode(self.raw[index])


@dataclass(frozen=True, eq=False)
class _Catalog:
    """The live chunks at one generation, in slot order: what searches need besides the vectors."""

    generation: int
    slots: np.ndarray  # int64, ascending
    ids: list[str]  # chunk id per slot
    rank: np.ndarray  # int64: each chunk id's place in sorted order (ties rank by it)
    written: np.ndarray  # int64: the generation that wrote each slot's vector

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, slots: np.ndarray) -> np.ndarray:
        """The places of ``slots`` in this catalog, dropping slots that are not live here."""
        if not len(self.slots) or not len(slots):
            return np.empty(0, dtype=np.int64)
        places = np.searchsorted(self.slots, slots)
        places = np.minimum(places, len(self.slots) - 1)
        return places[self.slots[places] == slots].astype(np.int64, copy=False)


@dataclass(frozen=True, eq=False)
class _Ann:
    """An HNSW graph over the slots live at ``generation``; never changed once built or loaded."""

    index: Any  # usearch.index.Index
    generation: int
    removed: int  # entries removed since it was built (usearch keeps them as tombstones)
    file: str | None = None  # its file in the folder, once saved


@dataclass(frozen=True, eq=False)
class _View:
    """What one search reads: a catalog, the vectors mapped for it, and the graph if it is used."""

    catalog: _Catalog
    vectors: Any  # the map: a float array, or _Decoded
    ann: _Ann | None
    delta: np.ndarray  # positions written after the graph's generation: scanned exactly beside it
    layout: _Layout

    def top(self, queries: np.ndarray, positions: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The exact scan over ``positions``: by cosine, or for binary rows by Hamming then rescored."""
        if self.layout.binary:
            return _hamming_top(queries, self.vectors, self.catalog, positions, k, self.layout.rescore)
        return _exact_top(queries, self.vectors, self.catalog, positions, k)


class _Slots:
    """The writer's free slots of the committed state (lowest first) and the end of the slot space."""

    def __init__(self, generation: int, used: np.ndarray) -> None:
        self.generation = generation
        # Rows past the last used slot (left by a killed write) are unreferenced: free like any other.
        self.end = int(used.max()) + 1 if len(used) else 0
        free = np.ones(self.end, dtype=bool)
        free[used] = False
        self._free = np.flatnonzero(free).tolist()  # ascending: already a heap

    def take(self, n: int) -> np.ndarray:
        """``n`` slots no committed chunk references: free ones first, then past the end."""
        reused = [heapq.heappop(self._free) for _ in range(min(n, len(self._free)))]
        fresh = range(self.end, self.end + n - len(reused))
        self.end += len(fresh)
        return np.array([*reused, *fresh], dtype=np.int64)

    def release(self, slots: Sequence[int]) -> None:
        """Slots a committed transaction stopped referencing: later transactions may reuse them."""
        for slot in slots:
            heapq.heappush(self._free, slot)


@dataclass(frozen=True)
class _Prepared:
    """One record checked and turned into rows: the document's and its chunks'."""

    document: tuple[str, str, str, str]  # doc_id, content_hash, text, metadata JSON
    chunks: list[tuple[str, str, int, int, int, str]]  # id, doc_id, n, start, end, text
    vectors: np.ndarray | None


# -- the store ---------------------------------------------------------------------------------


class EmbeddedStore:
    """A store in a local folder: SQLite (WAL) holds the truth, vectors are memory-mapped rows.

    ``exact_below``: with fewer live chunks than this a search scans every vector exactly; at or
    above it an HNSW graph (usearch, cosine) proposes candidates that are rescored exactly.
    ``connectivity``, ``expansion_add`` and ``expansion_search`` are the graph's parameters
    (usearch's names); a search explores at least as many nodes as it wants candidates. The
    defaults reach recall@10 of about 0.997 against the exact scan on 120,000 MiniLM passages
    (``benchmarks/store_scale.py``); ``expansion_search`` is what recall follows, at ~1.5 ms a query.

    Nothing is opened or created before it is needed; :meth:`write_manifest` creates the store.
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        exact_below: int = 20_000,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 200,
    ) -> None:
        for name, value, low in (
            ("exact_below", exact_below, 0),
            ("connectivity", connectivity, 2),
            ("expansion_add", expansion_add, 1),
            ("expansion_search", expansion_search, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be a whole number of at least {low}, not {value!r}")
        self.path = Path(path)
        self.location = str(self.path)
        self._exact_below = exact_below
        self._connectivity = connectivity
        self._expansion_add = expansion_add
        self._expansion_search = expansion_search
        # Lock order, where several are held: write, derived, lexical, db, ann_search.
        self._write_lock = threading.Lock()  # the writer's connection, slots and vector file
        self._derived_lock = threading.RLock()  # cached catalog, map, graph and filters
        self._lexical_lock = threading.Lock()  # the lexical index (built apart: searches need not wait)
        self._db_lock = threading.Lock()  # the readers' connection
        self._ann_search_lock = threading.Lock()  # usearch searches share per-thread scratch space
        self._reset()

    def _reset(self) -> None:
        self._layout_cache: _Layout | None = None
        self._writer_conn: sqlite3.Connection | None = None
        self._reader_conn: sqlite3.Connection | None = None
        self._vector_fd: int | None = None
        self._slots: _Slots | None = None
        self._catalog: _Catalog | None = None
        self._map: Any = None  # a float array, or _Decoded
        self._ann: _Ann | None = None
        self._lexical: tuple[int, BM25Index] | None = None
        self._filters: dict[tuple[int, str], np.ndarray] = {}

    def __repr__(self) -> str:
        return f"EmbeddedStore({self.location!r})"

    def __enter__(self) -> EmbeddedStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and files; the store reopens them if it is used again."""
        with self._write_lock, self._derived_lock, self._lexical_lock, self._db_lock:
            for conn in (self._writer_conn, self._reader_conn):
                if conn is not None:
                    conn.close()
            if self._vector_fd is not None:
                os.close(self._vector_fd)
            self._reset()

    # -- the manifest ----------------------------------------------------------------------

    def read_manifest(self) -> StoreManifest | None:
        """The manifest, or ``None`` when the folder or its manifest does not exist. Changes nothing."""
        path = self.path / _MANIFEST
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except NotADirectoryError as exc:
            raise InputError(f"{self.path} is a file, not a store folder; give a folder for the store") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {path} ({exc.strerror}); check its permissions") from exc
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
            raise InputError(f"{path} is corrupt ({reason}); rebuild the store with embedtune index") from exc
        return StoreManifest.from_dict(data, where=str(path))

    @_sqlite_errors
    def write_manifest(self, manifest: StoreManifest) -> None:
        """Create the store, or replace its manifest (its vectors' dims and precision stay)."""
        layout = _layout_of(manifest, "the new manifest")
        with self._write_lock:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the store folder {self.path} ({exc.strerror}); check the path"
                ) from exc
            conn = self._writer()
            current = self.read_manifest()
            if current is not None:
                held = _layout_of(current, str(self.path / _MANIFEST))
                if held != layout and conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]:
                    raise InputError(
                        f"{self.location} holds {current.dims}-dim {current.precision} vectors; a manifest for "
                        f"{manifest.dims}-dim {manifest.precision} vectors cannot replace it: index into a new store"
                    )
            try:
                _write_json_atomic(self.path / _MANIFEST, manifest.to_dict())
                _fsync_folder(self.path)
            except OSError as exc:
                raise StoreError(f"cannot write {self.path / _MANIFEST} ({exc.strerror}); check the disk") from exc
            self._layout_cache = layout

    def _layout(self) -> _Layout:
        if self._layout_cache is None:
            manifest = self.read_manifest()
            if manifest is None:
                raise InputError(f"{self.location} holds no store (no {_MANIFEST}); build one with embedtune index")
            self._layout_cache = _layout_of(manifest, str(self.path / _MANIFEST))
        return self._layout_cache

    # -- connections -----------------------------------------------------------------------

    def _writer(self) -> sqlite3.Connection:
        """The writer's connection; creates the database and its tables. Hold the write lock."""
        if self._writer_conn is None:
            conn = sqlite3.connect(self.path / _DATABASE, timeout=60.0, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")  # a commit survives power loss, not only a kill
                conn.executescript(_SCHEMA)
            except sqlite3.Error:
                conn.close()
                raise
            self._writer_conn = conn
        return self._writer_conn

    def _reader(self) -> sqlite3.Connection | None:
        """The readers' connection, or ``None`` before the store exists. Hold the db lock."""
        if self._reader_conn is None:
            database = self.path / _DATABASE
            if not database.is_file():
                return None
            # mode=rw: a reader never creates a database where there was none.
            conn = sqlite3.connect(
                f"{database.absolute().as_uri()}?mode=rw",
                uri=True,
                timeout=60.0,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA query_only=ON")
            self._reader_conn = conn
        return self._reader_conn

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._db_lock:
            conn = self._reader()
            return [] if conn is None else conn.execute(sql, params).fetchall()

    def _snapshot(self, *statements: tuple[str, Sequence[Any]]) -> tuple[int, list[list[Any]]]:
        """``(generation, rows of each statement)`` read in one transaction (all zero and empty
        before the store exists)."""
        with self._db_lock:
            conn = self._reader()
            if conn is None:
                return 0, [[] for _ in statements]
            conn.execute("BEGIN")
            try:
                return _generation(conn), [conn.execute(sql, params).fetchall() for sql, params in statements]
            finally:
                conn.execute("COMMIT")

    def _generation(self) -> int:
        rows = self._read("SELECT value FROM meta WHERE key = 'generation'")
        return int(rows[0][0]) if rows else 0

    # -- writing ---------------------------------------------------------------------------

    @_sqlite_errors
    def upsert(self, records: Sequence[DocumentRecord]) -> None:
        """Write whole documents in one transaction; each replaces every chunk its document had."""
        if not records:
            return
        layout = self._layout()
        prepared = _prepare(records, layout)
        with self._write_lock:
            conn = self._writer()
            conn.execute("BEGIN IMMEDIATE")
            try:
                slots = self._sync_slots(conn)
                generation = slots.generation
                doc_ids = [item.document[0] for item in prepared]
                old_slots = _slots_of_documents(conn, doc_ids)
                new_slots = slots.take(sum(len(item.chunks) for item in prepared))
                if layout.dims and len(new_slots):
                    rows = np.concatenate([item.vectors for item in prepared if item.vectors is not None])
                    self._write_vectors(new_slots, rows, layout)  # flushed before the commit below
                _delete_rows(conn, doc_ids)
                conn.executemany(
                    "INSERT INTO documents (doc_id, content_hash, text, metadata) VALUES (?, ?, ?, ?)",
                    [item.document for item in prepared],
                )
                chunk_rows = [row for item in prepared for row in item.chunks]
                conn.executemany(
                    'INSERT INTO chunks (slot, id, doc_id, n, start, "end", text, generation) '
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(int(slot), *row, generation + 1) for slot, row in zip(new_slots, chunk_rows)],
                )
                self._commit(conn, slots, generation + 1)
            except BaseException:
                self._abandon(conn)
                raise
            slots.release(old_slots)

    @_sqlite_errors
    def delete(self, doc_ids: Sequence[str]) -> None:
        """Remove documents and their chunks; unknown ids are ignored."""
        ids = list(dict.fromkeys(doc_ids))
        if not ids or not (self.path / _DATABASE).is_file():
            return
        with self._write_lock:
            conn = self._writer()
            conn.execute("BEGIN IMMEDIATE")
            try:
                slots = self._sync_slots(conn)
                old_slots = _slots_of_documents(conn, ids)
                if not _delete_rows(conn, ids):
                    conn.execute("ROLLBACK")
                    return
                self._commit(conn, slots, slots.generation + 1)
            except BaseException:
                self._abandon(conn)
                raise
            slots.release(old_slots)

    def _sync_slots(self, conn: sqlite3.Connection) -> _Slots:
        """The free slots of the committed state; reloaded when another writer moved the generation.

        Call inside a write transaction (BEGIN IMMEDIATE), so the state cannot move meanwhile.
        """
        generation = _generation(conn)
        if self._slots is None or self._slots.generation != generation:
            used = np.array([row[0] for row in conn.execute("SELECT slot FROM chunks")], dtype=np.int64)
            self._slots = _Slots(generation, used)
        return self._slots

    @staticmethod
    def _commit(conn: sqlite3.Connection, slots: _Slots, generation: int) -> None:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (generation,))
        conn.execute("COMMIT")
        slots.generation = generation

    def _abandon(self, conn: sqlite3.Connection) -> None:
        """After a failed write: roll back, and forget the slots (reloaded from the truth next time)."""
        self._slots = None
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def _write_vectors(self, slots: np.ndarray, rows: np.ndarray, layout: _Layout) -> None:
        """Write ``rows`` at ``slots`` of the vector file and flush them to disk."""
        if self._vector_fd is None:
            try:
                created = not (self.path / _VECTORS).exists()
                self._vector_fd = os.open(self.path / _VECTORS, os.O_RDWR | os.O_CREAT, 0o644)
                if created:
                    _fsync_folder(self.path)  # the new file's name must outlive a power loss too
            except OSError as exc:
                raise StoreError(f"cannot open {self.path / _VECTORS} ({exc.strerror}); check the disk") from exc
        data = np.ascontiguousarray(rows, dtype=layout.dtype)
        breaks = np.flatnonzero(np.diff(slots) != 1) + 1  # runs of consecutive slots: one write each
        try:
            for run, block in zip(np.split(slots, breaks), np.split(data, breaks)):
                _write_all(self._vector_fd, block.data.cast("B"), int(run[0]) * layout.row_bytes)
            os.fsync(self._vector_fd)
        except OSError as exc:
            raise StoreError(f"cannot write {self.path / _VECTORS} ({exc.strerror}); check the disk") from exc

    # -- reading ---------------------------------------------------------------------------

    @_sqlite_errors
    def content_hashes(self) -> dict[str, str]:
        """``{doc_id: content hash}`` of every document held."""
        return dict(self._read("SELECT doc_id, content_hash FROM documents"))

    @_sqlite_errors
    def count(self) -> int:
        """How many documents the store holds."""
        rows = self._read("SELECT COUNT(*) FROM documents")
        return int(rows[0][0]) if rows else 0

    @_sqlite_errors
    def count_chunks(self) -> int:
        """How many chunks (and so vectors, in a store with vectors) the store holds."""
        rows = self._read("SELECT COUNT(*) FROM chunks")
        return int(rows[0][0]) if rows else 0

    @_sqlite_errors
    def index_bytes(self) -> int:
        """The live vectors at their stored size, what was fitted for them, and the saved graph if any."""
        manifest = self.read_manifest()
        if manifest is None or not manifest.dims:
            return 0
        layout = self._layout()
        graph = 0
        if (self.path / _ANN_STAMP).is_file():
            graph = sum(_file_size(path) for path in self.path.glob("hnsw-g*.usearch"))
        return self.count_chunks() * layout.row_bytes + manifest.compression_bytes + graph

    @_sqlite_errors
    def chunks(self, ids: Sequence[str]) -> dict[str, StoredChunk]:
        """``{chunk id: StoredChunk}`` for the ids that exist, each with its document's metadata."""
        found: dict[str, StoredChunk] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), _SQL_BATCH):
            batch = unique[start : start + _SQL_BATCH]
            rows = self._read(
                'SELECT c.id, c.doc_id, c.start, c."end", c.text, d.metadata FROM chunks AS c '
                f"JOIN documents AS d ON d.doc_id = c.doc_id WHERE c.id IN ({_marks(batch)})",
                batch,
            )
            for cid, doc_id, begin, end, text, metadata in rows:
                found[cid] = StoredChunk(
                    id=cid, doc_id=doc_id, start=begin, end=end, text=text, metadata=json.loads(metadata)
                )
        return found

    @_sqlite_errors
    def chunk_spans(self) -> dict[str, list[tuple[int, int]]]:
        """``{doc_id: [(start, end), ...]}`` in chunk order; documents without chunks left out."""
        spans: dict[str, list[tuple[int, int]]] = {}
        for doc_id, begin, end in self._read('SELECT doc_id, start, "end" FROM chunks ORDER BY doc_id, n'):
            spans.setdefault(doc_id, []).append((begin, end))
        return spans

    @_sqlite_errors
    def documents_matching(self, where: Filter) -> set[str]:
        """Ids of the documents whose metadata matches ``where`` (as :func:`~.base.metadata_matches`)."""
        condition, params = _filter_sql(check_filter(where) or {})
        return {row[0] for row in self._read(f"SELECT doc_id FROM documents AS d WHERE {condition}", params)}

    @_sqlite_errors
    def doc_ids(self) -> list[str]:
        """Every document id held, in id order."""
        return [row[0] for row in self._read("SELECT doc_id FROM documents ORDER BY doc_id")]

    @_sqlite_errors
    def read_records(self, doc_ids: Sequence[str]) -> list[DocumentRecord]:
        """The held documents among ``doc_ids`` as records, vectors included (float32), in id order.

        Writing them to another store of the same manifest reproduces them without embedding.
        """
        layout = self._layout()
        wanted = sorted(set(doc_ids))
        for _ in range(_SEARCH_ATTEMPTS):
            generation, documents, chunks = self._read_documents(wanted)
            slots = np.array([row[4] for row in chunks], dtype=np.int64)
            vectors = None
            if layout.dims:
                with self._derived_lock:
                    mapped = self._mapped(int(slots.max()) + 1 if len(slots) else 0, layout)
                vectors = _gather(mapped, slots)
                if layout.precision in ("int8", "binary"):
                    vectors = l2_normalize(vectors)  # decoded codes are near unit length; writing them back wants unit
            if self._generation() == generation:  # no write reused a slot while the rows were read
                break
        return _records(documents, chunks, vectors, layout)

    def _read_documents(self, doc_ids: list[str]) -> tuple[int, list[Any], list[Any]]:
        """``(generation, document rows, chunk rows)`` of ``doc_ids``, read in one transaction."""
        statements = []
        for start in range(0, len(doc_ids), _SQL_BATCH):
            batch = doc_ids[start : start + _SQL_BATCH]
            marks = _marks(batch)
            statements.append(
                (f"SELECT doc_id, content_hash, text, metadata FROM documents WHERE doc_id IN ({marks})", batch)
            )
            statements.append((f'SELECT doc_id, n, start, "end", slot FROM chunks WHERE doc_id IN ({marks})', batch))
        generation, results = self._snapshot(*statements)
        documents = sorted(row for rows in results[0::2] for row in rows)
        chunks = sorted(row for rows in results[1::2] for row in rows)  # by document, then n
        return generation, documents, chunks

    # -- searching -------------------------------------------------------------------------

    @_sqlite_errors
    def search(self, query_vectors: np.ndarray, k: int, where: Filter | None = None) -> SearchResult:
        """Per query, the ``k`` chunks of highest cosine similarity: ``(chunk id, score)``, best first.

        Query vectors must be L2-normalised rows of the store's dims. ``where`` keeps chunks of
        documents whose metadata matches it; a query gets ``k`` rows whenever ``k`` chunks match.
        Ties rank by chunk id.
        """
        where = check_filter(where)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a whole number of at least 1, not {k!r}")
        layout = self._layout()
        if layout.dims == 0:
            raise InputError(f"{self.location} holds no vectors (a bm25 store); search its lexical index instead")
        queries = _as_queries(query_vectors, layout.dims)
        if not len(queries):
            return []
        for _ in range(_SEARCH_ATTEMPTS):
            view = self._view(layout)
            found = self._search_view(view, queries, k, where)
            if self._generation() == view.catalog.generation:
                return found
        # Writes keep committing under the search; hold this process's writer off for one more.
        with self._write_lock:
            view = self._view(layout)
            return self._search_view(view, queries, k, where)

    def _search_view(self, view: _View, queries: np.ndarray, k: int, where: Filter | None) -> SearchResult:
        catalog = view.catalog
        allowed = self._allowed(catalog, where) if where else None
        pool = len(catalog) if allowed is None else len(allowed)
        if pool == 0:
            return [[] for _ in queries]
        wanted = max(_OVERSAMPLE * k, _MIN_CANDIDATES)
        if view.ann is None or pool < self._exact_below or wanted >= pool:
            positions = np.arange(len(catalog)) if allowed is None else allowed
            hits = view.top(queries, positions, k)
        else:
            if view.layout.binary:
                wanted = max(wanted, k * view.layout.rescore)
            hits = self._ann_top(view, view.ann, queries, k, allowed, wanted)
        return [
            [(catalog.ids[p], float(s)) for p, s in zip(places.tolist(), scores.tolist())] for places, scores in hits
        ]

    def _ann_top(
        self, view: _View, ann: _Ann, queries: np.ndarray, k: int, allowed: np.ndarray | None, wanted: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Graph candidates (widened by the filter's selectivity) and the delta, rescored exactly."""
        catalog, delta = view.catalog, view.delta
        total = len(catalog)
        keep = None  # which graph candidates count (None: all): allowed ones, outside the delta
        if allowed is not None or len(delta):
            if allowed is None:
                keep = np.ones(total, dtype=bool)
            else:
                keep = np.zeros(total, dtype=bool)
                keep[allowed] = True
                delta = delta[keep[delta]]
            keep[view.delta] = False  # the graph may hold an older vector there: the delta scan scores them
        pool = total if allowed is None else len(allowed)
        count = min(total, math.ceil(wanted * total / pool))
        with self._ann_search_lock:
            proposed = _match_keys(ann.index.search(queries, count))
        from_delta = view.top(queries, delta, k) if len(delta) else None
        hits = []
        for i, query in enumerate(queries):
            places = catalog.positions(proposed[i])
            places = np.unique(places if keep is None else places[keep[places]])
            scores = _scores(query, view.vectors, catalog.slots[places])
            if from_delta is not None:
                places = np.concatenate([places, from_delta[i][0]])
                scores = np.concatenate([scores, from_delta[i][1]])
            best = _ranked(places, scores, catalog.rank, k)
            if len(best[0]) < min(k, pool):  # too few survived the filter: scan what it allows
                positions = np.arange(total) if allowed is None else allowed
                best = view.top(query[None, :], positions, k)[0]
            hits.append(best)
        return hits

    def _allowed(self, catalog: _Catalog, where: Filter) -> np.ndarray:
        """Catalog positions of the chunks whose document matches ``where`` (cached per generation)."""
        key = (catalog.generation, json.dumps(where, sort_keys=True))
        with self._derived_lock:
            cached = self._filters.get(key)
        if cached is not None:
            return cached
        condition, params = _filter_sql(where)
        generation, (rows,) = self._snapshot(
            (
                f"SELECT slot FROM chunks WHERE doc_id IN (SELECT doc_id FROM documents AS d WHERE {condition}) "
                "ORDER BY slot",
                params,
            )
        )
        slots = np.array([row[0] for row in rows], dtype=np.int64)
        positions = catalog.positions(slots)
        if generation == catalog.generation:
            with self._derived_lock:
                if len(self._filters) >= _FILTER_CACHE:
                    self._filters.pop(next(iter(self._filters)))
                self._filters[key] = positions
        return positions

    # -- the derived state -----------------------------------------------------------------

    def _view(self, layout: _Layout, *, settle: bool = False) -> _View:
        """The current catalog, its vectors and the graph (caught up as needed); ``settle`` makes it current."""
        with self._derived_lock:
            catalog = self._current_catalog()
            vectors = self._mapped(int(catalog.slots[-1]) + 1 if len(catalog) else 0, layout)
            ann = self._current_ann(catalog, vectors, layout, settle=settle)
            delta = np.empty(0, dtype=np.int64)
            if ann is not None and ann.generation < catalog.generation:
                delta = np.flatnonzero(catalog.written > ann.generation)
            return _View(catalog, vectors, ann, delta, layout)

    def _current_catalog(self) -> _Catalog:
        generation = self._generation()
        if self._catalog is not None and self._catalog.generation == generation:
            return self._catalog
        generation, (rows,) = self._snapshot(("SELECT slot, id, generation FROM chunks ORDER BY slot", ()))
        ids = [row[1] for row in rows]
        order = np.array(sorted(range(len(ids)), key=ids.__getitem__), dtype=np.int64)
        rank = np.empty(len(ids), dtype=np.int64)
        rank[order] = np.arange(len(ids), dtype=np.int64)
        self._catalog = _Catalog(
            generation=generation,
            slots=np.array([row[0] for row in rows], dtype=np.int64),
            ids=ids,
            rank=rank,
            written=np.array([row[2] for row in rows], dtype=np.int64),
        )
        self._filters.clear()
        return self._catalog

    def _mapped(self, needed: int, layout: _Layout) -> Any:
        """The vector file mapped read-only (at least ``needed`` rows), remapped when it grew."""
        if self._map is not None and len(self._map) >= needed:
            return self._map
        path = self.path / _VECTORS
        rows = _file_size(path) // layout.row_bytes
        if rows < needed:
            raise InputError(
                f"{path} holds {rows} vectors but the chunk table needs {needed}; the store is damaged: "
                "rebuild it with embedtune index"
            )
        if rows == 0:
            return np.empty((0, layout.dims), dtype=np.float32)
        raw = np.memmap(path, dtype=layout.dtype, mode="r", shape=(rows, layout.width))
        self._map = _Decoded(raw, layout) if layout.precision in ("int8", "binary") else raw
        return self._map

    def _current_ann(self, catalog: _Catalog, vectors: np.ndarray, layout: _Layout, *, settle: bool) -> _Ann | None:
        """The graph for searches over ``catalog`` (None: scan exactly), patched or rebuilt when due."""
        if layout.dims == 0 or not len(catalog) or len(catalog) < self._exact_below:
            return None
        ann = self._ann
        if ann is None or ann.generation > catalog.generation:
            ann = self._load_ann(layout)
            if ann is not None and ann.generation > catalog.generation:
                return None  # another process saved a newer graph than this catalog: scan exactly this once
        if ann is None:
            ann = self._save_ann(self._build_ann(catalog, vectors, layout), layout)
        elif ann.generation < catalog.generation:
            delta = int(np.count_nonzero(catalog.written > ann.generation))
            dead = len(ann.index) - (len(catalog) - delta)  # entries not live, or holding an old vector
            changed = delta + max(dead, 0)
            if dead < 0 or changed + ann.removed > _REBUILD_FRACTION * len(catalog):
                ann = self._save_ann(self._build_ann(catalog, vectors, layout), layout)
            elif changed == 0 and settle:
                ann = self._save_ann(_Ann(ann.index, catalog.generation, ann.removed, ann.file), layout)
            elif changed and (settle or delta > _DELTA_ROWS or dead > _DEAD_FRACTION * len(ann.index)):
                ann = self._save_ann(self._patch_ann(ann, catalog, vectors), layout)
        self._ann = ann
        return ann

    def _build_ann(self, catalog: _Catalog, vectors: np.ndarray, layout: _Layout) -> _Ann:
        usearch = require("usearch.index", "store")
        index = usearch.Index(
            ndim=layout.dims,
            metric="cos",
            dtype=layout.ann_dtype,
            connectivity=self._connectivity,
            expansion_add=self._expansion_add,
            expansion_search=self._expansion_search,
        )
        for start, rows in _row_blocks(vectors, catalog.slots):
            index.add(catalog.slots[start : start + len(rows)].astype(np.uint64), rows)
        _log.info("built the HNSW graph of %s over %d vectors", self.location, len(catalog))
        return _Ann(index, catalog.generation, removed=0)

    def _patch_ann(self, ann: _Ann, catalog: _Catalog, vectors: np.ndarray) -> _Ann:
        """A copy of the graph with stale entries removed and the chunks written since added."""
        index = ann.index.copy()  # a published graph never changes: searches may be reading it
        index.expansion_search = self._expansion_search  # copies and saved files forget it
        fresh = catalog.written > ann.generation
        stale = np.setdiff1d(np.asarray(index.keys, dtype=np.int64), catalog.slots[~fresh])
        if len(stale):
            index.remove(stale.astype(np.uint64))
        added = catalog.slots[fresh]
        for start, rows in _row_blocks(vectors, added):
            index.add(added[start : start + len(rows)].astype(np.uint64), rows)
        return _Ann(index, catalog.generation, removed=ann.removed + len(stale))

    def _save_ann(self, ann: _Ann, layout: _Layout) -> _Ann:
        """Save the graph (unless only its stamp moved) and return it memory-mapped from its file.

        A failure to save is logged, not raised: the graph is derived, and searches go on with the
        copy in memory.
        """
        name = ann.file or f"hnsw-g{ann.generation}.usearch"
        tmp = self.path / f".{name}.{uuid.uuid4().hex}.tmp"
        try:
            if ann.file is None:
                ann.index.save(str(tmp))
                os.replace(tmp, self.path / name)
            stamp = {
                "format": _ANN_FORMAT,
                "version": _FORMAT_VERSION,
                "generation": ann.generation,
                "file": name,
                "dims": layout.dims,
                "dtype": layout.ann_dtype,
                "metric": "cos",
                "removed": ann.removed,
            }
            _write_json_atomic(self.path / _ANN_STAMP, stamp)
        except OSError as exc:
            _log.warning("could not save the HNSW graph of %s (%s); keeping it in memory", self.location, exc)
            return ann
        finally:
            tmp.unlink(missing_ok=True)
        _remove_older(self.path, _ANN_FILE, name)
        if ann.file is not None:
            return ann
        viewed = self._open_ann(name, layout)
        return _Ann(ann.index if viewed is None else viewed, ann.generation, ann.removed, name)

    def _load_ann(self, layout: _Layout) -> _Ann | None:
        """The saved graph its stamp names, if it is readable and fits the store; else None."""
        try:
            stamp = json.loads((self.path / _ANN_STAMP).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            _log.warning("ignoring the unreadable %s of %s (%s); rebuilding the graph", _ANN_STAMP, self.location, exc)
            return None
        expected = {"format": _ANN_FORMAT, "version": _FORMAT_VERSION, "dims": layout.dims, "dtype": layout.ann_dtype}
        if (
            not isinstance(stamp, dict)
            or any(stamp.get(key) != value for key, value in expected.items())
            or not isinstance(stamp.get("generation"), int)
            or not isinstance(stamp.get("removed"), int)
            or not isinstance(stamp.get("file"), str)
            or not _ANN_FILE.fullmatch(stamp["file"])
        ):
            return None
        index = self._open_ann(stamp["file"], layout)
        if index is None:
            return None
        return _Ann(index, stamp["generation"], stamp["removed"], stamp["file"])

    def _open_ann(self, name: str, layout: _Layout) -> Any:
        usearch = require("usearch.index", "store")
        try:
            index = usearch.Index.restore(str(self.path / name), view=True)
        except (OSError, RuntimeError, ValueError) as exc:  # usearch's words for a damaged file
            _log.warning("ignoring the damaged HNSW graph %s of %s (%s)", name, self.location, exc)
            return None
        if index is None or index.ndim != layout.dims:
            return None
        index.expansion_search = self._expansion_search  # a saved graph forgets it
        return index

    # -- the lexical side ------------------------------------------------------------------

    @_sqlite_errors
    def lexical_index(self) -> BM25Index:
        """The BM25 index over every document's text (ids: document ids), as of the latest write."""
        with self._lexical_lock:
            generation = self._generation()
            if self._lexical is not None and self._lexical[0] == generation:
                return self._lexical[1]
            index = self._load_lexical(generation)
            if index is None:
                generation, index = self._build_lexical()
            self._lexical = (generation, index)
            return index

    def _load_lexical(self, generation: int) -> BM25Index | None:
        folder = self.path / _LEXICAL / f"g{generation}"
        if not folder.is_dir():
            return None
        try:
            return BM25Index.load(folder, mmap=True)
        except InputError as exc:
            _log.warning("ignoring the damaged lexical index %s (%s); rebuilding it", folder, exc)
            return None

    def _build_lexical(self) -> tuple[int, BM25Index]:
        generation, (rows,) = self._snapshot(("SELECT doc_id, text FROM documents ORDER BY doc_id", ()))
        if not rows:
            raise InputError(f"{self.location} holds no documents; index some before searching its lexical index")
        index = BM25Index.build([row[0] for row in rows], [row[1] for row in rows])
        root = self.path / _LEXICAL
        name = f"g{generation}"
        try:
            save_folder_once(root, name, index.save)
        except OSError as exc:
            _log.warning("could not save the lexical index of %s (%s); keeping it in memory", self.location, exc)
            return generation, index
        _remove_older(root, _LEXICAL_FOLDER, name)
        return generation, index

    # -- finishing -------------------------------------------------------------------------

    @_sqlite_errors
    def finish(self) -> None:
        """Bring the derived indexes up to date: the graph at or above ``exact_below`` chunks, and
        the lexical index when the manifest's strategy uses it (retrieval mode other than dense)."""
        manifest = self.read_manifest()
        if manifest is None:
            return
        layout = _layout_of(manifest, str(self.path / _MANIFEST))
        if layout.dims:
            self._view(layout, settle=True)
        retrieval = manifest.strategy.get("retrieval")
        mode = retrieval.get("mode", "dense") if isinstance(retrieval, dict) else "dense"
        if mode != "dense" and self.count():
            self.lexical_index()


# -- helpers -----------------------------------------------------------------------------------


def _generation(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def _slots_of_documents(conn: sqlite3.Connection, doc_ids: Sequence[str]) -> list[int]:
    slots: list[int] = []
    for start in range(0, len(doc_ids), _SQL_BATCH):
        batch = doc_ids[start : start + _SQL_BATCH]
        slots += [row[0] for row in conn.execute(f"SELECT slot FROM chunks WHERE doc_id IN ({_marks(batch)})", batch)]
    return slots


def _delete_rows(conn: sqlite3.Connection, doc_ids: Sequence[str]) -> int:
    """Delete the documents and their chunks; how many rows went."""
    gone = 0
    for start in range(0, len(doc_ids), _SQL_BATCH):
        batch = doc_ids[start : start + _SQL_BATCH]
        gone += conn.execute(f"DELETE FROM chunks WHERE doc_id IN ({_marks(batch)})", batch).rowcount
        gone += conn.execute(f"DELETE FROM documents WHERE doc_id IN ({_marks(batch)})", batch).rowcount
    return gone


def _records(
    documents: list[Any], chunks: list[Any], vectors: np.ndarray | None, layout: _Layout
) -> list[DocumentRecord]:
    """Records from document rows and their chunk rows (both in id order; chunks by n)."""
    spans: dict[str, list[tuple[int, int]]] = {}
    rows: dict[str, list[int]] = {}
    for i, (doc_id, _, start, end, _) in enumerate(chunks):
        spans.setdefault(doc_id, []).append((start, end))
        rows.setdefault(doc_id, []).append(i)
    empty = np.empty((0, layout.dims), dtype=np.float32)
    return [
        DocumentRecord(
            doc_id=doc_id,
            text=text,
            metadata=json.loads(metadata),
            spans=spans.get(doc_id, []),
            vectors=None if vectors is None else (vectors[rows[doc_id]] if doc_id in rows else empty),
            content_hash=digest,
        )
        for doc_id, digest, text, metadata in documents
    ]


def _prepare(records: Sequence[DocumentRecord], layout: _Layout) -> list[_Prepared]:
    """Check every record against the store's layout before anything is written."""
    seen: set[str] = set()
    prepared = []
    for record in records:
        if record.doc_id in seen:
            raise InputError(f"document {record.doc_id!r} appears twice in one upsert; give each document once")
        seen.add(record.doc_id)
        prepared.append(_prepare_one(record, layout))
    return prepared


def _prepare_one(record: DocumentRecord, layout: _Layout) -> _Prepared:
    doc_id, text = record.doc_id, record.text
    if not isinstance(doc_id, str) or not doc_id:
        raise InputError(f"document id {doc_id!r} must be non-empty text")
    try:
        metadata = json.dumps(dict(record.metadata), ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"document {doc_id!r}: metadata must hold JSON values only ({exc})") from exc
    chunks = []
    for n, (start, end) in enumerate(record.spans):
        if not 0 <= start <= end <= len(text):
            raise InputError(f"document {doc_id!r}: chunk {n} spans {start}..{end}, outside its {len(text)} characters")
        chunks.append((chunk_id(doc_id, n), doc_id, n, start, end, text[start:end]))
    return _Prepared((doc_id, record.content_hash, text, metadata), chunks, _checked_vectors(record, layout))


def _checked_vectors(record: DocumentRecord, layout: _Layout) -> np.ndarray | None:
    """The record's vectors at the store's precision, checked: shape, finite, L2-normalised."""
    vectors, doc_id, spans = record.vectors, record.doc_id, len(record.spans)
    if layout.dims == 0:
        if vectors is not None and vectors.size:
            raise InputError(f"document {doc_id!r} has vectors but this store holds none (a bm25 store)")
        return None
    if vectors is None:
        if spans:
            raise InputError(f"document {doc_id!r} has {spans} chunks but no vectors; embed them first")
        return None
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape != (spans, layout.dims):
        raise InputError(
            f"document {doc_id!r}: vectors of shape {array.shape} for {spans} chunks; the store holds "
            f"{layout.dims}-dim vectors, one per chunk"
        )
    if not np.isfinite(array).all():
        raise InputError(f"document {doc_id!r}: vectors hold NaN or infinite values; check the embedder's output")
    norms = np.linalg.norm(array, axis=1)
    off = np.flatnonzero((np.abs(norms - 1.0) > _NORM_TOLERANCE) & (norms > 0))
    if len(off):
        raise InputError(
            f"document {doc_id!r}: vector {int(off[0])} has norm {norms[off[0]]:.4f}, not 1; "
            "L2-normalise vectors before storing them"
        )
    return layout.encode(array)


def _as_queries(query_vectors: np.ndarray, dims: int) -> np.ndarray:
    queries = np.asarray(query_vectors, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != dims:
        raise InputError(
            f"query vectors of shape {queries.shape}; this store holds {dims}-dim vectors: give one row per "
            "query, embedded by the store's model"
        )
    if not np.isfinite(queries).all():
        raise InputError("query vectors hold NaN or infinite values; check the embedder's output")
    return np.ascontiguousarray(queries)


def _filter_sql(where: Filter) -> tuple[str, list[Any]]:
    """A condition on documents ``d`` equal to :func:`~.base.metadata_matches`.

    Each key is matched through ``json_each`` (the key travels as a parameter, so no JSON path
    has to be quoted), and each value by its JSON type as well as its value: true is not 1, "1"
    is not 1, but 1 is 1.0.
    """
    clauses: list[str] = []
    params: list[Any] = []
    for key, value in where.items():
        tests: list[str] = []
        params.append(key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, bool):
                tests.append("j.type = ?")
                params.append("true" if item else "false")
            elif isinstance(item, (int, float)):
                tests.append("(j.type IN ('integer', 'real') AND j.atom = ?)")
                params.append(item if isinstance(item, float) or -(2**63) <= item < 2**63 else float(item))
            else:
                tests.append("(j.type = 'text' AND j.atom = ?)")
                params.append(item)
        clauses.append(f"EXISTS (SELECT 1 FROM json_each(d.metadata) AS j WHERE j.key = ? AND ({' OR '.join(tests)}))")
    return (" AND ".join(clauses) or "1"), params


def _row_blocks(vectors: np.ndarray, slots: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(offset into slots, float32 rows)`` for successive blocks of ``slots`` (ascending).

    A block of consecutive slots is a slice of the map (no copy for float32); others are gathered.
    """
    for start in range(0, len(slots), _SCAN_ROWS):
        part = slots[start : start + _SCAN_ROWS]
        first, last = int(part[0]), int(part[-1])
        rows = vectors[first : last + 1] if last - first + 1 == len(part) else vectors[part]
        yield start, np.asarray(rows, dtype=np.float32)


def _match_keys(matches: Any) -> list[np.ndarray]:
    """The slots usearch proposed for each query (it answers one query without a batch axis)."""
    keys = np.asarray(matches.keys).astype(np.int64)
    if keys.ndim == 1:
        return [keys]
    return [row[:count] for row, count in zip(keys, np.asarray(matches.counts).tolist())]


def _gather(vectors: Any, slots: np.ndarray) -> np.ndarray:
    """The float32 rows at ``slots``, in the order given (read from the file in slot order)."""
    order = np.argsort(slots)
    rows = np.empty((len(slots), vectors.shape[1]), dtype=np.float32)
    rows[order] = vectors[slots[order]]
    return rows


def _scores(query: np.ndarray, vectors: Any, slots: np.ndarray) -> np.ndarray:
    if not len(slots):
        return np.empty(0, dtype=np.float32)
    return _gather(vectors, slots) @ query


def _exact_top(
    queries: np.ndarray, vectors: np.ndarray, catalog: _Catalog, positions: np.ndarray, k: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query, ``(positions, scores)`` of its ``k`` best among ``positions`` (slot order), ranked.

    Each block keeps every row scoring at least its ``k``-th best, ties included, so the final
    ranking (score, then chunk id) does not depend on the blocks.
    """
    slots = catalog.slots[positions]
    kept_rows: list[np.ndarray] = [np.empty(0, dtype=np.int64) for _ in queries]
    kept_scores: list[np.ndarray] = [np.empty(0, dtype=np.float32) for _ in queries]
    for q_start in range(0, len(queries), _QUERY_BLOCK):
        block = queries[q_start : q_start + _QUERY_BLOCK]
        for offset, rows in _row_blocks(vectors, slots):
            scores = block @ rows.T
            if scores.shape[1] > k:
                kth = np.partition(scores, scores.shape[1] - k, axis=1)[:, scores.shape[1] - k]
                passing = scores >= kth[:, None]
            else:
                passing = np.ones(scores.shape, dtype=bool)
            for i in range(len(block)):
                columns = np.flatnonzero(passing[i])
                q = q_start + i
                kept_rows[q], kept_scores[q] = _at_least_kth(
                    np.concatenate([kept_rows[q], columns + offset]),
                    np.concatenate([kept_scores[q], scores[i, columns]]),
                    k,
                )
    return [_ranked(positions[rows], scores, catalog.rank, k) for rows, scores in zip(kept_rows, kept_scores)]


def _hamming_top(
    queries: np.ndarray, vectors: _Decoded, catalog: _Catalog, positions: np.ndarray, k: int, rescore: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query, the ``rescore * k`` nearest rows by Hamming distance, ranked by the float query."""
    slots = catalog.slots[positions]
    if not len(slots):
        return [(positions, np.empty(0, dtype=np.float32)) for _ in queries]
    wanted = min(len(slots), k * rescore)
    hits = []
    for q_start in range(0, len(queries), _QUERY_BLOCK):
        block = queries[q_start : q_start + _QUERY_BLOCK]
        query_bits = pack_bits(block)
        distances = np.empty((len(block), len(slots)), dtype=np.int32)
        for start in range(0, len(slots), _SCAN_ROWS):
            part = slots[start : start + _SCAN_ROWS]
            first, last = int(part[0]), int(part[-1])
            bits = vectors.raw[first : last + 1] if last - first + 1 == len(part) else vectors.raw[part]
            distances[:, start : start + len(part)] = hamming(query_bits, np.asarray(bits))
        for query, row in zip(block, distances):
            near = np.argpartition(row, wanted - 1)[:wanted] if wanted < len(row) else np.arange(len(row))
            places = positions[near]
            hits.append(_ranked(places, _scores(query, vectors, catalog.slots[places]), catalog.rank, k))
    return hits


def _at_least_kth(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if len(scores) <= k:
        return rows, scores
    kth = np.partition(scores, len(scores) - k)[len(scores) - k]
    passing = scores >= kth
    return rows[passing], scores[passing]


def _ranked(positions: np.ndarray, scores: np.ndarray, rank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best: score descending, then chunk id ascending."""
    order = np.lexsort((rank[positions], -scores))[:k]
    return positions[order], scores[order]


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file, flush it to disk, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a file created or renamed in it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_older(folder: Path, pattern: re.Pattern[str], current: str) -> None:
    """Delete derived files or folders named like ``current`` but of an older generation."""
    match = pattern.fullmatch(current)
    assert match is not None
    newest = int(match.group(1))
    for entry in folder.iterdir():
        found = pattern.fullmatch(entry.name)
        if found is None or int(found.group(1)) >= newest:
            continue
        try:
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:  # another process cleaned it up first
            pass


def save_folder_once(root: Path, name: str, save: Callable[[Path], object]) -> None:
    """``save`` a folder as ``root/name``: written under a temporary name, then renamed, so a reader
    never sees half of it. A process that finds the name taken leaves it: the same content, saved first."""
    root.mkdir(exist_ok=True)
    tmp = root / f".{name}.{uuid.uuid4().hex}.tmp"
    save(tmp)
    try:
        os.rename(tmp, root / name)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (root / name).is_dir():
            raise
