"""The micro-batcher on its own: rows to their requests, bounds, cancellation, isolation, draining."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest
from _serving import GatedEmbedder
from hypothesis import given
from hypothesis import strategies as st

from embedtune.embedder import Kind
from embedtune.engine.wrapper import Wrapper
from embedtune.errors import InvalidInputError, ProviderError, TextTooLongError
from embedtune.providers.fake import HashEmbedder
from embedtune.service.batcher import BatcherClosed, MicroBatcher, QueuedEmbedder, plan_by_padding

FAKE = HashEmbedder(dim=32, max_tokens=64)


def tokens(texts: Sequence[str]) -> list[int]:
    return [FAKE.count_tokens(t) for t in texts]


class Rejecting(Wrapper):
    """Rejects any text containing ``bad`` the way an HTTP provider reports a 400 for one input."""

    def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        for i, text in enumerate(texts):
            if "bad" in text:
                raise InvalidInputError("no bad words", index=i)
        return self.inner.embed(texts, kind)


def started(embedder, **options) -> MicroBatcher:
    batcher = MicroBatcher(embedder, **options)
    batcher.start()
    return batcher


def queue_behind_a_gate(batcher: MicroBatcher, gated: GatedEmbedder, jobs: list[list[str]]):
    """Hold the worker in a first call, queue ``jobs`` behind it, and return their futures."""
    first = batcher.submit(["hold the worker"], [3])
    assert gated.entered.wait(10)
    futures = [batcher.submit(texts, tokens(texts)) for texts in jobs]
    return first, futures


def test_each_request_gets_exactly_its_own_rows_from_shared_batches():
    gated = GatedEmbedder(FAKE)
    batcher = started(gated, max_texts=8, max_tokens=10_000, max_wait=0.05)
    jobs = [[f"request {i} text {j} " + "word " * (i * j % 7) for j in range(1 + i % 4)] for i in range(20)]
    first, futures = queue_behind_a_gate(batcher, gated, jobs)
    gated.gate.set()
    first.result(10)
    for texts, future in zip(jobs, futures):
        np.testing.assert_array_equal(future.result(10), FAKE.embed(texts))
    shared = gated.calls[1:]
    assert sum(map(len, shared)) == sum(map(len, jobs))
    assert all(len(call) <= 8 for call in shared)
    assert len(shared) < len(jobs), "texts of several requests should share calls"
    batcher.close()


def test_batches_respect_the_token_bound_and_group_similar_lengths():
    gated = GatedEmbedder(FAKE)
    batcher = started(gated, max_texts=4, max_tokens=40, max_wait=0.05)
    short, long = ["a b"] * 4, ["x " * 15] * 4  # 4 and 17 tokens
    jobs = [[text] for pair in zip(short, long) for text in pair]  # arriving interleaved
    _, futures = queue_behind_a_gate(batcher, gated, jobs)
    gated.gate.set()
    for future in futures:
        future.result(10)
    for call in gated.calls[1:]:
        assert sum(tokens(call)) <= 40 or len(call) == 1
        assert len({FAKE.count_tokens(t) for t in call}) == 1, f"mixed lengths in one batch: {call}"
    batcher.close()


def test_without_merging_every_request_is_one_call():
    gated = GatedEmbedder(FAKE)
    batcher = started(gated, max_texts=32, merge=False)
    jobs = [[f"r{i} a", f"r{i} b"] for i in range(5)]
    _, futures = queue_behind_a_gate(batcher, gated, jobs)
    gated.gate.set()
    for texts, future in zip(jobs, futures):
        np.testing.assert_array_equal(future.result(10), FAKE.embed(texts))
    assert gated.calls[1:] == jobs
    batcher.close()


def test_a_cancelled_request_is_dropped_and_the_others_are_served():
    gated = GatedEmbedder(FAKE)
    batcher = started(gated, max_texts=32, max_wait=0.05)
    _, futures = queue_behind_a_gate(batcher, gated, [["keep one"], ["gone away"], ["keep two"]])
    assert futures[1].cancel()
    gated.gate.set()
    np.testing.assert_array_equal(futures[0].result(10), FAKE.embed(["keep one"]))
    np.testing.assert_array_equal(futures[2].result(10), FAKE.embed(["keep two"]))
    assert all("gone away" not in call for call in gated.calls)
    batcher.close()


def test_one_rejected_text_fails_only_its_request_with_its_own_index():
    gated = GatedEmbedder(FAKE)
    batcher = started(Rejecting(gated), max_texts=32, max_wait=0.05)
    jobs = [["fine", "also fine"], ["ok", "ok too", "bad one"], ["good"]]
    _, futures = queue_behind_a_gate(batcher, gated, jobs)
    gated.gate.set()
    with pytest.raises(InvalidInputError) as failed:
        futures[1].result(10)
    assert failed.value.index == 2
    np.testing.assert_array_equal(futures[0].result(10), FAKE.embed(jobs[0]))
    np.testing.assert_array_equal(futures[2].result(10), FAKE.embed(jobs[2]))
    assert [sorted(call) for call in gated.calls[1:]] == [["also fine", "fine", "good"]], "the others went on"
    batcher.close()


def test_a_text_over_the_limit_fails_only_its_request():
    from embedtune.engine import LengthPolicy

    batcher = started(LengthPolicy(FAKE, "error"), max_texts=32, max_wait=0.05)
    long = "word " * 100
    futures = [batcher.submit(t, tokens(t)) for t in (["short"], ["fine", long], ["also short"])]
    with pytest.raises(TextTooLongError) as failed:
        futures[1].result(10)
    assert failed.value.index == 1 and "text 1 " in str(failed.value)
    np.testing.assert_array_equal(futures[2].result(10), FAKE.embed(["also short"]))
    batcher.close()


def test_an_error_for_the_whole_batch_reaches_every_request_in_it():
    class Broken(Wrapper):
        def embed(self, texts, kind="document"):
            raise ProviderError("the backend is down")

    batcher = started(Broken(FAKE), max_wait=0.05)
    futures = [batcher.submit([t], [2]) for t in ("a", "b")]
    for future in futures:
        with pytest.raises(ProviderError, match="backend is down"):
            future.result(10)
    batcher.close()


def test_close_drains_the_queue_runs_on_close_in_the_worker_and_refuses_more():
    gated = GatedEmbedder(FAKE)
    batcher = started(gated, max_wait=0.05)
    _, futures = queue_behind_a_gate(batcher, gated, [["queued one"], ["queued two"]])
    closed_in: list[str] = []
    closer = threading.Thread(target=batcher.close, args=(lambda: closed_in.append(threading.current_thread().name),))
    closer.start()
    gated.gate.set()
    closer.join(10)
    assert [f.result(0).shape for f in futures] == [(1, 32), (1, 32)]
    assert closed_in == ["embedtune-microbatch"]
    with pytest.raises(BatcherClosed):
        batcher.submit(["late"], [2])


def test_queued_embedder_shares_the_batcher_from_other_threads():
    batcher = started(FAKE, max_wait=0.01)
    queued = QueuedEmbedder(FAKE, batcher)
    assert (queued.name, queued.dim, queued.fingerprint("query")) == (FAKE.name, FAKE.dim, FAKE.fingerprint("query"))
    results: dict[int, np.ndarray] = {}
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, queued.embed([f"q{i}"], "query"))) for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    for i in range(8):
        np.testing.assert_array_equal(results[i], FAKE.embed([f"q{i}"], "query"))
    batcher.close()


def padded_cost(lengths: list[int], batches: list[list[int]], overhead: int) -> int:
    return sum(overhead + len(batch) * max(lengths[i] for i in batch) for batch in batches)


@given(
    lengths=st.lists(st.integers(1, 300), max_size=150),
    max_texts=st.integers(1, 40),
    max_tokens=st.integers(1, 3000),
    overhead=st.integers(0, 100),
)
def test_plan_by_padding_covers_every_text_within_the_bounds_and_beats_fixed_sorted_batches(
    lengths, max_texts, max_tokens, overhead
):
    batches = plan_by_padding(lengths, max_texts=max_texts, max_tokens=max_tokens, overhead=overhead)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= max_texts
        assert len(batch) == 1 or sum(lengths[i] for i in batch) <= max_tokens
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    fixed = [order[i : i + max_texts] for i in range(0, len(order), max_texts)]
    if all(len(b) == 1 or sum(lengths[i] for i in b) <= max_tokens for b in fixed):
        assert padded_cost(lengths, batches, overhead) <= padded_cost(lengths, fixed, overhead)


def test_plan_by_padding_keeps_short_and_long_texts_apart():
    lengths = [10, 200] * 10
    batches = plan_by_padding(lengths, max_texts=32, max_tokens=100_000, overhead=48)
    assert [sorted({lengths[i] for i in batch}) for batch in batches] == [[10], [200]]
