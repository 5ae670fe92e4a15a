"""Multi-way fusion on SciFact, NPL and Cranfield: BM25, each model, every pair, and all of them.

    EMBEDTUNE_HOME=/tmp/etbench python benchmarks/fusion_beir.py \
        [--collection scifact:MODEL,MODEL ...] [--latency-queries 50]

Per collection, the rows are BM25, each model's dense run (whole documents, float32), the convex
fusion of every pair of those runs, the N-way RRF (k = 60) and the N-way convex fusion. Every
fused row is an :class:`~embedtune.ensemble.Ensemble` scored through
``EnsembleRetriever.combine`` (what ``search`` runs on an ensemble's store), by
:func:`embedtune.evaluation.fused.fusion_row`, the code ``compare --fuse`` runs.

Convex weights are tuned on train (SciFact; step 0.1 simplex grid) and the figures are on test. NPL
and Cranfield have no train or dev split: their convex rows use equal weights, untuned, and say so.

Columns: nDCG@10 and Recall@100 on test; ``unseen``, the mean nDCG@10 over the test queries none
of whose relevant documents a train query names (``Collection.unseen_queries``, SciFact only);
``gain``, nDCG@10 minus the best figure so far on SciFact (0.7486, BM25 + fine-tuned MiniLM); the
median latency of one query (its embedding by each model, uncached, each member's search, the
fusion), over the first ``--latency-queries`` test queries. Vectors come from the embedding cache,
so the corpus is embedded once per model (the first run is slow).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import sys
import time
from pathlib import Path

HOME = Path(os.environ.setdefault("EMBEDTUNE_HOME", "/tmp/etbench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from embedtune.documents import corpus_documents
from embedtune.engine import OverLimit, close_stack
from embedtune.ensemble import Ensemble, EnsembleRetriever
from embedtune.evaluation import load_beir
from embedtune.evaluation.compare import SELECT_METRIC, StrategyResult
from embedtune.evaluation.fused import FuseBase, fusion_row
from embedtune.evaluation.metrics import evaluate_per_query
from embedtune.factory import EmbedderSpec, build_embedder
from embedtune.indexer import index_documents
from embedtune.retriever import Retriever
from embedtune.search.runs import Run
from embedtune.stores.embedded import EmbeddedStore
from embedtune.strategy import Fusion, Mode, Strategy

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
BEST_SO_FAR = {"scifact": 0.7486}  # BM25 + fine-tuned MiniLM, nDCG@10 on SciFact test
DEPTH = 100
METRICS = ("ndcg@10", "recall@100")
DEFAULT = ["scifact:local:all-MiniLM-L6-v2", "cranfield:local:all-MiniLM-L6-v2", "npl:local:all-MiniLM-L6-v2"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--collection",
        action="append",
        help="NAME:MODEL,MODEL (a folder of ../shared/datasets and model URIs); repeat for more",
    )
    parser.add_argument("--latency-queries", type=int, default=50)
    args = parser.parse_args(argv)
    for item in args.collection or DEFAULT:
        name, _, models = item.partition(":")
        bench(name, [m for m in models.split(",") if m], args.latency_queries)
    return 0


def bench(name: str, models: list[str], latency_queries: int) -> None:
    started = time.perf_counter()
    data = load_beir(DATASETS / name)
    tune = next((s for s in ("dev", "train") if s in data.qrels), None)
    test_queries, test_qrels = data.split("test")
    tune_queries, tune_qrels = data.split(tune) if tune else ({}, {})
    unseen = data.unseen_queries("test", tune) if tune else []
    documents = corpus_documents(data.corpus)
    queries = {**test_queries, **tune_queries}
    folder = HOME / "fusion-bench" / name

    def score(run: Run) -> dict:
        per_query = evaluate_per_query(test_qrels, run, METRICS)
        figures: dict = {
            "metrics": {m: math.fsum(v.values()) / len(test_qrels) for m, v in per_query.items()},
            "per_query": per_query[SELECT_METRIC],
        }
        if tune_qrels:
            tuned = evaluate_per_query(tune_qrels, run, [SELECT_METRIC])[SELECT_METRIC]
            figures["selection"] = {SELECT_METRIC: math.fsum(tuned.values()) / len(tune_qrels)}
        return figures

    bases: list[FuseBase] = []
    latency_members: list[Retriever] = []  # the same stores, queries embedded without the cache
    opened = []
    try:
        for uri in [None, *models]:
            if uri is None:
                strategy, embedder, fresh = Strategy(mode=Mode.BM25, depth=DEPTH), None, None
            else:
                spec = EmbedderSpec(model=uri, over_limit=OverLimit.TRUNCATE)
                strategy = Strategy(embedder=spec, depth=DEPTH)
                embedder = build_embedder(spec, cache=HOME / "embeddings.sqlite")
                fresh = build_embedder(spec, cache=None)
                opened += [embedder, fresh]
            store = EmbeddedStore(folder / strategy.fingerprint())
            opened.append(store)
            index_documents(documents, strategy, store, embedder)
            retriever = Retriever(strategy, store, embedder)
            runs = retriever.runs(queries)
            row = StrategyResult(
                name=strategy.name,
                kind=strategy.mode.value,
                model=strategy.model,
                **score(retriever.combine(runs, DEPTH)),
                index_bytes=store.index_bytes(),
                strategy=strategy,
            )
            bases.append(FuseBase(result=row, retriever=retriever, runs=runs))
            latency_members.append(Retriever(strategy, store, fresh))
        rows: list[tuple[StrategyResult, object]] = [(b.result, latency_members[i]) for i, b in enumerate(bases)]
        groups = [list(pair) for pair in itertools.combinations(range(len(bases)), 2)]
        fused = [(g, Fusion.CONVEX) for g in groups] + [(list(range(len(bases))), Fusion.RRF)]
        if len(bases) > 2:
            fused.append((list(range(len(bases))), Fusion.CONVEX))
        for group, method in fused:
            row = fusion_row(
                [bases[i] for i in group], method, score, DEPTH, tune_qrels=tune_qrels, documents=len(documents)
            )
            assert isinstance(row.strategy, Ensemble)
            rows.append((row, EnsembleRetriever(row.strategy, [latency_members[i] for i in group])))
        print(f"\n{name}: {len(documents)} documents, {len(test_qrels)} test queries", end="")
        print(
            f"; weights tuned on {tune} ({len(tune_qrels)} queries); unseen test queries: {len(unseen)}"
            if tune
            else "; no train or dev split: convex rows use equal weights, untuned"
        )
        best = BEST_SO_FAR.get(name)
        print(f"| strategy | nDCG@10 | Recall@100 | unseen nDCG@10 | ms/query (p50) |{' gain |' if best else ''}")
        print(f"|---|---|---|---|---|{'---|' if best else ''}")
        texts = list(test_queries.values())[:latency_queries]
        for row, retriever in rows:
            ms = latency(retriever, texts)
            seen = f"{statistics.fmean(row.per_query[q] for q in unseen):.4f}" if unseen and row.per_query else "-"
            ndcg = row.metrics["ndcg@10"]
            gain = f" {ndcg - best:+.4f} |" if best else ""
            print(f"| {row.name} | {ndcg:.4f} | {row.metrics['recall@100']:.4f} | {seen} | {ms:.1f} |{gain}")
            if isinstance(retriever, EnsembleRetriever):
                retriever.close()
        print(f"({time.perf_counter() - started:.0f} s; load {os.getloadavg()[0]:.1f})")
    finally:
        for item in opened:
            if isinstance(item, EmbeddedStore):
                item.close()
            else:
                close_stack(item)


def latency(retriever, texts: list[str]) -> float:
    """Median milliseconds to answer one query, 100 deep, after one untimed warm-up."""
    if not texts:
        return float("nan")
    retriever.search({"q": texts[0]}, DEPTH)
    samples = []
    for text in texts:
        start = time.perf_counter()
        retriever.search({"q": text}, DEPTH)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


if __name__ == "__main__":
    sys.exit(main())
