"""The Strategy value: everything a user chooses along the path from documents to hits.

A strategy names the embedder (a model URI with its dims, prefixes and adapter), how documents are
cut (a chunker spec, and how a document is scored from its chunks), how retrieval runs (dense,
BM25, or a hybrid fused by RRF or by a convex combination), how deep each run reaches before it is
fused, and the precision the vectors are stored in. ``compare`` writes the winner as a TOML file;
``index`` builds that file into a store, and ``search`` and the service read it back from the
store's manifest, so what was measured is what is served.

The file::

    version = 1

    [embedder]                      # absent for BM25 alone; any field of EmbedderSpec
    model = "local:all-MiniLM-L6-v2"
    over_limit = "truncate"
    engine = "onnx"                 # local models: auto (default) | torch | onnx | onnx-int8 | openvino | openvino-int8

    [sparse]                        # mode = "sparse" only: a learned sparse (SPLADE) model, instead of [embedder]
    model = "sparse:splade-tiny"    # or sparse:/path/to/a/SparseEncoder/folder
    max_batch = 32                  # texts per model call

    [chunking]
    chunker = "none"                # whole documents, or a chunker spec: recursive, fixed:size=200,overlap=50
    score = "max"                   # a document's score from its chunks: first, max, or sumN

    [retrieval]
    mode = "hybrid"                 # dense | bm25 | hybrid | sparse
    fusion = "convex"               # hybrid only: rrf | convex
    alpha = 0.45                    # convex: the dense run's weight
    normalization = "minmax"        # convex: minmax | zscore
    rrf_k = 60                      # rrf: the rank constant
    depth = 100                     # candidates each run returns before fusion

    [vectors]                       # how the vectors are stored (all derive from the same cached float32 ones)
    precision = "binary"            # float32 | float16 | int8 | binary
    dims = 128                      # absent: the model's own; else the stored size, made by the reduction
    reduction = "pca"               # truncate (first dims, renormalised) | pca (fitted on the corpus)
    rescore = 4                     # binary only: rescore x k candidates by Hamming distance are rescored

    [feedback]                      # optional pseudo-relevance feedback (embedtune.search.feedback)
    method = "rocchio"              # rocchio (the dense run) | rm3 (the BM25 run)
    docs = 5                        # top documents of a first search that feed back
    weight = 0.5                    # rocchio: beta, how far the query moves; rm3: the original query's weight
    terms = 10                      # rm3 only: expansion terms added
    [rerank]                        # optional: a cross-encoder reorders the fused run's first `top` documents
    model = "reranker/"             # a folder made by embedtune adapt --method reranker
    top = 50                        # the rest keep their order below
    batch = 32                      # pairs per model call

The ``[vectors]`` fields, as ``Strategy`` keywords:

- ``precision``: ``float32``; ``float16``; ``int8`` (per-dimension min/max calibration fitted on
  the corpus and stored; scored against the float query); ``binary`` (a sign bit per dimension,
  searched by Hamming distance).
- ``dims``: the stored vector size (``None``: the model's). ``reduction`` says how it is reached:
  ``truncate`` keeps the first ``dims`` components and renormalises (Matryoshka-style: a model
  not trained for it loses more), ``pca`` projects onto principal directions fitted on the
  corpus's vectors at index time; the projection is stored with the store and applied to queries.
- ``rescore``: for ``binary``, the search takes ``rescore * k`` candidates by Hamming distance and
  ranks them by the float query against their bits (nothing but the bits is stored).

``vector_options("pca=64+int8")`` turns the short form ``compare --vectors`` takes into these
keywords, and :attr:`Strategy.vectors_label` writes it back.

Reading refuses unknown tables, keys and values with one line naming them, and a version it
does not know.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any

from .errors import ConfigError, InputError, UnknownModelError
from .factory import EmbedderSpec
from .filepaths import map_model_folder, path_for_file, path_in_file
from .search.feedback import Feedback, FeedbackMethod
from .search.rerank import RerankSpec
from .sparse.spec import SparseSpec

__all__ = ["STRATEGY_VERSION", "Fusion", "Mode", "Precision", "Reduction", "Strategy", "vector_options"]

STRATEGY_VERSION = 1
WHOLE_DOCUMENTS = "none"


class Mode(str, Enum):
    DENSE = "dense"
    BM25 = "bm25"
    HYBRID = "hybrid"
    SPARSE = "sparse"  # a learned sparse model's inverted index (the [sparse] table)


class Fusion(str, Enum):
    RRF = "rrf"
    CONVEX = "convex"


class Precision(str, Enum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    INT8 = "int8"
    BINARY = "binary"


class Reduction(str, Enum):
    TRUNCATE = "truncate"
    PCA = "pca"


DEFAULT_RESCORE = 4


_NORMALIZATIONS = ("minmax", "zscore")


@dataclass(frozen=True, kw_only=True)
class Strategy:
    """One retrieval strategy, complete enough to rebuild and serve.

    ``embedder`` is ``None`` exactly when ``mode`` is BM25 or sparse; ``sparse`` (the learned
    sparse model) is set exactly when ``mode`` is sparse. ``fusion`` is set exactly when
    ``mode`` is hybrid; ``alpha`` (the dense run's weight, in [0, 1]) is required by convex fusion.
    """

    embedder: EmbedderSpec | None = None
    sparse: SparseSpec | None = None
    chunker: str = WHOLE_DOCUMENTS
    chunk_score: str = "max"
    mode: Mode = Mode.DENSE
    fusion: Fusion | None = None
    alpha: float | None = None
    normalization: str = "minmax"
    rrf_k: int = 60
    depth: int = 100
    precision: Precision = Precision.FLOAT32
    dims: int | None = None
    reduction: Reduction = Reduction.TRUNCATE
    rescore: int = DEFAULT_RESCORE
    feedback: Feedback | None = None
    rerank: RerankSpec | None = None

    def __post_init__(self) -> None:
        from .search.chunks import chunk_score_depth

        object.__setattr__(self, "mode", _choice(Mode, self.mode, "retrieval.mode"))
        object.__setattr__(self, "precision", _choice(Precision, self.precision, "vectors.precision"))
        object.__setattr__(self, "reduction", _choice(Reduction, self.reduction, "vectors.reduction"))
        if self.dims is not None and (isinstance(self.dims, bool) or not isinstance(self.dims, int) or self.dims < 1):
            raise ConfigError(f"vectors.dims must be a whole number of at least 1, not {self.dims!r}")
        if isinstance(self.rescore, bool) or not isinstance(self.rescore, int) or self.rescore < 1:
            raise ConfigError(f"vectors.rescore must be a whole number of at least 1, not {self.rescore!r}")
        if self.rescore != DEFAULT_RESCORE and self.precision is not Precision.BINARY:
            raise ConfigError("vectors.rescore applies to binary vectors only; drop it or set precision = 'binary'")
        if self.mode is Mode.BM25 and (self.dims is not None or self.precision is not Precision.FLOAT32):
            raise ConfigError("a bm25 strategy stores no vectors; drop its [vectors] settings or choose mode dense")
        _check_sparse(self)
        if self.fusion is not None:
            object.__setattr__(self, "fusion", _choice(Fusion, self.fusion, "retrieval.fusion"))
        if self.mode in (Mode.BM25, Mode.SPARSE):
            if self.embedder is not None and self.mode is Mode.BM25:
                raise ConfigError("a bm25 strategy embeds nothing; drop its [embedder] table or choose mode dense")
        elif self.embedder is None:
            raise ConfigError(f"a {self.mode.value} strategy needs an [embedder] table with a model")
        if self.mode is Mode.HYBRID and self.fusion is None:
            raise ConfigError("a hybrid strategy needs retrieval.fusion: rrf or convex")
        if self.mode is not Mode.HYBRID and self.fusion is not None:
            raise ConfigError(f"retrieval.fusion applies to hybrid strategies, not {self.mode.value}")
        if self.fusion is Fusion.CONVEX:
            if self.alpha is None:
                raise ConfigError("convex fusion needs retrieval.alpha, the dense run's weight between 0 and 1")
            if not (_is_number(self.alpha) and 0.0 <= self.alpha <= 1.0):
                raise ConfigError(f"retrieval.alpha must be a number between 0 and 1, not {self.alpha!r}")
        elif self.alpha is not None:
            raise ConfigError("retrieval.alpha applies to convex fusion only")
        if self.normalization not in _NORMALIZATIONS:
            raise ConfigError(
                f"retrieval.normalization must be {' or '.join(_NORMALIZATIONS)}, not {self.normalization!r}"
            )
        for name, value, low in (("retrieval.rrf_k", self.rrf_k, 0), ("retrieval.depth", self.depth, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be a whole number of at least {low}, not {value!r}")
        if not isinstance(self.chunker, str) or not self.chunker.strip():
            raise ConfigError("chunking.chunker must be 'none' or a chunker spec such as recursive")
        if self.chunker != WHOLE_DOCUMENTS:
            from .chunking import parse_chunker_spec

            parse_chunker_spec(self.chunker)  # one line naming a bad chunker or option
            if self.embedder is None:
                raise ConfigError(
                    f"chunks are embedded: a {self.mode.value} strategy indexes whole documents; set chunker = 'none'"
                )
        chunk_score_depth(self.chunk_score)
        if self.feedback is not None:
            if not isinstance(self.feedback, Feedback):
                raise ConfigError("feedback must be a Feedback value (the [feedback] table)")
            if self.feedback.method is FeedbackMethod.ROCCHIO and not self.uses_vectors:
                raise ConfigError("rocchio feedback moves the query vector: a bm25 strategy has none; use rm3")
            if self.feedback.method is FeedbackMethod.RM3 and not self.uses_lexical:
                raise ConfigError("rm3 feedback expands the BM25 query: a dense strategy has none; use rocchio")

    # -- what it is ------------------------------------------------------------------------

    @property
    def model(self) -> str | None:
        return None if self.embedder is None else self.embedder.model

    @property
    def chunked(self) -> bool:
        return self.chunker != WHOLE_DOCUMENTS

    @property
    def uses_vectors(self) -> bool:
        return self.mode not in (Mode.BM25, Mode.SPARSE)

    @property
    def uses_lexical(self) -> bool:
        return self.mode in (Mode.BM25, Mode.HYBRID)

    @property
    def uses_sparse(self) -> bool:
        return self.sparse is not None

    @property
    def name(self) -> str:
        """A label for tables: ``local:all-MiniLM-L6-v2 @ recursive + bm25 (convex)``."""
        rerank = "" if self.rerank is None else f" > {self.rerank.label}"
        if self.sparse is not None:
            return self.sparse.model + rerank
        if self.embedder is None:
            return ("bm25" if self.feedback is None else f"bm25 + {self.feedback.method.value}") + rerank
        name = self.embedder.label if not self.chunked else f"{self.embedder.label} @ {self.chunker}"
        if self.vectors_label != Precision.FLOAT32.value:
            name += f" [{self.vectors_label}]"
        if self.mode is Mode.HYBRID:
            name += f" + bm25 ({self.fusion.value})"  # type: ignore[union-attr]
        return (name if self.feedback is None else f"{name} + {self.feedback.method.value}") + rerank

    @property
    def vectors_label(self) -> str:
        """The ``[vectors]`` choices in :func:`vector_options`' short form: ``pca=64+binary``."""
        parts = []
        if self.dims is not None:
            parts.append(f"{'dims' if self.reduction is Reduction.TRUNCATE else 'pca'}={self.dims}")
        if self.precision is not Precision.FLOAT32 or not parts:
            parts.append(self.precision.value)
        if self.precision is Precision.BINARY and self.rescore != DEFAULT_RESCORE:
            parts.append(f"rescore={self.rescore}")
        return "+".join(parts)

    def fingerprint(self) -> str:
        """A short hash of every setting, for naming and comparing strategies."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def index_settings(self) -> dict[str, Any]:
        """The settings a built index depends on: changing any of them means indexing again.

        Fusion, its weights and the depth are chosen at query time and may change freely.
        """
        embedder = None if self.embedder is None else _spec_dict(self.embedder, vectors_only=True)
        settings: dict[str, Any] = {} if self.sparse is None else {"sparse": self.sparse.model}
        return settings | {
            "embedder": embedder,
            "chunker": self.chunker,
            "precision": self.precision.value if self.uses_vectors else None,
            "dims": self.dims,
            "reduction": self.reduction.value if self.dims is not None else None,
        }

    # -- TOML ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The TOML document as plain data (``None`` values left out)."""
        retrieval: dict[str, Any] = {"mode": self.mode.value}
        if self.fusion is not None:
            retrieval["fusion"] = self.fusion.value
        if self.fusion is Fusion.CONVEX:
            retrieval["alpha"] = self.alpha
            retrieval["normalization"] = self.normalization
        if self.fusion is Fusion.RRF:
            retrieval["rrf_k"] = self.rrf_k
        retrieval["depth"] = self.depth
        data: dict[str, Any] = {"version": STRATEGY_VERSION}
        if self.embedder is not None:
            data["embedder"] = _spec_dict(self.embedder)
        if self.sparse is not None:
            data["sparse"] = {"model": self.sparse.model, "max_batch": self.sparse.max_batch}
        data["chunking"] = {"chunker": self.chunker, "score": self.chunk_score}
        data["retrieval"] = retrieval
        vectors: dict[str, Any] = {"precision": self.precision.value}
        if self.dims is not None:
            vectors["dims"] = self.dims
            vectors["reduction"] = self.reduction.value
        if self.precision is Precision.BINARY:
            vectors["rescore"] = self.rescore
        data["vectors"] = vectors
        if self.feedback is not None:
            data["feedback"] = self.feedback.to_dict()
        if self.rerank is not None:
            data["rerank"] = self.rerank.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "strategy") -> Strategy:
        """The strategy a TOML document describes; ``source`` names it in error messages."""
        try:
            return _from_dict(data)
        except (ConfigError, InputError) as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def to_toml(self, *, comment: str | None = None, folder: str | os.PathLike[str] | None = None) -> str:
        """The TOML text; ``comment`` lines (say, how the strategy was chosen) go on top. For a file
        in ``folder``, relative folders it names are written relative to that folder (:mod:`~embedtune.filepaths`)."""
        lines = [f"# {line}".rstrip() for line in (comment or "").splitlines()]
        data = self.to_dict()
        if folder is not None:
            data = _with_folders(data, partial(path_for_file, folder=Path(folder)))
        lines.append(f"version = {_toml_value(data.pop('version'))}")
        for table, values in data.items():
            lines += ["", f"[{table}]"]
            lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str, *, source: str = "strategy") -> Strategy:
        return cls.from_dict(read_toml(text, source), source=source)

    def save(self, path: str | os.PathLike[str], *, comment: str | None = None) -> Path:
        """Write the TOML file (never half written: see :func:`write_file`)."""
        return write_file(path, self.to_toml(comment=comment, folder=Path(path).parent))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Strategy:
        """The strategy a file holds; folders it names by relative path are the file's folder's."""
        return cls.from_dict(read_strategy_file(path), source=str(path))


_TABLES = {
    "embedder": None,  # checked against EmbedderSpec's fields
    "sparse": {"model", "max_batch"},
    "chunking": {"chunker", "score"},
    "retrieval": {"mode", "fusion", "alpha", "normalization", "rrf_k", "depth"},
    "vectors": {"precision", "dims", "reduction", "rescore"},
    "feedback": {"method", "docs", "weight", "terms"},
    "rerank": {"model", "top", "batch"},
}
# EmbedderSpec fields that change no vector (how it is fed, and where from); left out of index_settings.
_FEEDING = {
    "max_batch",
    "max_batch_tokens",
    "concurrency",
    "base_url",
    "api_key_env",
    "requests_per_minute",
    "tokens_per_minute",
    "timeout",
    "max_attempts",
    "keep_alive",
    "adapter",  # queries only: documents are embedded by the bare model
}


def _from_dict(data: Mapping[str, Any]) -> Strategy:
    version = data.get("version")
    if version is None:
        raise ConfigError(f"has no version key; add version = {STRATEGY_VERSION} at the top")
    if version != STRATEGY_VERSION:
        raise ConfigError(f"is strategy version {version!r}; this embedtune reads version {STRATEGY_VERSION}")
    unknown = sorted(set(data) - {"version", *_TABLES})
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}; the tables are {', '.join(_TABLES)}")
    tables: dict[str, dict[str, Any]] = {}
    for table, known in _TABLES.items():
        value = data.get(table, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{table} must be a table ([{table}])")
        keys = known if known is not None else {f.name for f in fields(EmbedderSpec)}
        extra = sorted(set(value) - keys)
        if extra:
            raise ConfigError(f"unknown key {table}.{extra[0]}; known keys: {', '.join(sorted(keys))}")
        tables[table] = value
    embedder = None
    if tables["embedder"]:
        if "model" not in tables["embedder"]:
            raise ConfigError('[embedder] needs a model = "PROVIDER:NAME" line')
        try:
            embedder = EmbedderSpec(**tables["embedder"])
        except UnknownModelError as exc:
            raise ConfigError(f"embedder.model: {exc}") from None
        except TypeError as exc:  # a value of the wrong type that EmbedderSpec cannot take
            raise ConfigError(f"[embedder]: {exc}") from None
    sparse = None
    if tables["sparse"]:
        if "model" not in tables["sparse"]:
            raise ConfigError('[sparse] needs a model = "sparse:NAME" line, e.g. sparse:splade-tiny')
        sparse = SparseSpec(**tables["sparse"])
    vectors = tables["vectors"]
    if "reduction" in vectors and "dims" not in vectors:
        raise ConfigError("vectors.reduction needs vectors.dims, the size to reduce to")
    feedback = Feedback.from_dict(tables["feedback"]) if tables["feedback"] else None
    retrieval = tables["retrieval"]
    rerank = None
    if tables["rerank"]:
        if "model" not in tables["rerank"]:
            raise ConfigError('[rerank] needs a model = "FOLDER" line, the cross-encoder\'s folder')
        rerank = RerankSpec(**tables["rerank"])
    default = Mode.DENSE if embedder is not None else Mode.SPARSE if sparse is not None else Mode.BM25
    mode = retrieval.get("mode", default.value)
    return Strategy(
        embedder=embedder,
        sparse=sparse,
        chunker=tables["chunking"].get("chunker", WHOLE_DOCUMENTS),
        chunk_score=tables["chunking"].get("score", "max"),
        mode=mode,
        fusion=retrieval.get("fusion"),
        alpha=retrieval.get("alpha"),
        normalization=retrieval.get("normalization", "minmax"),
        rrf_k=retrieval.get("rrf_k", 60),
        depth=retrieval.get("depth", 100),
        precision=vectors.get("precision", Precision.FLOAT32.value),
        dims=vectors.get("dims"),
        reduction=vectors.get("reduction", Reduction.TRUNCATE.value),
        rescore=vectors.get("rescore", DEFAULT_RESCORE),
        feedback=feedback,
        rerank=rerank,
    )


def vector_options(text: str) -> dict[str, Any]:
    """``Strategy`` keywords from the short form: parts joined by ``+``, e.g. ``pca=64+int8``.

    A part is a precision (``float32``, ``float16``, ``int8``, ``binary``), ``dims=N``
    (truncation), ``pca=N`` or ``rescore=N``. Anything else is one line naming it.
    """
    options: dict[str, Any] = {}
    precisions = [p.value for p in Precision]
    for part in (p.strip() for p in text.split("+")):
        key, _, value = part.partition("=")
        if part in precisions:
            options["precision"] = part
        elif key in ("dims", "pca", "rescore") and value.strip().isdigit():
            if key == "rescore":
                options["rescore"] = int(value)
            else:
                options["dims"] = int(value)
                options["reduction"] = Reduction.TRUNCATE.value if key == "dims" else Reduction.PCA.value
        else:
            raise ConfigError(
                f"unknown vector setting {part!r} in {text!r}; use {', '.join(precisions)}, dims=N, pca=N or "
                "rescore=N, joined by +"
            )
    return options


def _spec_dict(spec: EmbedderSpec, *, vectors_only: bool = False) -> dict[str, Any]:
    """The spec's fields that differ from their defaults (the model always), as TOML values."""
    defaults = EmbedderSpec(model=spec.model)
    out: dict[str, Any] = {}
    for f in fields(EmbedderSpec):
        if vectors_only and f.name in _FEEDING:
            continue
        value = getattr(spec, f.name)
        if f.name != "model" and value == getattr(defaults, f.name):
            continue
        if isinstance(value, Enum):
            value = value.value
        if value is not None:
            out[f.name] = value
    return out


def _check_sparse(strategy: Strategy) -> None:
    """A sparse strategy names its model in [sparse], and nothing it would not use."""
    if strategy.sparse is not None and not isinstance(strategy.sparse, SparseSpec):
        raise ConfigError(f"sparse must be a SparseSpec, not {type(strategy.sparse).__name__}")
    if strategy.embedder is not None and strategy.embedder.model.startswith("sparse:"):
        raise ConfigError(
            f"{strategy.embedder.model} is a learned sparse model: name it in a [sparse] table with "
            "retrieval.mode = 'sparse', not in [embedder]"
        )
    if strategy.mode is Mode.SPARSE:
        if strategy.sparse is None:
            raise ConfigError(
                'a sparse strategy needs a [sparse] table with a model, e.g. model = "sparse:splade-tiny"'
            )
        if strategy.embedder is not None:
            raise ConfigError("a sparse strategy encodes with its [sparse] model; drop its [embedder] table")
        if strategy.dims is not None or strategy.precision is not Precision.FLOAT32:
            raise ConfigError("a sparse strategy stores no dense vectors; drop its [vectors] settings")
    elif strategy.sparse is not None:
        raise ConfigError(f"the [sparse] table applies to retrieval.mode = 'sparse', not {strategy.mode.value}")


def _choice(enum: type[Enum], value: Any, key: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        choices = " | ".join(str(member.value) for member in enum)
        raise ConfigError(f"{key} must be {choices}, not {value!r}") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_strategy_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A strategy (or ensemble) file's tables, or one line saying why it cannot be read; the
    folders it names by relative path made absolute against the file's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"strategy file {path} does not exist; write one with embedtune compare") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read strategy file {path}: {exc}") from None
    return _with_folders(read_toml(text, str(path)), partial(path_in_file, folder=path.parent))


# The folders a strategy's tables name: (table, key, whether the value is a model URI).
_FOLDER_KEYS = (
    ("embedder", "model", True),
    ("embedder", "adapter", False),
    ("sparse", "model", True),
    ("rerank", "model", False),
)


def _with_folders(data: Mapping[str, Any], change: Callable[[str], str]) -> dict[str, Any]:
    """``data`` (a strategy's tables, or an ensemble's with its ``members``) with ``change`` applied
    to each folder it names (a cross-encoder, an adapter, a model given by path)."""
    out = dict(data)
    for table, key, uri in _FOLDER_KEYS:
        values = out.get(table)
        if isinstance(values, dict) and isinstance(values.get(key), str):
            out[table] = {**values, key: map_model_folder(values[key], change) if uri else change(values[key])}
    if isinstance(out.get("members"), list):
        out["members"] = [_with_folders(m, change) if isinstance(m, dict) else m for m in out["members"]]
    return out


def read_toml(text: str, source: str) -> dict[str, Any]:
    """``text`` parsed, or one line saying ``source`` is not valid TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from None


def write_file(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to a temporary name beside ``path``, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
