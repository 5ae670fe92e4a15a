"""Pseudo-relevance feedback on BEIR collections: Rocchio (dense) and RM3 (BM25), with and without.

    EMBEDTUNE_HOME=/tmp/et python benchmarks/prf_beir.py [--collections scifact,npl,cranfield]

Each collection goes through ``evaluate_strategies`` (the code ``embedtune compare --feedback
rocchio,rm3`` runs): BM25, MiniLM dense, MiniLM + BM25 (convex on SciFact), each with and without
feedback. On SciFact every parameter (the convex weight, the feedback grid of
``embedtune.evaluation.tuning.FEEDBACK_GRIDS``) is chosen on train and reported on test. NPL and
Cranfield have no train or dev split: feedback runs with its defaults (docs 5, weight 0.5, RM3
terms 10), the hybrid is RRF (nothing to tune), and nothing is chosen there.

Printed per row: nDCG@10 and Recall@100 on test; on SciFact, the gain in nDCG@10 over the best
figure so far (0.7486, fine-tuned MiniLM + BM25 convex), nDCG@10 averaged over the test queries
none of whose relevant documents a train query names (``Collection.unseen_queries``) and nDCG@10
on train (where the parameters and the winner were chosen); and the
query latency: ``Retriever.search`` one query at a time (mean ms over ``--latency-queries`` test
queries), the query vectors from the embedding cache compare filled, so the figure is search,
feedback and fusion, not the model.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

from embedtune.engine import close_stack
from embedtune.evaluation import load_beir
from embedtune.evaluation.compare import StrategyResult, evaluate_strategies
from embedtune.factory import EmbedderSpec, build_embedder
from embedtune.retriever import Retriever
from embedtune.stores.embedded import EmbeddedStore

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
MODEL = "local:all-MiniLM-L6-v2"
BEST_SO_FAR = 0.7486  # SciFact test nDCG@10: MiniLM fine-tuned on train + BM25 convex (README)


def home() -> Path:
    return Path(os.environ.get("EMBEDTUNE_HOME", Path.home() / ".embedtune"))


def latency_ms(result: StrategyResult, stores: Path, queries: dict[str, str]) -> float:
    """Mean ms of ``Retriever.search`` for one query, over ``queries``, on the store compare built."""
    strategy = result.strategy
    assert strategy is not None
    folder = "bm25" if strategy.embedder is None else MODEL.replace(":", "_")
    store = EmbeddedStore(stores / folder)
    embedder = (
        None if strategy.embedder is None else build_embedder(strategy.embedder, cache=home() / "embeddings.sqlite")
    )
    retriever = Retriever(strategy, store, embedder)
    try:
        first = next(iter(queries))
        retriever.search({first: queries[first]}, 10)  # warm: opens indexes, loads what is lazy
        times = []
        for qid, text in queries.items():
            start = time.perf_counter()
            retriever.search({qid: text}, 10)
            times.append(time.perf_counter() - start)
        return statistics.fmean(times) * 1000
    finally:
        retriever.close()
        store.close()
        if embedder is not None:
            close_stack(embedder)


def run(name: str, latency_queries: int) -> None:
    collection = load_beir(DATASETS / name)
    tuned = "train" in collection.qrels
    start = time.perf_counter()
    result = evaluate_strategies(
        collection,
        [EmbedderSpec(model=MODEL)],
        bm25=True,
        hybrid=["convex"] if tuned else ["rrf"],
        feedback=["rocchio", "rm3"],
        cache=home() / "embeddings.sqlite",
        index_dir=home() / "stores",
    )
    seconds = time.perf_counter() - start
    stores = max((home() / "stores").glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)
    queries, _ = collection.split("test")
    timed = dict(list(queries.items())[:latency_queries])
    unseen = collection.unseen_queries("test", "train") if tuned else []
    print(f"\n== {name}: {result.documents} documents, {result.queries} test queries; tuned on {result.tune_split} ==")
    header = f"{'strategy':58s} {'feedback':34s} {'nDCG@10':>8s} {'R@100':>7s} {'ms/q':>7s}"
    if tuned:
        header += f" {'gain':>8s} {'unseen':>7s} {'train':>7s}"
    print(header)
    for row in result.strategies:
        assert row.strategy is not None and row.per_query is not None
        feedback = row.strategy.feedback.label if row.strategy.feedback else "-"
        line = (
            f"{row.name.replace(MODEL, 'MiniLM'):58s} {feedback:34s} {row.metrics['ndcg@10']:8.4f} "
            f"{row.metrics['recall@100']:7.4f} {latency_ms(row, stores, timed):7.1f}"
        )
        if tuned:
            unseen_ndcg = math.fsum(row.per_query[q] for q in unseen) / len(unseen)
            line += f" {row.metrics['ndcg@10'] - BEST_SO_FAR:+8.4f} {unseen_ndcg:7.4f} {row.selection_score:7.4f}"
        print(line, flush=True)
    if tuned:
        print(f"unseen: the {len(unseen)} test queries none of whose relevant documents a train query names")
    for note in result.notes:
        print(f"note: {note}")
    print(f"({seconds:.0f} s for compare)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collections", default="scifact,npl,cranfield")
    parser.add_argument("--latency-queries", type=int, default=100)
    args = parser.parse_args(argv)
    for name in (n.strip() for n in args.collections.split(",") if n.strip()):
        run(name, args.latency_queries)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
