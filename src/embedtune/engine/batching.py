"""The batching wrapper: an Embedder that feeds another in bounded batches.

Batches are bounded by a count and by a token budget (the sum of the texts' token counts). Texts
are sorted by length first when the model pads each batch to its longest text (local models), so
similar lengths share a batch; rows come back in input order either way.

Images (``embed_images``) are batched by count and by decoded pixels (``max_batch_pixels``), each
image's pixels read from its header and capped by the provider's downscaling limit, so a folder of
large scans is never decoded all at once. Image batches keep input order (no sorting).

Batching never changes a text; what happens to texts over the model's limit is the business of
``LengthPolicy`` (``engine/limits.py``), which sits outside the cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np

from ..embedder import Embedder, Kind, check_kind, embed_batches, embed_images, empty_vectors, image_fingerprint
from ..errors import InvalidInputError
from ..images import Image, ImageLimits
from .wrapper import Wrapper

__all__ = ["BatchStats", "BatchingEmbedder", "plan_batches"]


@dataclass
class BatchStats:
    """Running totals of what the wrapper did; read them after a call for a report."""

    texts: int = 0
    tokens: int = 0
    batches: int = 0
    seconds: float = 0.0  # wall time inside embed: on a cluster, the jobs (actor start-up included)
    images: int = 0
    pixels: int = 0  # decoded pixels of the images, after downscaling


def plan_batches(lengths: Sequence[int], *, max_batch: int, max_tokens: int, sort: bool) -> list[list[int]]:
    """Group indices into batches of at most ``max_batch`` texts and ``max_tokens`` tokens.

    A single text over the token budget gets a batch of its own. With ``sort``, indices are taken
    longest first, so each batch holds texts of similar length.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort else list(range(len(lengths)))
    batches: list[list[int]] = []
    current: list[int] = []
    budget = 0
    for i in order:
        if current and (len(current) >= max_batch or budget + lengths[i] > max_tokens):
            batches.append(current)
            current, budget = [], 0
        current.append(i)
        budget += lengths[i]
    if current:
        batches.append(current)
    return batches


class BatchingEmbedder(Wrapper):
    """Feeds ``inner`` in batches bounded by count and tokens; rows return in input order.

    With ``concurrency`` above 1, that many batches are in flight at once (for HTTP providers;
    a local model already uses every core for one batch). ``on_progress(n)`` is called from the
    calling thread after each batch with the number of texts it embedded.
    """

    def __init__(
        self,
        inner: Embedder,
        *,
        max_batch: int = 32,
        max_batch_tokens: int = 16_384,
        sort_by_length: bool = True,
        concurrency: int = 1,
        on_progress: Callable[[int], None] | None = None,
        max_batch_pixels: int = 32 * 2**20,
    ) -> None:
        if max_batch < 1 or max_batch_tokens < 1 or concurrency < 1 or max_batch_pixels < 1:
            raise ValueError("max_batch, max_batch_tokens, max_batch_pixels and concurrency must be at least 1")
        super().__init__(inner)
        self.max_batch = max_batch
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_pixels = max_batch_pixels
        self.sort_by_length = sort_by_length
        self.concurrency = concurrency
        self.on_progress = on_progress
        self.stats = BatchStats()

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        check_kind(kind)
        if not texts:
            return empty_vectors(self.dim)
        # The model reads at most max_tokens of a text, so that is what counts against the budget.
        started = time.perf_counter()
        lengths = [min(self.inner.count_tokens(t, kind), self.max_tokens) for t in texts]
        batches = plan_batches(
            lengths, max_batch=self.max_batch, max_tokens=self.max_batch_tokens, sort=self.sort_by_length
        )
        out = self._run(
            batches,
            lambda part: self.inner.embed([texts[i] for i in part], kind),
            len(texts),
            lambda parts: embed_batches(self.inner, ([texts[i] for i in part] for part in parts), kind),
        )
        self.stats.tokens += sum(lengths)
        self.stats.texts += len(texts)
        self.stats.seconds += time.perf_counter() - started
        return out

    def embed_images(self, images: Sequence[Image], kind: Kind = "document") -> np.ndarray:
        check_kind(kind)
        image_fingerprint(self.inner, kind)  # a text-only model fails here, before any image is read
        if not images:
            return empty_vectors(self.dim)
        limits = getattr(self.inner, "image_limits", None) or ImageLimits()
        pixels = [limits.decoded_pixels(image.size) for image in images]
        batches = plan_batches(pixels, max_batch=self.max_batch, max_tokens=self.max_batch_pixels, sort=False)
        out = self._run(batches, lambda part: embed_images(self.inner, [images[i] for i in part], kind), len(images))
        self.stats.images += len(images)
        self.stats.pixels += sum(pixels)
        return out

    def _run(
        self,
        batches: list[list[int]],
        embed: Callable[[list[int]], np.ndarray],
        n: int,
        stream: Callable[[list[list[int]]], Iterator[np.ndarray]] | None = None,
    ) -> np.ndarray:
        """Embed each batch of indices (several at once with ``concurrency``) into rows in input order.

        ``stream``, when given, embeds the batches one after the other as one stream (so a local
        engine tokenises the next batch while it runs this one); it serves ``concurrency`` 1."""
        out = np.empty((n, self.dim), dtype=np.float32)

        def check(batch: list[int], vectors: np.ndarray) -> np.ndarray:
            if vectors.shape != (len(batch), self.dim):
                raise ValueError(f"{self.inner.name} returned {vectors.shape} for a batch of {len(batch)}")
            return vectors

        def run(batch: list[int]) -> np.ndarray:
            try:
                return check(batch, embed(batch))
            except InvalidInputError as exc:
                raise exc.with_index(batch[exc.index]) from None

        def done(batch: list[int], vectors: np.ndarray) -> None:
            out[batch] = vectors
            self.stats.batches += 1
            if self.on_progress:
                self.on_progress(len(batch))

        if stream is not None and self.concurrency == 1 and len(batches) > 1:
            vectors = stream(batches)
            try:
                for batch in batches:
                    try:
                        done(batch, check(batch, next(vectors)))
                    except InvalidInputError as exc:
                        raise exc.with_index(batch[exc.index]) from None
            finally:
                getattr(vectors, "close", lambda: None)()  # a stream stopped early stops its tokeniser thread
        elif self.concurrency == 1 or len(batches) == 1:
            for batch in batches:
                done(batch, run(batch))
        else:
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="embedtune-batch") as pool:
                futures = {pool.submit(run, batch): batch for batch in batches}
                try:
                    for future in as_completed(futures):
                        done(futures[future], future.result())
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
        return out
