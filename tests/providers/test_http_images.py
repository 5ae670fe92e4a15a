"""Images to an OpenAI-compatible server as base64 data URLs: the fault server on loopback, faults on."""

import io
import sqlite3

import numpy as np
import pytest
from PIL import Image as PIL

from _clip import png
from embedtune.embedder import embed_images
from embedtune.engine import CountingEmbedder, close_stack
from embedtune.engine.http import RetryPolicy
from embedtune.errors import ConfigError, InputError, InvalidInputError
from embedtune.factory import EmbedderSpec, build_embedder, open_provider
from embedtune.images import Image, ImageLimits
from embedtune.providers.fake import HashEmbedder
from embedtune.testing.fault_server import FaultConfig, FaultServer, image_input_key

FAST_RETRIES = RetryPolicy(max_attempts=30, base_delay=0.005, max_delay=0.1)


def _images(n: int) -> list[Image]:
    return [Image(png(8 + i % 5, 6 + i % 3, seed=i, fmt="PNG" if i % 2 else "JPEG"), name=f"i{i}") for i in range(n)]


def test_images_round_trip_through_faults_nothing_lost_or_duplicated(tmp_path):
    faults = FaultConfig(
        seed=3,
        rate_429=0.08,
        rate_500=0.06,
        rate_drop=0.06,
        rate_malformed=0.05,
        rate_wrong_rows=0.05,
        rate_nan=0.05,
        retry_after_s=0.01,
        shuffle_rows=True,
    )
    images = _images(300)
    with FaultServer(faults) as server:
        spec = EmbedderSpec(
            model="openai:clip-server", base_url=f"{server.url}/v1", images=True, dims=64, max_batch=16, concurrency=4
        )
        provider = open_provider(spec)
        provider.retry = FAST_RETRIES
        counted = CountingEmbedder(provider)
        stack = build_embedder(spec, cache=tmp_path / "cache.sqlite", provider=counted)
        vectors = embed_images(stack, images)
        stats = server.stats
        calls = counted.calls
        again = embed_images(stack, images[::-1], "query")
        close_stack(stack)

    expected = HashEmbedder(dim=64).embed([image_input_key(image.data) for image in images])
    np.testing.assert_array_equal(vectors, expected)  # every image, in order
    np.testing.assert_array_equal(again, vectors[::-1])
    assert counted.calls == calls  # the rerun came from the cache
    assert set(counted.images.values()) == {1} and len(counted.images) == len(images)  # each asked once
    # the server saw every image (some more than once: a batch with a broken row is asked again)
    assert set(stats.inputs_served) == {image_input_key(image.data) for image in images}
    with sqlite3.connect(tmp_path / "cache.sqlite") as db:
        assert db.execute("SELECT count(*) FROM vectors").fetchone()[0] == len(images)
    assert sum(stats.faults.values()) > 10 and provider.retries > 10


def test_an_image_over_the_limit_is_sent_downscaled(tmp_path):
    big = Image(png(300, 30, seed=1), name="big.png")
    with FaultServer() as server:
        provider = open_provider(
            EmbedderSpec(model="openai:clip-server", base_url=f"{server.url}/v1", images=True, dims=64)
        )
        provider.image_limits = ImageLimits(max_side=100)
        provider.embed_images([big])
        served = set(server.stats.inputs_served)
        provider.close()
    assert image_input_key(big.data) not in served and len(served) == 1
    assert provider.image_stats.downscaled == ["big.png: 300x30 downscaled to 100x10"]


def test_the_server_rejecting_an_image_names_it(tmp_path):
    with FaultServer() as server:
        spec = EmbedderSpec(model="openai:clip-server", base_url=f"{server.url}/v1", images=True, dims=64, max_batch=8)
        provider = open_provider(spec)
        stack = build_embedder(spec, provider=provider)
        # a file Pillow reads but the server's sniffing does not know: an ICO
        buffer = io.BytesIO()
        PIL.new("RGB", (8, 8)).save(buffer, format="ICO")
        given = [*_images(5), Image(buffer.getvalue(), name="icon.ico"), *_images(2)]
        with pytest.raises(InvalidInputError, match="input 5 was rejected by the server: input.* is not a valid image"):
            embed_images(stack, given)
        close_stack(stack)


def test_a_text_only_server_model_refuses_images_in_one_line():
    with FaultServer(FaultConfig(images=False)) as server:
        provider = open_provider(EmbedderSpec(model="openai:text-model", base_url=f"{server.url}/v1"))
        with pytest.raises(InputError, match="takes text only, not images"):
            embed_images(provider, _images(1))
        provider.close()
    with pytest.raises(ConfigError, match="takes text only"):
        open_provider(EmbedderSpec(model="ollama:nomic-embed-text", images=True))
