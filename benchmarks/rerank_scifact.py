"""A reranker trained on SciFact's train labels: what it adds on the test queries, and what it costs.

    EMBEDTUNE_HOME=/tmp/etbench python benchmarks/rerank_scifact.py [--dataset PATH/TO/scifact]
        [--max-length 128] [--epochs 1] [--lr 2e-5] [--tops 20,50,100] [--sample N] [--threads N] [--train-only]

Trains once, under EMBEDTUNE_HOME/rerankers/ (a folder that already holds a trained reranker is
reused, so a rerun only evaluates): a cross-encoder from all-MiniLM-L6-v2's weights, binary
cross-entropy on SciFact's train pairs with one BM25 hard negative each, 10 % of the train queries
(whole queries) held out as the dev split that picks the epoch.

Then ``compare`` scores BM25, MiniLM and MiniLM + BM25 convex (weight tuned on the held-out dev
queries) on the 300 test queries, and each of BM25 and the convex hybrid is searched again through
its Retriever over compare's own store, with a ``[rerank]`` table at every ``--tops``: nDCG@10,
Recall@100, the gain over the best figure so far (0.7486, fine-tuned MiniLM + BM25 convex), and
mean nDCG@10 over the test queries none of whose relevant documents a train query names
(``Collection.unseen_queries``: there, knowing which documents get cited cannot help).

``--sample N`` reranks a seeded sample of N test queries (the unreranked rows are then given on the
same sample): on a machine shared by many jobs the cross-encoder reads a few pairs a second.
Latency is the model's measured time per (query, document) pair, batched, times ``top``: the rerank
step's ms per query. Pairs shared by several rows are scored once.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
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
from embedtune.evaluation.metrics import evaluate_per_query
from embedtune.factory import EmbedderSpec
from embedtune.indexer import open_retriever
from embedtune.retriever import Retriever
from embedtune.search.rerank import CrossEncoderScorer, RerankSpec

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
        self.seconds = 0.0  # in the model, for the pairs it scored
        self.scored = 0

    def __call__(self, pairs):
        missing = list(dict.fromkeys(p for p in pairs if p not in self.known))
        if missing:
            _log(f"reranker: scoring {len(missing)} new pairs ({len(pairs) - len(missing)} known)")
            started = time.perf_counter()
            scores = self.scorer(missing)
            self.seconds += time.perf_counter() - started
            self.scored += len(missing)
            for pair, score in zip(missing, scores):
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
        lr=args.lr,
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
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--tops", default="20,50,100", help="rerank depths, comma separated")
    parser.add_argument(
        "--sample", type=int, default=0, help="rerank a seeded sample of this many test queries (0: all)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads for reranking (0: torch's default)")
    parser.add_argument("--train-only", action="store_true")
    args = parser.parse_args(argv)
    tops = [int(t) for t in args.tops.split(",")]
    home = default_home()
    lr = "" if args.lr == 2e-5 else f"-lr{args.lr:g}"
    folder = home / "rerankers" / f"scifact-minilm-len{args.max_length}-e{args.epochs}{lr}-s0"
    started = time.perf_counter()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
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
        # The convex weight is tuned on the held-out dev queries: the reranker never trained on them.
        dev_texts = {p.query for p in dev}
        tuning = {q: j for q, j in collection.qrels["train"].items() if collection.queries[q] in dev_texts}
        scored = replace(collection, qrels={"test": collection.qrels["test"], "dev": tuning})
        cache = home / "embeddings.sqlite"
        _log("scoring BM25, MiniLM and their convex hybrid on the test split (compare)")
        base = evaluate_strategies(
            scored,
            [EmbedderSpec(model=BASE)],
            bm25=True,
            hybrid=["convex"],
            split="test",
            tune_split="dev",
            cache=cache,
            index_dir=home / "stores",
        )
        queries, qrels = collection.split("test")
        chosen = sorted(queries)
        if args.sample:
            random.Random(0).shuffle(chosen)
            chosen = sorted(chosen[: args.sample])
        unseen = set(collection.unseen_queries("test", "train"))
        remembering = _Remembering(CrossEncoderScorer(folder))
        remembering.scorer([("warm-up", "loading the model is no query's wait")])
        rows = []
        for row in (base.strategy("bm25"), next(r for r in base.strategies if r.kind == "convex")):
            retriever = _retriever(home, row)
            fused = retriever.combine(retriever.runs({q: queries[q] for q in chosen}), 100)
            rows.append((row.name, _figures(fused, qrels, chosen, unseen), None))
            for top in tops:
                spec = RerankSpec(model=str(folder), top=top)
                reranking = Retriever(
                    replace(row.strategy, rerank=spec), retriever.store, retriever.embedder, reranker=remembering
                )
                run = reranking.rerank({q: queries[q] for q in chosen}, fused, 100)
                rows.append((reranking.strategy.name, _figures(run, qrels, chosen, unseen), top))
                _log(f"{reranking.strategy.name}: nDCG@10 {rows[-1][1][0]:.4f}")
    except EmbedtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    ms_per_pair = 1000 * remembering.seconds / max(remembering.scored, 1)
    print(
        f"\nSciFact test: {len(chosen)} of {len(queries)} queries ({len(unseen & set(chosen))} of them unseen: no "
        f"relevant document named by a train query); convex weight tuned on {len(tuning)} held-out dev queries; "
        f"the reranker reads {args.max_length} tokens; {ms_per_pair:.0f} ms per (query, document) pair, batched, "
        f"over {remembering.scored} pairs\n"
    )
    header = f"{'strategy':<52} {'nDCG@10':>8} {'R@100':>7} {'vs 0.7486':>9} {'unseen':>7} {'ms/q rerank':>11}"
    print(header)
    print("-" * len(header))
    for name, (ndcg, recall, unseen_ndcg), top in rows:
        latency = "" if top is None else f"{top * ms_per_pair:.0f}"
        print(
            f"{name[-52:]:<52} {ndcg:>8.4f} {recall:>7.4f} {ndcg - BEST_SO_FAR:>+9.4f} {unseen_ndcg:>7.4f} {latency:>11}"
        )
    print(
        "\nfull 300 queries, no rerank: " + ", ".join(f"{r.name} {r.metrics['ndcg@10']:.4f}" for r in base.strategies)
    )
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


def _retriever(home: Path, row) -> Retriever:
    """The row's strategy over the store compare built for it (found under its index_dir)."""
    from embedtune.stores.embedded import EmbeddedStore

    folder = next((home / "stores").glob("scifact-*"))
    name = "bm25" if row.kind == "bm25" else re.sub(r"[^A-Za-z0-9._-]+", "_", row.model).strip("_")
    store = EmbeddedStore(folder / name)
    opened = open_retriever(store, cache=home / "embeddings.sqlite")
    return Retriever(row.strategy, store, opened.embedder)


def _figures(run, qrels, chosen, unseen) -> tuple[float, float, float]:
    """nDCG@10 and Recall@100 over ``chosen``, and nDCG@10 over its unseen queries."""
    judged = {q: qrels[q] for q in chosen}
    per_query = evaluate_per_query(judged, {q: run.get(q, {}) for q in chosen}, ["ndcg@10", "recall@100"])
    ndcg = math.fsum(per_query["ndcg@10"].values()) / len(chosen)
    recall = math.fsum(per_query["recall@100"].values()) / len(chosen)
    hidden = [q for q in chosen if q in unseen]
    return ndcg, recall, math.fsum(per_query["ndcg@10"][q] for q in hidden) / max(len(hidden), 1)


if __name__ == "__main__":
    raise SystemExit(main())
