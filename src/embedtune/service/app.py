"""The FastAPI app: its lifespan, the authentication and body dependencies, and thin routes.

==========================  ====  ==============================================================
route                       key   answer
==========================  ====  ==============================================================
``POST /v1/embeddings``     yes   OpenAI's embeddings response (``schemas.EmbeddingRequest``)
``POST /v1/search``         yes   each query's hits (``schemas.SearchRequest``); with a store
``GET /v1/models``          yes   OpenAI's model list: the served model
``GET /healthz``            no    200 once the model is loaded and the store open, else 503
``GET /metrics``            no    Prometheus text: requests, latency, batches, queue wait, cache
==========================  ====  ==============================================================

The lifespan starts the batcher's worker and loads the model in the background (the server
answers meanwhile: ``/healthz`` and the API say 503 until it is ready). At shutdown uvicorn
first lets the requests in flight finish; the lifespan then drains the batch queue and closes the
stack and the store.

Order of checks for an API request: body size (413, before the body is read), key (401), ready
(503), JSON and fields (400), limits (400), budget (429). The body is read only after the key is
checked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from .config import ServiceConfig
from .core import EmbeddingService
from .errors import ApiError, install_error_handlers, validation_error
from .limits import BodyLimit
from .metrics import CONTENT_TYPE, RequestMetrics
from .resources import Served
from .schemas import EmbeddingRequest, ModelList, SearchRequest

__all__ = ["create_app"]

M = TypeVar("M", bound=BaseModel)


def create_app(
    served: Served,
    config: ServiceConfig | None = None,
    *,
    on_load_failure: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """The service's ASGI app over ``served``. ``on_load_failure`` hears a model or store that
    could not be loaded (the CLI stops the server then)."""
    service = EmbeddingService(served, config or ServiceConfig(), on_load_failure=on_load_failure)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        loading = asyncio.create_task(run_in_threadpool(service.warm_up))
        try:
            yield
        finally:
            await asyncio.shield(loading)  # a thread cannot be stopped: let the load finish first
            await run_in_threadpool(service.close)

    app = FastAPI(
        title="embedtune",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.service = service
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=service.config.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=service.metrics)  # outermost: counts the 413s too
    app.include_router(_routes())
    return app


def _service(request: Request) -> EmbeddingService:
    return request.app.state.service


def authenticate(request: Request) -> str:
    """The name of the key the request carries (``anonymous`` when the server has none); 401 else."""
    return _service(request).keys.identify(request.headers.get("authorization"))


Key = Annotated[str, Depends(authenticate)]


def ready(request: Request, key: Key) -> EmbeddingService:
    """The service, once its key is checked and it is ready (503 before)."""
    service = _service(request)
    service.require_ready()
    return service


Ready = Annotated[EmbeddingService, Depends(ready)]


def json_body(model: type[M]) -> Callable[..., object]:
    """A dependency parsing the body as ``model``, only after the key and readiness are checked."""

    async def parse(request: Request, service: Ready) -> M:
        raw = await request.body()
        if len(raw) > _PARSE_INLINE:  # a large body is parsed in a thread: the event loop stays free
            return await run_in_threadpool(_parse, model, raw)
        return _parse(model, raw)

    return parse


_PARSE_INLINE = 64 * 1024


def _parse(model: type[M], raw: bytes) -> M:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


def _routes() -> APIRouter:
    router = APIRouter()

    @router.post("/v1/embeddings")
    async def embeddings(
        key: Key, service: Ready, body: Annotated[EmbeddingRequest, Depends(json_body(EmbeddingRequest))]
    ) -> Response:
        return _json(await service.embeddings(body, key))

    @router.post("/v1/search")
    async def search(
        key: Key, service: Ready, body: Annotated[SearchRequest, Depends(json_body(SearchRequest))]
    ) -> Response:
        return _json(await service.search(body, key))

    @router.get("/v1/models")
    async def models(key: Key, service: Ready) -> ModelList:
        return service.models()

    @router.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        status, body = _service(request).health()
        return JSONResponse(body, status_code=status)

    @router.get("/metrics")
    async def metrics(request: Request) -> Response:
        return Response(_service(request).metrics.render(), media_type=CONTENT_TYPE)

    return router
