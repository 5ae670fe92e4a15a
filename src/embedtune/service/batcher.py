"""Micro-batching: texts from concurrent requests share model batches.

Each request hands its texts to :meth:`MicroBatcher.submit` and gets a ``Future`` of its own
rows. One worker thread owns the embedding stack (length policy, cache, batching, provider): it
alone calls ``embed`` and, at the end, closes it (an SQLite cache must be used by the thread that
opened it). The event loop only waits on futures, so it stays free while the model runs.

How batches are formed:

- The worker waits until the texts waiting fill a batch (``max_texts`` texts or ``max_tokens``
  tokens) or the oldest has waited ``max_wait`` seconds, whichever comes first. Under load the
  model call takes longer than ``max_wait``, so texts are waiting and nobody waits for a batch.
- Then it takes the oldest waiting texts of one kind (document or query), up to ``lookahead``
  batches' worth, and cuts them into model batches. A model that pads each batch to its longest
  text (a local model) wastes most of a batch of mixed lengths on padding: on two CPU cores, 14
  mixed texts in one MiniLM call ran slower than 14 calls of one. So the texts are sorted by
  length and cut where padding and the per-call cost are least (:func:`plan_by_padding`);
  for a model that does not pad (an HTTP backend) everything taken goes to the stack at once,
  whose batcher splits it and sends the parts concurrently. Everything taken is embedded before
  the next texts are taken, so no text is passed over twice.
- A request's texts may be spread over several batches; its future completes when all its rows
  are in, each row in the request's own order.
- A request cancelled before its first text is taken (its client went away) is dropped; one
  already running completes with nobody to read it. Either way the others in its batch are
  served as if it had never been there.
- An error for a whole batch is every request's in it. An error that names one text
  (``InvalidInputError`` from a server, ``TextTooLongError`` from the length policy) fails only
  that text's request (with the index in its own numbering); the others go back to the front of
  the queue.

With ``merge=False`` every request is one model call of its own, in arrival order: the baseline
that shows what micro-batching buys.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from ..embedder import Embedder, Kind, check_kind, empty_vectors
from ..engine.wrapper import Wrapper
from ..errors import EmbedtuneError, InvalidInputError, ProviderError, TextTooLongError

__all__ = ["BatcherClosed", "MicroBatcher", "QueuedEmbedder", "plan_by_padding"]


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new texts."""


@dataclass(eq=False)
class _Job:
    texts: Sequence[str]
    kind: Kind
    future: Future[np.ndarray]
    remaining: int
    rows: np.ndarray | None = None
    started: bool = False
    finished: bool = False


@dataclass(eq=False)
class _Item:
    job: _Job
    row: int
    tokens: int
    enqueued: float


BatchObserver = Callable[[int, int, Sequence[float]], None]
"""``observe(texts, tokens, waits)``: called for each model batch (see ``Metrics.batch``)."""


class MicroBatcher:
    """Gathers texts from concurrent callers into batches for ``embedder`` (see the module docstring)."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        max_texts: int = 32,
        max_tokens: int = 16_384,
        max_wait: float = 0.005,
        merge: bool = True,
        by_length: bool = True,
        call_overhead_tokens: int = 48,
        lookahead: int = 4,
        observe: BatchObserver | None = None,
    ) -> None:
        if max_texts < 1 or max_tokens < 1 or max_wait < 0 or lookahead < 1 or call_overhead_tokens < 0:
            raise ValueError(
                "max_texts, max_tokens and lookahead must be at least 1, max_wait and call_overhead_tokens not negative"
            )
        self.embedder = embedder
        self.max_texts = max_texts
        self.max_tokens = max_tokens
        self.max_wait = max_wait
        self.merge = merge
        self.by_length = by_length
        self.call_overhead_tokens = call_overhead_tokens
        self.window = max_texts * lookahead
        self._observe = observe
        self._queues: dict[Kind, deque[_Item]] = {"document": deque(), "query": deque()}
        self._waiting_tokens: dict[Kind, int] = {"document": 0, "query": 0}
        self._cond = threading.Condition()
        self._closing = False
        self._on_close: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None

    # -- the callers' side -------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread."""
        with self._cond:
            if self._thread is not None:
                raise RuntimeError("the batcher is already started")
            self._thread = threading.Thread(target=self._work, name="embedtune-microbatch", daemon=True)
            self._thread.start()

    def submit(self, texts: Sequence[str], tokens: Sequence[int], kind: Kind = "document") -> Future[np.ndarray]:
        """Queue ``texts`` (with their token counts); the future's result is their vectors, in order."""
        check_kind(kind)
        if len(tokens) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(tokens)} token counts")
        future: Future[np.ndarray] = Future()
        if not texts:
            future.set_result(empty_vectors(self.embedder.dim))
            return future
        job = _Job(texts=texts, kind=kind, future=future, remaining=len(texts))
        limit = self.embedder.max_tokens
        now = time.monotonic()
        with self._cond:
            if self._closing or self._thread is None:
                raise BatcherClosed("the server is shutting down" if self._closing else "the batcher is not started")
            queue = self._queues[kind]
            for row, count in enumerate(tokens):
                item = _Item(job, row, max(1, min(count, limit)), now)
                queue.append(item)
                self._waiting_tokens[kind] += item.tokens
            self._cond.notify()
        return future

    @property
    def waiting(self) -> int:
        """Texts queued and not yet taken into a batch."""
        with self._cond:
            return sum(len(queue) for queue in self._queues.values())

    def close(self, on_close: Callable[[], None] | None = None, timeout: float | None = None) -> None:
        """Take no more texts, embed those queued, then run ``on_close`` in the worker thread and stop."""
        with self._cond:
            self._closing = True
            self._on_close = on_close
            self._cond.notify_all()
            thread = self._thread
        if thread is None:
            if on_close is not None:
                on_close()
            return
        thread.join(timeout)

    # -- the worker --------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            while True:
                taken = self._next_round()
                if taken is None:
                    break
                try:
                    for batch in self._batches(taken):
                        self._embed(batch)
                except BaseException as exc:  # a bug here: no request it took may wait forever
                    for item in taken:
                        self._finish(item.job, error=BatcherClosed(f"the batch worker failed: {exc!r}"))
                    raise
        finally:
            self._fail_waiting(BatcherClosed("the batch worker stopped"))
            if self._on_close is not None:
                self._on_close()

    def _next_round(self) -> list[_Item] | None:
        """Wait until a batch is worth running, then take what waits; None once closed and drained."""
        with self._cond:
            while True:
                kind = self._oldest_kind()
                if kind is None:
                    if self._closing:
                        return None
                    self._cond.wait()
                    continue
                queue = self._queues[kind]
                deadline = queue[0].enqueued + self.max_wait
                full = len(queue) >= self.max_texts or self._waiting_tokens[kind] >= self.max_tokens
                now = time.monotonic()
                if self._closing or not self.merge or full or now >= deadline:
                    return self._take(kind)
                self._cond.wait(deadline - now)

    def _oldest_kind(self) -> Kind | None:
        heads = [(queue[0].enqueued, kind) for kind, queue in self._queues.items() if queue]
        return min(heads)[1] if heads else None

    def _take(self, kind: Kind) -> list[_Item]:
        """Remove and return the oldest texts of ``kind`` (the lock is held): up to ``window`` of
        them, or without merging, the oldest request's."""
        queue = self._queues[kind]
        taken: list[_Item] = []
        while queue and len(taken) < self.window:
            if not self.merge and taken and queue[0].job is not taken[0].job:
                break
            item = queue.popleft()
            self._waiting_tokens[kind] -= item.tokens
            if self._admit(item):
                taken.append(item)
        return taken

    def _batches(self, taken: list[_Item]) -> list[list[_Item]]:
        """The model batches for what a round took: by padding cost for a model that pads, else
        all of it at once (the stack's own batcher splits it, with its concurrency)."""
        if not taken:
            return []
        if not (self.merge and self.by_length):
            return [taken]
        groups = plan_by_padding(
            [item.tokens for item in taken],
            max_texts=self.max_texts,
            max_tokens=self.max_tokens,
            overhead=self.call_overhead_tokens,
        )
        return [[taken[i] for i in group] for group in groups]

    def _admit(self, item: _Item) -> bool:
        """False for an item whose request is over: cancelled before it started, or failed."""
        job = item.job
        if job.finished:
            return False
        if not job.started and not job.future.set_running_or_notify_cancel():
            job.finished = True  # cancelled by its caller: drop all of it
            return False
        job.started = True
        return True

    def _embed(self, batch: list[_Item]) -> None:
        kind = batch[0].job.kind
        start = time.monotonic()
        if self._observe is not None:
            self._observe(len(batch), sum(item.tokens for item in batch), [start - item.enqueued for item in batch])
        try:
            vectors = self.embedder.embed([item.job.texts[item.row] for item in batch], kind)
        except (InvalidInputError, TextTooLongError) as exc:
            culprit = batch[exc.index]
            self._finish(culprit.job, error=_renumbered(exc, culprit.row))
            others = [item for item in batch if item.job is not culprit.job]
            with self._cond:
                self._queues[kind].extendleft(reversed(others))
                self._waiting_tokens[kind] += sum(item.tokens for item in others)
            return
        except Exception as exc:  # noqa: BLE001 (not hidden: every request of the batch answers with it)
            for job in {id(item.job): item.job for item in batch}.values():
                self._finish(job, error=exc)
            return
        if getattr(vectors, "shape", None) != (len(batch), self.embedder.dim):
            error = ProviderError(
                f"{self.embedder.name} returned {getattr(vectors, 'shape', '?')} for {len(batch)} texts"
            )
            for job in {id(item.job): item.job for item in batch}.values():
                self._finish(job, error=error)
            return
        for item, vector in zip(batch, vectors):
            job = item.job
            if job.finished:
                continue
            if job.rows is None:
                job.rows = np.empty((len(job.texts), vectors.shape[1]), dtype=np.float32)
            job.rows[item.row] = vector
            job.remaining -= 1
            if job.remaining == 0:
                job.finished = True
                job.future.set_result(job.rows)

    def _finish(self, job: _Job, *, error: BaseException) -> None:
        if not job.finished:
            job.finished = True
            job.future.set_exception(error)

    def _fail_waiting(self, error: BaseException) -> None:
        """Fail whatever is still queued when the worker stops (only after a bug in this module)."""
        with self._cond:
            self._closing = True
            items = [item for queue in self._queues.values() for item in queue]
            for queue in self._queues.values():
                queue.clear()
        for item in items:
            if not item.job.finished and (item.job.started or item.job.future.set_running_or_notify_cancel()):
                item.job.started = True
                self._finish(item.job, error=error)


def _renumbered(exc: InvalidInputError | TextTooLongError, row: int) -> EmbedtuneError:
    """The error of one text, with the index it has in its own request."""
    if isinstance(exc, InvalidInputError):
        return exc.with_index(row)
    return TextTooLongError(
        f"text {row} has {exc.tokens} tokens, over the model's limit of {exc.limit}",
        index=row,
        tokens=exc.tokens,
        limit=exc.limit,
    )


def plan_by_padding(lengths: Sequence[int], *, max_texts: int, max_tokens: int, overhead: int) -> list[list[int]]:
    """Indices of ``lengths`` cut into model batches that waste the least on padding.

    A model that pads a batch to its longest text spends about ``len(batch) * longest`` token
    steps on it, plus a fixed ``overhead`` per call (in token steps: for MiniLM on CPU about 50,
    measured). The texts are sorted by length and cut where that total, summed over the batches,
    is least (dynamic programming over the sorted order, each batch at most ``max_texts`` texts
    and ``max_tokens`` tokens unless it is one text). Batches come shortest first.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sizes = [lengths[i] for i in order]
    best = [0.0] + [float("inf")] * len(sizes)
    start = [0] * (len(sizes) + 1)
    for end in range(1, len(sizes) + 1):
        tokens = 0
        for first in range(end - 1, max(-1, end - 1 - max_texts), -1):
            tokens += sizes[first]
            if tokens > max_tokens and first < end - 1:
                break
            cost = best[first] + overhead + (end - first) * sizes[end - 1]
            if cost < best[end]:
                best[end], start[end] = cost, first
    batches = []
    end = len(sizes)
    while end > 0:
        batches.append(order[start[end] : end])
        end = start[end]
    return batches[::-1]


class QueuedEmbedder(Wrapper):
    """An Embedder whose ``embed`` goes through a batcher: for code that embeds in its own thread
    (the retriever), so its texts share batches with the HTTP requests'.

    ``inner`` is the stack the batcher's worker calls; names, limits, token counts and the
    fingerprint are its.
    """

    def __init__(self, inner: Embedder, batcher: MicroBatcher) -> None:
        super().__init__(inner)
        self.batcher = batcher

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        tokens = [self.inner.count_tokens(text, kind) for text in texts]
        return self.batcher.submit(texts, tokens, kind).result()
