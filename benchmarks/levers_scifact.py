"""Quality levers on SciFact side by side: every choice made on train, every figure on test.

    EMBEDTUNE_HOME=/tmp/etbench python benchmarks/levers_scifact.py [--adapter] [--feedback rm3] \
        [--model local:all-mpnet-base-v2 --model local:multilingual-e5-small] [--tune held-out]

One ``compare`` run (the code ``index`` and ``search`` run) scores BM25, MiniLM, SPLADE-tiny,
MiniLM + BM25 convex, and the N-way fusions of BM25, MiniLM and SPLADE-tiny (RRF, and convex with
weights tuned on train). With ``--adapter``, a query adapter trained by ``embedtune adapt --method
adapter`` on SciFact train (its dev held out as ``adapt`` chooses it) joins as another model, so
its rows and its fusions appear too. Each row prints nDCG@10 and Recall@100 on the 300 test
queries, the gain over 0.7486 (BM25 + fine-tuned MiniLM, the best figure before these levers),
and nDCG@10 on the 104 test queries whose relevant documents no train query names: a gain that
only learns which abstracts get cited shows up there as no gain. The fusions' weights are printed
in full, with the queries that chose them.

A model fine-tuned on train (``--model local:FOLDER``) has seen the train queries, so weights tuned
on all of them flatter it; ``--tune held-out`` tunes on the train queries ``adapt`` held out of
training (its honest dev split, same seed), which no model here trained on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from statistics import fmean

from embedtune.adaptation.devsplit import held_out_qrels
from embedtune.ensemble import Ensemble
from embedtune.evaluation import load_beir
from embedtune.evaluation.compare import evaluate_strategies
from embedtune.factory import EmbedderSpec

SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "scifact"
BEFORE = 0.7486  # BM25 + MiniLM fine-tuned on SciFact train (README, benchmarks/adapt_scifact.py)
TARGET = 0.778  # text-embedding-3-large's published SciFact nDCG@10
MINILM = "local:all-MiniLM-L6-v2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", action="store_true", help="train a query adapter on train and add it")
    parser.add_argument("--sparse", default="sparse:splade-tiny", help="the learned sparse model ('' for none)")
    parser.add_argument("--feedback", default="", help="feedback rows too: rocchio, rm3 (slow: a grid on train)")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        help="another model to add (repeatable), e.g. a fine-tuned folder; one trained on train also "
        "sways the weights tuned there",
    )
    parser.add_argument(
        "--tune",
        choices=["train", "held-out"],
        default="train",
        help="queries that choose weights and winner: all of train, or the train queries adapt held out",
    )
    args = parser.parse_args()

    home = Path(os.environ.get("EMBEDTUNE_HOME") or Path.home() / ".cache" / "embedtune")
    cache = home / "embeddings.sqlite"
    collection = load_beir(SCIFACT)
    tune_split = "train"
    if args.tune == "held-out":
        tune_split = "held-out"
        collection = replace(collection, qrels={**collection.qrels, tune_split: held_out_qrels(collection, "train")})
    tuned_on = f"{tune_split} ({len(collection.qrels[tune_split])} queries)"
    models = [EmbedderSpec(model=MINILM)]
    if args.adapter:
        models.append(EmbedderSpec(model=MINILM, adapter=str(train_adapter(home, cache))))
    models += [EmbedderSpec(model=uri) for uri in args.model]
    if args.sparse:
        models.append(EmbedderSpec(model=args.sparse))

    started = time.perf_counter()
    result = evaluate_strategies(
        collection,
        models,
        bm25=True,
        hybrid=["convex"],
        fuse=True,
        feedback=[f for f in args.feedback.split(",") if f],
        split="test",
        tune_split=tune_split,
        cache=cache,
    )
    unseen = collection.unseen_queries("test", "train")
    print(
        f"SciFact test: {result.queries} queries ({len(unseen)} unseen), choices on {tuned_on}; "
        f"{time.perf_counter() - started:.0f} s"
    )
    print(f"{'strategy':78s} {tune_split[:8]:>8s} {'nDCG@10':>8s} {'R@100':>7s} {'vs 0.7486':>9s} {'unseen':>7s}")
    for row in result.strategies:
        per_query = row.per_query or {}
        unseen_ndcg = fmean(per_query.get(q, 0.0) for q in unseen)
        ndcg = row.metrics["ndcg@10"]
        train = (row.selection or {}).get("ndcg@10", float("nan"))
        print(
            f"{row.name[:78]:78s} {train:8.4f} {ndcg:8.4f} {row.metrics['recall@100']:7.4f} "
            f"{ndcg - BEFORE:+9.4f} {unseen_ndcg:7.4f}"
        )
    for row in result.strategies:  # the tuned rows in full: the table cuts long names
        if row.alpha is not None:
            print(f"weight chosen on {tuned_on}: {row.name}, alpha {row.alpha:.2f} on the dense run")
        elif isinstance(row.strategy, Ensemble) and row.strategy.weights is not None:
            print(f"weights chosen on {tuned_on}: {row.name}")
    best = result.strategy(result.winner)
    print(
        f"chosen on {tune_split}: {best.name} at {best.metrics['ndcg@10']:.4f} on test "
        f"({'meets' if best.metrics['ndcg@10'] >= TARGET else 'below'} the {TARGET} target); "
        f"recommended: {result.recommended.name}"
    )
    for note in result.notes:
        print(f"note: {note}")


def train_adapter(home: Path, cache: Path) -> Path:
    """A query adapter on frozen MiniLM from SciFact's train pairs (``adapt --method adapter``)."""
    from embedtune.adaptation.workflow import adapt

    out = home / "levers" / "adapter"
    if (out / "adapter.json").exists():  # trained by an earlier run
        return out
    shutil.rmtree(out, ignore_errors=True)
    outcome = adapt(SCIFACT, EmbedderSpec(model=MINILM), out, method="adapter", split="train", cache=cache)
    print(f"query adapter trained in {outcome.train_seconds:.0f} s: {outcome.figures}")
    return out


if __name__ == "__main__":
    main()
