"""Vector compression: fewer dims, and fewer bits per dim. Pure numpy over plain arrays.

Two independent choices, both applied to the float32 vectors a model gave (so the embedding cache
keeps full vectors, and every compressed variant of a corpus costs no new embedding):

- **Size** (:class:`Reducer`): ``truncate`` keeps the first ``dims`` components and
  renormalises (Matryoshka-style; a model not trained for it still works, but loses more), and
  ``pca`` projects onto the ``dims`` principal directions fitted on the corpus's vectors (centred
  on their mean). Queries go through the same reduction at search time, so the fitted projection
  travels with the store (its manifest).
- **Precision**: ``float16`` (a cast), ``int8`` (:class:`Int8Codec`: each dimension's min..max over
  the corpus mapped onto 256 levels, the calibration stored with the store) and ``binary``
  (:func:`pack_bits`: one sign bit per dimension, searched by Hamming distance with popcounts).
  Int8 and binary vectors are scored against the query in float (asymmetric scoring): the query
  is never quantised, and nothing but the codes is stored.

Arrays travel in JSON as base64 of little-endian float32 (:func:`encode_array`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError
from .dense import l2_normalize

__all__ = [
    "Int8Codec",
    "Reducer",
    "decode_array",
    "encode_array",
    "hamming",
    "pack_bits",
    "unpack_bits",
]

REDUCTIONS = ("truncate", "pca")


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """A float32 array as JSON-friendly data: its shape and base64 bytes."""
    data = np.ascontiguousarray(array, dtype="<f4")
    return {"shape": list(data.shape), "float32": base64.b64encode(data.tobytes()).decode("ascii")}


def decode_array(data: Any, *, what: str) -> np.ndarray:
    """The array :func:`encode_array` wrote; anything malformed is one line naming ``what``."""
    try:
        shape = tuple(int(n) for n in data["shape"])
        array = np.frombuffer(base64.b64decode(data["float32"], validate=True), dtype="<f4")
        return array.reshape(shape).astype(np.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{what} is corrupt ({exc}); rebuild the store with embedtune index") from None


@dataclass(frozen=True, eq=False)
class Reducer:
    """From ``dims_in`` to ``dims`` components: truncation, or a PCA projection fitted on a corpus.

    ``mean`` (``dims_in``) and ``components`` (``dims_in`` x ``dims``) are set for PCA only.
    """

    kind: str
    dims_in: int
    dims: int
    mean: np.ndarray | None = None
    components: np.ndarray | None = None

    @classmethod
    def fit(cls, kind: str, vectors: np.ndarray, dims: int) -> Reducer:
        """The reduction of ``vectors`` (rows of the model's size) to ``dims``; PCA is fitted on them."""
        vectors = np.asarray(vectors, dtype=np.float32)
        dims_in = vectors.shape[1]
        if dims > dims_in:
            raise ConfigError(
                f"vectors.dims {dims} is larger than the model's {dims_in} dims; choose at most {dims_in}"
            )
        if kind == "truncate":
            return cls("truncate", dims_in, dims)
        if kind != "pca":
            raise ConfigError(f"vectors.reduction must be {' | '.join(REDUCTIONS)}, not {kind!r}")
        if len(vectors) < dims:
            raise ConfigError(
                f"PCA to {dims} dims needs at least {dims} vectors to fit on, and the corpus gave {len(vectors)}; "
                "lower vectors.dims, or use reduction = 'truncate'"
            )
        mean = vectors.mean(axis=0)
        # The right singular vectors of the centred data are its principal directions, largest first.
        _, _, vt = np.linalg.svd((vectors - mean).astype(np.float64), full_matrices=False)
        return cls("pca", dims_in, dims, mean.astype(np.float32), vt[:dims].T.astype(np.float32))

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` (rows of ``dims_in``) reduced to ``dims`` and L2-normalised again."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dims_in:
            raise InputError(
                f"vectors of shape {vectors.shape}; this store reduces {self.dims_in}-dim vectors: "
                "embed with the store's model"
            )
        if self.components is None:
            reduced = vectors[:, : self.dims]
        else:
            assert self.mean is not None
            reduced = (vectors - self.mean) @ self.components
        return l2_normalize(np.ascontiguousarray(reduced, dtype=np.float32))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "dims_in": self.dims_in, "dims": self.dims}
        if self.components is not None and self.mean is not None:
            data["mean"] = encode_array(self.mean)
            data["components"] = encode_array(self.components)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, what: str) -> Reducer:
        try:
            kind, dims_in, dims = data["kind"], int(data["dims_in"]), int(data["dims"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{what} is corrupt (its reduction); rebuild the store with embedtune index") from None
        if kind == "truncate":
            return cls(kind, dims_in, dims)
        if kind != "pca":
            raise InputError(f"{what}: unknown reduction {kind!r}; rebuild the store with embedtune index")
        mean = decode_array(data.get("mean"), what=what)
        components = decode_array(data.get("components"), what=what)
        if mean.shape != (dims_in,) or components.shape != (dims_in, dims):
            raise InputError(f"{what} is corrupt (PCA of the wrong shape); rebuild the store with embedtune index")
        return cls(kind, dims_in, dims, mean, components)

    @property
    def stored_bytes(self) -> int:
        """What the store keeps for it: the PCA mean and projection (nothing for truncation)."""
        if self.components is None or self.mean is None:
            return 0
        return int(self.mean.nbytes + self.components.nbytes)


_LEVELS = 255  # int8 codes -128..127


@dataclass(frozen=True, eq=False)
class Int8Codec:
    """Scalar int8 quantisation with per-dimension calibration: ``low`` .. ``low + 255 * step``.

    Fitted on a corpus's vectors (each dimension's min and max); values outside are clipped.
    Decoding gives the level's value, so a float query scores against it directly.
    """

    low: np.ndarray
    step: np.ndarray

    @classmethod
    def fit(cls, vectors: np.ndarray) -> Int8Codec:
        vectors = np.asarray(vectors, dtype=np.float32)
        if not len(vectors):
            raise ConfigError("int8 calibration needs at least one vector; index some documents")
        low, high = vectors.min(axis=0), vectors.max(axis=0)
        step = np.maximum(high - low, 1e-12) / _LEVELS  # a constant dimension keeps a positive step
        return cls(low.astype(np.float32), step.astype(np.float32))

    @property
    def dims(self) -> int:
        return len(self.low)

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        levels = np.rint((np.asarray(vectors, dtype=np.float32) - self.low) / self.step)
        return (np.clip(levels, 0, _LEVELS) - 128).astype(np.int8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return (np.asarray(codes, dtype=np.float32) + 128.0) * self.step + self.low

    def to_dict(self) -> dict[str, Any]:
        return {"low": encode_array(self.low), "step": encode_array(self.step)}

    @classmethod
    def from_dict(cls, data: Any, *, what: str) -> Int8Codec:
        if not isinstance(data, Mapping):
            raise InputError(f"{what} is corrupt (its int8 calibration); rebuild the store with embedtune index")
        low, step = decode_array(data.get("low"), what=what), decode_array(data.get("step"), what=what)
        if low.ndim != 1 or low.shape != step.shape:
            raise InputError(f"{what} is corrupt (its int8 calibration); rebuild the store with embedtune index")
        return cls(low, step)

    @property
    def stored_bytes(self) -> int:
        return int(self.low.nbytes + self.step.nbytes)


def pack_bits(vectors: np.ndarray) -> np.ndarray:
    """One sign bit per dimension (1 where positive), packed eight to a byte: ``(n, ceil(dims / 8))`` uint8."""
    return np.packbits(np.asarray(vectors) > 0, axis=1)


def unpack_bits(bits: np.ndarray, dims: int) -> np.ndarray:
    """The ±1/sqrt(dims) vectors the bits stand for: unit length, so a float query scores against them."""
    signs = np.unpackbits(np.asarray(bits, dtype=np.uint8), axis=1, count=dims).astype(np.float32)
    return (signs * 2.0 - 1.0) / np.float32(np.sqrt(dims))


def hamming(query_bits: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """``(queries, rows)`` Hamming distances between packed bit rows: popcounts of their XOR."""
    distances = np.empty((len(query_bits), len(bits)), dtype=np.int32)
    for i, query in enumerate(query_bits):
        distances[i] = np.bitwise_count(np.bitwise_xor(bits, query)).sum(axis=1, dtype=np.int32)
    return distances
