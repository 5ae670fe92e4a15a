"""1,000 random requests: no 5xx, the server stays up, and the key is in no log line.

Bodies and headers come from a seeded generator (the same 1,000 requests on every run): valid
requests and near misses, random JSON of every type and depth, broken JSON and bytes, keys right
and wrong, random methods, paths and content types; and a few requests that are not even HTTP.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import string
from urllib.parse import urlsplit

import httpx
from _serving import KEY, fake_server

from embedtune.service import ServiceConfig

SEED = 20240611
REQUESTS = 1000
MODEL = "fake:hash-256"


def random_scalar(rng: random.Random):
    return rng.choice(
        [
            None,
            True,
            False,
            rng.randint(-(2**70), 2**70),
            rng.randint(-5, 100_300),
            rng.uniform(-1e308, 1e308),
            float("nan"),
            "",
            "".join(rng.choice(string.printable) for _ in range(rng.randint(1, 40))),
            "".join(chr(rng.randint(0x20, 0x2FFFF)) for _ in range(rng.randint(1, 20))),
            "\ud800",
            KEY,  # a key in a body is just text; it must still never be logged
        ]
    )


def random_json(rng: random.Random, depth: int = 0):
    roll = rng.random()
    if depth > 4 or roll < 0.5:
        return random_scalar(rng)
    if roll < 0.75:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 6))]
    keys = ["input", "model", "dimensions", "encoding_format", "query", "k", "filter", "user", "input_type", "x"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def near_miss(rng: random.Random) -> dict:
    """A valid request with zero to two fields replaced by something random."""
    body = {
        "model": rng.choice([MODEL, "hash-256", "text-embedding-3-small"]),
        "input": rng.choice(
            [
                "hello world",
                ["a", "b c", "déjà vu 🚀"],
                [15339, 1917],
                [[15339], [1917, 0]],
                ["word " * rng.randint(1, 700)],
                [],
                [[]],
            ]
        ),
    }
    for name, choices in (
        ("dimensions", [None, 1, 64, 256, 257, 0, -3, 2.5, "64"]),
        ("encoding_format", ["float", "base64", "binary", 1]),
        ("input_type", ["query", "document", "passage"]),
        ("user", ["someone", 3]),
    ):
        if rng.random() < 0.3:
            body[name] = rng.choice(choices)
    for _ in range(rng.choice([0, 0, 0, 1, 2])):
        body[rng.choice(["model", "input", "dimensions", "encoding_format", "extra"])] = random_json(rng)
    return body


def random_body(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.45:
        return json.dumps(near_miss(rng), allow_nan=True).encode()
    if kind < 0.7:
        return json.dumps(random_json(rng), allow_nan=True).encode("utf-8", "surrogatepass")
    if kind < 0.8:
        return json.dumps(near_miss(rng)).encode()[: rng.randint(0, 40)]
    if kind < 0.9:
        return bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 200)))
    if kind < 0.97:
        return ("[" * rng.randint(100, 5000)).encode()  # deep nesting
    return b'{"input": "' + b"x" * rng.randint(60_000, 200_000) + b'"}'  # around the body limit


def random_headers(rng: random.Random) -> dict[str, str]:
    headers = {}
    auth = rng.choice(
        [
            None,
            f"Bearer {KEY}",
            f"Bearer {KEY}",
            f"Bearer {KEY}",
            f"bearer   {KEY}",
            f"Bearer {KEY[:-1]}",
            f"Bearer {KEY}{KEY}",
            f"Basic {KEY}",
            KEY,
            "Bearer " + "".join(rng.choice(string.ascii_letters) for _ in range(rng.randint(0, 300))),
            "".join(rng.choice(string.printable.strip()) for _ in range(rng.randint(0, 60))),
        ]
    )
    if auth is not None and auth.strip():
        headers["Authorization"] = auth.strip()
    content_type = rng.choice([None, "application/json", "text/plain", "application/json; charset=latin-1", "x/y"])
    if content_type:
        headers["Content-Type"] = content_type
    for _ in range(rng.randint(0, 3)):
        name = "X-" + "".join(rng.choice(string.ascii_letters) for _ in range(rng.randint(1, 12)))
        headers[name] = (
            "".join(rng.choice(string.ascii_letters + string.digits + " -_/") for _ in range(20)).strip() or "x"
        )
    return headers


def valid_request(rng: random.Random) -> tuple[str, str, dict[str, str], bytes]:
    texts = ["".join(rng.choice(string.ascii_letters + " ") for _ in range(rng.randint(1, 80))) for _ in range(3)]
    body = {"model": MODEL, "input": texts[: rng.randint(1, 3)], "encoding_format": rng.choice(["float", "base64"])}
    return "POST", "/v1/embeddings", {"Authorization": f"Bearer {KEY}"}, json.dumps(body).encode()


def random_request(rng: random.Random) -> tuple[str, str, dict[str, str], bytes]:
    if rng.random() < 0.1:
        return valid_request(rng)
    method = rng.choice(["POST"] * 14 + ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
    path = rng.choice(
        ["/v1/embeddings"] * 12
        + ["/v1/search", "/v1/models", "/healthz", "/metrics", "/", "/v1/embeddings/", "/v1/%00", "/v1/embeddings?x=1"]
        + ["/" + "".join(rng.choice(string.ascii_letters + "/.%") for _ in range(rng.randint(1, 30)))]
    )
    return method, path, random_headers(rng), random_body(rng)


def raw_exchange(url: str, data: bytes) -> bytes:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(data)
        try:
            return sock.recv(200)
        except TimeoutError:
            return b""


NOT_HTTP = [
    b"GARBAGE\r\n\r\n",
    b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello
]


def test_a_thousand_random_requests_leave_the_server_up_with_no_5xx_and_no_key_in_the_logs(caplog):
    caplog.set_level(logging.DEBUG)
    for client_side in ("httpx", "httpcore"):  # this test's own client: not the server's log
        caplog.set_level(logging.WARNING, logger=client_side)
    rng = random.Random(SEED)
    config = ServiceConfig(keys=(KEY,), max_inputs=64, max_body_bytes=64 << 10)
    statuses: dict[int, int] = {}
    with fake_server(config, access_log=True, max_tokens=512) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(REQUESTS):
                method, path, headers, body = random_request(rng)
                content = None if method in ("GET", "HEAD") and rng.random() < 0.5 else body
                response = client.request(method, path, headers=headers, content=content)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        raw = [raw_exchange(server.url, data) for data in NOT_HTTP]
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert httpx.post(
            f"{server.url}/v1/embeddings",
            json={"model": MODEL, "input": "still here"},
            headers={"Authorization": f"Bearer {KEY}"},
        ).is_success
    assert sum(statuses.values()) == REQUESTS
    assert not [s for s in statuses if s >= 500], statuses
    assert statuses.get(200, 0) >= 50 and statuses.get(401, 0) >= 50 and statuses.get(400, 0) >= 100, statuses
    assert statuses.get(413, 0) >= 3, statuses
    assert not [r for r in raw if r.startswith(b"HTTP/1.1 5")], raw
    records = caplog.records
    assert records, "the server logged nothing: the capture is not working"
    assert not [r for r in records if r.levelno >= logging.ERROR], [r.getMessage() for r in records[-5:]]
    for record in records:
        text = record.getMessage() + (caplog.handler.format(record) if record.exc_info else "")
        assert KEY not in text and KEY[:-1] not in text, record.getMessage()
