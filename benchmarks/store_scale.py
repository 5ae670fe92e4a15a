"""The embedded store at scale: 100,000+ real passages, HNSW build time, recall and search latency.

    python benchmarks/store_scale.py [--store PATH] [--cache PATH] [--chunker SPEC] [--limit N]
                                     [--latency-queries N] [--exact-below N]

The passages are every document of the shared collections (scifact, npl, cranfield, adi: about
18,000 documents) cut by ``--chunker`` (default ``fixed:size=32,overlap=8``: about 120,000
passages), embedded by local:all-MiniLM-L6-v2 through the usual stack with the embedding cache
(``--cache``, default ``$EMBEDTUNE_HOME/embeddings.sqlite``), so a rerun embeds nothing. The
queries are every query of the collections (``queries_all.jsonl`` where there is one: about
1,460), embedded as queries. ``--limit N`` keeps the first N documents, to try the script quickly.
Each passage is stored as a document of its own (a passage index): BM25 and the vectors rank the
same 120,000 units, and a hit is a passage.

One run prints:

- how many passages were indexed, and the seconds spent chunking, embedding and upserting;
- the HNSW build seconds (``store.finish()`` on a fresh store) and the BM25 build seconds;
- recall@10 (and @100) of the HNSW path against the exact scan, both through ``store.search``
  over every query (the same folder opened twice: ``exact_below`` above and below its size);
- single-query latency (p50 / p95 / mean, ms) through ``store.search`` for the exact scan and the
  HNSW path (k = 10 and k = 100), filtered to one collection (the graph with a post-filter at or
  above ``exact_below`` passages allowed, an exact scan of those below), and
  ``store.lexical_index().search`` for BM25 (top 100);
- hybrid search (BM25 + dense + RRF through ``Retriever.search_one``, as ``search`` and the
  service run it) on the HNSW store and on the exact scan, and end to end with MiniLM embedding
  each query (:func:`hybrid_latency`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from embedtune.chunking import make_chunker
from embedtune.engine.wrapper import Wrapper
from embedtune.evaluation.collections import read_corpus, read_jsonl
from embedtune.factory import EmbedderSpec, build_embedder, open_provider
from embedtune.indexer import store_manifest
from embedtune.retriever import Retriever
from embedtune.search.dense import l2_normalize
from embedtune.stores.base import DocumentRecord
from embedtune.stores.embedded import EmbeddedStore
from embedtune.strategy import Fusion, Mode, Strategy

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
COLLECTIONS = ("scifact", "npl", "cranfield", "adi")
MODEL = "local:all-MiniLM-L6-v2"
UPSERT_PASSAGES = 512  # passages per upsert call, as the indexer writes whole documents


def default_cache() -> Path:
    home = os.environ.get("EMBEDTUNE_HOME")
    base = Path(home) if home else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "embedtune"
    return base / "embeddings.sqlite"


def load_documents(limit: int | None) -> list[tuple[str, str, str]]:
    """``(doc_id, text, collection)`` of every document, ids prefixed by their collection."""
    documents = []
    for name in COLLECTIONS:
        corpus = read_corpus(DATASETS / name)
        documents += [(f"{name}/{doc_id}", doc.full_text, name) for doc_id, doc in corpus.items()]
    return documents[:limit] if limit else documents


def load_queries() -> list[str]:
    """Every query text of the collections: ``queries_all.jsonl`` where present, else ``queries.jsonl``."""
    texts = []
    for name in COLLECTIONS:
        folder = DATASETS / name
        path = folder / "queries_all.jsonl" if (folder / "queries_all.jsonl").is_file() else folder / "queries.jsonl"
        texts += [row["text"] for _, row in read_jsonl(path) if row.get("text", "").strip()]
    return texts


def embed_in_slices(embedder, texts: list[str], kind: str, slice_size: int = 8192) -> np.ndarray:
    """Embed in slices (each one's vectors reach the cache before the next), printing progress."""
    parts = []
    for start in range(0, len(texts), slice_size):
        parts.append(embedder.embed(texts[start : start + slice_size], kind))
        done = min(start + slice_size, len(texts))
        print(f"  embedded {done:,} / {len(texts):,} {kind} texts", file=sys.stderr, flush=True)
    return l2_normalize(np.concatenate(parts)) if parts else np.empty((0, embedder.dim), dtype=np.float32)


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ms = np.asarray(samples) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), float(statistics.fmean(ms))


def timed_one_by_one(fn: Callable[[int], object], n: int, warmup: int = 5) -> list[float]:
    for i in range(min(warmup, n)):  # first calls pay for page faults and lazy imports
        fn(i)
    samples = []
    for i in range(n):
        begin = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - begin)
    return samples


def recall_at(found: list[list[tuple[str, float]]], truth: list[list[tuple[str, float]]]) -> float:
    hits = sum(len({c for c, _ in got} & {c for c, _ in want}) for got, want in zip(found, truth))
    return hits / max(1, sum(len(want) for want in truth))


class _Precomputed(Wrapper):
    """Serves the query vectors embedded up front, so a timing measures the search alone."""

    def __init__(self, inner, texts: list[str], vectors: np.ndarray) -> None:
        super().__init__(inner)
        self._rows = dict(zip(texts, vectors))

    def embed(self, texts, kind="document"):
        return np.stack([self._rows[text] for text in texts])


def hybrid_latency(
    stores: dict[str, EmbeddedStore], query_texts: list[str], queries: np.ndarray, embedder, provider, n: int
) -> dict[str, list[float]]:
    """Hybrid search (BM25 + dense + RRF, each run 100 deep) through ``Retriever.search_one``, top 10.

    One row per store (the HNSW one and the exact-scan one) with the query vector embedded up
    front, and one with MiniLM embedding each query as it comes (no cache: what a service pays).
    ``search_one`` is what ``search`` and the service run: both runs, fusion, and each hit's chunk
    read back from SQLite.
    """
    timings: dict[str, list[float]] = {}
    for label, store in stores.items():
        manifest = store.read_manifest()
        strategy = Strategy.from_dict(manifest.strategy)
        hybrid = replace(strategy, mode=Mode.HYBRID, fusion=Fusion.RRF)
        retriever = Retriever(hybrid, store, _Precomputed(embedder, query_texts, queries))
        timings[f"hybrid RRF, {label} (Retriever.search_one, vector given)"] = timed_one_by_one(
            lambda i, r=retriever: r.search_one(query_texts[i], 10), n
        )
        retriever.close()
    live = Retriever(
        replace(Strategy.from_dict(stores["HNSW"].read_manifest().strategy), mode=Mode.HYBRID, fusion=Fusion.RRF),
        stores["HNSW"],
        provider,
    )
    # The texts are offset by one so that no query repeats what a warm-up call just embedded.
    timings["hybrid RRF, HNSW, MiniLM embeds each query (no cache)"] = timed_one_by_one(
        lambda i: live.search_one(query_texts[-1 - i], 10), min(n, 200)
    )
    live.close()
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("/tmp/embedtune-store-scale"), help="rebuilt each run")
    parser.add_argument("--cache", type=Path, default=None, help="embedding cache (default: EMBEDTUNE_HOME's)")
    parser.add_argument("--chunker", default="fixed:size=32,overlap=8")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N documents (a quick try)")
    parser.add_argument("--latency-queries", type=int, default=500, help="queries timed one at a time")
    parser.add_argument("--exact-below", type=int, default=20_000, help="the HNSW store's exact_below")
    args = parser.parse_args(argv)
    if args.store.exists():  # rebuilt from scratch, so the build is timed
        if any(args.store.iterdir()) and not (args.store / "manifest.json").is_file():
            parser.error(f"{args.store} is not an embedtune store; give --store a new or a store folder")
        shutil.rmtree(args.store)
    cache = args.cache or default_cache()
    cache.parent.mkdir(parents=True, exist_ok=True)

    documents = load_documents(args.limit)
    query_texts = load_queries()
    spec = EmbedderSpec(model=MODEL, over_limit="truncate")
    embedder = build_embedder(spec, cache=cache)

    begin = time.perf_counter()
    chunker = make_chunker(args.chunker, embedder)
    spans = [[(c.start, c.end) for c in chunks] for chunks in chunker.chunk_many([t for _, t, _ in documents])]
    chunk_s = time.perf_counter() - begin
    pieces = [text[s:e] for (_, text, _), doc_spans in zip(documents, spans) for s, e in doc_spans]
    print(f"{len(documents):,} documents -> {len(pieces):,} passages ({args.chunker}), chunked in {chunk_s:.1f} s")

    begin = time.perf_counter()
    vectors = embed_in_slices(embedder, pieces, "document")
    embed_s = time.perf_counter() - begin
    queries = embed_in_slices(embedder, query_texts, "query")

    # Each passage is a document of its own (the unit a hybrid search ranks, as in a passage index):
    # BM25 and the vectors both rank the 120,000 passages, and a hit is a passage.
    strategy = Strategy(embedder=spec, mode="dense")
    store = EmbeddedStore(args.store, exact_below=args.exact_below)
    store.write_manifest(store_manifest(strategy, embedder))
    begin = time.perf_counter()
    records = []
    offset = 0
    for (doc_id, text, collection), doc_spans in zip(documents, spans):
        for n, (start, end) in enumerate(doc_spans):
            piece = text[start:end]
            records.append(
                DocumentRecord(
                    doc_id=f"{doc_id}/{n}",
                    text=piece,
                    metadata={"collection": collection},
                    spans=[(0, len(piece))],
                    vectors=vectors[offset : offset + 1],
                )
            )
            offset += 1
        if len(records) >= UPSERT_PASSAGES:
            store.upsert(records)
            records = []
    if records:
        store.upsert(records)
    upsert_s = time.perf_counter() - begin

    begin = time.perf_counter()
    store.finish()  # a dense strategy: builds the HNSW graph only
    hnsw_s = time.perf_counter() - begin
    begin = time.perf_counter()
    lexical = store.lexical_index()
    bm25_s = time.perf_counter() - begin
    graph_mib = sum(p.stat().st_size for p in args.store.glob("hnsw-g*.usearch")) / 2**20
    vectors_mib = (args.store / "vectors.bin").stat().st_size / 2**20

    exact = EmbeddedStore(args.store, exact_below=10**12)  # the same folder, always scanned exactly
    begin = time.perf_counter()
    truth = exact.search(queries, 100)
    exact_batch_s = time.perf_counter() - begin
    begin = time.perf_counter()
    found = store.search(queries, 100)
    hnsw_batch_s = time.perf_counter() - begin
    found10 = store.search(queries, 10)
    recall10 = recall_at(found10, [hits[:10] for hits in truth])
    recall100 = recall_at(found, truth)

    n = min(args.latency_queries, len(queries))
    timings = {
        "exact scan, k=10 (store.search)": timed_one_by_one(lambda i: exact.search(queries[i : i + 1], 10), n),
        "HNSW + exact rescoring, k=10 (store.search)": timed_one_by_one(
            lambda i: store.search(queries[i : i + 1], 10), n
        ),
        "HNSW + exact rescoring, k=100 (store.search)": timed_one_by_one(
            lambda i: store.search(queries[i : i + 1], 100), n
        ),
        "BM25, top 100 (lexical_index().search)": timed_one_by_one(
            lambda i: lexical.search({"q": query_texts[i]}, 100), n
        ),
    }
    for collection in ("scifact", "npl"):  # graph + post-filter, or an exact scan of the rows allowed
        passages = sum(len(doc_spans) for (_, _, c), doc_spans in zip(documents, spans) if c == collection)
        label = f"filtered, k=10, collection={collection} ({passages:,} passages)"
        timings[label] = timed_one_by_one(
            lambda i, c=collection: store.search(queries[i : i + 1], 10, where={"collection": c}), n
        )
    timings.update(
        hybrid_latency({"HNSW": store, "exact scan": exact}, query_texts, queries, embedder, open_provider(spec), n)
    )

    print(
        f"store: {len(documents):,} documents as {store.count():,} passages x {embedder.dim} dims float32 "
        f"(vectors {vectors_mib:.0f} MiB, HNSW graph {graph_mib:.0f} MiB); exact_below={args.exact_below:,}"
    )
    print(
        f"embedding: {embed_s:.1f} s (cache lookups only when every passage is in {cache}); upserts: {upsert_s:.1f} s"
    )
    print(f"HNSW build (store.finish()): {hnsw_s:.1f} s; BM25 build over {len(lexical):,} passages: {bm25_s:.1f} s")
    print(
        f"recall of HNSW against the exact scan over {len(queries):,} real queries: recall@10 {recall10:.4f}, "
        f"recall@100 {recall100:.4f} (all queries in one call: exact {exact_batch_s:.1f} s, HNSW {hnsw_batch_s:.1f} s)"
    )
    print(f"single-query latency over {n} queries, one at a time:")
    print(f"{'search':<56}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}")
    for name, samples in timings.items():
        p50, p95, mean = percentiles(samples)
        print(f"{name:<56}{p50:>9.2f}{p95:>9.2f}{mean:>9.2f}")
    exact.close()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
