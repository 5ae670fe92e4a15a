"""The HTTP providers against httpx.MockTransport: plumbing only; the real servers come elsewhere."""

import base64
import json

import httpx
import numpy as np
import pytest

from embedtune.engine import BatchingEmbedder, CachingEmbedder, LengthPolicy
from embedtune.engine.http import RetryPolicy
from embedtune.errors import AuthenticationError, InvalidInputError, ProviderError
from embedtune.providers.fake import HashEmbedder
from embedtune.providers.ollama import OllamaEmbedder
from embedtune.providers.openai import OpenAIEmbedder

SECRET = "sk-test-0123456789abcdef"
REFERENCE = HashEmbedder(dim=8)


def openai_handler(request, *, shuffle=True, b64=False, bad="<<BAD>>"):
    body = json.loads(request.content)
    if request.headers.get("authorization") != f"Bearer {SECRET}":
        return httpx.Response(401, json={"error": {"message": "Incorrect API key provided", "type": "auth"}})
    inputs = body["input"]
    for i, text in enumerate(inputs):
        if bad in text:
            return httpx.Response(400, json={"error": {"message": f"input[{i}] is invalid"}})
    vectors = REFERENCE.embed(inputs)
    rows = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if b64 else v.tolist(),
        }
        for i, v in enumerate(vectors)
    ]
    if shuffle:
        rows.reverse()
    return httpx.Response(200, json={"data": rows, "usage": {"prompt_tokens": 10 * len(inputs)}})


def make(handler, *, key=SECRET, price=0.02, cls=OpenAIEmbedder, **kwargs):
    client = httpx.Client(base_url="http://server.test/v1/", transport=httpx.MockTransport(handler), timeout=5)
    return cls(
        client=client,
        model="m",
        name="openai:m",
        dim=8,
        max_tokens=100,
        count=lambda t: len(t.split()) + 1,
        usd_per_million_tokens=price,
        headers={"Authorization": f"Bearer {key}"},
        retry=RetryPolicy(sleep=lambda s: None),
        **kwargs,
    )


def test_rows_are_put_in_index_order_and_usage_is_priced():
    provider = make(openai_handler)
    texts = ["alpha beta", "gamma", "delta epsilon zeta"]
    np.testing.assert_array_equal(provider.embed(texts), REFERENCE.embed(texts))
    assert provider.usage.requests == 1 and provider.usage.tokens == 30
    assert provider.usage.usd == pytest.approx(30 * 0.02 / 1e6)


def test_base64_answers_are_decoded():
    provider = make(lambda r: openai_handler(r, b64=True))
    np.testing.assert_array_equal(provider.embed(["a", "b"]), REFERENCE.embed(["a", "b"]))


def test_a_bad_input_is_found_by_bisection_and_named_in_the_users_numbering(tmp_path):
    calls = []

    def handler(request):
        calls.append(len(json.loads(request.content)["input"]))
        return openai_handler(request)

    stack = LengthPolicy(
        CachingEmbedder(BatchingEmbedder(make(handler), max_batch=16, sort_by_length=True), tmp_path / "c.sqlite")
    )
    texts = [f"text number {i} " + "pad " * (i % 5) for i in range(40)]
    texts[0] = texts[1]  # a duplicate: the cache sends it once, so indices shift inside
    texts[27] = "this one is <<BAD>> for the server"
    with pytest.raises(InvalidInputError, match=r"^input 27 was rejected by the server: input\[0\] is invalid$"):
        stack.embed(texts)
    assert max(calls) <= 16 and len(calls) < 40


def test_a_batch_rejected_as_a_whole_heals_by_halving():
    def handler(request):
        if len(json.loads(request.content)["input"]) > 4:
            return httpx.Response(400, json={"error": {"message": "too many inputs"}})
        return openai_handler(request, shuffle=False)

    texts = [f"t{i}" for i in range(10)]
    np.testing.assert_array_equal(make(handler).embed(texts), REFERENCE.embed(texts))


def test_wrong_key_is_one_line_without_the_key():
    provider = make(openai_handler, key="sk-wrong-secret-value")
    with pytest.raises(AuthenticationError) as info:
        provider.embed(["x"])
    assert "sk-wrong" not in str(info.value) and "\n" not in str(info.value)
    assert "refused the credentials (401" in str(info.value)


@pytest.mark.parametrize(
    "fault",
    [
        lambda: httpx.Response(200, content=b"{not json"),
        lambda: httpx.Response(200, json={"data": [], "usage": {}}),
        lambda: httpx.Response(200, content=b'{"data": [{"index": 0, "embedding": [NaN, 0, 0, 0, 0, 0, 0, 0]}]}'),
        lambda: httpx.Response(503, json={"error": {"message": "overloaded"}}),
        lambda: httpx.Response(429, headers={"retry-after": "0"}, json={"error": {"message": "slow down"}}),
    ],
)
def test_malformed_and_transient_answers_are_retried(fault):
    attempts = []

    def handler(request):
        attempts.append(1)
        return fault() if len(attempts) < 3 else openai_handler(request)

    provider = make(handler)
    np.testing.assert_array_equal(provider.embed(["one"]), REFERENCE.embed(["one"]))
    assert len(attempts) == 3 and provider.retries == 2


def test_connection_errors_are_retried_then_reported():
    def handler(request):
        raise httpx.ConnectError("refused")

    provider = make(handler)
    with pytest.raises(ProviderError, match=r"failed 8 times .* connection failed \(ConnectError\)"):
        provider.embed(["one"])


def test_ollama_payload_and_answer():
    seen = {}

    def handler(request):
        seen.update(json.loads(request.content))
        assert request.url.path == "/api/embed"
        return httpx.Response(
            200, json={"model": "m", "embeddings": REFERENCE.embed(seen["input"]).tolist(), "prompt_eval_count": 7}
        )

    client = httpx.Client(base_url="http://ollama.test/", transport=httpx.MockTransport(handler), timeout=5)
    provider = OllamaEmbedder(
        client=client,
        model="nomic-embed-text",
        name="ollama:nomic-embed-text",
        dim=8,
        max_tokens=100,
        count=lambda t: 1,
        query_prefix="search_query: ",
        document_prefix="search_document: ",
        keep_alive="10m",
    )
    vectors = provider.embed(["a b", "c"], "query")
    assert seen == {
        "model": "nomic-embed-text",
        "input": ["search_query: a b", "search_query: c"],
        "truncate": False,
        "keep_alive": "10m",
    }
    np.testing.assert_array_equal(vectors, REFERENCE.embed(["search_query: a b", "search_query: c"]))
    assert provider.usage.tokens == 7 and provider.fingerprint("query") != provider.fingerprint("document")
