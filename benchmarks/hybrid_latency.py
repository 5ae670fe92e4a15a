"""Per-query search latency at 100,000 documents: BM25, dense, and BM25 + dense + fusion.

    python benchmarks/hybrid_latency.py [--docs 100000] [--queries 300] [--dim 384] [--dataset PATH]

What is timed is search and fusion only, one query at a time, as a service answers them:

- ``bm25``: ``BM25Index.search`` for one query text (tokenising and stemming the query included);
- ``dense``: ``DenseIndex.search`` for one precomputed query vector (exact inner product over all
  documents, top 100); and the same with ``scan="float16"`` (candidates from a float16 copy,
  rescored exactly: the same run, half the memory traffic);
- ``hybrid rrf`` / ``hybrid convex``: both searches one after the other, then ``rrf`` or
  ``convex`` (alpha 0.5) of the two runs;
- ``hybrid rrf, threads``: the two searches at once in two threads, then ``rrf``.

The documents are windows of 40 to 240 consecutive words cut from SciFact's abstracts (real
English term statistics at 100,000 documents). The vectors are SYNTHETIC: random unit vectors,
because this measures search latency, not embedding speed or retrieval quality. Query texts are
SciFact's test claims.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from embedtune.evaluation import load_beir
from embedtune.search import BM25Index, DenseIndex, convex, rrf

DEFAULT_SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "scifact"


def synthetic_texts(words: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` texts, each a window of 40-240 consecutive words of ``words`` at a random offset."""
    lengths = rng.integers(40, 241, size=n)
    starts = rng.integers(0, len(words) - 241, size=n)
    return [" ".join(words[s : s + length]) for s, length in zip(starts.tolist(), lengths.tolist())]


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ms = np.asarray(samples) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), float(statistics.fmean(ms))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_SCIFACT, help="SciFact in the BEIR layout")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    collection = load_beir(args.dataset, splits=["test"])
    words = " ".join(collection.documents_text(d) for d in collection.corpus).split()
    queries, _ = collection.split("test")
    query_items = list(queries.items())
    query_items = [query_items[i % len(query_items)] for i in range(args.queries)]

    ids = [f"doc{i}" for i in range(args.docs)]
    start = time.perf_counter()
    texts = synthetic_texts(words, args.docs, rng)
    bm25 = BM25Index.build(ids, texts)
    bm25_build = time.perf_counter() - start
    del texts

    start = time.perf_counter()
    vectors = rng.standard_normal((args.docs, args.dim), dtype=np.float32)
    dense = DenseIndex.build(ids, vectors, model="synthetic:random-unit-vectors")
    half = DenseIndex(ids=ids, vectors=dense.vectors, model=dense.model, scan="float16")
    del vectors
    dense_build = time.perf_counter() - start
    query_vectors = rng.standard_normal((args.queries, args.dim), dtype=np.float32)

    def bm25_one(i: int):
        qid, text = query_items[i]
        return bm25.search({qid: text}, k=args.k)

    def dense_one(i: int):
        return dense.search([query_items[i][0]], query_vectors[i : i + 1], k=args.k)

    def half_one(i: int):
        return half.search([query_items[i][0]], query_vectors[i : i + 1], k=args.k)

    def hybrid_rrf(i: int):
        return rrf([dense_one(i), bm25_one(i)], k=60)

    def hybrid_rrf_half(i: int):
        return rrf([half_one(i), bm25_one(i)], k=60)

    def hybrid_convex(i: int):
        return convex([dense_one(i), bm25_one(i)], [0.5, 0.5], method="minmax")

    pool = ThreadPoolExecutor(max_workers=2)

    def hybrid_threads(i: int):
        dense_future = pool.submit(dense_one, i)
        bm25_future = pool.submit(bm25_one, i)
        return rrf([dense_future.result(), bm25_future.result()], k=60)

    def hybrid_threads_half(i: int):
        dense_future = pool.submit(half_one, i)
        bm25_future = pool.submit(bm25_one, i)
        return rrf([dense_future.result(), bm25_future.result()], k=60)

    # Two phases, each interleaving its strategies query by query (so background load hits them
    # alike). They are kept apart because numpy's BLAS threads and torch's threads contend when
    # one kind of scan follows the other, which a service using one kind never sees.
    phases = [
        {
            "bm25": bm25_one,
            "dense (exact, numpy)": dense_one,
            "hybrid rrf: bm25 + dense + rrf": hybrid_rrf,
            "hybrid convex: bm25 + dense + convex": hybrid_convex,
            "hybrid rrf, both searches in threads": hybrid_threads,
        },
        {
            "bm25 (again, beside the float16 scan)": bm25_one,
            "dense (float16 scan, exact rescoring)": half_one,
            "hybrid rrf: bm25 + float16-scan dense + rrf": hybrid_rrf_half,
            "hybrid rrf, float16 scan, searches in threads": hybrid_threads_half,
        },
    ]
    timings: dict[str, list[float]] = {}
    for strategies in phases:
        for fn in strategies.values():  # warm-up: first calls pay for lazy imports and page faults
            for i in range(min(5, args.queries)):
                fn(i)
        for name in strategies:
            timings[name] = []
        for i in range(args.queries):
            for name, fn in strategies.items():
                begin = time.perf_counter()
                fn(i)
                timings[name].append(time.perf_counter() - begin)
    pool.shutdown()

    print(
        f"{args.docs:,} documents, {args.queries} queries one at a time, top {args.k}; "
        f"BM25 index built in {bm25_build:.1f} s, dense index ({args.dim} dims, "
        f"{dense.vectors.nbytes / 2**20:.0f} MiB) in {dense_build:.1f} s"
    )
    print(
        "NOTE: the document and query vectors are synthetic (random unit vectors): this measures "
        "search latency, not embedding or retrieval quality."
    )
    same = sum(dense_one(i) == half_one(i) for i in range(args.queries))
    print(f"the float16 scan returned the exact scan's run for {same} of {args.queries} queries")
    print(f"{'strategy':<46}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}")
    for name, samples in timings.items():
        p50, p95, mean = percentiles(samples)
        print(f"{name:<46}{p50:>9.2f}{p95:>9.2f}{mean:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
