"""Several PostgreSQL databases as one store: documents placed by rendezvous hashing.

``ShardedStore.from_uris([uri0, uri1, ...])`` (or ``open_store("uri0,uri1,...")``) treats N
databases, each a :class:`~embedtune.stores.postgres.PostgresStore`, as one logical store.

**Topology.** Each shard's manifest carries ``shard = {"id": <uuid of the shard>, "index": i,
"count": N, "store": <uuid of the logical store>}``; the rest of the manifest is the store's.
:meth:`ShardedStore.read_manifest` checks that every database given is a shard of the same store,
that the store has as many shards as URIs were given, and that no shard is listed twice; the URIs
may come in any order.

**Placement.** A document lives on the shard whose id gives the highest
``blake2b(shard id, document id)`` (rendezvous, or highest-random-weight, hashing), so all its
chunks sit together and adding a shard moves only the documents the new shard wins: about
1/(N+1) of them, each straight to the new shard.

**Reads and writes.** Every call fans out to the shards on threads. ``upsert`` writes each
shard's documents in one transaction on that shard and deletes the same ids from the others (a
copy left behind by an interrupted rebalance disappears), so a kill leaves each document old or
new on its owner. ``search`` asks every shard for its ``k`` best and merges them exactly by score
descending, then chunk id ascending: the global top ``k`` is among the shards' top ``k``s.
Where a document shows up twice (only mid-rebalance), its owner's copy wins.

**Sparse rows** (a sparse strategy's, see :mod:`embedtune.sparse.side`) live on each document's
shard; a sparse search asks every shard for its best and merges them exactly, as ``search`` does.
Files kept beside the tables (an ensemble's) are written to every shard.

**Lexical side.** BM25's statistics are global, so the index is built over every shard's
documents (id order, as one database would) and stored on shard 0 with the generations of all
shards it reflects; it equals the index one database holding all the documents builds.

:func:`add_shard` adds a database and rebalances: it writes the new topology to every manifest,
then moves each document whose owner changed (documents, chunks, vectors and sparse rows copied
as stored, no embedding), deleting it from its old shard after the copy committed. Killed, it is
rerun with the same arguments and carries on.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from ..errors import ConfigError, InputError
from ..search.bm25 import BM25Index
from .base import DocumentRecord, Filter, SearchResult, StoredChunk, StoreManifest, check_filter, doc_of_chunk
from .postgres import EXACT_BELOW, PostgresStore, index_from_bytes, index_to_bytes, lexical_wanted

__all__ = ["Rebalance", "ShardedStore", "add_shard", "merge_hits", "owner"]

ProgressFn = Callable[[int, int], None]
"""``on_progress(done, total)``: ``done`` of ``total`` documents to move have moved."""

_MOVE_BATCH = 256
T = TypeVar("T")


def owner(doc_id: str, shard_ids: Sequence[str]) -> int:
    """The position in ``shard_ids`` of the shard that holds ``doc_id`` (rendezvous hashing)."""
    if not shard_ids:
        raise ValueError("a sharded store needs at least one shard")
    return max(range(len(shard_ids)), key=lambda i: (_weight(shard_ids[i], doc_id), shard_ids[i]))


def _weight(shard_id: str, doc_id: str) -> int:
    data = f"{shard_id}\x00{doc_id}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


@dataclass(frozen=True)
class _Topology:
    """The logical store's id, and each shard's id by its position in the URI list."""

    store: str
    ids: tuple[str, ...]
    home: int  # the position of shard index 0, which keeps the lexical index

    def owner(self, doc_id: str) -> int:
        return owner(doc_id, self.ids)


class ShardedStore:
    """One store over several PostgreSQL databases (see the module docstring)."""

    def __init__(self, shards: Sequence[PostgresStore]) -> None:
        if not shards:
            raise ConfigError("a sharded store needs at least one PostgreSQL URI")
        self.shards = list(shards)
        self.location = ",".join(shard.location for shard in self.shards)
        self._topology: _Topology | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._lexical_lock = threading.Lock()
        self._lexical: tuple[dict[str, Any], BM25Index] | None = None

    @classmethod
    def from_uris(cls, uris: Sequence[str], *, exact_below: int = EXACT_BELOW) -> ShardedStore:
        """The store over the databases ``uris`` name (nothing connects yet)."""
        return cls([PostgresStore(uri, exact_below=exact_below) for uri in uris])

    def __enter__(self) -> ShardedStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _map(self, work: Callable[[PostgresStore], T]) -> list[T]:
        """``work`` on every shard concurrently; results by position, the first error raised."""
        return self._map_positions(lambda pos: work(self.shards[pos]))

    def _map_positions(self, work: Callable[[int], T]) -> list[T]:
        """``work(position)`` for every shard concurrently; results by position."""
        if len(self.shards) == 1:
            return [work(0)]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=len(self.shards), thread_name_prefix="embedtune-shard")
            pool = self._pool
        futures = [pool.submit(work, pos) for pos in range(len(self.shards))]
        return [future.result() for future in futures]

    def close(self) -> None:
        """Close every shard's connection and the worker threads."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
        for shard in self.shards:
            shard.close()

    # -- manifest --------------------------------------------------------------------------

    def read_manifest(self) -> StoreManifest | None:
        """The store's manifest (``shard`` holds the store id and count), or ``None`` if empty.

        Refuses, in one line, databases that are not all shards of one store or that are not
        all of its shards.
        """
        manifests = self._map(lambda shard: shard.read_manifest())
        if all(manifest is None for manifest in manifests):
            self._topology = None
            return None
        self._topology = _check_topology(self.shards, manifests)
        home = manifests[self._topology.home]
        assert home is not None
        return replace(home, shard={"store": self._topology.store, "count": len(self.shards)})

    def write_manifest(self, manifest: StoreManifest) -> None:
        """Create the store on every shard, or replace the manifest on each (keeping its shard ids)."""
        current = self._map(lambda shard: shard.read_manifest())
        topology = _new_topology(self.shards, current)
        written = [
            replace(
                manifest,
                shard={"id": topology.ids[pos], "index": index, "count": len(self.shards), "store": topology.store},
            )
            for pos, index in enumerate(_indexes(current, topology))
        ]
        self._map_positions(lambda pos: self.shards[pos].write_manifest(written[pos]))
        self._topology = topology

    def _require_topology(self) -> _Topology:
        if self._topology is None and self.read_manifest() is None:
            raise InputError(f"{self.location} holds no embedtune store; build one with embedtune index")
        assert self._topology is not None
        return self._topology

    # -- writes ----------------------------------------------------------------------------

    def upsert(self, records: Sequence[DocumentRecord]) -> None:
        """Write each document on its owner shard (one transaction per shard), and remove it from the others."""
        if not records:
            return
        topology = self._require_topology()
        owned: list[list[DocumentRecord]] = [[] for _ in self.shards]
        for record in records:
            owned[topology.owner(record.doc_id)].append(record)
        ids = [record.doc_id for record in records]

        def write(pos: int) -> None:
            mine = {record.doc_id for record in owned[pos]}
            self.shards[pos].write(owned[pos], delete=[doc for doc in ids if doc not in mine])

        self._map_positions(write)

    def delete(self, doc_ids: Sequence[str]) -> None:
        """Remove documents from every shard (unknown ids are ignored)."""
        if doc_ids:
            self._map(lambda shard: shard.delete(doc_ids))

    # -- reads -----------------------------------------------------------------------------

    def content_hashes(self) -> dict[str, str]:
        """``{doc_id: content hash}`` over all shards."""
        return self._gather(lambda shard: shard.content_hashes(), key=lambda doc: doc)

    def count(self) -> int:
        """Documents held: the shards' counts summed (a rebalance in progress may count a document twice)."""
        return sum(self._map(lambda shard: shard.count()))

    def count_chunks(self) -> int:
        """Chunks held, summed over the shards."""
        return sum(self._map(lambda shard: shard.count_chunks()))

    def index_bytes(self) -> int:
        """The vector side's bytes, summed over the shards (each keeps its own copy of what was fitted)."""
        return sum(self._map(lambda shard: shard.index_bytes()))

    def chunks(self, ids: Sequence[str]) -> dict[str, StoredChunk]:
        """``{chunk id: StoredChunk}`` for the ids that exist on any shard."""
        wanted = list(ids)
        return self._gather(lambda shard: shard.chunks(wanted), key=doc_of_chunk)

    def chunk_spans(self) -> dict[str, list[tuple[int, int]]]:
        """``{doc_id: [(start, end), ...]}`` over all shards."""
        return self._gather(lambda shard: shard.chunk_spans(), key=lambda doc: doc)

    def doc_ids(self) -> list[str]:
        """Every document id held on any shard, sorted."""
        return sorted(set().union(*self._map(lambda shard: shard.doc_ids())))

    def read_records(self, doc_ids: Sequence[str]) -> list[DocumentRecord]:
        """Those documents as written, each from its owner's copy when a rebalance left two."""
        wanted = list(doc_ids)
        found = self._gather(lambda shard: {r.doc_id: r for r in shard.read_records(wanted)}, key=lambda doc: doc)
        return [found[doc] for doc in wanted if doc in found]

    def documents_matching(self, where: Filter) -> set[str]:
        """Ids of the documents whose metadata matches ``where``, on any shard."""
        where = check_filter(where) or {}
        return set().union(*self._map(lambda shard: shard.documents_matching(where)))

    def _gather(self, read: Callable[[PostgresStore], dict[str, T]], *, key: Callable[[str], str]) -> dict[str, T]:
        """The union of every shard's ``read``; an entry on two shards is taken from its document's owner."""
        topology = self._require_topology()
        merged: dict[str, T] = {}
        for pos, part in enumerate(self._map(read)):
            for name, value in part.items():
                if name not in merged or topology.owner(key(name)) == pos:
                    merged[name] = value
        return merged

    def search(self, query_vectors: np.ndarray, k: int, where: Filter | None = None) -> SearchResult:
        """Per query, the ``k`` best chunks over all shards: each shard's ``k`` best, merged exactly."""
        where = check_filter(where)
        topology = self._require_topology()
        per_shard = self._map(lambda shard: shard.search(query_vectors, k, where))
        return [merge_hits([hits[q] for hits in per_shard], k, topology.owner) for q in range(len(per_shard[0]))]

    # -- other stores on the same databases, and files kept beside the tables ------------------

    def with_table(self, table: str) -> ShardedStore:
        """The sharded store on the same databases whose tables are named ``table_*`` on each."""
        return ShardedStore([shard.with_table(table) for shard in self.shards])

    def read_file(self, name: str) -> str | None:
        """The text kept under ``name`` (every shard keeps a copy; the first found is returned)."""
        return next((text for text in self._map(lambda shard: shard.read_file(name)) if text is not None), None)

    def write_file(self, name: str, text: str) -> None:
        """Keep ``text`` under ``name`` on every shard, so any order of the URIs finds it."""
        self._map(lambda shard: shard.write_file(name, text))

    # -- learned sparse rows: each shard keeps its documents' rows -------------------------------

    def sparse_todo(self, fingerprint: str, vocab: int) -> list[str]:
        """Every shard's sparse rows made current; the ids of documents still without one, sorted."""
        return sorted(set().union(*self._map(lambda shard: shard.sparse_todo(fingerprint, vocab))))

    def write_sparse(self, rows: Sequence[tuple[str, str, np.ndarray, np.ndarray]], vocab: int) -> None:
        """Each row written on its document's owner shard."""
        topology = self._require_topology()
        owned: list[list[tuple[str, str, np.ndarray, np.ndarray]]] = [[] for _ in self.shards]
        for row in rows:
            owned[topology.owner(row[0])].append(row)
        self._map_positions(lambda pos: self.shards[pos].write_sparse(owned[pos], vocab))

    def sparse_current(self, fingerprint: str) -> bool:
        """Whether every shard's documents have current sparse rows of this model."""
        return all(self._map(lambda shard: shard.sparse_current(fingerprint)))

    def search_sparse(
        self,
        queries: Sequence[tuple[np.ndarray, np.ndarray]],
        vocab: int,
        depth: int,
        only: Collection[str] | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Each shard's ``depth`` best documents per query, merged exactly: score descending, id ascending."""
        topology = self._require_topology()
        per_shard = self._map(lambda shard: shard.search_sparse(queries, vocab, depth, only))
        merged = []
        for q in range(len(queries)):
            best: dict[str, tuple[float, int]] = {}
            for pos, hits in enumerate(per_shard):
                for doc_id, score in hits[q]:
                    if doc_id not in best or topology.owner(doc_id) == pos:
                        best[doc_id] = (score, pos)
            ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))[:depth]
            merged.append([(doc_id, score) for doc_id, (score, _) in ranked])
        return merged

    def sparse_bytes(self) -> int:
        """Bytes of the sparse rows, summed over the shards."""
        return sum(self._map(lambda shard: shard.sparse_bytes()))

    # -- lexical and finishing -------------------------------------------------------------

    def _lexical_name(self, topology: _Topology) -> str:
        return f"sharded:{topology.store}"

    def lexical_index(self) -> BM25Index:
        """The BM25 index over every shard's documents, as one database holding them all builds it."""
        topology = self._require_topology()
        with self._lexical_lock:
            generations = self._map(lambda shard: shard.generation())
            reflects: dict[str, Any] = dict(zip(topology.ids, generations))
            if self._lexical is None or self._lexical[0] != reflects:
                self._lexical = self._stored_or_built_lexical(topology, reflects)
            return self._lexical[1]

    def _stored_or_built_lexical(
        self, topology: _Topology, reflects: dict[str, Any]
    ) -> tuple[dict[str, Any], BM25Index]:
        """The index stored on shard 0 when it reflects ``reflects``; else built and stored there."""
        home = self.shards[topology.home]
        stored = home.load_lexical(self._lexical_name(topology))
        if stored is not None and stored[0] == reflects:
            try:
                return reflects, index_from_bytes(stored[1])
            except InputError:
                pass  # a derived index: rebuilt below
        built, index = self._build_lexical(topology)
        home.save_lexical(self._lexical_name(topology), built, index_to_bytes(index))
        return built, index

    def _build_lexical(self, topology: _Topology) -> tuple[dict[str, Any], BM25Index]:
        """Build the global index from one snapshot per shard; what it reflects, and the index."""
        snapshots = self._map(lambda shard: shard.documents_snapshot())
        reflects = {shard_id: snapshot[0] for shard_id, snapshot in zip(topology.ids, snapshots)}
        texts: dict[str, str] = {}
        for pos, (_, ids, shard_texts) in enumerate(snapshots):
            for doc_id, text in zip(ids, shard_texts):
                if doc_id not in texts or topology.owner(doc_id) == pos:
                    texts[doc_id] = text
        if not texts:
            raise InputError(f"{self.location} holds no documents; index some before searching it")
        ids = sorted(texts)
        return reflects, BM25Index.build(ids, [texts[doc_id] for doc_id in ids])

    def finish(self) -> None:
        """Build each shard's HNSW index (where large enough) and, unless dense alone, the lexical index."""
        manifest = self.read_manifest()
        if manifest is None:
            return
        self._map(lambda shard: shard.ensure_vector_index())
        if lexical_wanted(manifest) and self.count() > 0:
            self.lexical_index()


def merge_hits(
    lists: Sequence[Sequence[tuple[str, float]]], k: int, owner_of: Callable[[str], int]
) -> list[tuple[str, float]]:
    """Merge the shards' hit lists (by position) into the ``k`` best: score descending, chunk id
    ascending, each chunk once (a chunk on two shards counts from its document's owner)."""
    best: dict[str, tuple[float, int]] = {}
    for pos, hits in enumerate(lists):
        for chunk, score in hits:
            if chunk in best and owner_of(doc_of_chunk(chunk)) != pos:
                continue
            best[chunk] = (score, pos)
    ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))
    return [(chunk, score) for chunk, (score, _) in ranked[:k]]


# -- topology ------------------------------------------------------------------------------


def _shard_info(manifest: StoreManifest, location: str) -> dict[str, Any]:
    """A shard manifest's ``shard`` field, checked; a database that is no shard is one line."""
    info = manifest.shard
    if info is None:
        raise InputError(
            f"{location} holds a single-database store, not a shard; give only shards of one sharded store "
            "(add_shard turns a single database into the first shard)"
        )
    checks = {"id": str, "index": int, "count": int, "store": str}
    for key, kind in checks.items():
        if not isinstance(info.get(key), kind) or isinstance(info.get(key), bool):
            raise InputError(f"the manifest of {location} is corrupt: shard.{key} is missing or malformed")
    return dict(info)


def _check_topology(shards: Sequence[PostgresStore], manifests: Sequence[StoreManifest | None]) -> _Topology:
    """The topology the manifests describe, when they are exactly the shards of one store."""
    infos: list[dict[str, Any]] = []
    for shard, manifest in zip(shards, manifests):
        if manifest is None:
            raise InputError(
                f"{shard.location} holds no embedtune store while the other databases given hold shards; "
                "give only the shards of one store (add a database with add_shard)"
            )
        infos.append(_shard_info(manifest, shard.location))
    first = infos[0]
    for shard, info in zip(shards, infos):
        if info["store"] != first["store"]:
            raise InputError(
                f"{shard.location} is a shard of another store than {shards[0].location}; "
                "give only the shards of one store"
            )
        if info["count"] != len(shards):
            raise InputError(
                f"{shard.location} is one of {info['count']} shards, but {len(shards)} databases were given; "
                "list every shard of the store, and only those"
            )
    indexes = sorted(info["index"] for info in infos)
    if indexes != list(range(len(shards))):
        raise InputError(
            f"the shards given carry indexes {indexes}, not 0 to {len(shards) - 1}; a shard is listed twice "
            "or one is missing: list every shard of the store once"
        )
    ids = tuple(info["id"] for info in infos)
    home = next(pos for pos, info in enumerate(infos) if info["index"] == 0)
    return _Topology(store=first["store"], ids=ids, home=home)


def _new_topology(shards: Sequence[PostgresStore], manifests: Sequence[StoreManifest | None]) -> _Topology:
    """The topology to write: the existing one, completed where a first write was interrupted."""
    held = [(pos, _shard_info(m, shards[pos].location)) for pos, m in enumerate(manifests) if m is not None]
    if not held:
        return _Topology(store=str(uuid.uuid4()), ids=tuple(str(uuid.uuid4()) for _ in shards), home=0)
    if len(held) == len(shards):
        return _check_topology(shards, manifests)
    store = held[0][1]["store"]
    for pos, info in held:
        if info["store"] != store or info["count"] != len(shards):
            raise InputError(
                f"{shards[pos].location} is a shard of another store or shard count; give only the shards of one store"
            )
    indexes = [info["index"] for _, info in held]
    if len(set(indexes)) != len(indexes) or not set(indexes) <= set(range(len(shards))):
        raise InputError(f"the shards given carry indexes {sorted(indexes)}; list every shard of the store once")
    ids = [str(uuid.uuid4()) for _ in shards]
    for pos, info in held:
        ids[pos] = info["id"]
    topology = _Topology(store=store, ids=tuple(ids), home=0)
    indexes = _indexes(manifests, topology)
    return replace(topology, home=indexes.index(0))


def _indexes(manifests: Sequence[StoreManifest | None], topology: _Topology) -> list[int]:
    """Each shard's index: the one it holds, or the lowest free one for a shard not yet written."""
    taken = [m.shard["index"] if m is not None and m.shard is not None else None for m in manifests]
    free = iter(sorted(set(range(len(manifests))) - {index for index in taken if index is not None}))
    return [index if index is not None else next(free) for index in taken]


# -- adding a shard ------------------------------------------------------------------------


@dataclass(frozen=True)
class Rebalance:
    """What :func:`add_shard` did: documents ``moved`` of ``documents`` held, over ``shards`` shards."""

    moved: int
    documents: int
    shards: int


def add_shard(uris: Sequence[str], new_uri: str, on_progress: ProgressFn | None = None) -> Rebalance:
    """Add the empty database ``new_uri`` to the sharded store ``uris`` and rebalance.

    The new topology goes to every manifest first (the new shard's, then the others'); then each
    document whose owner changed is copied to its new shard (documents, chunks, vectors and its
    sparse row as stored: nothing is embedded or encoded) and deleted from the old one once the
    copy committed. Killed at any point, it is rerun with the same arguments and completes:
    documents are never lost, and a copy not yet deleted is found and deleted by the rerun. A
    single-database store (one URI) becomes shard 0 of a new sharded store.
    """
    uris = [uri.strip() for uri in uris]
    if not uris:
        raise ConfigError("add_shard needs the URIs of the store's current shards")
    if new_uri.strip() in uris:
        raise ConfigError(f"{PostgresStore(new_uri).location} is already one of the shards given")
    old = ShardedStore.from_uris(uris)
    with ShardedStore([*old.shards, PostgresStore(new_uri)]) as store:
        try:
            _write_topology(old, store.shards[-1])
            store.read_manifest()  # checks the topology just written
            moved, documents = _move_documents(store, on_progress)
            store.finish()
            return Rebalance(moved=moved, documents=documents, shards=len(store.shards))
        finally:
            old.close()


def _write_topology(old: ShardedStore, new: PostgresStore) -> None:
    """Give every manifest the topology with the new shard: the new shard's first, then the others'.

    Idempotent: a rerun finds the new shard's manifest and keeps its ids.
    """
    count = len(old.shards)
    manifests = old._map(lambda shard: shard.read_manifest())
    held: list[StoreManifest] = []
    for shard, manifest in zip(old.shards, manifests):
        if manifest is None:
            raise InputError(f"{shard.location} holds no embedtune store; give the URIs of an existing store")
        held.append(manifest)
    if count == 1 and held[0].shard is None:  # a single database becomes shard 0
        infos: list[dict[str, Any]] = [{"id": str(uuid.uuid4()), "index": 0, "count": 1, "store": None}]
    else:
        infos = _old_shards(old.shards, held)
    base = held[[info["index"] for info in infos].index(0)]
    new_info = _new_shard_info(new, count)
    store = infos[0]["store"] or (new_info["store"] if new_info is not None else str(uuid.uuid4()))
    if new_info is None:
        new_info = {"id": str(uuid.uuid4()), "index": count, "count": count + 1, "store": store}
    elif new_info["store"] != store:
        raise InputError(f"{new.location} already holds a shard of another store; give an empty database")
    new.write_manifest(replace(base, shard=new_info))
    for shard, manifest, info in zip(old.shards, held, infos):
        shard.write_manifest(replace(manifest, shard={**info, "store": store, "count": count + 1}))


def _old_shards(shards: Sequence[PostgresStore], manifests: Sequence[StoreManifest]) -> list[dict[str, Any]]:
    """The current shards' info: one store, counted N (or N + 1 when a previous run got that far)."""
    infos = [_shard_info(m, shard.location) for shard, m in zip(shards, manifests)]
    store = infos[0]["store"]
    for shard, info in zip(shards, infos):
        if info["store"] != store:
            raise InputError(f"{shard.location} is a shard of another store than {shards[0].location}")
        if info["count"] not in (len(shards), len(shards) + 1):
            raise InputError(
                f"{shard.location} is one of {info['count']} shards, but {len(shards)} were given; "
                "list every current shard of the store"
            )
    if sorted(info["index"] for info in infos) != list(range(len(shards))):
        raise InputError("the shards given do not carry indexes 0 to N-1; list every current shard once")
    return infos


def _new_shard_info(new: PostgresStore, count: int) -> dict[str, Any] | None:
    """The new database's shard info when a previous run wrote it; ``None`` when it is empty."""
    manifest = new.read_manifest()
    if manifest is None:
        if new.count() > 0:
            raise InputError(f"{new.location} holds documents but no store; give an empty database")
        return None
    info = _shard_info(manifest, new.location)
    if info["index"] != count:
        raise InputError(f"{new.location} already holds another store or shard; give an empty database")
    return info


def _move_documents(store: ShardedStore, on_progress: ProgressFn | None) -> tuple[int, int]:
    """Move every document not on its owner; ``(moved, documents held)``."""
    topology = store._require_topology()
    held = store._map(lambda shard: shard.doc_ids())
    moves = [(pos, [doc for doc in ids if topology.owner(doc) != pos]) for pos, ids in enumerate(held)]
    total = sum(len(docs) for _, docs in moves)
    documents = len({doc for ids in held for doc in ids})
    sparse = _sparse_model_everywhere(store)
    done = 0
    if on_progress is not None:
        on_progress(0, total)
    for pos, docs in moves:
        source = store.shards[pos]
        for batch in _batches(docs, _MOVE_BATCH):
            records = source.read_records(batch)
            rows = source.read_sparse(batch) if sparse is not None else []
            targets: dict[int, list[DocumentRecord]] = {}
            for record in records:
                targets.setdefault(topology.owner(record.doc_id), []).append(record)
            for target, group in targets.items():
                store.shards[target].write(group)
                if sparse is not None:  # a document's sparse row goes with it (written after it: write drops old rows)
                    mine = {record.doc_id for record in group}
                    store.shards[target].write_sparse([row for row in rows if row[0] in mine], sparse[1])
            source.delete(batch)
            done += len(batch)
            if on_progress is not None:
                on_progress(done, total)
    return total, documents


def _sparse_model_everywhere(store: ShardedStore) -> tuple[str, int] | None:
    """The sparse model of the store's rows, its tables made on every shard that has none yet (the
    new one), so each shard's rows are current once its documents' rows arrive; ``None`` without rows."""
    models = store._map(lambda shard: shard.sparse_model())
    model = next((held for held in models if held is not None), None)
    if model is not None:
        for shard, held in zip(store.shards, models):
            if held is None:
                shard.sparse_todo(*model)
    return model


def _batches(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
