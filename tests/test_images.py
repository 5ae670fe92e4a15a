"""The image path through a tiny random CLIP: vectors, order, batching by pixels, the cache, limits."""

from __future__ import annotations

import io

import numpy as np
import pytest

from _clip import png
from embedtune.embedder import embed_images, takes_images
from embedtune.engine import BatchingEmbedder, CachingEmbedder, CountingEmbedder, find_layer
from embedtune.errors import InputError
from embedtune.factory import EmbedderSpec, build_embedder, open_provider
from embedtune.images import Image, ImageLimits


@pytest.fixture(scope="module")
def clip_provider(tiny_clip):
    return open_provider(EmbedderSpec(model=f"local:{tiny_clip}"))


@pytest.fixture(scope="module")
def st_model(tiny_clip):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_clip), device="cpu", local_files_only=True)


def _images() -> list[Image]:
    sizes = [(40, 30), (64, 64), (33, 90), (120, 20), (32, 32)]
    made = [Image(png(w, h, seed=i), name=f"img{i}.png") for i, (w, h) in enumerate(sizes)]
    made.append(Image(png(50, 20, seed=9, fmt="JPEG", exif_orientation=6), name="rotated.jpg"))
    return made


def _reference(st_model, inputs: list) -> np.ndarray:
    vectors = st_model.encode(inputs, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


def _upright_rgb(image: Image):
    from PIL import Image as PIL
    from PIL import ImageOps

    return ImageOps.exif_transpose(PIL.open(io.BytesIO(image.data))).convert("RGB")


def test_a_clip_folder_takes_text_and_images(clip_provider):
    assert clip_provider.modalities == ("text", "image")
    assert clip_provider.dim == 16
    assert takes_images(build_embedder(EmbedderSpec(model=clip_provider.name), provider=clip_provider))


def test_vectors_through_batcher_and_cache_equal_sentence_transformers(clip_provider, st_model, tmp_path):
    images = _images()
    texts = ["a red square", "noise", "a photo of a cat", "blue"]
    counting = CountingEmbedder(clip_provider)
    spec = EmbedderSpec(model=clip_provider.name, max_batch=2, max_batch_pixels=5000)
    stack = build_embedder(spec, cache=tmp_path / "cache.sqlite", provider=counting)
    order = [3, 0, 5, 1, 4, 2, 0]  # shuffled, with a repeat
    given = [images[i] for i in order]

    got_images = embed_images(stack, given, "document")
    got_texts = stack.embed(texts, "query")

    want_images = _reference(st_model, [_upright_rgb(images[i]) for i in order])
    want_texts = _reference(st_model, texts)
    assert np.min(np.sum(got_images * want_images, axis=1)) >= 0.99999
    assert np.min(np.sum(got_texts * want_texts, axis=1)) >= 0.99999
    # batches bounded by pixels: 6 distinct images, each alone or in pairs under 5,000 pixels
    batcher = find_layer(stack, BatchingEmbedder)
    assert batcher.stats.images == 6 and batcher.stats.batches >= 4
    assert sorted(counting.images.values()) == [1] * 6  # the repeat embedded once

    calls = counting.calls
    again = embed_images(stack, list(reversed(given)), "query")  # images have no prefix: one row per bytes
    assert counting.calls == calls, "a cached rerun must make no model call"
    np.testing.assert_array_equal(again, got_images[::-1])
    assert find_layer(stack, CachingEmbedder).stats.hits >= len(given)


def test_the_cache_keys_images_on_their_bytes(clip_provider, tmp_path):
    from PIL import Image as PIL

    pixels = PIL.open(io.BytesIO(png(40, 40, seed=3)))
    copies = []
    for level in (1, 9):  # the same pixels, encoded twice: other bytes
        buffer = io.BytesIO()
        pixels.save(buffer, format="PNG", compress_level=level)
        copies.append(Image(buffer.getvalue(), name=f"level{level}.png"))
    assert copies[0].data != copies[1].data
    counting = CountingEmbedder(clip_provider)
    stack = build_embedder(EmbedderSpec(model=clip_provider.name), cache=tmp_path / "c.sqlite", provider=counting)
    vectors = embed_images(stack, [copies[0], copies[1], Image(copies[0].data, name="same-bytes.png")])
    assert sum(counting.images.values()) == 2  # equal bytes are one row; re-encoded bytes another
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)  # lossless: the same pixels
    assert len(find_layer(stack, CachingEmbedder)) == 2


def test_exif_orientation_is_applied():
    image = Image(png(50, 20, seed=1, fmt="JPEG", exif_orientation=6), name="r.jpg")
    assert image.size == (50, 20)
    assert image.decode().size == (20, 50)


def test_large_images_are_downscaled_counted_and_named(tiny_clip, st_model):
    provider = open_provider(EmbedderSpec(model=f"local:{tiny_clip}"))
    provider.image_limits = ImageLimits(max_side=256)
    wide = Image(png(2000, 40, seed=4), name="wide.png")
    small = Image(png(40, 40, seed=5), name="small.png")
    vectors = provider.embed_images([wide, small])
    assert vectors.shape == (2, 16) and np.isfinite(vectors).all()
    assert provider.image_stats.decoded == 2
    assert provider.image_stats.downscaled == ["wide.png: 2000x40 downscaled to 256x5"]
    assert "max_side=256" in provider.image_fingerprint()
    jpeg = Image(png(3000, 200, seed=6, fmt="JPEG"), name="scan.jpg")  # JPEG's draft mode shrinks it first
    assert jpeg.decode(ImageLimits(max_side=256), provider.image_stats).size == (256, 17)
    assert provider.image_stats.downscaled[-1] == "scan.jpg: 3000x200 downscaled to 256x17"


def _corrupt(data: bytes) -> bytes:
    """The file with its middle overwritten: the header is fine, the pixels are not."""
    middle = len(data) // 2
    return data[:middle] + b"\xff" * 64 + data[middle + 64 :]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "zero bytes"),
        (b"hello, this is text", "not an image"),
        (png(40, 40, seed=1)[:200], "cannot decode"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "not an image"),
        (_corrupt(png(40, 40, seed=1)), "cannot decode"),
    ],
)
def test_broken_images_fail_in_one_line_naming_them(data, reason):
    with pytest.raises(InputError, match=reason) as caught:
        Image(data, name="scans/bad.png").check()
    message = str(caught.value)
    assert message.startswith("scans/bad.png: ") and "\n" not in message


def test_an_image_too_large_to_decode_is_refused_from_its_header():
    image = Image(png(300, 10, seed=2), name="huge.png")
    with pytest.raises(InputError, match=r"huge.png: 300x10 pixels is over the 1,000"):
        image.decode(ImageLimits(refuse_pixels=1000))


def test_a_text_only_model_refuses_images_in_one_line(fake, tmp_path):
    stack = build_embedder(EmbedderSpec(model="fake:hash-256"), cache=tmp_path / "c.sqlite", provider=fake)
    assert not takes_images(stack)
    with pytest.raises(InputError, match="takes text only, not images") as caught:
        embed_images(stack, [Image(png(8, 8, seed=0), name="a.png")])
    assert "\n" not in str(caught.value)


def test_data_urls_round_trip():
    image = Image(png(8, 8, seed=0), name="a.png")
    url = image.data_url()
    assert url.startswith("data:image/png;base64,")
    assert Image.from_data_url(url) == image
    with pytest.raises(InputError, match="not a data URL"):
        Image.from_data_url("https://example.com/a.png")


def test_the_catalogue_says_which_models_take_images():
    from embedtune.catalogue import lookup_card

    assert lookup_card("local:clip-ViT-B-32").modalities == ("text", "image")
    assert lookup_card("local:all-MiniLM-L6-v2").modalities == ("text",)
    assert lookup_card("openai:text-embedding-3-small").modalities == ("text",)
