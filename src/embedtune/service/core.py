"""The service's work, apart from HTTP: admit a request, embed or search through the batcher, answer.

:class:`EmbeddingService` holds what a running service needs (the served stack and store, the
micro-batcher, keys, budgets, metrics) and its life: ``start`` (the batcher's worker), ``warm_up``
(one real embedding and a look at the store: only then is it ready), ``close`` (drain the queue,
close the stack in the worker's thread, then the store). The routes in ``app.py`` only call it.

Each request is checked before anything is queued: its texts are decoded and counted with the
model's tokenizer (in a worker thread, so the event loop stays free), the limits and the length
policy applied, then the key's budget charged with those tokens. Only then do its texts join a
batch.

An input that is a base64 image data URL (``data:image/png;base64,...``, as infinity takes them) is
an image, for a model that takes images (else 400 naming it). It is decoded once when admitted (a
broken image is a 400 naming its index), counts one token against the budget, and is embedded
through the stack's ``embed_images`` (cache and pixel batches) beside the micro-batcher, which
merges texts only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
from starlette.concurrency import run_in_threadpool

from ..embedder import Embedder, Kind, embed_images, takes_images
from ..engine import CachingEmbedder, LengthPolicy, OverLimit, find_layer
from ..ensemble import EnsembleRetriever
from ..errors import InputError
from ..images import Image
from ..retriever import Retriever
from ..stores.base import check_filter
from ..strategy import Strategy
from .batcher import BatcherClosed, MicroBatcher, QueuedEmbedder
from .config import ServiceConfig
from .embeddings import check_dimensions, check_lengths, input_texts, render, shape_vectors
from .errors import SERVER, ApiError
from .keys import Budgets, KeyRing
from .metrics import Metrics
from .resources import Served
from .schemas import EmbeddingRequest, ModelCard, ModelList, SearchRequest, SearchResponse, SearchResult, Usage

__all__ = ["EmbeddingService"]

log = logging.getLogger("embedtune.service")

WARM_UP_TEXT = "embedtune warm-up"


class EmbeddingService:
    """One running service over ``served`` with ``config`` (see the module docstring)."""

    def __init__(
        self,
        served: Served,
        config: ServiceConfig,
        *,
        on_load_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.served = served
        self.config = config
        self.metrics = Metrics()
        self.keys = KeyRing(config.keys)
        self.budgets = Budgets(
            requests_per_minute=config.requests_per_minute,
            tokens_per_minute=config.tokens_per_minute,
            window=config.rate_window_s,
        )
        self.ready = False
        self.stopping = False
        self.failure: str | None = None
        self._on_load_failure = on_load_failure
        self.created = int(time.time())
        self.embedder = served.embedder
        self.batcher: MicroBatcher | None = None
        self.retriever: Retriever | EnsembleRetriever | None = None
        if self.embedder is not None:
            self.batcher = _batcher(self.embedder, config, self.metrics)
        queued = QueuedEmbedder(self.embedder, self.batcher) if self.embedder and self.batcher else None
        if served.ensemble is not None:
            self.retriever = _through_batcher(served.ensemble, self.embedder, queued)
        elif isinstance(served.strategy, Strategy) and served.store is not None:
            self.retriever = Retriever(served.strategy, served.store, queued, sparse=served.sparse)
        self._gauges()

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self.batcher is not None:
            self.batcher.start()

    def warm_up(self) -> None:
        """Load the model (one real embedding through the whole stack) and read the store; then ready.

        Runs in a worker thread while the server already answers (``/healthz`` says 503 until it
        is done). A failure is kept for ``/healthz``, logged, and passed to ``on_load_failure``.
        """
        try:
            if self.embedder is not None and self.batcher is not None:
                count = self.embedder.count_tokens(WARM_UP_TEXT, "document")
                self.batcher.submit([WARM_UP_TEXT], [count], "document").result()
            if self.served.store is not None:
                self.served.store.count_chunks()
            if isinstance(self.retriever, EnsembleRetriever):  # loads every member's model and index
                self.retriever.search_one(WARM_UP_TEXT, 1)
            elif self.retriever is not None and self.served.sparse is not None:  # loads the sparse model and its index
                self.retriever.sparse_run({"warm-up": WARM_UP_TEXT}, 1)
        except Exception as exc:  # noqa: BLE001 (kept, logged and handed on, not hidden)
            self.failure = f"{type(exc).__name__}: {exc}"
            log.error("cannot serve: %s", self.failure)
            if self._on_load_failure is not None:
                self._on_load_failure(exc)
            return
        self.ready = True
        log.info("ready: %s", self.describe())

    def close(self) -> None:
        """Stop taking requests, embed what is queued, close the stack (in its thread) and the store."""
        self.ready = False
        self.stopping = True
        if self.retriever is not None:
            self.retriever.close()
        if self.batcher is not None:
            from ..engine import close_stack

            embedder = self.embedder
            self.batcher.close(on_close=lambda: close_stack(embedder))
        if self.served.ensemble is not None:  # the members' stores and models (closing a stack twice is harmless)
            self.served.ensemble.close()
        if self.served.store is not None:
            self.served.store.close()

    def describe(self) -> str:
        what = self.served.model or "no model"
        if self.served.store is not None and self.served.strategy is not None:
            what += f", store {self.served.store.location} ({self.served.strategy.name})"
        return what

    def health(self) -> tuple[int, dict]:
        """``/healthz``: 200 once ready; 503 while loading, after a failure, or while stopping."""
        if self.ready:
            store = self.served.store.location if self.served.store is not None else None
            return 200, {"status": "ok", "model": self.served.model, "store": store}
        if self.stopping:
            return 503, {"status": "stopping"}
        if self.failure is not None:
            return 503, {"status": "failed", "error": self.failure}
        return 503, {"status": "loading"}

    def require_ready(self) -> None:
        if self.ready:
            return
        if self.failure is not None and not self.stopping:
            raise ApiError(503, "the service could not load its model or store; /healthz says why", type=SERVER)
        status = "shutting down" if self.stopping else "still loading"
        raise ApiError(503, f"the service is {status}; retry shortly", type=SERVER, code="not_ready", retry_after=1)

    # -- the endpoints ---------------------------------------------------------------------------

    def models(self) -> ModelList:
        names = [self.served.model] if self.served.model else []
        return ModelList(data=[ModelCard(id=name, created=self.created) for name in names])

    async def embeddings(self, request: EmbeddingRequest, key: str) -> bytes:
        """``/v1/embeddings``: the response body for ``request`` sent with ``key``."""
        embedder = self._embedder_for(request.model)
        check_dimensions(request.dimensions, embedder.dim)
        kind: Kind = request.input_type
        texts, counts, images = await run_in_threadpool(self._admit, request.input, kind)
        tokens = sum(counts) + len(images) * IMAGE_TOKENS
        self.budgets.charge(key, tokens)
        if not images:
            vectors = await self._embed(texts, counts, kind)
        else:
            vectors = np.empty((len(texts) + len(images), embedder.dim), dtype=np.float32)
            text_rows = [i for i in range(len(vectors)) if i not in images]
            if text_rows:
                vectors[text_rows] = await self._embed(texts, counts, kind)
            rows = sorted(images)
            vectors[rows] = await run_in_threadpool(embed_images, embedder, [images[i] for i in rows], kind)
        return await run_in_threadpool(render, shape_vectors(vectors, request.dimensions), request, tokens)

    async def search(self, request: SearchRequest, key: str) -> bytes:
        """``/v1/search``: each query's hits, as ``embedtune search --json`` prints them."""
        if self.retriever is None or self.served.strategy is None:
            raise ApiError(404, "this server has no store to search; start it with --store", code="not_found")
        queries = [request.query] if isinstance(request.query, str) else list(request.query)
        if not queries:
            raise ApiError(400, "query is empty; send at least one query", param="query")
        if not 1 <= request.k <= self.config.max_k:
            raise ApiError(400, f"k must be between 1 and {self.config.max_k}, not {request.k}", param="k")
        where = check_filter(request.filter)
        counts = await run_in_threadpool(self._count_queries, queries)
        self.budgets.charge(key, sum(counts))
        retriever = self.retriever
        found = await asyncio.gather(
            *(run_in_threadpool(retriever.search_one, query, request.k, where=where) for query in queries)
        )
        response = SearchResponse(
            data=[
                SearchResult(index=i, query=query, hits=[hit.to_dict() for hit in hits])
                for i, (query, hits) in enumerate(zip(queries, found))
            ],
            model=self.served.model,
            strategy=self.served.strategy.name,
            usage=Usage(prompt_tokens=sum(counts), total_tokens=sum(counts)),
        )
        return response.model_dump_json().encode()

    # -- steps -----------------------------------------------------------------------------------

    def _embedder_for(self, model: str) -> Embedder:
        embedder = self._require_embedder()
        if model not in (embedder.name, embedder.name.partition(":")[2]):
            raise ApiError(
                404,
                f"the model {model!r} is not served here; this server serves {embedder.name}",
                param="model",
                code="model_not_found",
            )
        return embedder

    def _admit(
        self, value: str | list[str] | list[int] | list[list[int]], kind: Kind
    ) -> tuple[list[str], list[int], dict[int, Image]]:
        """The request's texts and their token counts, within every limit, and its images by
        position, decoded once to prove them whole (else ApiError 400)."""
        if isinstance(value, list) and len(value) > self.config.max_inputs and not isinstance(value[0], int):
            raise ApiError(
                400,
                f"{len(value)} inputs in one request; this server takes at most {self.config.max_inputs}",
                param="input",
                code="too_many_inputs",
            )
        inputs = input_texts(value)
        embedder = self._require_embedder()
        images: dict[int, Image] = {}
        for i, text in enumerate(inputs):
            if text.startswith("data:image/") and ";base64," in text[:64]:
                images[i] = _admit_image(embedder, text, i)
        texts = [text for i, text in enumerate(inputs) if i not in images]
        counts = self._counted(embedder, texts, kind, "input")
        return texts, counts, images

    def _count_queries(self, queries: list[str]) -> list[int]:
        for i, query in enumerate(queries):
            if not query.strip():
                raise ApiError(400, f"query {i} is empty; give some words to search for", param=f"query[{i}]")
        if self.embedder is None:  # BM25 alone: nothing is embedded; a query's words are its tokens
            return [len(query.split()) for query in queries]
        return self._counted(self.embedder, queries, "query", "query")

    def _require_embedder(self) -> Embedder:
        if self.embedder is None:
            what = "an ensemble none of whose members embeds" if self.served.ensemble is not None else "a BM25 store"
            raise ApiError(404, f"this server serves {what} and has no embedding model", code="model_not_found")
        return self.embedder

    def _counted(self, embedder: Embedder, texts: Sequence[str], kind: Kind, what: str) -> list[int]:
        counts = [embedder.count_tokens(text, kind) for text in texts]
        policy = find_layer(embedder, LengthPolicy)
        check_lengths(
            counts,
            model=embedder.name,
            model_limit=embedder.max_tokens,
            policy=policy.over_limit if policy is not None else OverLimit.ERROR,
            max_inputs=self.config.max_queries if what == "query" else self.config.max_inputs,
            max_input_tokens=self.config.max_input_tokens,
            max_request_tokens=self.config.max_request_tokens,
            what=what,
        )
        return counts

    async def _embed(self, texts: list[str], counts: list[int], kind: Kind) -> np.ndarray:
        if self.batcher is None:
            raise ApiError(404, "this server has no embedding model", code="model_not_found")
        try:
            future = self.batcher.submit(texts, counts, kind)
        except BatcherClosed:
            raise ApiError(503, "the server is shutting down", type=SERVER, code="not_ready", retry_after=1) from None
        return await asyncio.wrap_future(future)

    def _gauges(self) -> None:
        metrics = self.metrics
        metrics.gauge("embedtune_ready", "1 once the model is loaded and the store open.", lambda: float(self.ready))
        if self.batcher is not None:
            batcher = self.batcher
            metrics.gauge("embedtune_queue_texts", "Texts waiting for a batch.", lambda: batcher.waiting)
        cache = find_layer(self.embedder, CachingEmbedder) if self.embedder is not None else None
        if cache is not None:
            metrics.gauge(
                "embedtune_cache_hits_total", "Texts served from the cache.", lambda: cache.stats.hits, kind="counter"
            )
            metrics.gauge(
                "embedtune_cache_misses_total",
                "Texts the model embedded for the cache.",
                lambda: cache.stats.misses,
                kind="counter",
            )
        policy = find_layer(self.embedder, LengthPolicy) if self.embedder is not None else None
        if policy is not None:
            metrics.gauge(
                "embedtune_texts_truncated_total",
                "Texts over the model's limit it truncated.",
                lambda: policy.stats.truncated,
                kind="counter",
            )
            metrics.gauge(
                "embedtune_texts_split_total",
                "Texts over the model's limit split and pooled.",
                lambda: policy.stats.split,
                kind="counter",
            )


IMAGE_TOKENS = 1  # what an image costs against a key's token budget


def _through_batcher(
    ensemble: EnsembleRetriever, embedder: Embedder | None, queued: QueuedEmbedder | None
) -> EnsembleRetriever:
    """The ensemble's members over their own stores and models, but the served model's queries
    sent through the micro-batcher (they share its batches with /v1/embeddings)."""
    members = [
        Retriever(
            member.strategy,
            member.store,
            queued if queued is not None and member.embedder is embedder else member.embedder,
            reranker=member.reranker,
            sparse=member.sparse,
        )
        for member in ensemble.members
    ]
    return EnsembleRetriever(ensemble.strategy, members)


def _admit_image(embedder: Embedder, url: str, index: int) -> Image:
    """``input[index]``, a data URL, as a whole image for a model that takes images (else ApiError 400)."""
    where = f"input[{index}]"
    if not takes_images(embedder):
        raise ApiError(400, f"{where} is an image, but {embedder.name} takes text only", param=where)
    try:
        image = Image.from_data_url(url, name=where)
        image.check()
    except InputError as exc:
        raise ApiError(400, str(exc), param=where, code="invalid_image") from None
    return image


def _batcher(embedder: Embedder, config: ServiceConfig, metrics: Metrics) -> MicroBatcher:
    """The micro-batcher, bounded as the stack's own batcher is unless the config says otherwise."""
    from ..engine import BatchingEmbedder

    inner = find_layer(embedder, BatchingEmbedder)
    texts = config.batch_texts or (inner.max_batch if inner is not None else 32)
    tokens = config.batch_tokens or (inner.max_batch_tokens if inner is not None else 16_384)
    return MicroBatcher(
        embedder,
        max_texts=texts,
        max_tokens=tokens,
        max_wait=config.max_wait_ms / 1000,
        merge=config.micro_batching,
        by_length=inner.sort_by_length if inner is not None else True,
        observe=metrics.batch,
    )
