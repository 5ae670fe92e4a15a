"""Readiness, load failures, graceful shutdown, and the metrics page."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

import httpx
import numpy as np
import pytest
from _serving import KEY, GatedEmbedder, auth, fake_stack, running

from embedtune.embedder import Kind
from embedtune.engine.wrapper import Wrapper
from embedtune.errors import ModelLoadError
from embedtune.factory import EmbedderSpec, build_embedder
from embedtune.service import Served, ServiceConfig, create_app

MODEL = "fake:hash-256"
BODY = {"model": MODEL, "input": ["in flight", "at shutdown"]}


def test_healthz_is_503_until_the_model_is_loaded():
    gated = GatedEmbedder(fake_stack())  # the warm-up itself waits for the gate
    with running(create_app(Served(embedder=gated), ServiceConfig(keys=(KEY,))), ready=False) as server:
        assert gated.entered.wait(10)
        loading = httpx.get(f"{server.url}/healthz")
        assert (loading.status_code, loading.json()) == (503, {"status": "loading"})
        early = httpx.post(f"{server.url}/v1/embeddings", json=BODY, headers=auth())
        assert early.status_code == 503 and early.json()["error"]["code"] == "not_ready"
        assert early.headers["retry-after"] == "1"
        assert httpx.post(f"{server.url}/v1/embeddings", json=BODY).status_code == 401  # the key comes first
        gated.gate.set()
        server.wait_ready(10)
        assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok", "model": MODEL, "store": None}
        assert httpx.post(f"{server.url}/v1/embeddings", json=BODY, headers=auth()).status_code == 200


def test_a_model_that_cannot_load_keeps_healthz_at_503_and_is_reported():
    class Unloadable(Wrapper):
        def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
            raise ModelLoadError("no weights for local:missing on this machine")

    heard: list[BaseException] = []
    app = create_app(Served(embedder=Unloadable(fake_stack())), ServiceConfig(), on_load_failure=heard.append)
    with running(app, ready=False) as server:
        for _ in range(200):
            if heard:
                break
            threading.Event().wait(0.02)
        health = httpx.get(f"{server.url}/healthz")
        assert health.status_code == 503
        assert health.json() == {
            "status": "failed",
            "error": "ModelLoadError: no weights for local:missing on this machine",
        }
        assert isinstance(heard[0], ModelLoadError)
        refused = httpx.post(f"{server.url}/v1/embeddings", json=BODY)
        assert refused.status_code == 503 and "could not load" in refused.json()["error"]["message"]


def test_shutdown_lets_the_request_in_flight_finish_then_closes_the_stack():
    stack = fake_stack()
    gated = GatedEmbedder(stack, open_after=1)
    with running(create_app(Served(embedder=gated), ServiceConfig(keys=(KEY,)))) as server:
        answer: list[httpx.Response] = []
        request = threading.Thread(
            target=lambda: answer.append(
                httpx.post(f"{server.url}/v1/embeddings", json=BODY, headers=auth(), timeout=30)
            )
        )
        request.start()
        assert gated.entered.wait(10)  # the request's batch is in the model
        server.server.should_exit = True  # what SIGTERM does
        threading.Event().wait(0.3)
        assert server.thread.is_alive(), "uvicorn waits for the request in flight"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/healthz", timeout=2)  # no new connections meanwhile
        gated.gate.set()
        request.join(30)
        server.thread.join(30)
    assert answer[0].status_code == 200
    rows = np.array([row["embedding"] for row in answer[0].json()["data"]], dtype=np.float32)
    np.testing.assert_array_equal(rows, stack.embed(BODY["input"]))
    assert gated.closed, "the lifespan closed the stack"
    assert server.service.stopping and not server.service.ready


def test_a_bug_is_a_500_in_openai_shape_with_its_traceback_logged_and_no_key(caplog):
    class Buggy(Wrapper):
        def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
            if "boom" in texts:
                raise RuntimeError("a bug in the embedder")
            return self.inner.embed(texts, kind)

    with running(create_app(Served(embedder=Buggy(fake_stack())), ServiceConfig(keys=(KEY,)))) as server:
        answer = httpx.post(f"{server.url}/v1/embeddings", json={"model": MODEL, "input": "boom"}, headers=auth())
        assert answer.status_code == 500
        assert answer.json() == {
            "error": {
                "message": "internal error; the server's log has the details",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
        assert httpx.post(f"{server.url}/v1/embeddings", json=BODY, headers=auth()).status_code == 200
    logged = [r for r in caplog.records if r.levelno >= 40]
    assert logged and any("a bug in the embedder" in caplog.handler.format(r) for r in logged)
    assert not any(KEY in caplog.handler.format(r) for r in caplog.records)


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, f"{name} not in the metrics"
    return float(found.group(1))


def test_metrics_are_prometheus_text_with_requests_batches_waits_latency_and_cache(tmp_path):
    stack = build_embedder(EmbedderSpec(model=MODEL), cache=tmp_path / "cache.sqlite")
    with running(create_app(Served(embedder=stack), ServiceConfig(keys=(KEY,)))) as server:
        with httpx.Client(base_url=server.url, headers=auth(), timeout=30) as client:
            for _ in range(3):
                assert client.post("/v1/embeddings", json={"model": MODEL, "input": ["same text"]}).status_code == 200
            assert client.post("/v1/embeddings", content=b"{").status_code == 400
            assert client.get("/nowhere/" + "x" * 50).status_code == 404
            page = client.get("/metrics")
    assert page.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = page.text
    line = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.e+-]+$|^# (HELP|TYPE) [a-z_]+ .+$')
    assert all(line.match(row) for row in text.splitlines()), [row for row in text.splitlines() if not line.match(row)]
    assert metric(text, 'embedtune_requests_total{route="/v1/embeddings",status="200"}') == 3
    assert metric(text, 'embedtune_requests_total{route="/v1/embeddings",status="400"}') == 1
    assert metric(text, 'embedtune_requests_total{route="unmatched",status="404"}') == 1
    assert metric(text, 'embedtune_request_duration_seconds_count{route="/v1/embeddings"}') == 4
    assert metric(text, 'embedtune_request_duration_seconds_bucket{route="/v1/embeddings",le="+Inf"}') == 4
    assert metric(text, "embedtune_batch_texts_count") == 4  # the warm-up and three requests
    assert metric(text, "embedtune_queue_wait_seconds_count") == 4
    assert metric(text, "embedtune_cache_hits_total") == 2 and metric(text, "embedtune_cache_misses_total") == 2
    assert metric(text, "embedtune_ready") == 1 and metric(text, "embedtune_queue_texts") == 0
    assert "# TYPE embedtune_request_duration_seconds histogram" in text
