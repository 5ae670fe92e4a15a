"""A reranker trained on SciFact's train labels: what it adds on the test queries, and what it costs.

    EMBEDTUNE_HOME=/tmp/etbench python benchmarks/rerank_scifact.py [--dataset PATH/TO/scifact]
        [--max-length 128] [--epochs 1] [--tops 20,50,100] [--latency-queries 20] [--train-only]

Trains once, under EMBEDTUNE_HOME/rerankers/ (a folder that already holds a trained reranker is
reused, so a rerun only evaluates): a cross-encoder from all-MiniLM-L6-v2's weights, binary
cross-entropy on SciFact's train pairs with one BM25 hard negative each, 10 % of the train queries
(whole queries) held out as the dev split that picks the epoch.

Then scores on the 300 test queries, through ``compare`` (the Retriever's path): BM25, MiniLM,
MiniLM + BM25 convex (weight tuned on the held-out dev queries), and each reranked at every
``--tops``: nDCG@10, Recall@100, the gain over the best figure so far (0.7486, fine-tuned MiniLM +
BM25 convex), and mean nDCG@10 over the test queries none of whose relevant documents a train
query names (``Collection.unseen_queries``: there, knowing which documents get cited cannot help).

Latency is the rerank step alone, in ms per query, measured apart: ``--latency-queries`` test
queries searched one at a time with a fresh model (compare's own scoring batches all queries and
reuses scores a deeper top already computed, so its timings are not a single user's wait).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from embedtune.adaptation.negatives import mine_hard_negatives
from embedtune.adaptation.pairs import pairs_from_qrels, split_dev
from embedtune.adaptation.reranker import MANIFEST_FILE, rerank_dev, train_reranker
from embedtune.cli import default_home
from embedtune.errors import EmbedtuneError
from embedtune.evaluation import load_beir
from embedtune.evaluation.compare import evaluate_strategies
from embedtune.factory import EmbedderSpec
from embedtune.search.rerank import CrossEncoderScorer, RerankSpec, rerank_run
from embedtune.search.runs import ranked

DEFAULT_SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "scifact"
BASE = "local:all-MiniLM-L6-v2"
BEST_SO_FAR = 0.7486  # fine-tuned MiniLM + BM25 convex on SciFact test (README, adapt_scifact.py)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class _Remembering:
    """A scorer that scores each (query, text) pair once: the tops 20, 50 and 100 of several
    strategies share most of their pairs, and a pair's score does not depend on the row."""

    def __init__(self, scorer) -> None:
        self.scorer = scorer
        self.known: dict[tuple[str, str], float] = {}

    def __call__(self, pairs):
        missing = list(dict.fromkeys(p for p in pairs if p not in self.known))
        if missing:
            _log(f"reranker: scoring {len(missing)} new pairs ({len(pairs) - len(missing)} known)")
            for pair, score in zip(missing, self.scorer(missing)):
                self.known[pair] = float(score)
        return np.array([self.known[p] for p in pairs], dtype=np.float32)


def _train(folder: Path, collection, args) -> dict:
    if (folder / MANIFEST_FILE).is_file():
        _log(f"reusing the reranker in {folder}")
        return json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    train, dev = split_dev(pairs_from_qrels(collection, "train"), 0.1, seed=0)
    _log(f"mining BM25 hard negatives for {len(train)} pairs")
    train = mine_hard_negatives(train, collection.corpus, by="bm25", count=1)
    _log(f"training on {len(train)} pairs, {len({p.query for p in dev})} dev queries held out")
    result = train_reranker(
        BASE,
        train,
        out_dir=folder,
        dev=rerank_dev(dev, collection.corpus),
        epochs=args.epochs,
        max_length=args.max_length,
        seed=0,
        data_note={"collection": "scifact", "split": "train", "hard_negatives": "bm25"},
    )
    _log(f"trained in {result.train_seconds:.0f} s; dev nDCG@10 by epoch {result.dev_by_epoch}")
    return dict(result.manifest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_SCIFACT)
    parser.add_argument("--max-length", type=int, default=128, help="tokens of query + document the reranker reads")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--tops", default="20,50,100", help="rerank depths, comma separated")
    parser.add_argument("--latency-queries", type=int, default=20)
    parser.add_argument("--train-only", action="store_true")
    args = parser.parse_args(argv)
    tops = [int(t) for t in args.tops.split(",")]
    home = default_home()
    folder = home / "rerankers" / f"scifact-minilm-len{args.max_length}-e{args.epochs}-s0"
    started = time.perf_counter()
    try:
        collection = load_beir(args.dataset, splits=["test", "train"])
        manifest = _train(folder, collection, args)
        print(
            f"reranker {folder}: {manifest['data']['train_pairs']} pairs + {manifest['data']['negatives']} "
            f"BM25 negatives, {manifest['steps']} steps, {manifest['train_seconds']:.0f} s training "
            f"({manifest['machine']}), kept epoch {manifest['best_epoch']}, dev nDCG@10 (BM25 top 20 -> reranked) "
            f"{manifest['figures']['dev']['by_epoch']}, weights {manifest['weights_sha256'][:16]}",
            flush=True,
        )
        if args.train_only:
            return 0
        _, dev = split_dev(pairs_from_qrels(collection, "train"), 0.1, seed=0)
        # The convex weight and the winner are chosen on the held-out dev queries: nothing trained on them.
        dev_texts = {p.query for p in dev}
        tuning = {q: j for q, j in collection.qrels["train"].items() if collection.queries[q] in dev_texts}
        scored = replace(collection, qrels={"test": collection.qrels["test"], "dev": tuning})
        remembering = _Remembering(CrossEncoderScorer(folder))
        _log("evaluating on the test split")
        result = evaluate_strategies(
            scored,
            [EmbedderSpec(model=BASE)],
            bm25=True,
            hybrid=["convex"],
            split="test",
            tune_split="dev",
            cache=home / "embeddings.sqlite",
            index_dir=home / "stores",
            rerank=[RerankSpec(model=str(folder), top=top) for top in tops],
            reranker=remembering,
        )
        unseen = collection.unseen_queries("test", "train")
        ms = _latencies(folder, collection, tops, args.latency_queries)
    except EmbedtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    print(
        f"\nSciFact test, {result.queries} queries ({len(unseen)} unseen: no relevant document named by a train "
        f"query); convex weight and winner chosen on {len(tuning)} held-out dev queries; reranker reads "
        f"{args.max_length} tokens\n"
    )
    header = (
        f"{'strategy':<58} {'nDCG@10':>8} {'R@100':>7} {'vs 0.7486':>9} {'unseen':>7} {'dev':>7} {'ms/q rerank':>11}"
    )
    print(header)
    print("-" * len(header))
    for row in result.strategies:
        per_query = row.per_query or {}
        unseen_ndcg = math.fsum(per_query.get(q, 0.0) for q in unseen) / max(len(unseen), 1)
        dev = (row.selection or {}).get("ndcg@10")
        latency = ms.get(row.strategy.rerank.top) if row.strategy and row.strategy.rerank else None
        print(
            f"{row.name[-58:]:<58} {row.metrics['ndcg@10']:>8.4f} {row.metrics['recall@100']:>7.4f} "
            f"{row.metrics['ndcg@10'] - BEST_SO_FAR:>+9.4f} {unseen_ndcg:>7.4f} "
            f"{'' if dev is None else f'{dev:.4f}':>7} {'' if latency is None else f'{latency:.0f}':>11}"
        )
    print(f"\nwinner on dev: {result.winner}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


def _latencies(folder: Path, collection, tops: list[int], n: int) -> dict[int, float]:
    """ms per query of the rerank step alone for each top: the first ``n`` test queries, one at a
    time, each reranking its BM25 top (the cost is the pairs read, whatever ranked them)."""
    from embedtune.search.bm25 import BM25Index

    if n < 1:
        return {}
    scorer = CrossEncoderScorer(folder)
    queries = dict(list(collection.split("test")[0].items())[:n])
    texts = {doc_id: doc.full_text for doc_id, doc in collection.corpus.items()}
    first = BM25Index.build(list(texts), list(texts.values())).search(queries, max(tops))
    scorer([(next(iter(queries.values())), "warm-up")])  # loading the model is not a query's wait
    out: dict[int, float] = {}
    for top in tops:
        seconds = 0.0
        for qid, text in queries.items():
            one = {qid: first[qid]}
            start = time.perf_counter()
            rerank_run(one, {qid: text}, {d: texts[d] for d in ranked(first[qid], top)}, scorer, top=top)
            seconds += time.perf_counter() - start
        out[top] = 1000 * seconds / len(queries)
        _log(f"rerank top {top}: {out[top]:.0f} ms/query")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
