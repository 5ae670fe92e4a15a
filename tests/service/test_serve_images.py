"""``/v1/embeddings`` with image inputs (base64 data URLs) for a model that takes images."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from _serving import KEY, auth, cosines, fake_server, running

from _clip import png
from embedtune.embedder import embed_images
from embedtune.engine import close_stack
from embedtune.factory import EmbedderSpec, build_embedder
from embedtune.images import Image
from embedtune.service import Served, ServiceConfig, create_app


@pytest.fixture(scope="module")
def clip_stack(tiny_clip):
    return build_embedder(EmbedderSpec(model=f"local:{tiny_clip}"))


@pytest.fixture(scope="module")
def clip_server(clip_stack):
    with running(create_app(Served(embedder=clip_stack), ServiceConfig(keys=(KEY,)))) as server:
        yield server


def test_mixed_texts_and_images_come_back_in_order(clip_server, clip_stack):
    images = [Image(png(30 + i, 20, seed=i)) for i in range(3)]
    given = ["a cat", images[0].data_url(), images[1].data_url(), "blue", images[2].data_url()]
    body = {"model": clip_stack.name, "input": given}
    answer = httpx.post(f"{clip_server.url}/v1/embeddings", json=body, headers=auth(), timeout=60)
    assert answer.status_code == 200, answer.text
    got = np.array([row["embedding"] for row in answer.json()["data"]], dtype=np.float32)
    want = np.empty_like(got)
    want[[0, 3]] = clip_stack.embed(["a cat", "blue"])
    want[[1, 2, 4]] = embed_images(clip_stack, images)
    assert cosines(got, want).min() >= 0.99999


def test_embedtunes_openai_provider_round_trips_images(clip_server, clip_stack, monkeypatch):
    monkeypatch.setenv("EMBEDTUNE_TEST_KEY", KEY)
    spec = EmbedderSpec(
        model=f"openai:{clip_stack.name}",
        base_url=f"{clip_server.url}/v1",
        api_key_env="EMBEDTUNE_TEST_KEY",
        images=True,
        dims=16,
        max_batch=2,
    )
    remote = build_embedder(spec)
    images = [Image(png(25, 25 + i, seed=10 + i)) for i in range(5)]
    try:
        got = embed_images(remote, images)
    finally:
        close_stack(remote)
    assert cosines(got, embed_images(clip_stack, images)).min() >= 0.99999


def test_a_broken_image_is_a_400_naming_it(clip_server, clip_stack):
    broken = Image(png(30, 30, seed=1)[:120]).data_url()
    body = {"model": clip_stack.name, "input": ["fine", broken]}
    answer = httpx.post(f"{clip_server.url}/v1/embeddings", json=body, headers=auth(), timeout=60)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == "input[1]" and "cannot decode the image" in error["message"]


def test_a_text_only_model_answers_400_for_an_image():
    with fake_server() as server:
        body = {"model": "fake:hash-256", "input": ["text", Image(png(8, 8, seed=0)).data_url()]}
        answer = httpx.post(f"{server.url}/v1/embeddings", json=body, headers=auth(), timeout=30)
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "input[1] is an image, but fake:hash-256 takes text only"
