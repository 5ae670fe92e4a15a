"""The caching wrapper: never embed (or pay for) the same text twice.

Vectors live in one SQLite file, addressed by content: the key is a SHA-256 of the inner embedder's
``fingerprint(kind)`` (provider, model, weights revision, dims, normalisation, prefix) and the text.
A model change therefore misses the cache instead of returning stale vectors, and a query vector is
never served for a document whose text happens to be equal, unless the model has no prefixes.

Misses are embedded in slices of ``write_every`` texts and committed after each slice (SQLite in
WAL mode), so a process killed mid-run loses at most one slice, and a rerun picks up the rest.
An inner embedder that streams (``embed_parts``, as ``RayEmbedder`` does) gets every miss in one
call instead, and each part is committed as it arrives.
A cache file SQLite cannot read is moved aside and rebuilt; ``notices`` says so.

Image rows (``embed_images``) are keyed on the inner embedder's ``image_fingerprint(kind)`` (model,
weights, preprocessing, downscaling limit) and the SHA-256 of the image's bytes: the same file is
embedded once, and a re-encoded copy of the same pixels (other bytes) is a row of its own.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from ..embedder import Embedder, Kind, check_kind, embed_images, empty_vectors, image_fingerprint
from ..errors import CacheError, InvalidInputError, ProviderError
from .wrapper import Wrapper

if TYPE_CHECKING:
    from ..images import Image

__all__ = ["CacheStats", "CachingEmbedder", "cache_key", "image_cache_key"]

_SCHEMA = 1
_LOOKUP_CHUNK = 500  # stays below SQLite's limit on bound parameters


def cache_key(fingerprint: str, text: str) -> bytes:
    return hashlib.sha256(fingerprint.encode() + b"\x00" + text.encode("utf-8", "surrogatepass")).digest()


def image_cache_key(fingerprint: str, image: Image) -> bytes:
    """An image row's key: the image fingerprint and the SHA-256 of the bytes (never the pixels)."""
    return hashlib.sha256(fingerprint.encode() + b"\x00image\x00" + image.sha256.encode()).digest()


_Input = TypeVar("_Input")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0  # distinct texts embedded by the inner embedder


class CachingEmbedder(Wrapper):
    """Serves vectors from ``path`` and embeds only what is missing, each distinct text once."""

    def __init__(self, inner: Embedder, path: str | os.PathLike[str], *, write_every: int = 256) -> None:
        if write_every < 1:
            raise ValueError("write_every must be at least 1")
        super().__init__(inner)
        self.path = Path(path)
        self.write_every = write_every
        self.stats = CacheStats()
        self.notices: list[str] = []
        self._db: sqlite3.Connection | None = None
        # One connection shared by every thread that embeds through this stack (a service's
        # workers, a framework's async calls); SQLite calls on it take turns under this lock.
        self._lock = threading.RLock()

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        check_kind(kind)
        if not texts:
            return empty_vectors(self.dim)
        fingerprint = self.inner.fingerprint(kind)
        parts = getattr(self.inner, "embed_parts", None)
        return self._cached(
            texts,
            [cache_key(fingerprint, t) for t in texts],
            lambda part: self.inner.embed(part, kind),
            stream=None if parts is None else lambda part: parts(part, kind),
        )

    def embed_images(self, images: Sequence[Image], kind: Kind = "document") -> np.ndarray:
        check_kind(kind)
        fingerprint = image_fingerprint(self.inner, kind)  # a text-only model fails here, before a lookup
        if not images:
            return empty_vectors(self.dim)
        keys = [image_cache_key(fingerprint, image) for image in images]
        return self._cached(images, keys, lambda part: embed_images(self.inner, part, kind))

    def _cached(
        self,
        inputs: Sequence[_Input],
        keys: list[bytes],
        embed: Callable[[list[_Input]], np.ndarray],
        *,
        stream: Callable[[list[_Input]], Iterable[tuple[list[int], np.ndarray]]] | None = None,
    ) -> np.ndarray:
        """Rows for ``inputs`` (keyed by ``keys``): found ones from the file, each missing key embedded once.

        ``stream``, when the inner embedder has one, gets every miss in one call and yields
        ``(rows, vectors)`` parts, each committed as it arrives."""
        first_index: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            first_index.setdefault(key, i)
        found = self._lookup(list(first_index))
        missing = [k for k in first_index if k not in found]
        self.stats.hits += len(inputs) - len(missing)
        if stream is not None and missing:  # one job for every miss, stored as each part returns
            try:
                for rows, vectors in stream([inputs[first_index[k]] for k in missing]):
                    part = [missing[r] for r in rows]
                    _check(vectors, len(part), self.dim, self.inner.name)
                    self._store(part, vectors)
                    found.update(zip(part, vectors))
                    self.stats.misses += len(part)
            except InvalidInputError as exc:
                raise exc.with_index(first_index[missing[exc.index]]) from None
            missing = []
        for start in range(0, len(missing), self.write_every):
            part = missing[start : start + self.write_every]
            try:
                vectors = embed([inputs[first_index[k]] for k in part])
            except InvalidInputError as exc:
                raise exc.with_index(first_index[part[exc.index]]) from None
            _check(vectors, len(part), self.dim, self.inner.name)
            self._store(part, vectors)
            found.update(zip(part, vectors))
            self.stats.misses += len(part)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def __len__(self) -> int:
        with self._lock:
            return self._connection().execute("SELECT count(*) FROM vectors").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> CachingEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- storage ---------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self._db = _open(self.path)
            except (OSError, sqlite3.OperationalError) as exc:  # cannot open: not corrupt
                raise CacheError(
                    f"cannot open the embedding cache {self.path} ({exc}); "
                    "check the path and its permissions, or choose another with --cache"
                ) from exc
            except sqlite3.DatabaseError as exc:  # opened, but not a database we can read
                aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
                try:
                    os.replace(self.path, aside)
                    for suffix in ("-wal", "-shm"):
                        Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                    self._db = _open(self.path)
                except (OSError, sqlite3.Error) as again:
                    raise CacheError(
                        f"cannot open the embedding cache {self.path} ({again}); "
                        "remove it or choose another with --cache"
                    ) from exc
                self.notices.append(
                    f"the embedding cache {self.path} was corrupt ({exc}); "
                    f"moved it aside to {aside.name} and started a new one"
                )
        return self._db

    def _lookup(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        width = self.dim * 4
        with self._lock:
            db = self._connection()
            for start in range(0, len(keys), _LOOKUP_CHUNK):
                chunk = keys[start : start + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({marks})", chunk).fetchall()
                for key, blob in rows:
                    if len(blob) == width:
                        found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def _store(self, keys: list[bytes], vectors: np.ndarray) -> None:
        rows = [(k, v.astype(np.float32).tobytes()) for k, v in zip(keys, vectors)]
        with self._lock:
            db = self._connection()
            try:
                with db:
                    db.executemany("INSERT OR REPLACE INTO vectors (key, vector) VALUES (?, ?)", rows)
            except sqlite3.Error as exc:
                raise CacheError(f"cannot write to the embedding cache {self.path} ({exc})") from exc


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        with db:
            db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL) WITHOUT ROWID")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(_SCHEMA),))
        (schema,) = db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        if schema != str(_SCHEMA):
            raise sqlite3.DatabaseError(f"cache schema {schema}, expected {_SCHEMA}")
    except BaseException:
        db.close()
        raise
    return db


def _check(vectors: np.ndarray, rows: int, dim: int, name: str) -> None:
    """Nothing malformed reaches the cache: a bad vector stored once would be served forever."""
    if not isinstance(vectors, np.ndarray) or vectors.shape != (rows, dim):
        shape = getattr(vectors, "shape", type(vectors).__name__)
        raise ProviderError(f"{name} returned vectors of shape {shape} for {rows} texts; expected ({rows}, {dim})")
    if not np.isfinite(vectors).all():
        raise ProviderError(f"{name} returned vectors with NaN or infinite values; nothing was cached")
