"""The embedded store at scale: 100,000+ real passages, HNSW build time, recall and search latency.

    python benchmarks/store_scale.py [--store PATH] [--cache PATH] [--chunker SPEC] [--limit N]
                                     [--latency-queries N] [--exact-below N]

The passages are every document of the shared collections (scifact, npl, cranfield, adi: about
18,000 documents) cut by ``--chunker`` (default ``fixed:size=32,overlap=8``: about 120,000
passages), embedded by local:all-MiniLM-L6-v2 through the usual stack with the embedding cache
(``--cache``, default ``$EMBEDTUNE_HOME/embeddings.sqlite``), so a rerun embeds nothing. The
queries are every query of the collections (``queries_all.jsonl`` where there is one: about
1,460), embedded as queries. ``--limit N`` keeps the first N documents, to try the script quickly.

One run prints:

- how many passages were indexed, and the seconds spent chunking, embedding and upserting;
- the HNSW build seconds (``store.finish()`` on a fresh store) and the BM25 build seconds;
- recall@10 (and @100) of the HNSW path against the exact scan, both through ``store.search``
  over every query (the same folder opened twice: ``exact_below`` above and below its size);
- single-query latency (p50 / p95 / mean, ms) through ``store.search`` for the exact scan and the
  HNSW path (k = 10 and k = 100), filtered to one collection (the graph with a post-filter at or
  above ``exact_below`` passages allowed, an exact scan of those below), and
  ``store.lexical_index().search`` for BM25 (top 100).

Hybrid latency (BM25 + dense + fusion through the Retriever) is left to :func:`hybrid_latency`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from embedtune.chunking import make_chunker
from embedtune.evaluation.collections import read_corpus, read_jsonl
from embedtune.factory import EmbedderSpec, build_embedder
from embedtune.indexer import store_manifest
from embedtune.search.dense import l2_normalize
from embedtune.stores.base import DocumentRecord
from embedtune.stores.embedded import EmbeddedStore
from embedtune.strategy import Strategy

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
COLLECTIONS = ("scifact", "npl", "cranfield", "adi")
MODEL = "local:all-MiniLM-L6-v2"
UPSERT_DOCUMENTS = 500  # documents per upsert call, as the indexer writes them


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


def hybrid_latency(store: EmbeddedStore, queries: list[str], embedder) -> dict[str, list[float]] | None:
    """HYBRID LATENCY: TO BE ADDED by the lead engineer.

    Measure BM25 + dense + fusion through the Retriever (``embedtune.retriever.Retriever`` built from
    the store's hybrid strategy, ``search_one`` one query at a time), and return
    ``{row label: per-query seconds}`` to be printed beside the other rows. ``None``: not measured.
    """
    return None


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

    strategy = Strategy(embedder=spec, chunker=args.chunker, mode="dense")
    store = EmbeddedStore(args.store, exact_below=args.exact_below)
    store.write_manifest(store_manifest(strategy, embedder))
    begin = time.perf_counter()
    offset = 0
    for start in range(0, len(documents), UPSERT_DOCUMENTS):
        records = []
        for (doc_id, text, collection), doc_spans in zip(
            documents[start : start + UPSERT_DOCUMENTS], spans[start : start + UPSERT_DOCUMENTS]
        ):
            rows = vectors[offset : offset + len(doc_spans)]
            offset += len(doc_spans)
            records.append(
                DocumentRecord(
                    doc_id=doc_id, text=text, metadata={"collection": collection}, spans=doc_spans, vectors=rows
                )
            )
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
    hybrid = hybrid_latency(store, query_texts, embedder)
    if hybrid:
        timings.update(hybrid)

    print(
        f"store: {store.count():,} documents, {store.count_chunks():,} passages x {embedder.dim} dims float32 "
        f"(vectors {vectors_mib:.0f} MiB, HNSW graph {graph_mib:.0f} MiB); exact_below={args.exact_below:,}"
    )
    print(
        f"embedding: {embed_s:.1f} s (cache lookups only when every passage is in {cache}); upserts: {upsert_s:.1f} s"
    )
    print(f"HNSW build (store.finish()): {hnsw_s:.1f} s; BM25 build over {len(lexical):,} documents: {bm25_s:.1f} s")
    print(
        f"recall of HNSW against the exact scan over {len(queries):,} real queries: recall@10 {recall10:.4f}, "
        f"recall@100 {recall100:.4f} (all queries in one call: exact {exact_batch_s:.1f} s, HNSW {hnsw_batch_s:.1f} s)"
    )
    print(f"single-query latency over {n} queries, one at a time:")
    print(f"{'search':<56}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}")
    for name, samples in timings.items():
        p50, p95, mean = percentiles(samples)
        print(f"{name:<56}{p50:>9.2f}{p95:>9.2f}{mean:>9.2f}")
    if hybrid is None:
        print("hybrid (BM25 + dense + fusion through the Retriever): not measured yet, see hybrid_latency()")
    exact.close()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
