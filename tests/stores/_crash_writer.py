"""A writer for the embedded store's crash tests: a fixed plan of batches, run as a process to kill.

    python _crash_writer.py STORE FIRST STOP [--die-at-fsync N]

Applies batches ``FIRST .. STOP - 1`` of the plan to the store at ``STORE`` (creating it), and
prints ``done I`` once batch ``I`` is committed. Each batch upserts some documents (a new version
of each, 0 to 5 chunks) and, every third batch, deletes a few. The plan is a pure function of the
batch number, so a test knows the store every batch leaves (:func:`expected_state`) and the vector
every chunk must hold (:func:`document_of`).

``--die-at-fsync N`` sends this process SIGKILL at its ``N``-th ``os.fsync``: inside an upsert, after
its vectors are on disk and before the transaction that references them commits.
"""

from __future__ import annotations

import os
import signal
import sys
import zlib

import numpy as np

from embedtune.stores.base import DocumentRecord, StoreManifest
from embedtune.stores.embedded import EmbeddedStore

DIMS = 16
DOCUMENTS = 120
UPSERTS_PER_BATCH = 30
BATCHES = 24


def manifest() -> StoreManifest:
    return StoreManifest(
        strategy={"version": 1, "retrieval": {"mode": "dense"}},
        model="fake:crash",
        embedder_fingerprint="fake:crash",
        dims=DIMS,
        precision="float32",
        chunker="fixed",
    )


def document_of(doc_id: str, version: int, chunks: int) -> DocumentRecord:
    """The document ``doc_id`` as batch ``version`` writes it: text, spans and vectors all derived."""
    words = [f"{doc_id}v{version}c{n}" for n in range(max(chunks, 1))]
    text = " ".join(words) if chunks else f"{doc_id}v{version} empty"
    spans, start = [], 0
    for word in words[:chunks]:
        spans.append((start, start + len(word)))
        start += len(word) + 1
    rng = np.random.default_rng(zlib.crc32(f"{doc_id}/{version}".encode()))
    vectors = rng.standard_normal((chunks, DIMS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return DocumentRecord(doc_id=doc_id, text=text, metadata={"version": version}, spans=spans, vectors=vectors)


def plan(batch: int) -> tuple[list[tuple[str, int]], list[str]]:
    """Batch ``batch``: ``[(doc_id, chunks)]`` to upsert (at version ``batch``) and ids to delete."""
    rng = np.random.default_rng(10_000 + batch)
    chosen = rng.choice(DOCUMENTS, size=UPSERTS_PER_BATCH, replace=False)
    upserts = [(f"doc{i:03d}", int(rng.integers(0, 6))) for i in chosen.tolist()]
    deletes: list[str] = []
    if batch % 3 == 2:
        others = sorted(set(range(DOCUMENTS)) - set(chosen.tolist()))
        deletes = [f"doc{i:03d}" for i in rng.choice(others, size=4, replace=False).tolist()]
    return upserts, deletes


def expected_state(last: int, *, deletes: bool = True) -> dict[str, tuple[int, int]]:
    """``{doc_id: (version, chunks)}`` after batches ``0 .. last`` (empty for ``last < 0``).

    A batch is two transactions, its upsert then its delete: ``deletes=False`` gives the state
    between them in batch ``last``.
    """
    state: dict[str, tuple[int, int]] = {}
    for batch in range(last + 1):
        upserts, gone = plan(batch)
        for doc_id, chunks in upserts:
            state[doc_id] = (batch, chunks)
        if deletes or batch < last:
            for doc_id in gone:
                state.pop(doc_id, None)
    return state


def apply(store: EmbeddedStore, batch: int) -> None:
    upserts, deletes = plan(batch)
    store.upsert([document_of(doc_id, batch, chunks) for doc_id, chunks in upserts])
    if deletes:
        store.delete(deletes)


def run(path: str, first: int, stop: int) -> None:
    with EmbeddedStore(path) as store:
        if store.read_manifest() is None:
            store.write_manifest(manifest())
        for batch in range(first, stop):
            apply(store, batch)
            print(f"done {batch}", flush=True)


def _die_at_fsync(n: int) -> None:
    real_fsync = os.fsync
    calls = 0

    def fsync(fd: int) -> None:
        nonlocal calls
        real_fsync(fd)
        calls += 1
        if calls == n:
            os.kill(os.getpid(), signal.SIGKILL)

    os.fsync = fsync


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--die-at-fsync" in args:
        at = args.index("--die-at-fsync")
        _die_at_fsync(int(args[at + 1]))
        del args[at : at + 2]
    run(args[0], int(args[1]), int(args[2]))
