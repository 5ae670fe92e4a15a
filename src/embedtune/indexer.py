"""Building a strategy into a store: chunk, embed through the cache, write; and opening it again.

:func:`index_documents` is what ``embedtune index`` runs, and what ``compare`` runs before it
scores a strategy, so the store a user builds is the one that was measured.

- **Incremental.** Every document carries a content hash (its text and metadata). Documents the
  store holds with the same hash are skipped without being chunked or embedded; changed and new
  ones are written; documents the store holds that the input no longer has are deleted.
- **Resumable.** Documents are written in batches, one transaction each, and every vector goes
  through the embedding cache first. A run killed at any moment leaves every document old or new;
  the rerun skips what was written and takes what was embedded from the cache, so the result is
  the store an uninterrupted run builds.
- **Images.** A document that carries an image (``document.image``, from a folder or an image
  collection) is one chunk, embedded with ``embed_images`` by a model that takes images; its text
  (the file's path) is what the store shows for it. Its content hash covers the image's SHA-256.
- **Safe.** A store built with another model, dims, chunker or precision is refused before
  anything is written (one line naming the difference); so is a strategy whose vectors would not
  be comparable with the store's.
- **Compressed after the cache.** The cache holds the model's full float32 vectors; a strategy's
  ``[vectors]`` size (truncation, or PCA fitted here on the corpus's first vectors) is applied
  before the store, which stores them at its precision (int8 calibrated on the same vectors).
  What was fitted goes into the manifest, so every variant of a corpus costs no new embedding.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .chunking.base import Chunker, chunk_documents
from .embedder import Embedder, embed_images, empty_vectors, image_fingerprint, takes_images
from .engine import LengthPolicy, close_stack, find_layer, whole_calls
from .errors import ConfigError
from .providers.engines import Engine, engine_of_label
from .retriever import Retriever
from .search.compress import Int8Codec, Reducer
from .search.dense import l2_normalize
from .stores.base import DocumentRecord, Store, StoreManifest, content_hash
from .strategy import Precision, Strategy

if TYPE_CHECKING:
    from .ensemble import EnsembleRetriever
    from .factory import EmbedderSpec
    from .sparse.encoder import SparseEncoder

__all__ = ["IndexReport", "index_documents", "open_retriever", "prepare_store", "store_manifest"]

ProgressFn = Callable[[int, int], None]
"""``on_progress(done, total)``: ``done`` of ``total`` documents to write are written."""

# A transaction holds at most this many documents or chunks: a kill loses at most one batch's
# writes (never its embeddings, which the cache kept), and the batcher still fills its calls.
_BATCH_DOCUMENTS = 128
_BATCH_CHUNKS = 512
# PCA and int8 calibration are fitted on up to this many of the corpus's first vectors.
_FIT_ROWS = 20_000


class SourceLike(Protocol):
    """A document to index: what :func:`embedtune.documents.read_documents` gives."""

    @property
    def id(self) -> str: ...

    @property
    def text(self) -> str: ...

    @property
    def metadata(self) -> Mapping[str, Any]: ...


@dataclass
class IndexReport:
    """What one run of :func:`index_documents` did.

    ``texts_embedded`` counts the texts handed to the embedder (chunks of changed and new
    documents, and a semantic chunker's sentence windows are not among them); the cache may have
    held some of them. ``truncated`` counts chunks over the model's limit that it truncated.
    """

    documents: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    chunks_written: int = 0
    texts_embedded: int = 0
    truncated: int = 0
    sparse_encoded: int = 0  # documents handed to the sparse encoder (0: its index was current)
    notices: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.deleted)


def store_manifest(
    strategy: Strategy, embedder: Embedder | None, compression: Mapping[str, Any] | None = None
) -> StoreManifest:
    """The manifest a store built with ``strategy`` by ``embedder`` carries (``compression``: what
    :func:`fit_compression` fitted for it)."""
    if strategy.uses_vectors and embedder is None:
        raise ConfigError(f"strategy {strategy.name!r} embeds documents; give an embedder")
    dims = 0 if embedder is None else embedder.dim
    if embedder is not None and strategy.dims is not None:
        if strategy.dims > embedder.dim:
            raise ConfigError(
                f"vectors.dims {strategy.dims} is larger than {strategy.model}'s {embedder.dim} dims; "
                f"choose at most {embedder.dim}"
            )
        dims = strategy.dims
    return StoreManifest(
        strategy=strategy.to_dict(),
        model=strategy.model,
        embedder_fingerprint=None if embedder is None else embedder.fingerprint("document"),
        dims=dims,
        precision=strategy.precision.value if strategy.uses_vectors else "none",
        chunker=strategy.chunker,
        compression=compression,
        images=_image_keys(embedder) if embedder is not None and takes_images(embedder) else None,
    )


def needs_fit(strategy: Strategy) -> bool:
    """Whether building ``strategy`` fits something on the corpus's vectors (a reduction, int8)."""
    return strategy.uses_vectors and (strategy.dims is not None or strategy.precision is Precision.INT8)


def fit_compression(strategy: Strategy, vectors: np.ndarray) -> dict[str, Any]:
    """What a store of ``strategy`` keeps to compress vectors, fitted on ``vectors`` (the model's, L2-normalised).

    ``{"reduction": ...}`` when ``dims`` is set; ``{"int8": ...}`` (calibrated on the reduced
    vectors) for int8. Too few vectors for PCA, or dims over the model's, is one line.
    """
    compression: dict[str, Any] = {}
    if strategy.dims is not None:
        reducer = Reducer.fit(strategy.reduction.value, vectors, strategy.dims)
        compression["reduction"] = reducer.to_dict()
        vectors = reducer.apply(vectors)
    if strategy.precision is Precision.INT8:
        compression["int8"] = Int8Codec.fit(vectors).to_dict()
    return compression


IMAGE_KEYS = "sha256 of each image's bytes: a re-encoded copy of the same pixels is another image"


def _image_keys(embedder: Embedder) -> dict[str, str]:
    return {"keyed_by": IMAGE_KEYS, "fingerprint": image_fingerprint(embedder, "document")}


def prepare_store(
    store: Store, strategy: Strategy, embedder: Embedder | None, compression: Mapping[str, Any] | None = None
) -> StoreManifest:
    """Create the store for ``strategy``, or check that an existing one was built the same way.

    Only query-time choices (mode, fusion, weights, depth, rescore) may differ from the store's;
    the manifest then takes the new ones. Anything else is refused before a write. ``compression``
    (see :func:`fit_compression`) goes into a manifest that has none yet; a store's own stays.
    """
    wanted = store_manifest(strategy, embedder, compression)
    existing = _whole(store, store.read_manifest())
    if existing is None:
        store.write_manifest(wanted)
        return wanted
    conflict = existing.conflicts(wanted)
    if conflict is not None:
        raise ConfigError(
            f"store {store.location} cannot take this strategy: {conflict}; index into another --store, "
            "or delete this one to rebuild it"
        )
    updated = existing
    if existing.strategy != wanted.strategy:
        updated = replace(updated, strategy=wanted.strategy)
    if existing.compression is None and compression is not None:
        updated = replace(updated, compression=compression)
    if updated is not existing:
        store.write_manifest(updated)
    return updated


def _whole(store: Store, manifest: StoreManifest | None) -> StoreManifest | None:
    """The manifest, unless the store is one shard of several opened on its own."""
    if manifest is not None and manifest.shard is not None and "index" in manifest.shard:
        raise ConfigError(
            f"{store.location} is shard {int(manifest.shard['index']) + 1} of {manifest.shard.get('count')} of a "
            "sharded store; give every shard's URI to --store, joined by commas"
        )
    return manifest


def index_documents(
    documents: Sequence[SourceLike],
    strategy: Strategy,
    store: Store,
    embedder: Embedder | None,
    *,
    delete_missing: bool = True,
    keep: Sequence[str] = (),
    on_progress: ProgressFn | None = None,
    over_model_limit: str = "error",
    sparse: SparseEncoder | None = None,
) -> IndexReport:
    """Bring ``store`` to hold exactly ``documents`` as ``strategy`` cuts and embeds them.

    ``embedder`` is the full stack (length policy, cache, batching) of ``strategy.embedder``;
    ``None`` for a BM25 strategy. ``keep`` names documents the store holds that must not be
    deleted although the input lacks them (files that could not be read this time).
    ``over_model_limit`` is passed to the chunker (``"allow"`` lets chunks over the model's limit
    through to be truncated, as ``compare`` may ask). ``sparse`` is the encoder of a sparse
    strategy's model: its index is brought up to date after the documents are written.
    """
    _check_ids(documents)
    _refuse_an_ensembles_store(store)
    if strategy.uses_sparse:
        from .sparse.side import check_sparse_store

        if sparse is None:
            raise ConfigError(f"strategy {strategy.name!r} encodes documents; give its sparse encoder")
        check_sparse_store(store)  # a store that cannot keep the index is refused before a write
    store_manifest(strategy, embedder)  # a bad strategy (dims over the model's) fails before any work
    fitting = needs_fit(strategy)
    manifest: StoreManifest | None = None
    if not fitting or _whole(store, store.read_manifest()) is not None:
        manifest = prepare_store(store, strategy, embedder)  # another store's strategy refused before embedding
    report = IndexReport(documents=len(documents))
    held = store.content_hashes() if manifest is not None else {}  # no manifest yet: an empty store
    todo: list[tuple[SourceLike, str]] = []
    for document in documents:
        digest = content_hash(document.text, document.metadata)
        if held.get(document.id) == digest:
            report.unchanged += 1
        else:
            todo.append((document, digest))
            if document.id in held:
                report.updated += 1
            else:
                report.added += 1
    chunker = _chunker(strategy, embedder, over_model_limit)
    policy = find_layer(embedder, LengthPolicy) if embedder is not None else None
    truncated_before = policy.stats.truncated if policy is not None else 0
    if on_progress is not None:
        on_progress(0, len(todo))
    done = 0
    # On a cluster (``whole_calls``) every document goes in one batch, one job: its actors start
    # once, and the cache still commits each vector as it returns.
    whole = embedder is not None and whole_calls(embedder)
    batches: Iterator[list[DocumentRecord]] = (
        _records(batch, chunker, embedder, report)
        for batch in (_batches(todo, chunker is not None) if not whole else [todo])
    )
    if manifest is None or (fitting and manifest.compression is None):
        # Fitted on the first vectors before anything is written: a fit that fails leaves no store behind.
        batches, compression = _fit_on_first(batches, strategy)
        manifest = prepare_store(store, strategy, embedder, compression)
    reducer = manifest.reducer()
    for records in batches:
        if reducer is not None:
            records = [_reduced(record, reducer) for record in records]
        store.upsert(records)
        done += len(records)
        report.chunks_written += sum(len(r.spans) for r in records)
        if on_progress is not None:
            on_progress(done, len(todo))
    if delete_missing:
        present = {d.id for d in documents} | set(keep)
        gone = sorted(set(held) - present)
        if gone:
            store.delete(gone)
        report.deleted = len(gone)
    if policy is not None:
        report.truncated = policy.stats.truncated - truncated_before
    if chunker is not None:
        report.notices.extend(chunker.notices)
    store.finish()
    if sparse is not None and strategy.uses_sparse:
        from .sparse.side import sync_sparse_index

        report.sparse_encoded = sync_sparse_index(store, sparse)
    return report


def _fit_on_first(
    batches: Iterator[list[DocumentRecord]], strategy: Strategy
) -> tuple[Iterator[list[DocumentRecord]], dict[str, Any] | None]:
    """The compression fitted on the first batches' vectors (None when there are none), and the batches."""
    taken: list[list[DocumentRecord]] = []
    rows = 0
    for records in batches:
        taken.append(records)
        rows += sum(len(record.spans) for record in records)
        if rows >= _FIT_ROWS:
            break
    vectors = [r.vectors for records in taken for r in records if r.vectors is not None and len(r.vectors)]
    compression = fit_compression(strategy, np.concatenate(vectors)) if vectors else None
    return itertools.chain(taken, batches), compression


def _reduced(record: DocumentRecord, reducer: Reducer) -> DocumentRecord:
    if record.vectors is None:
        return record
    return replace(record, vectors=reducer.apply(record.vectors))


def _refuse_an_ensembles_store(store: Store) -> None:
    """Refuse, before anything is written, a store that holds an ensemble: its file and members'
    stores would sit beside a single strategy's, and opening the store would find only one of them."""
    from .ensemble import stored_ensemble

    if store.read_manifest() is not None:
        return
    ensemble = stored_ensemble(store)
    if ensemble is not None:
        raise ConfigError(
            f"{store.location} holds the ensemble {ensemble.name}; index the strategy into another --store "
            "(or under another ?table=), or delete this one first"
        )


def _check_ids(documents: Sequence[SourceLike]) -> None:
    seen: set[str] = set()
    for document in documents:
        if document.id in seen:
            raise ConfigError(f"document id {document.id!r} appears twice in the input; give each document its own id")
        if not document.id:
            raise ConfigError("a document has an empty id; give every document an id")
        seen.add(document.id)


def _chunker(strategy: Strategy, embedder: Embedder | None, over_model_limit: str) -> Chunker | None:
    if not strategy.chunked or embedder is None:
        return None
    from .chunking import make_chunker

    # A semantic chunker embeds its sentence windows through this same stack, so through the cache.
    return make_chunker(strategy.chunker, embedder, over_model_limit=over_model_limit)


def _batches(todo: list[tuple[SourceLike, str]], chunked: bool):
    """Slices of the documents to write; by count, and by length where one document is one chunk."""
    batch: list[tuple[SourceLike, str]] = []
    for item in todo:
        batch.append(item)
        if len(batch) >= (_BATCH_DOCUMENTS if chunked else _BATCH_CHUNKS):
            yield batch
            batch = []
    if batch:
        yield batch


def _records(
    batch: list[tuple[SourceLike, str]], chunker: Chunker | None, embedder: Embedder | None, report: IndexReport
) -> list[DocumentRecord]:
    """The batch chunked and embedded (one call into the stack for all its chunks)."""
    texts = [document.text for document, _ in batch]
    images = {i: image for i, (document, _) in enumerate(batch) if (image := getattr(document, "image", None))}
    prefixes: dict[tuple[int, int], str] = {}  # (document, span): what the model reads before the span
    if chunker is not None:
        filled = [i for i, text in enumerate(texts) if text.strip() and i not in images]
        titles = [getattr(batch[i][0], "title", "") or "" for i in filled]
        per_doc = chunk_documents(chunker, [texts[i] for i in filled], titles)
        spans: list[list[tuple[int, int]]] = [[] for _ in texts]
        for i, chunks in zip(filled, per_doc):
            spans[i] = [(chunk.start, chunk.end) for chunk in chunks]
            prefixes.update(((i, n), chunk.prefix) for n, chunk in enumerate(chunks) if chunk.prefix)
        for i in images:  # an image is one chunk, whatever the chunker
            spans[i] = [(0, len(texts[i]))]
    else:
        # Whole documents: one chunk each, as compare embeds them; an empty text has none.
        spans = [[(0, len(text))] if text.strip() else [] for text in texts]
    vectors = None
    if embedder is not None:
        vectors = _embed_units(embedder, texts, spans, images, prefixes)
        report.texts_embedded += sum(len(doc_spans) for doc_spans in spans)
    records = []
    offset = 0
    for (document, digest), doc_spans in zip(batch, spans):
        rows = None
        if embedder is not None:
            rows = vectors[offset : offset + len(doc_spans)] if vectors is not None else empty_vectors(embedder.dim)
            offset += len(doc_spans)
        records.append(
            DocumentRecord(
                doc_id=document.id,
                text=document.text,
                metadata=dict(document.metadata),
                spans=doc_spans,
                vectors=rows,
                content_hash=digest,
            )
        )
    return records


def _embed_units(
    embedder: Embedder,
    texts: list[str],
    spans: list[list[tuple[int, int]]],
    images: Mapping[int, Any],
    prefixes: Mapping[tuple[int, int], str],
) -> np.ndarray | None:
    """One row per span, in order: text pieces in one call, the images in one call of their own.

    ``prefixes[(document, n)]`` goes before the document's ``n``-th span (a title-prefixed chunk).
    """
    owners = [(i, n, start, end) for i, doc_spans in enumerate(spans) for n, (start, end) in enumerate(doc_spans)]
    if not owners:
        return None
    out = np.empty((len(owners), embedder.dim), dtype=np.float32)
    text_rows = [row for row, (i, *_) in enumerate(owners) if i not in images]
    image_rows = [row for row, (i, *_) in enumerate(owners) if i in images]
    if text_rows:
        pieces = [prefixes.get((i, n), "") + texts[i][s:e] for i, n, s, e in (owners[row] for row in text_rows)]
        out[text_rows] = embedder.embed(pieces, "document")
    if image_rows:
        out[image_rows] = embed_images(embedder, [images[owners[row][0]] for row in image_rows], "document")
    return l2_normalize(out)


def follow_store_engine(spec: EmbedderSpec, store: Store, embedder: Embedder) -> EmbedderSpec:
    """``spec``, on the engine the store's vectors were made with, when ``auto`` chose another here.

    ``auto`` picks the fastest faithful engine on this machine, and that choice may differ from the
    one made when the store was built (another machine, a newer embedtune, a store built on torch
    before engines existed). ``embedder`` is ``spec`` built here; when its fingerprint differs from
    the store's in the engine alone, the store's engine is the one to run, so its vectors stay
    searchable. Any other difference is left for the caller to refuse.
    """
    manifest = store.read_manifest()
    held = None if manifest is None else manifest.embedder_fingerprint
    if spec.engine is not Engine.AUTO or held is None:
        return spec
    now = embedder.fingerprint("document")
    if now == held or _without_engine(now) != _without_engine(held):
        return spec
    match = _ENGINE_SUFFIX.search(held)
    return replace(spec, engine=engine_of_label(match.group(1) if match else "torch"))


_ENGINE_SUFFIX = re.compile(r"\|engine=([\w.-]+)$")  # a local model's fingerprint ends with it, unless torch


def _without_engine(fingerprint: str) -> str:
    return _ENGINE_SUFFIX.sub("", fingerprint)


def open_retriever(
    store: Store,
    *,
    cache: str | os.PathLike[str] | None = None,
    embedder: Embedder | None = None,
) -> Retriever | EnsembleRetriever:
    """A :class:`~embedtune.retriever.Retriever` for a built store, its strategy read from the manifest.

    A folder or database that :func:`embedtune.ensemble.index_ensemble` built opens as an
    :class:`~embedtune.ensemble.EnsembleRetriever` (the same interface; ``embedder`` is ignored).
    The embedder is built from the manifest's embedder spec (through ``cache``) unless one is
    given, and its fingerprint must equal the one the store's vectors were made with: a model whose
    weights or settings changed since is refused in one line.
    """
    from .factory import build_embedder

    manifest = _whole(store, store.read_manifest())
    if manifest is None:
        from .ensemble import open_ensemble, stored_ensemble

        if stored_ensemble(store) is not None:  # an ensemble: a store per member, each opened as this one would be
            return open_ensemble(store, cache=cache)
        raise ConfigError(f"{store.location} holds no index; build one with embedtune index CORPUS --store ...")
    strategy = Strategy.from_dict(manifest.strategy, source=f"the manifest of {store.location}")
    if strategy.embedder is not None and embedder is None:
        embedder = build_embedder(strategy.embedder, cache=cache)
        spec = follow_store_engine(strategy.embedder, store, embedder)
        if spec != strategy.embedder:
            close_stack(embedder)
            embedder = build_embedder(spec, cache=cache)
    sparse = None
    if strategy.sparse is not None:
        from .sparse.encoder import open_sparse_encoder

        sparse = open_sparse_encoder(strategy.sparse, cache=cache)
    if embedder is not None and manifest.embedder_fingerprint is not None:
        if embedder.fingerprint("document") != manifest.embedder_fingerprint:
            raise ConfigError(
                f"{store.location} was built by another revision or setting of {manifest.model} than this "
                "machine's; rebuild it with embedtune index, or search where that model is installed"
            )
    return Retriever(strategy, store, embedder, sparse=sparse)
