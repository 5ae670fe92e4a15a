"""The PostgreSQL store: documents, chunks and vectors in tables, searched with pgvector.

``PostgresStore("postgresql://user:password@host:5432/db?table=NAME")`` keeps a store in the
tables named ``NAME_*`` (``NAME`` defaults to ``embedtune``; the ``table`` parameter is removed
before the URI reaches libpq). Needs the pgvector extension (0.8 or later for iterative index
scans); the store creates it when the user may, and says so in one line when it may not.

Tables:

- ``NAME_manifest``: one row, the :class:`~embedtune.stores.base.StoreManifest` as ``jsonb``.
- ``NAME_documents``: ``doc_id`` (primary key), ``content_hash``, ``text``, ``metadata``.
- ``NAME_chunks``: ``id`` (``<doc_id>#<n>``), ``doc_id``, ``n``, ``start``, ``end``, ``text``,
  ``metadata`` (the document's, copied so a filtered search reads one table) and ``embedding``:
  ``vector(d)``, ``halfvec(d)`` when the manifest's precision is ``float16``, or ``bit(d)`` (a
  sign bit per dimension) when it is ``binary``; int8 is refused in one line. Ids sort
  byte-wise (``COLLATE "C"``), as Python sorts them.
- ``NAME_state``: the generation (bumped by every transaction that changes documents) and the
  number of chunks.
- ``NAME_lexical``: the lexical index, serialized, with the generation it reflects.
- ``NAME_sparse``: a sparse strategy's rows, one ``sparsevec`` per document with the content hash
  it was encoded from, and ``NAME_sparse_model`` (the model's fingerprint and vocabulary size);
  see :mod:`embedtune.sparse.side`. Searched by an exact ``<#>`` scan (:meth:`PostgresStore.search_sparse`).
- ``NAME_files``: texts kept under a name beside the tables, without a store of their own: an
  ensemble's file, whose members are stores under other prefixes (:meth:`PostgresStore.with_table`).

**Writes.** :meth:`PostgresStore.write` (and so ``upsert`` and ``delete``) is one transaction:
the documents' old chunks are deleted, the documents upserted, their chunks copied in with
binary ``COPY``, the generation bumped. A process killed at any moment loses at most that
transaction, so every document is old or new.

**Search.** Query vectors travel as one ``vector[]`` parameter, each query answered in the same
statement (``unnest`` and a ``LATERAL`` subquery), up to 1,024 queries a round trip. Scores are
cosine similarities (1 - cosine distance); ties go to the lower chunk id.

- While fewer than ``exact_below`` chunks (default 20,000) could match (all chunks, or those
  the filter keeps, counted through a GIN index on the metadata), or before the HNSW index exists,
  the search is exact: index scans are turned off for the transaction, so the ``ORDER BY`` is a
  scan and a sort. Small stores and selective filters give exact results.
- Above it, the HNSW index (``vector_cosine_ops`` / ``halfvec_cosine_ops``, built by
  :meth:`PostgresStore.finish`) proposes ``2k`` (at least ``k + 10``) candidates per query,
  rescored exactly (float16 vectors as float32 against the float32 query) and re-sorted.
  ``hnsw.ef_search`` is twice the candidates (64 to 1,000); ``hnsw.iterative_scan =
  relaxed_order`` keeps a filtered scan going until it has its candidates, and
  ``hnsw.max_scan_tuples`` grows with the filter's selectivity.
- Binary vectors: each query takes ``rescore * k`` candidates by Hamming distance (``<~>``
  against ``binary_quantize`` of the query; exactly, or through an HNSW index with
  ``bit_hamming_ops``), which are then ranked here by the float query against their bits (nothing
  but the bits is stored).

**Lexical side.** :meth:`PostgresStore.lexical_index` is the same
:class:`~embedtune.search.bm25.BM25Index` (bm25s) the embedded store uses, built over every
document's text in id order, kept in ``NAME_lexical`` as a tar of its saved folder with the
generation it reflects: loaded when current, rebuilt when the documents changed since.
PostgreSQL's own full-text ranking was measured against it on SciFact's test split
(``python benchmarks/pg_lexical_scifact.py``, ``to_tsvector('english', title + text)``): AND-ed
``plainto_tsquery``/``websearch_to_tsquery`` find too little (nDCG@10 0.07); OR-ed, the best was
``ts_rank(vec, query, 1)`` with nDCG@10 0.6044 and Recall@100 0.8572 (``ts_rank_cd``: 0.34 /
0.76), against bm25s's 0.6863 / 0.9127 in the same run, and 12 s against 1 s for the 300
queries. So the lexical side stays bm25s.

Thread safety: one connection per store, behind a lock; concurrent searches take turns.
"""

from __future__ import annotations

import io
import json
import math
import re
import tarfile
import tempfile
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from ..errors import ConfigError, InputError, StoreError, require
from ..search.bm25 import BM25Index
from ..search.compress import unpack_bits
from .base import (
    DocumentRecord,
    Filter,
    SearchResult,
    StoredChunk,
    StoreManifest,
    check_filter,
    chunk_id,
    mask_uri,
)

__all__ = ["EXACT_BELOW", "PostgresStore", "index_from_bytes", "index_to_bytes", "split_uri", "with_table"]

EXACT_BELOW = 20_000
"""Below this many candidate chunks a search scans exactly instead of using the HNSW index."""

DEFAULT_TABLE = "embedtune"
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
_CONNECT_TIMEOUT_S = 10
_QUERY_BLOCK = 1024
_LEXICAL_SELF = "store"
_DEFAULT_MAX_SCAN_TUPLES = 20_000
_READ_BATCH = 1000


def split_uri(uri: str) -> tuple[str, str]:
    """``(the URI for libpq, the table prefix)``: the ``table`` query parameter taken out."""
    try:
        parts = urlsplit(uri.strip())
    except ValueError as exc:
        raise ConfigError(f"{mask_uri(uri)} is not a PostgreSQL URI ({exc})") from exc
    query = parse_qsl(parts.query, keep_blank_values=True)
    tables = [value for key, value in query if key == "table"]
    table = tables[-1] if tables else DEFAULT_TABLE
    if not _TABLE_NAME.fullmatch(table):
        raise ConfigError(
            f"table={table!r} in {mask_uri(uri)} is not a usable table name; use up to 40 letters, "
            "digits and underscores, not starting with a digit"
        )
    rest = urlencode([(key, value) for key, value in query if key != "table"])
    return urlunsplit(parts._replace(query=rest)), table


def with_table(uri: str, table: str) -> str:
    """``uri`` naming the table prefix ``table`` instead of its own (checked as ``split_uri`` checks it)."""
    parts = urlsplit(uri.strip())
    query = [(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True) if key != "table"]
    named = urlunsplit(parts._replace(query=urlencode([*query, ("table", table)])))
    split_uri(named)
    return named


def _password(uri: str) -> str | None:
    """The password a URI carries, in its user part or as a ``password`` parameter."""
    parts = urlsplit(uri)
    given = [value for key, value in parse_qsl(parts.query, keep_blank_values=True) if key == "password"]
    return parts.password or (given[-1] if given else None) or None


def _masked(uri: str) -> str:
    """:func:`mask_uri`, and a ``password`` query parameter shown as ``***`` too."""
    masked = mask_uri(uri)
    parts = urlsplit(masked)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(key == "password" for key, _ in query):
        return masked
    shown = "&".join(f"{key}=***" if key == "password" else urlencode([(key, value)]) for key, value in query)
    return urlunsplit(parts._replace(query=shown))


_DEFAULT_RESCORE = 4


@dataclass(frozen=True)
class _Layout:
    """What the vector column holds: ``dims`` (0: no vectors) and the precision (and, for binary,
    the candidates per wanted hit taken by Hamming distance: a query-time choice)."""

    dims: int
    precision: str
    rescore: int = field(default=_DEFAULT_RESCORE, compare=False)

    @classmethod
    def of(cls, manifest: StoreManifest) -> _Layout:
        if manifest.dims > 0 and manifest.precision == "int8":
            raise ConfigError("int8 is not supported on PostgreSQL; use float16 or binary")
        vectors = manifest.strategy.get("vectors")
        rescore = vectors.get("rescore", _DEFAULT_RESCORE) if isinstance(vectors, dict) else _DEFAULT_RESCORE
        if isinstance(rescore, bool) or not isinstance(rescore, int) or rescore < 1:
            rescore = _DEFAULT_RESCORE
        return cls(manifest.dims, manifest.precision, rescore)

    @property
    def half(self) -> bool:
        return self.precision == "float16"

    @property
    def binary(self) -> bool:
        return self.precision == "binary" and self.dims > 0

    @property
    def column_type(self) -> str:
        if self.dims <= 0:
            return "vector"
        return f"{self.copy_type}({int(self.dims)})"

    @property
    def copy_type(self) -> str:
        if self.dims <= 0:
            return "vector"
        return "bit" if self.binary else "halfvec" if self.half else "vector"

    @property
    def ops(self) -> str:
        """The HNSW operator class: cosine, or Hamming over bits."""
        return {"bit": "bit_hamming_ops", "halfvec": "halfvec_cosine_ops"}.get(self.copy_type, "vector_cosine_ops")


class _Names:
    """The SQL identifiers of one store's tables and indexes (``NAME_documents``, ...)."""

    def __init__(self, prefix: str) -> None:
        sql = require("psycopg.sql", "pg")  # the first use of psycopg: a missing extra is one line here
        self.prefix = prefix
        self.manifest = sql.Identifier(f"{prefix}_manifest")
        self.state = sql.Identifier(f"{prefix}_state")
        self.documents = sql.Identifier(f"{prefix}_documents")
        self.chunks = sql.Identifier(f"{prefix}_chunks")
        self.lexical = sql.Identifier(f"{prefix}_lexical")
        self.chunks_doc = sql.Identifier(f"{prefix}_chunks_doc")
        self.chunks_metadata = sql.Identifier(f"{prefix}_chunks_metadata")
        self.documents_metadata = sql.Identifier(f"{prefix}_documents_metadata")
        self.hnsw = sql.Identifier(f"{prefix}_chunks_hnsw")
        self.files = sql.Identifier(f"{prefix}_files")
        self.sparse = sql.Identifier(f"{prefix}_sparse")
        self.sparse_model = sql.Identifier(f"{prefix}_sparse_model")

    def regclass(self, part: str) -> str:
        """The quoted name ``to_regclass`` takes for table or index ``NAME_part``."""
        return f'"{self.prefix}_{part}"'


class PostgresStore:
    """A store in one PostgreSQL database (see the module docstring).

    ``uri`` is a ``postgresql://`` URI, optionally with ``?table=NAME``; ``exact_below`` is the
    number of candidate chunks under which a search is exact. Nothing connects until first use.
    """

    def __init__(self, uri: str, *, exact_below: int = EXACT_BELOW) -> None:
        if isinstance(exact_below, bool) or not isinstance(exact_below, int) or exact_below < 0:
            raise ConfigError(f"exact_below must be a whole number of at least 0, not {exact_below!r}")
        self._uri = uri.strip()
        self._conninfo, self.table = split_uri(uri)
        self._password = _password(self._conninfo)
        self.location = _masked(uri.strip())
        self.exact_below = exact_below
        self._names = _Names(self.table)
        self._lock = threading.RLock()
        self._conn: Any = None
        self._layout_cache: _Layout | None = None
        self._has_hnsw = False
        self._lexical: tuple[dict[str, Any], BM25Index] | None = None

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- connection ------------------------------------------------------------------------

    def _connect(self) -> Any:
        psycopg = require("psycopg", "pg")
        timeout = {} if "connect_timeout" in self._conninfo else {"connect_timeout": _CONNECT_TIMEOUT_S}
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, **timeout)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {self.location} ({self._reason(exc, connecting=True)}); "
                "check that the server is running and the URI"
            ) from exc
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare(self, conn: Any) -> None:
        """Make sure pgvector is there, register its types and load its library."""
        psycopg = require("psycopg", "pg")
        register_vector = require("pgvector.psycopg", "pg").register_vector
        if not conn.execute("SELECT to_regtype('vector') IS NOT NULL").fetchone()[0]:
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateObject):
                pass  # another session created it at the same moment
            except psycopg.Error as exc:
                available = conn.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
                if not available.fetchone()[0]:
                    raise StoreError(
                        f"PostgreSQL at {self.location} has no pgvector extension; install pgvector on the "
                        "server (https://github.com/pgvector/pgvector) and retry"
                    ) from exc
                raise StoreError(
                    f"the pgvector extension is not enabled in the database at {self.location} and this "
                    f"user cannot enable it ({self._reason(exc)}); run CREATE EXTENSION vector there as its "
                    "owner or a superuser"
                ) from exc
        try:
            register_vector(conn)
            # Loads pgvector's library in this session, so that its hnsw.* settings are known.
            conn.execute("SELECT '[1]'::vector")
        except psycopg.Error as exc:
            raise StoreError(
                f"PostgreSQL at {self.location} cannot use the pgvector extension ({self._reason(exc)}); "
                "check that it is installed in a schema on the search_path"
            ) from exc

    def _reason(self, exc: BaseException, *, connecting: bool = False) -> str:
        """The first line of a driver error, without libpq's preamble or any password."""
        lines = str(exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        if connecting:
            reason = reason.rsplit("failed: ", 1)[-1]
        reason = reason.removeprefix("FATAL:").removeprefix("ERROR:").strip() or type(exc).__name__
        if self._password:
            reason = reason.replace(self._password, "***")
        return reason

    @contextmanager
    def _database(self, doing: str) -> Iterator[Any]:
        """The connection, under the lock; driver errors become one-line ``StoreError``s."""
        psycopg = require("psycopg", "pg")
        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = None
                self._has_hnsw = False
                self._conn = self._connect()
            try:
                yield self._conn
            except psycopg.OperationalError as exc:
                raise StoreError(
                    f"PostgreSQL at {self.location} failed while {doing} ({self._reason(exc)}); "
                    "check the server and retry"
                ) from exc
            except psycopg.Error as exc:
                raise StoreError(f"PostgreSQL at {self.location} refused {doing} ({self._reason(exc)})") from exc

    def close(self) -> None:
        """Close the connection (the next call opens a new one)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- manifest and tables ---------------------------------------------------------------

    def _exists(self, conn: Any) -> bool:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", [self._names.regclass("manifest")]).fetchone()[0]

    def read_manifest(self) -> StoreManifest | None:
        """The manifest, or ``None`` when these tables hold no store."""
        from psycopg import sql

        with self._database("reading the manifest") as conn:
            if not self._exists(conn):
                return None
            row = conn.execute(sql.SQL("SELECT data FROM {} WHERE id = 1").format(self._names.manifest)).fetchone()
        if row is None:
            return None
        manifest = StoreManifest.from_dict(row[0], where=f"the manifest of {self.location}")
        self._layout_cache = _Layout.of(manifest)
        return manifest

    def write_manifest(self, manifest: StoreManifest) -> None:
        """Create the store's tables (one transaction), or replace its manifest.

        A manifest whose vectors would not fit the existing tables (other dims or precision) is
        refused while documents are held.
        """
        from psycopg import sql
        from psycopg.types.json import Jsonb

        layout = _Layout.of(manifest)
        names = self._names
        with self._database("writing the manifest") as conn, conn.transaction():
            row = None
            if self._exists(conn):
                row = conn.execute(sql.SQL("SELECT data FROM {} WHERE id = 1").format(names.manifest)).fetchone()
            if row is not None:
                old = StoreManifest.from_dict(row[0], where=f"the manifest of {self.location}")
                if _Layout(old.dims, old.precision) != layout:
                    if self._held(conn):
                        raise InputError(
                            f"{self.location} holds {old.dims}-dim {old.precision} vectors, not "
                            f"{manifest.dims}-dim {manifest.precision}; delete its documents or use another ?table="
                        )
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(names.chunks))  # empty: retyped
                    self._has_hnsw = False
            self._create_tables(conn, layout)
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (id, data) VALUES (1, %s) ON CONFLICT (id) DO UPDATE SET data = excluded.data"
                ).format(names.manifest),
                [Jsonb(manifest.to_dict())],
            )
        self._layout_cache = layout

    def _held(self, conn: Any) -> bool:
        from psycopg import sql

        return conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(self._names.documents)).fetchone()[0]

    def _create_tables(self, conn: Any, layout: _Layout) -> None:
        from psycopg import sql

        n = self._names
        statements = [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id smallint PRIMARY KEY CHECK (id = 1), "
                "generation bigint NOT NULL, chunks bigint NOT NULL)"
            ).format(n.state),
            sql.SQL("INSERT INTO {} (id, generation, chunks) VALUES (1, 0, 0) ON CONFLICT (id) DO NOTHING").format(
                n.state
            ),
            sql.SQL(
                'CREATE TABLE IF NOT EXISTS {} (doc_id text COLLATE "C" PRIMARY KEY, content_hash text NOT NULL, '
                "text text NOT NULL, metadata jsonb NOT NULL)"
            ).format(n.documents),
            sql.SQL(
                'CREATE TABLE IF NOT EXISTS {} (id text COLLATE "C" PRIMARY KEY, doc_id text COLLATE "C" NOT NULL, '
                'n integer NOT NULL, start integer NOT NULL, "end" integer NOT NULL, text text NOT NULL, '
                "metadata jsonb NOT NULL, embedding {})"
            ).format(n.chunks, sql.SQL(layout.column_type)),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (doc_id)").format(n.chunks_doc, n.chunks),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin (metadata jsonb_path_ops)").format(
                n.chunks_metadata, n.chunks
            ),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin (metadata jsonb_path_ops)").format(
                n.documents_metadata, n.documents
            ),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, reflects jsonb NOT NULL, data bytea NOT NULL)"
            ).format(n.lexical),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id smallint PRIMARY KEY CHECK (id = 1), data jsonb NOT NULL)"
            ).format(n.manifest),
        ]
        for statement in statements:
            conn.execute(statement)

    def _layout(self) -> _Layout:
        """The vector layout, from the manifest (read once); a missing store is one line."""
        if self._layout_cache is None and self.read_manifest() is None:
            raise InputError(f"{self.location} holds no embedtune store; build one with embedtune index")
        assert self._layout_cache is not None
        return self._layout_cache

    # -- writes ----------------------------------------------------------------------------

    def upsert(self, records: Sequence[DocumentRecord]) -> None:
        """Write whole documents in one transaction (see :meth:`write`)."""
        self.write(records)

    def delete(self, doc_ids: Sequence[str]) -> None:
        """Remove documents and their chunks in one transaction; unknown ids are ignored."""
        self.write((), delete=doc_ids)

    def write(self, records: Sequence[DocumentRecord], *, delete: Sequence[str] = ()) -> None:
        """Upsert ``records`` and remove the documents ``delete`` names, in one transaction.

        Each record replaces every chunk its document had; vectors are stored at the
        manifest's precision. The generation is bumped when anything changed.
        """
        from psycopg import sql
        from psycopg.types.json import Jsonb

        if not records and not delete:
            return
        layout = self._layout()
        _check_records(records, layout, self.location)
        written = [record.doc_id for record in records]
        kept = set(written)
        removed = [doc for doc in dict.fromkeys(delete) if doc not in kept]
        n = self._names
        with self._database("writing documents") as conn, conn.transaction():
            gone = conn.execute(
                sql.SQL("DELETE FROM {} WHERE doc_id = ANY(%s)").format(n.chunks), [written + removed]
            ).rowcount
            changed = gone > 0 or bool(records)
            if conn.execute("SELECT to_regclass(%s) IS NOT NULL", [n.regclass("sparse")]).fetchone()[0]:
                # A rewritten or removed document's sparse row goes with its old text: no row is ever stale.
                conn.execute(sql.SQL("DELETE FROM {} WHERE doc_id = ANY(%s)").format(n.sparse), [written + removed])
            if removed:
                docs_gone = conn.execute(
                    sql.SQL("DELETE FROM {} WHERE doc_id = ANY(%s)").format(n.documents), [removed]
                ).rowcount
                changed = changed or docs_gone > 0
            added = 0
            if records:
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (doc_id, content_hash, text, metadata) "
                        "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::jsonb[]) "
                        "ON CONFLICT (doc_id) DO UPDATE SET content_hash = excluded.content_hash, "
                        "text = excluded.text, metadata = excluded.metadata"
                    ).format(n.documents),
                    [
                        written,
                        [record.content_hash for record in records],
                        [record.text for record in records],
                        [Jsonb(_metadata_json(record.metadata), dumps=_as_is) for record in records],
                    ],
                )
                added = self._copy_chunks(conn, records, layout)
            if changed:
                conn.execute(
                    sql.SQL("UPDATE {} SET generation = generation + 1, chunks = chunks + %s WHERE id = 1").format(
                        n.state
                    ),
                    [added - gone],
                )

    def _copy_chunks(self, conn: Any, records: Sequence[DocumentRecord], layout: _Layout) -> int:
        """COPY the records' chunks in (binary); the number of chunks written."""
        from psycopg import sql
        from psycopg.types.json import Jsonb

        pgvector = require("pgvector", "pg")
        half = pgvector.HalfVector if layout.half else None
        statement = sql.SQL(
            'COPY {} (id, doc_id, n, start, "end", text, metadata, embedding) FROM STDIN (FORMAT BINARY)'
        ).format(self._names.chunks)
        count = 0
        with conn.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(["text", "text", "int4", "int4", "int4", "text", "jsonb", layout.copy_type])
            for record in records:
                metadata = Jsonb(_metadata_json(record.metadata), dumps=_as_is)
                vectors = None if record.vectors is None else np.asarray(record.vectors, dtype=np.float32)
                for n, (start, end) in enumerate(record.spans):
                    vector: Any = None
                    if vectors is not None:
                        if layout.binary:
                            vector = pgvector.Bit(vectors[n] > 0)
                        else:
                            vector = vectors[n] if half is None else half(vectors[n])
                    copy.write_row(
                        (
                            chunk_id(record.doc_id, n),
                            record.doc_id,
                            n,
                            start,
                            end,
                            record.text[start:end],
                            metadata,
                            vector,
                        )
                    )
                    count += 1
        return count

    # -- reads -----------------------------------------------------------------------------

    def _state(self, conn: Any) -> tuple[int, int]:
        from psycopg import sql

        row = conn.execute(
            sql.SQL("SELECT generation, chunks FROM {} WHERE id = 1").format(self._names.state)
        ).fetchone()
        return (int(row[0]), int(row[1])) if row is not None else (0, 0)

    def generation(self) -> int:
        """The number of document-changing transactions so far (0 for a missing store)."""
        with self._database("reading the generation") as conn:
            return self._state(conn)[0] if self._exists(conn) else 0

    def content_hashes(self) -> dict[str, str]:
        """``{doc_id: content hash}`` of every document held."""
        return dict(self._select("reading content hashes", "SELECT doc_id, content_hash FROM {documents}"))

    def doc_ids(self) -> list[str]:
        """Every document id held, in id order."""
        return [row[0] for row in self._select("listing documents", "SELECT doc_id FROM {documents} ORDER BY doc_id")]

    def count(self) -> int:
        """The number of documents held."""
        rows = self._select("counting documents", "SELECT count(*) FROM {documents}")
        return int(rows[0][0]) if rows else 0

    def index_bytes(self) -> int:
        """The stored vectors (``pg_column_size``), the HNSW index if built, and what was fitted for them."""
        manifest = self.read_manifest()
        if manifest is None or manifest.dims <= 0:
            return 0
        rows = self._select(
            "measuring the index",
            "SELECT coalesce(sum(pg_column_size(embedding)), 0) FROM {chunks}",
        )
        vectors = int(rows[0][0]) if rows else 0
        graph = self._select(
            "measuring the index",
            "SELECT coalesce(pg_relation_size(to_regclass(%s)), 0)",
            [self._names.regclass("chunks_hnsw")],
        )
        return vectors + (int(graph[0][0]) if graph else 0) + manifest.compression_bytes

    def count_chunks(self) -> int:
        """The number of chunks held (one vector each in a store with vectors)."""
        with self._database("counting chunks") as conn:
            return self._state(conn)[1] if self._exists(conn) else 0

    def chunks(self, ids: Sequence[str]) -> dict[str, StoredChunk]:
        """``{chunk id: StoredChunk}`` for the ids that exist."""
        rows = self._select(
            "reading chunks",
            'SELECT id, doc_id, start, "end", text, metadata FROM {chunks} WHERE id = ANY(%s)',
            [list(ids)],
        )
        return {
            row[0]: StoredChunk(id=row[0], doc_id=row[1], start=row[2], end=row[3], text=row[4], metadata=row[5])
            for row in rows
        }

    def chunk_spans(self) -> dict[str, list[tuple[int, int]]]:
        """``{doc_id: [(start, end), ...]}`` in chunk order; documents without chunks left out."""
        spans: dict[str, list[tuple[int, int]]] = {}
        for doc_id, start, end in self._select(
            "reading chunk offsets", 'SELECT doc_id, start, "end" FROM {chunks} ORDER BY doc_id, n'
        ):
            spans.setdefault(doc_id, []).append((start, end))
        return spans

    def documents_matching(self, where: Filter) -> set[str]:
        """Ids of the documents whose metadata matches ``where`` (see ``metadata_matches``)."""
        from psycopg import sql

        clause, params = _filter_sql(check_filter(where))
        with self._database("filtering documents") as conn:
            if not self._exists(conn):
                return set()
            query = sql.SQL("SELECT doc_id FROM {} WHERE {}").format(self._names.documents, clause)
            return {row[0] for row in conn.execute(query, params)}

    def read_records(self, doc_ids: Sequence[str]) -> list[DocumentRecord]:
        """The held documents among ``doc_ids`` as records, vectors included (float32), in id order.

        What :func:`embedtune.stores.sharded.add_shard` copies between databases: writing them
        to another store of the same manifest reproduces them without embedding again.
        """
        from psycopg import sql

        layout = self._layout()
        n = self._names
        wanted = list(doc_ids)
        with self._database("reading documents") as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            documents = conn.execute(
                sql.SQL(
                    "SELECT doc_id, content_hash, text, metadata FROM {} WHERE doc_id = ANY(%s) ORDER BY doc_id"
                ).format(n.documents),
                [wanted],
            ).fetchall()
            chunk_rows = conn.execute(
                sql.SQL(
                    'SELECT doc_id, start, "end", embedding FROM {} WHERE doc_id = ANY(%s) ORDER BY doc_id, n'
                ).format(n.chunks),
                [wanted],
                binary=True,
            ).fetchall()
        by_doc: dict[str, list[tuple[int, int, Any]]] = {}
        for doc_id, start, end, embedding in chunk_rows:
            by_doc.setdefault(doc_id, []).append((start, end, embedding))
        return [
            _record(doc_id, digest, text, metadata, by_doc.get(doc_id, []), layout)
            for doc_id, digest, text, metadata in documents
        ]

    def _select(self, doing: str, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``query`` (``{documents}`` and ``{chunks}`` name the tables); none without a store."""
        from psycopg import sql

        with self._database(doing) as conn:
            if not self._exists(conn):
                return []
            statement = sql.SQL(query).format(documents=self._names.documents, chunks=self._names.chunks)
            return conn.execute(statement, list(params)).fetchall()

    # -- vector search ---------------------------------------------------------------------

    def search(self, query_vectors: np.ndarray, k: int, where: Filter | None = None) -> SearchResult:
        """Per query, the ``k`` chunks of highest cosine similarity among those ``where`` keeps.

        ``query_vectors`` is a float array ``(n, dims)`` of L2-normalised rows. Exact while
        fewer than ``exact_below`` chunks could match or before :meth:`finish` built the HNSW
        index; approximate (and rescored exactly) above it.
        """
        where = check_filter(where)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a whole number of at least 1, not {k!r}")
        layout = self._layout()
        queries = _query_matrix(query_vectors, layout, self.location)
        if len(queries) == 0:
            return []
        clause, params = _filter_sql(where)
        hits: SearchResult = []
        with self._database("searching") as conn, conn.transaction():
            total = self._state(conn)[1]
            matching = total if where is None else self._count_matching(conn, clause, params)
            if matching == 0:
                return [[] for _ in range(len(queries))]
            exact = matching < self.exact_below or not self._hnsw_exists(conn)
            depth = k if exact else max(2 * k, k + 10)
            if layout.binary:
                depth = max(depth, layout.rescore * k)
            self._configure_search(conn, exact=exact, depth=depth, selectivity=matching / max(total, 1))
            statement = self._search_sql(layout, clause, exact=exact)
            for start in range(0, len(queries), _QUERY_BLOCK):
                block = queries[start : start + _QUERY_BLOCK]
                rows = conn.execute(statement, [list(block), *params, depth], binary=True).fetchall()
                if layout.binary:
                    rows = _rescored(rows, block, layout.dims)
                hits.extend(_ranked(rows, len(block), k))
        return hits

    def _count_matching(self, conn: Any, clause: Any, params: list[Any]) -> int:
        from psycopg import sql

        query = sql.SQL("SELECT count(*) FROM {} WHERE embedding IS NOT NULL AND {}").format(self._names.chunks, clause)
        return int(conn.execute(query, params).fetchone()[0])

    def _hnsw_exists(self, conn: Any) -> bool:
        if not self._has_hnsw:
            found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [self._names.regclass("chunks_hnsw")])
            self._has_hnsw = bool(found.fetchone()[0])
        return self._has_hnsw

    def _configure_search(self, conn: Any, *, exact: bool, depth: int, selectivity: float) -> None:
        """Settings local to the search's transaction: which plan, and how far HNSW looks."""
        if exact:
            settings = {"enable_indexscan": "off"}
        else:
            settings = {
                # Only the HNSW index serves the ORDER BY; a filter never turns it into a sort.
                "enable_seqscan": "off",
                "enable_bitmapscan": "off",
                "hnsw.iterative_scan": "relaxed_order",
                "hnsw.ef_search": str(min(1000, max(64, 2 * depth))),
                "hnsw.max_scan_tuples": str(_max_scan_tuples(depth, selectivity)),
            }
        calls = ", ".join("set_config(%s, %s, true)" for _ in settings)
        conn.execute(f"SELECT {calls}", [value for item in settings.items() for value in item])

    def _search_sql(self, layout: _Layout, clause: Any, *, exact: bool) -> Any:
        """The statement answering a block of queries: parameters (vectors, filter..., depth)."""
        from psycopg import sql

        if layout.binary:  # candidates by Hamming distance, with their bits: rescored by the caller
            bits = sql.SQL(f"binary_quantize(q.v)::bit({int(layout.dims)})")
            return sql.SQL(
                "SELECT q.i, h.id, h.embedding FROM unnest(%s::vector[]) WITH ORDINALITY AS q(v, i) "
                "CROSS JOIN LATERAL (SELECT c.id, c.embedding FROM {chunks} c "
                "WHERE c.embedding IS NOT NULL AND {clause} ORDER BY c.embedding <~> {bits}{tie} LIMIT %s) h"
            ).format(chunks=self._names.chunks, clause=clause, bits=bits, tie=sql.SQL(", c.id" if exact else ""))
        stored = sql.SQL("c.embedding::vector" if layout.half else "c.embedding")
        order: sql.Composable
        if exact:
            order = sql.SQL("score DESC, c.id")
        else:
            query = sql.SQL(f"q.v::halfvec({layout.dims})" if layout.half else "q.v")
            order = sql.SQL("c.embedding <=> {}").format(query)
        return sql.SQL(
            "SELECT q.i, h.id, h.score FROM unnest(%s::vector[]) WITH ORDINALITY AS q(v, i) "
            "CROSS JOIN LATERAL (SELECT c.id, 1 - ({stored} <=> q.v) AS score FROM {chunks} c "
            "WHERE c.embedding IS NOT NULL AND {clause} ORDER BY {order} LIMIT %s) h"
        ).format(stored=stored, chunks=self._names.chunks, clause=clause, order=order)

    def ensure_vector_index(self) -> bool:
        """Build the HNSW index when the store holds ``exact_below`` vectors or more; True if it exists.

        Once built, PostgreSQL keeps it up to date through every write.
        """
        from psycopg import sql

        layout = self._layout()
        if layout.dims <= 0:
            return False
        with self._database("building the vector index") as conn:
            if self._hnsw_exists(conn):
                return True
            if self._state(conn)[1] < max(self.exact_below, 1):
                return False
            ops = layout.ops
            conn.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding {})").format(
                    self._names.hnsw, self._names.chunks, sql.SQL(ops)
                )
            )
            self._has_hnsw = True
        return True

    # -- other stores in the database, and files kept beside the tables -----------------------

    def with_table(self, table: str) -> PostgresStore:
        """The store in the same database whose tables are named ``table_*`` (nothing connects yet)."""
        return PostgresStore(with_table(self._uri, table), exact_below=self.exact_below)

    def read_file(self, name: str) -> str | None:
        """The text kept under ``name`` in ``NAME_files`` (an ensemble's file), or ``None``."""
        from psycopg import sql

        with self._database("reading a stored file") as conn:
            if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", [self._names.regclass("files")]).fetchone()[0]:
                return None
            row = conn.execute(
                sql.SQL("SELECT text FROM {} WHERE name = %s").format(self._names.files), [name]
            ).fetchone()
        return None if row is None else str(row[0])

    def write_file(self, name: str, text: str) -> None:
        """Keep ``text`` under ``name`` in ``NAME_files`` (created on first use), replacing what was there."""
        from psycopg import sql

        files = self._names.files
        with self._database("storing a file") as conn, conn.transaction():
            conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, text text NOT NULL)").format(files)
            )
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (name, text) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET text = excluded.text"
                ).format(files),
                [name, text],
            )

    # -- learned sparse rows -------------------------------------------------------------------

    def sparse_todo(self, fingerprint: str, vocab: int) -> list[str]:
        """Make the sparse rows match the documents and the model; the ids of documents still without one.

        Rows of another model (``fingerprint``, a ``vocab``-term vocabulary) are all dropped, rows
        of documents gone or changed since they were encoded are deleted; what is left is current.
        """
        from psycopg import sql

        n = self._names
        with self._database("preparing the sparse rows") as conn, conn.transaction():
            if not self._exists(conn):
                return []
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (id smallint PRIMARY KEY CHECK (id = 1), "
                    "fingerprint text NOT NULL, vocab integer NOT NULL)"
                ).format(n.sparse_model)
            )
            held = conn.execute(sql.SQL("SELECT fingerprint, vocab FROM {} WHERE id = 1").format(n.sparse_model))
            if tuple(held.fetchone() or ()) != (fingerprint, vocab):
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(n.sparse))
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (id, fingerprint, vocab) VALUES (1, %s, %s) ON CONFLICT (id) DO UPDATE "
                        "SET fingerprint = excluded.fingerprint, vocab = excluded.vocab"
                    ).format(n.sparse_model),
                    [fingerprint, vocab],
                )
            if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", [n.regclass("sparse")]).fetchone()[0]:
                conn.execute(
                    sql.SQL(
                        'CREATE TABLE {} (doc_id text COLLATE "C" PRIMARY KEY, '
                        "content_hash text NOT NULL, embedding {} NOT NULL)"
                    ).format(n.sparse, sql.SQL(f"sparsevec({int(vocab)})"))
                )
                # Rows kept in the table's pages (out of line only when a page cannot hold one): every
                # search reads them all, and floats hardly compress.
                conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN embedding SET STORAGE MAIN").format(n.sparse))
            conn.execute(
                sql.SQL(
                    "DELETE FROM {} s WHERE NOT EXISTS "
                    "(SELECT 1 FROM {} d WHERE d.doc_id = s.doc_id AND d.content_hash = s.content_hash)"
                ).format(n.sparse, n.documents)
            )
            rows = conn.execute(
                sql.SQL(
                    "SELECT d.doc_id FROM {} d WHERE NOT EXISTS (SELECT 1 FROM {} s WHERE s.doc_id = d.doc_id) "
                    "ORDER BY d.doc_id"
                ).format(n.documents, n.sparse)
            ).fetchall()
        return [row[0] for row in rows]

    def write_sparse(self, rows: Sequence[tuple[str, str, np.ndarray, np.ndarray]], vocab: int) -> None:
        """Upsert sparse rows ``(doc id, the content hash encoded, term ids, weights)`` in one transaction."""
        from psycopg import sql

        if not rows:
            return
        sparse_vector = require("pgvector", "pg").SparseVector
        vectors = [sparse_vector(dict(zip(terms.tolist(), weights.tolist())), vocab) for _, _, terms, weights in rows]
        with self._database("writing sparse rows") as conn, conn.transaction():
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (doc_id, content_hash, embedding) "
                    "SELECT * FROM unnest(%s::text[], %s::text[], %s::sparsevec[]) "
                    "ON CONFLICT (doc_id) DO UPDATE SET content_hash = excluded.content_hash, "
                    "embedding = excluded.embedding"
                ).format(self._names.sparse),
                [[row[0] for row in rows], [row[1] for row in rows], vectors],
            )

    def sparse_model(self) -> tuple[str, int] | None:
        """The fingerprint and vocabulary size of the model the sparse rows are of; ``None`` when there are none."""
        from psycopg import sql

        n = self._names
        with self._database("reading the sparse model") as conn:
            if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", [n.regclass("sparse_model")]).fetchone()[0]:
                return None
            row = conn.execute(
                sql.SQL("SELECT fingerprint, vocab FROM {} WHERE id = 1").format(n.sparse_model)
            ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    def read_sparse(self, doc_ids: Sequence[str]) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
        """The sparse rows of those documents that have one, as :meth:`write_sparse` takes them, in id order:
        what :func:`embedtune.stores.sharded.add_shard` copies with each document it moves."""
        from psycopg import sql

        n = self._names
        with self._database("reading sparse rows") as conn:
            if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", [n.regclass("sparse")]).fetchone()[0]:
                return []
            rows = conn.execute(
                sql.SQL("SELECT doc_id, content_hash, embedding FROM {} WHERE doc_id = ANY(%s) ORDER BY doc_id").format(
                    n.sparse
                ),
                [list(doc_ids)],
            ).fetchall()
        return [
            (
                doc_id,
                content,
                np.asarray(vector.indices(), dtype=np.int64),
                np.asarray(vector.values(), dtype=np.float32),
            )
            for doc_id, content, vector in rows
        ]

    def sparse_current(self, fingerprint: str) -> bool:
        """Whether every document has a sparse row of its current text, by the model ``fingerprint``."""
        from psycopg import sql

        n = self._names
        with self._database("checking the sparse rows") as conn:
            if not self._exists(conn):
                return False
            for part in ("sparse_model", "sparse"):
                if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", [n.regclass(part)]).fetchone()[0]:
                    return False
            held = conn.execute(sql.SQL("SELECT fingerprint FROM {} WHERE id = 1").format(n.sparse_model)).fetchone()
            if held is None or held[0] != fingerprint:
                return False
            missing = conn.execute(
                sql.SQL(
                    "SELECT EXISTS (SELECT 1 FROM {} d WHERE NOT EXISTS (SELECT 1 FROM {} s "
                    "WHERE s.doc_id = d.doc_id AND s.content_hash = d.content_hash))"
                ).format(n.documents, n.sparse)
            ).fetchone()[0]
        return not missing

    def search_sparse(
        self,
        queries: Sequence[tuple[np.ndarray, np.ndarray]],
        vocab: int,
        depth: int,
        only: Collection[str] | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Per query row ``(term ids, weights)``, the ``depth`` documents of highest inner product.

        An exact scan (no index: pgvector's HNSW on ``sparsevec`` takes rows of at most 1,000
        non-zero terms, and approximates); only documents sharing a term with the query (a
        positive product) are ranked, best first, ties by document id. ``only`` restricts it to
        those ids. :meth:`write` deletes the row of every document it rewrites or removes, so no
        row is ever stale (:meth:`sparse_current` says whether every document has one).
        """
        from psycopg import sql

        if not queries:
            return []
        sparse_vector = require("pgvector", "pg").SparseVector
        vectors = [sparse_vector(dict(zip(t.tolist(), w.tolist())), vocab) for t, w in queries]
        n = self._names
        restrict = sql.SQL("TRUE") if only is None else sql.SQL("s.doc_id = ANY(%s::text[])")
        # OFFSET 0 keeps the inner query whole, so each row's product is computed once.
        statement = sql.SQL(
            "SELECT q.i, h.doc_id, h.score FROM unnest(%s::sparsevec[]) WITH ORDINALITY AS q(v, i) "
            "CROSS JOIN LATERAL (SELECT p.doc_id, p.score FROM (SELECT s.doc_id, -(s.embedding <#> q.v) AS score "
            "FROM {sparse} s WHERE {restrict} OFFSET 0) p WHERE p.score > 0 ORDER BY p.score DESC, p.doc_id LIMIT %s) h"
        ).format(sparse=n.sparse, restrict=restrict)
        params: list[Any] = [vectors] + ([] if only is None else [list(only)]) + [depth]
        with self._database("searching sparse rows") as conn:
            rows = conn.execute(statement, params).fetchall()
        hits: list[list[tuple[str, float]]] = [[] for _ in queries]
        for i, doc_id, score in rows:
            hits[int(i) - 1].append((doc_id, float(score)))
        return hits

    def sparse_bytes(self) -> int:
        """Bytes of the sparse rows as stored (the table, its TOAST and its primary key)."""
        rows = self._select(
            "measuring the sparse rows",
            "SELECT coalesce(pg_total_relation_size(to_regclass(%s)), 0)",
            [self._names.regclass("sparse")],
        )
        return int(rows[0][0]) if rows else 0

    # -- lexical ---------------------------------------------------------------------------

    def documents_snapshot(self) -> tuple[int, list[str], list[str]]:
        """``(generation, ids, texts)`` of every document, in id order, from one snapshot."""
        from psycopg import sql

        with self._database("reading documents") as conn:
            if not self._exists(conn):
                return 0, [], []
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                generation = self._state(conn)[0]
                ids: list[str] = []
                texts: list[str] = []
                with conn.cursor(name="embedtune_documents") as cursor:
                    cursor.itersize = _READ_BATCH
                    cursor.execute(sql.SQL("SELECT doc_id, text FROM {} ORDER BY doc_id").format(self._names.documents))
                    for doc_id, text in cursor:
                        ids.append(doc_id)
                        texts.append(text)
        return generation, ids, texts

    def load_lexical(self, name: str) -> tuple[dict[str, Any], bytes] | None:
        """The serialized lexical index stored under ``name`` and what it reflects, if any."""
        from psycopg import sql

        with self._database("reading the lexical index") as conn:
            if not self._exists(conn):
                return None
            row = conn.execute(
                sql.SQL("SELECT reflects, data FROM {} WHERE name = %s").format(self._names.lexical), [name]
            ).fetchone()
        return None if row is None else (row[0], bytes(row[1]))

    def save_lexical(self, name: str, reflects: Mapping[str, Any], data: bytes) -> None:
        """Store a serialized lexical index under ``name`` (the documents' generation is unchanged)."""
        from psycopg import sql
        from psycopg.types.json import Jsonb

        with self._database("storing the lexical index") as conn:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (name, reflects, data) VALUES (%s, %s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET reflects = excluded.reflects, data = excluded.data"
                ).format(self._names.lexical),
                [name, Jsonb(dict(reflects)), data],
            )

    def lexical_index(self) -> BM25Index:
        """The BM25 index over every document's text (id order), rebuilt when the documents changed."""
        with self._lock:
            reflects = {"generation": self.generation()}
            if self._lexical is not None and self._lexical[0] == reflects:
                return self._lexical[1]
            stored = self.load_lexical(_LEXICAL_SELF)
            index = _stored_index(stored, reflects)
            if index is None:
                generation, ids, texts = self.documents_snapshot()
                if not ids:
                    raise InputError(f"{self.location} holds no documents; index some before searching it")
                index = BM25Index.build(ids, texts)
                reflects = {"generation": generation}
                self.save_lexical(_LEXICAL_SELF, reflects, index_to_bytes(index))
            self._lexical = (reflects, index)
            return index

    def finish(self) -> None:
        """Build the HNSW index (when the store is large enough) and, unless the strategy is
        dense alone, bring the lexical index up to date."""
        manifest = self.read_manifest()
        if manifest is None:
            return
        self.ensure_vector_index()
        if lexical_wanted(manifest) and self.count() > 0:
            self.lexical_index()


# -- helpers -------------------------------------------------------------------------------


def lexical_wanted(manifest: StoreManifest) -> bool:
    """Whether the manifest's strategy reads the lexical index (its mode is not ``dense``)."""
    retrieval = manifest.strategy.get("retrieval", {})
    mode = retrieval.get("mode", "dense") if isinstance(retrieval, Mapping) else "dense"
    return mode != "dense"


def index_to_bytes(index: BM25Index) -> bytes:
    """A BM25 index's saved folder as an (uncompressed) tar archive."""
    with tempfile.TemporaryDirectory(prefix="embedtune-bm25-") as tmp:
        folder = index.save(Path(tmp) / "index")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for path in sorted(folder.iterdir()):
                tar.add(path, arcname=path.name)
        return buffer.getvalue()


def index_from_bytes(data: bytes) -> BM25Index:
    """The BM25 index a :func:`index_to_bytes` archive holds, loaded into memory."""
    with tempfile.TemporaryDirectory(prefix="embedtune-bm25-") as tmp:
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise InputError(f"a stored lexical index is not a readable archive ({exc}); rebuild it") from exc
        return BM25Index.load(tmp, mmap=False)


def _stored_index(stored: tuple[dict[str, Any], bytes] | None, reflects: Mapping[str, Any]) -> BM25Index | None:
    """The stored index when it reflects ``reflects``; ``None`` when missing, stale or unreadable."""
    if stored is None or stored[0] != reflects:
        return None
    try:
        return index_from_bytes(stored[1])
    except InputError:
        return None  # a derived index: rebuilt from the documents


def _metadata_json(metadata: Mapping[str, Any]) -> str:
    return json.dumps(dict(metadata), ensure_ascii=False, default=str)


def _as_is(text: str) -> str:
    return text


def _filter_sql(where: Filter | None) -> tuple[Any, list[Any]]:
    """A ``WHERE`` clause on ``metadata`` and its parameters: ``metadata_matches`` in SQL.

    ``metadata @> {key: value}`` holds exactly when the key is present with that value, compared
    as JSON compares (true is not 1, "1" is not 1, 1 is 1.0; an array never equals a scalar).
    """
    from psycopg import sql
    from psycopg.types.json import Jsonb

    if not where:
        return sql.SQL("TRUE"), []
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    for key, value in where.items():
        values = [v for v in (value if isinstance(value, list) else [value]) if not _is_nan(v)]
        if not values:
            clauses.append(sql.SQL("FALSE"))  # NaN equals nothing
            continue
        clauses.append(sql.SQL("({})").format(sql.SQL(" OR ").join(sql.SQL("metadata @> %s") for _ in values)))
        params.extend(Jsonb({key: v}) for v in values)
    return sql.SQL(" AND ").join(clauses), params


def _max_scan_tuples(depth: int, selectivity: float) -> int:
    """How many index tuples a filtered HNSW scan may visit: enough for ``depth`` survivors."""
    wanted = math.ceil(20 * depth / max(selectivity, 1e-9))
    return min(2**31 - 1, max(_DEFAULT_MAX_SCAN_TUPLES, wanted))


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _check_records(records: Sequence[DocumentRecord], layout: _Layout, location: str) -> None:
    """Refuse, in one line, what the tables cannot hold faithfully."""
    seen: set[str] = set()
    for record in records:
        doc = record.doc_id
        if doc in seen:
            raise InputError(f"document {doc!r} appears twice in one write; give each document once")
        seen.add(doc)
        if "\x00" in doc or "\x00" in record.text or "\\u0000" in _metadata_json(record.metadata):
            raise InputError(f"document {doc!r} holds a NUL character, which PostgreSQL cannot store; remove it")
        for start, end in record.spans:
            if not 0 <= start <= end <= len(record.text):
                raise InputError(f"document {doc!r}: chunk offsets ({start}, {end}) fall outside its text")
        _check_vectors(record, layout, location)


def _check_vectors(record: DocumentRecord, layout: _Layout, location: str) -> None:
    vectors = record.vectors
    doc = record.doc_id
    if layout.dims <= 0:
        if vectors is not None and len(vectors):
            raise InputError(f"document {doc!r} has vectors but {location} holds none; index it with its strategy")
        return
    if vectors is None:
        if record.spans:
            raise InputError(f"document {doc!r} has {len(record.spans)} chunks but no vectors; embed them first")
        return
    if vectors.ndim != 2 or (len(vectors) and vectors.shape[1] != layout.dims):
        raise InputError(
            f"document {doc!r} has vectors of shape {vectors.shape}; {location} holds {layout.dims}-dim vectors"
        )
    if not np.isfinite(vectors).all():
        raise InputError(f"document {doc!r} has a vector with NaN or infinite values; check the embedder")


def _query_matrix(query_vectors: np.ndarray, layout: _Layout, location: str) -> np.ndarray:
    if layout.dims <= 0:
        raise InputError(f"{location} holds no vectors (a bm25 store); search it through its lexical index")
    queries = np.asarray(query_vectors, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[None, :]
    if queries.ndim != 2 or (len(queries) and queries.shape[1] != layout.dims):
        raise InputError(
            f"query vectors of shape {queries.shape} do not match {location}'s {layout.dims}-dim vectors; "
            "embed the queries with the store's model"
        )
    if not np.isfinite(queries).all():
        raise InputError("a query vector has NaN or infinite values; check the embedder")
    return queries


def _rescored(rows: Sequence[tuple[int, str, Any]], queries: np.ndarray, dims: int) -> list[tuple[int, str, float]]:
    """Hamming candidates ``(1-based query, chunk id, bits)`` scored by the float query against their bits."""
    if not rows:
        return []
    signs = unpack_bits(np.stack([_packed_bits(row[2]) for row in rows]), dims)
    which = np.array([int(row[0]) - 1 for row in rows])
    scores = np.einsum("ij,ij->i", signs, queries[which])
    return [(row[0], row[1], float(score)) for row, score in zip(rows, scores.tolist())]


def _packed_bits(value: Any) -> np.ndarray:
    """A ``bit`` column's value as packed bytes: pgvector's ``Bit``, or the binary wire format
    (a big-endian bit count, then the bits, first bit highest, as ``np.packbits`` packs them)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(value)[4:], dtype=np.uint8)
    return np.packbits(value.to_numpy())


def _ranked(rows: Sequence[tuple[int, str, float]], n_queries: int, k: int) -> SearchResult:
    """Rows ``(1-based query, chunk id, score)`` as per-query lists: best first, ties by id, ``k`` each."""
    per_query: SearchResult = [[] for _ in range(n_queries)]
    for i, chunk, score in rows:
        per_query[int(i) - 1].append((chunk, float(score)))
    return [sorted(hits, key=_hit_order)[:k] for hits in per_query]


def _hit_order(hit: tuple[str, float]) -> tuple[float, str]:
    return -hit[1], hit[0]


def _record(
    doc_id: str,
    digest: str,
    text: str,
    metadata: Mapping[str, Any],
    chunks: list[tuple[int, int, Any]],
    layout: _Layout,
) -> DocumentRecord:
    """A record from stored rows; vectors come back as float32 (float16 values exactly)."""
    vectors: np.ndarray | None = None
    if layout.binary:  # the bits as the unit vectors of their signs
        bits = [_packed_bits(embedding) for _, _, embedding in chunks]
        vectors = unpack_bits(np.stack(bits), layout.dims) if bits else np.empty((0, layout.dims), np.float32)
    elif layout.dims > 0:
        rows = [np.asarray(embedding.to_numpy(), dtype=np.float32) for _, _, embedding in chunks]
        vectors = np.stack(rows) if rows else np.empty((0, layout.dims), dtype=np.float32)
    return DocumentRecord(
        doc_id=doc_id,
        text=text,
        metadata=metadata,
        spans=[(start, end) for start, end, _ in chunks],
        vectors=vectors,
        content_hash=digest,
    )
