"""SPLADE-tiny (learned sparse) beside BM25 on BEIR collections, both through ``compare``'s one path.

    EMBEDTUNE_HOME=/tmp/etbench python benchmarks/sparse_beir.py [--datasets scifact,npl,cranfield]
        [--speed-sample 256]

For each collection, ``evaluate_strategies`` builds BM25 and the ``sparse:splade-tiny`` strategy
into stores (kept under EMBEDTUNE_HOME/bench-sparse, so a rerun encodes nothing: rows come from
the embedding cache) and scores the Retriever's runs on the test split. Prints nDCG@10 and
Recall@100 of each, the sparse index's and BM25's size on disk, and SPLADE-tiny's encoding speed
(documents per second, ``--speed-sample`` documents encoded without the cache, after a warm-up).
On SciFact it also prints nDCG@10 averaged over the test queries whose relevant documents the
train split never names (``unseen_queries``). NPL and Cranfield have only a test split: nothing is
tuned on them, and the table says so.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from embedtune.cli import default_home
from embedtune.evaluation import load_beir
from embedtune.evaluation.compare import evaluate_strategies
from embedtune.factory import EmbedderSpec
from embedtune.sparse.encoder import SpladeEncoder, sparse_folder

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
SPLADE = "sparse:splade-tiny"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="scifact,npl,cranfield")
    parser.add_argument("--speed-sample", type=int, default=256)
    args = parser.parse_args()
    home = default_home()
    rows = []
    for name in [n.strip() for n in args.datasets.split(",") if n.strip()]:
        collection = load_beir(DATASETS / name)
        started = time.perf_counter()
        result = evaluate_strategies(
            collection,
            [EmbedderSpec(model=SPLADE)],
            bm25=True,
            split="test",
            cache=home / "embeddings.sqlite",
            index_dir=home / "bench-sparse",
        )
        seconds = time.perf_counter() - started
        bm25, sparse = result.strategy("bm25"), result.strategy(SPLADE)
        unseen = "-"
        if "train" in collection.qrels:
            ids = collection.unseen_queries("test", "train")
            unseen = f"{statistics.fmean(sparse.per_query[q] for q in ids):.4f} / {statistics.fmean(bm25.per_query[q] for q in ids):.4f} ({len(ids)} q)"
        rows.append(
            (
                name,
                len(collection.corpus),
                result.queries,
                bm25.metrics,
                sparse.metrics,
                unseen,
                sparse.index_bytes,
                bm25.index_bytes,
                result.tune_split or "none (test only)",
            )
        )
        print(f"{name}: done in {seconds:.0f} s; notes: {' | '.join(result.notes) or '-'}", flush=True)
        _table(rows)
    docs_per_s = _speed(DATASETS / "scifact", args.speed_sample)
    print(f"SPLADE-tiny encoding, {args.speed_sample} SciFact documents, no cache: {docs_per_s:.1f} documents/s")
    return 0


def _table(rows) -> None:
    print(
        f"{'collection':<10} {'docs':>6} {'test q':>6} | {'BM25 nDCG@10':>12} {'R@100':>6} | "
        f"{'SPLADE nDCG@10':>14} {'R@100':>6} | {'unseen nDCG@10 SPLADE / BM25':>30} | "
        f"{'sparse index':>12} {'BM25 index':>10} | tuned on"
    )
    for name, docs, queries, bm25, sparse, unseen, sparse_bytes, bm25_bytes, tuned in rows:
        print(
            f"{name:<10} {docs:>6} {queries:>6} | {bm25['ndcg@10']:>12.4f} {bm25['recall@100']:>6.4f} | "
            f"{sparse['ndcg@10']:>14.4f} {sparse['recall@100']:>6.4f} | {unseen:>30} | "
            f"{sparse_bytes / 1e6:>9.1f} MB {bm25_bytes / 1e6:>7.1f} MB | {tuned}",
            flush=True,
        )


def _speed(scifact: Path, sample: int) -> float:
    """Documents per second encoding SciFact's first ``sample`` documents (the model loaded and warmed first)."""
    corpus = load_beir(scifact).corpus
    texts = [doc.full_text for doc in list(corpus.values())[:sample]]
    encoder = SpladeEncoder(sparse_folder(SPLADE), name=SPLADE)
    encoder.encode(texts[:8])  # loads the weights; not timed
    start = time.perf_counter()
    encoder.encode(texts)
    return len(texts) / (time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
