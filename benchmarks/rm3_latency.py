"""What RM3 costs a query over plain BM25, on SciFact: ``Retriever.search`` one query at a time.

    python benchmarks/rm3_latency.py [--dataset PATH] [--queries 300] [--passes 2]

Indexes SciFact's documents into a BM25-only embedded store (a temporary folder), then times
``Retriever.search`` for each of ``--queries`` test queries, one at a time, after one untimed
warm-up query: BM25 and BM25 + RM3 (docs 10, terms 20, query weight 0.9: the parameters tuned on
train in the README), each query by both in turn, so both see the same machine load. Two indexes:
the one the store built in this process, and the same store opened again (its index loaded from
disk), ``--passes`` times over the same queries: an index tokenizes a fed-back document the first
time it meets it, and keeps its tokens. Printed: the median ms per query of each, and RM3's over
BM25's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from embedtune.documents import corpus_documents
from embedtune.evaluation import load_beir
from embedtune.indexer import index_documents
from embedtune.retriever import Retriever
from embedtune.search.feedback import Feedback
from embedtune.stores.embedded import EmbeddedStore
from embedtune.strategy import Mode, Strategy

DEFAULT_SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "scifact"
RM3 = Feedback(method="rm3", docs=10, terms=20, weight=0.9)


def timed(retriever: Retriever, qid: str, text: str) -> float:
    start = time.perf_counter()
    retriever.search({qid: text}, 10)
    return time.perf_counter() - start


def one_pass(plain: Retriever, expanded: Retriever, queries: dict[str, str]) -> tuple[float, float]:
    """Median ms per query of BM25 and of BM25 + RM3, each query timed by both in turn (one load for both)."""
    bm25, rm3 = [], []
    for qid, text in queries.items():
        bm25.append(timed(plain, qid, text))
        rm3.append(timed(expanded, qid, text))
    return statistics.median(bm25) * 1000, statistics.median(rm3) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_SCIFACT)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args(argv)
    collection = load_beir(args.dataset)
    tests, _ = collection.split("test")
    warm, *rest = list(tests.items())[: args.queries + 1]
    queries = dict(rest)
    plain, expanded = Strategy(mode=Mode.BM25, depth=10), Strategy(mode=Mode.BM25, depth=10, feedback=RM3)
    print(f"{collection.name}: {len(collection.corpus)} documents, {len(queries)} queries timed")
    rows = []
    with tempfile.TemporaryDirectory(prefix="embedtune-rm3-") as folder:
        for opened in ("built here", "loaded"):
            with EmbeddedStore(Path(folder) / "bm25") as store:
                if opened == "built here":
                    index_documents(corpus_documents(collection.corpus), plain, store, None)
                retrievers = Retriever(plain, store), Retriever(expanded, store)
                for retriever in retrievers:
                    retriever.search(dict([warm]), 10)
                for n in range(1 if opened == "built here" else args.passes):
                    rows.append((f"index {opened}, pass {n + 1}", *one_pass(*retrievers, queries)))
    print(f"{'':28s} {'BM25 ms':>8s} {'+ RM3 ms':>9s} {'RM3 / BM25':>11s}  (medians over the queries)")
    for name, bm25, rm3 in rows:
        print(f"{name:28s} {bm25:8.2f} {rm3:9.2f} {rm3 / bm25:10.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
