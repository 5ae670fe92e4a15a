"""``embedtune serve``: the library's embedding stack and a store's search behind HTTP.

An OpenAI-compatible ``POST /v1/embeddings`` (any OpenAI client works against it; token-id
inputs are cl100k_base ids), ``POST /v1/search`` over a built store, ``GET /v1/models``,
``GET /healthz`` and ``GET /metrics``; texts from concurrent requests share model batches;
bearer keys with per-key budgets; every error in OpenAI's shape. Needs the ``serve`` extra
(FastAPI and uvicorn).

    from embedtune.factory import EmbedderSpec, build_embedder
    from embedtune.service import Served, ServiceConfig, create_app

    app = create_app(Served(embedder=build_embedder(EmbedderSpec(model="fake:hash-256"))), ServiceConfig())

Modules, one concept each: ``app`` (the FastAPI app, its lifespan and routes), ``core`` (the
work behind the routes), ``batcher`` (micro-batching), ``keys`` (keys and budgets), ``limits``
(the body limit), ``metrics``, ``schemas`` (request and response bodies), ``embeddings`` (input
decoding, dims, response encoding), ``errors`` (the one error mapping), ``resources`` (what is
served), ``server`` (uvicorn).
"""

from .app import create_app
from .config import ServiceConfig
from .resources import Served, load_served

__all__ = ["Served", "ServiceConfig", "create_app", "load_served"]
