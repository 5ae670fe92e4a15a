"""Concurrent requests share batches and each gets its own rows; a client that leaves harms no one."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import numpy as np
from _serving import KEY, GatedEmbedder, auth, fake_server, fake_stack

from embedtune.service import ServiceConfig

MODEL = "fake:hash-256"


def batches_and_texts(metrics: str) -> tuple[int, int]:
    batches = int(re.search(r"^embedtune_batch_texts_count (\d+)$", metrics, re.M).group(1))
    texts = int(re.search(r"^embedtune_texts_total (\d+)$", metrics, re.M).group(1))
    return batches, texts


def test_concurrent_requests_share_batches_and_each_gets_its_own_rows():
    stack = fake_stack()
    config = ServiceConfig(keys=(KEY,), max_wait_ms=20)
    with fake_server(config, embedder=stack) as server:
        jobs = [[f"request {i} text {j} " + "pad " * ((i + j) % 9) for j in range(1 + i % 5)] for i in range(64)]

        async def send_all():
            async with httpx.AsyncClient(base_url=server.url, headers=auth(), timeout=30) as client:
                return await asyncio.gather(
                    *(client.post("/v1/embeddings", json={"model": MODEL, "input": texts}) for texts in jobs)
                )

        before = batches_and_texts(httpx.get(f"{server.url}/metrics").text)
        responses = asyncio.run(send_all())
        after = batches_and_texts(httpx.get(f"{server.url}/metrics").text)
    for texts, response in zip(jobs, responses):
        assert response.status_code == 200, response.text
        rows = sorted(response.json()["data"], key=lambda row: row["index"])
        np.testing.assert_array_equal(
            np.array([row["embedding"] for row in rows], dtype=np.float32), stack.embed(texts)
        )
    batches, texts = after[0] - before[0], after[1] - before[1]
    assert texts == sum(map(len, jobs))
    assert batches < len(jobs) / 2, f"{batches} batches for {len(jobs)} requests: texts were not shared"


def send_and_leave(url: str, body: dict) -> None:
    """Send a whole request on a raw socket and close it without reading the answer."""
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1/embeddings HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(head + payload)
        time.sleep(0.2)  # long enough for the server to queue it


def test_a_client_that_disconnects_does_not_disturb_the_batch_it_shared():
    stack = fake_stack()
    gated = GatedEmbedder(stack, open_after=1)  # the warm-up passes; then every batch waits for the gate
    config = ServiceConfig(keys=(KEY,), max_wait_ms=200)
    with fake_server(config, embedder=gated) as server:
        results: dict[int, httpx.Response] = {}

        def stay(i: int) -> None:
            body = {"model": MODEL, "input": [f"patient client {i}", f"second text {i}"]}
            results[i] = httpx.post(f"{server.url}/v1/embeddings", json=body, headers=auth(), timeout=30)

        threads = [threading.Thread(target=stay, args=(i,)) for i in range(6)]
        for thread in threads[:3]:
            thread.start()
        send_and_leave(server.url, {"model": MODEL, "input": ["a client that leaves", "mid batch"]})
        for thread in threads[3:]:
            thread.start()
        assert gated.entered.wait(10)
        time.sleep(0.2)
        send_and_leave(server.url, {"model": MODEL, "input": ["a client that leaves while queued"]})
        gated.gate.set()
        for thread in threads:
            thread.join(30)
        for i, response in results.items():
            assert response.status_code == 200, response.text
            rows = np.array([row["embedding"] for row in response.json()["data"]], dtype=np.float32)
            np.testing.assert_array_equal(rows, stack.embed([f"patient client {i}", f"second text {i}"]))
        assert len(results) == 6
        shared = [call for call in gated.calls[1:] if "a client that leaves" in call]
        assert shared and any(text.startswith("patient") for text in shared[0]), "it shared a batch"
        after = httpx.post(f"{server.url}/v1/embeddings", json={"model": MODEL, "input": "still up"}, headers=auth())
        assert after.status_code == 200
        assert httpx.get(f"{server.url}/healthz").status_code == 200
