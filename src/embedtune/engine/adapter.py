"""The query adapter wrapper: a learned linear map on query vectors; documents pass untouched.

A model whose weights cannot change (an API) or should not (a shared local model) can still be
bent towards a domain on the query side: ``q' = W q``, renormalised, with ``W`` learned from
pairs (``embedtune.adaptation.adapter.train_query_adapter``). Documents keep their base vectors,
so a corpus already embedded (cached, indexed) is never embedded again. ``W`` is either full
(``dim x dim``) or ``I + U V^T`` of rank ``r`` (fewer numbers to learn and to store).

Applying it needs numpy only. An adapter is saved as ``adapter.npz`` (the weights) and
``adapter.json`` (the base model's query fingerprint, dims, rank, training settings and dev
figures); it only fits the model whose fingerprint it records, and any other is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..embedder import Embedder, Kind, check_kind, embed_images, image_fingerprint
from ..errors import ConfigError
from ..images import Image
from .wrapper import Wrapper

__all__ = ["AdaptedEmbedder", "QueryAdapter"]

_FORMAT = "embedtune.query-adapter"
_VERSION = 1
_WEIGHTS = "adapter.npz"
_META = "adapter.json"


class QueryAdapter:
    """``W`` (full) or ``U``, ``V`` (low rank: ``W = I + U V^T``) for one base model's queries."""

    def __init__(
        self,
        *,
        base_fingerprint: str,
        dim: int,
        matrix: np.ndarray | None = None,
        u: np.ndarray | None = None,
        v: np.ndarray | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        if (matrix is None) == (u is None or v is None):
            raise ValueError("give either matrix, or both u and v")
        if matrix is not None:
            matrix = np.ascontiguousarray(matrix, dtype=np.float32)
            if matrix.shape != (dim, dim):
                raise ValueError(f"matrix must be {dim} x {dim}, not {matrix.shape}")
        else:
            u = np.ascontiguousarray(u, dtype=np.float32)
            v = np.ascontiguousarray(v, dtype=np.float32)
            if u.ndim != 2 or u.shape != v.shape or u.shape[0] != dim:
                raise ValueError(f"u and v must both be {dim} x rank, not {u.shape} and {v.shape}")
        self.base_fingerprint = base_fingerprint
        self.dim = dim
        self.matrix = matrix
        self.u = u
        self.v = v
        self.info = dict(info or {})

    @property
    def rank(self) -> int | None:
        """The rank of ``U V^T``, or None for a full matrix."""
        return None if self.u is None else int(self.u.shape[1])

    @property
    def digest(self) -> str:
        """SHA-256 of the weights and the base fingerprint: names this adapter in fingerprints."""
        h = hashlib.sha256(self.base_fingerprint.encode() + b"\x00")
        for array in (self.matrix, self.u, self.v):
            if array is not None:
                h.update(str(array.shape).encode() + array.tobytes())
        return h.hexdigest()

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Map rows of query vectors and scale each back to unit length."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of {self.dim} dims, got shape {vectors.shape}")
        if self.matrix is not None:
            mapped = vectors @ self.matrix.T
        elif self.u is not None and self.v is not None:
            mapped = vectors + (vectors @ self.v) @ self.u.T
        else:  # the constructor takes one or the other
            raise ValueError("the query adapter has neither a matrix nor both u and v")
        norms = np.linalg.norm(mapped, axis=1, keepdims=True)
        return (mapped / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)

    def check_fits(self, embedder: Embedder) -> None:
        """Raise one ConfigError line unless this adapter was trained on ``embedder``'s model."""
        if embedder.dim != self.dim:
            raise ConfigError(
                f"the query adapter was trained for {self.dim}-dim vectors but {embedder.name} gives "
                f"{embedder.dim}; train an adapter for this model"
            )
        if embedder.fingerprint("query") != self.base_fingerprint:
            raise ConfigError(
                f"the query adapter was trained on another model or setting ({self.base_fingerprint}) "
                f"than {embedder.name} ({embedder.fingerprint('query')}); train an adapter for this model"
            )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``adapter.npz`` and ``adapter.json`` into folder ``path``; return the folder."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"matrix": self.matrix} if self.matrix is not None else {"u": self.u, "v": self.v}
        with (folder / _WEIGHTS).open("wb") as handle:
            np.savez(handle, **arrays)
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "base_fingerprint": self.base_fingerprint,
            "dim": self.dim,
            "rank": self.rank,
            "sha256": self.digest,
            **self.info,
        }
        (folder / _META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> QueryAdapter:
        """Read a folder written by :meth:`save` (or the folder's ``adapter.json``)."""
        folder = Path(path)
        if folder.name == _META:
            folder = folder.parent
        meta_path, weights_path = folder / _META, folder / _WEIGHTS
        if not meta_path.is_file() or not weights_path.is_file():
            raise ConfigError(f"{folder} is not a query adapter folder (it needs {_META} and {_WEIGHTS})")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            with np.load(weights_path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (ValueError, OSError) as exc:
            raise ConfigError(f"cannot read the query adapter in {folder}: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
            raise ConfigError(f"{meta_path} is not a version-{_VERSION} embedtune query adapter")
        info = {
            k: v for k, v in meta.items() if k not in ("format", "version", "base_fingerprint", "dim", "rank", "sha256")
        }
        try:
            adapter = cls(
                base_fingerprint=meta["base_fingerprint"],
                dim=int(meta["dim"]),
                info=info,
                matrix=arrays.get("matrix"),
                u=arrays.get("u"),
                v=arrays.get("v"),
            )
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"the query adapter in {folder} is damaged ({exc}); train it again") from exc
        if meta.get("sha256") != adapter.digest:
            raise ConfigError(f"the query adapter in {folder} does not match its recorded hash; train it again")
        return adapter


class AdaptedEmbedder(Wrapper):
    """Maps query vectors through ``adapter``; document vectors, and everything else, pass through.

    Its query fingerprint names the adapter, so anything keyed on it (a cache above this layer)
    tells adapted queries from base ones; the document fingerprint stays the base model's.
    """

    def __init__(self, inner: Embedder, adapter: QueryAdapter) -> None:
        adapter.check_fits(inner)
        super().__init__(inner)
        self.adapter = adapter

    def fingerprint(self, kind: Kind = "document") -> str:
        base = self.inner.fingerprint(kind)
        return base if check_kind(kind) == "document" else f"{base}|adapter={self.adapter.digest[:16]}"

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        vectors = self.inner.embed(texts, kind)
        if check_kind(kind) == "document" or len(texts) == 0:
            return vectors
        return self.adapter.apply(vectors)

    def image_fingerprint(self, kind: Kind = "document") -> str:
        base = image_fingerprint(self.inner, kind)
        return base if check_kind(kind) == "document" else f"{base}|adapter={self.adapter.digest[:16]}"

    def embed_images(self, images: Sequence[Image], kind: Kind = "document") -> np.ndarray:
        vectors = embed_images(self.inner, images, kind)
        if check_kind(kind) == "document" or len(images) == 0:
            return vectors
        return self.adapter.apply(vectors)
