"""BM25 hard negatives or none: fine-tuning MiniLM on SciFact's train labels, scored on its test queries.

    EMBEDTUNE_HOME=/tmp/etbench python benchmarks/adapt_negatives_scifact.py [--epochs 1] [--lr 5e-5]

Runs ``adapt`` (the workflow ``embedtune adapt`` runs) twice, ``--hard-negatives none`` and
``bm25``, with its honest dev split: the train queries whose documents no training pair uses pick
the checkpoint (the base model included). Then prints nDCG@10 on SciFact's 300 test queries for the
base model and each fine-tune, dense and in a convex BM25 hybrid whose weight is chosen on those
held-out train queries, and on the test queries whose documents no train query names
(``unseen_queries``), where learning which abstracts get cited cannot help.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from embedtune.adaptation.devsplit import held_out_qrels
from embedtune.adaptation.workflow import adapt
from embedtune.cli import default_home
from embedtune.evaluation import load_beir
from embedtune.evaluation.compare import evaluate_strategies
from embedtune.factory import EmbedderSpec

SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "scifact"
BASE = "local:all-MiniLM-L6-v2"


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-seq-length", type=int, default=128, help="training length (evaluation uses 256)")
    args = parser.parse_args(argv)
    home = default_home()
    cache = home / "embeddings.sqlite"
    collection = load_beir(SCIFACT, splits=["test", "train"])
    stamp = int(time.time())
    models, lines = {}, []
    for negatives in ("none", "bm25"):
        _log(f"adapt --hard-negatives {negatives}")
        outcome = adapt(
            SCIFACT,
            EmbedderSpec(model=BASE),
            home / "adapted" / f"scifact-{negatives}-{stamp}",
            hard_negatives=negatives,
            epochs=args.epochs,
            lr=args.lr,
            max_seq_length=args.max_seq_length,
            seed=0,
            cache=cache,
        )
        tuned = outcome.finetune
        assert tuned is not None
        models[negatives] = outcome.uri
        lines.append(
            f"--hard-negatives {negatives}: {outcome.train_pairs} pairs, {tuned.steps} steps, "
            f"{outcome.train_seconds:.0f} s; dev ({outcome.dev_kind}) {tuned.dev_before:.4f} -> {tuned.dev_after:.4f}, "
            f"kept {'the base model' if tuned.kept_base else f'step {tuned.best_step}'}; weights {tuned.weights_hash[:16]}"
        )
        _log(lines[-1])

    # The hybrid's weight is chosen on the held-out train queries: no model was trained on them.
    tuning = held_out_qrels(collection, "train", seed=0)
    test = collection.qrels["test"]
    unseen = {q: test[q] for q in collection.unseen_queries("test", "train")}
    labels = {BASE: "all-MiniLM-L6-v2 (base)"} | {uri: f"fine-tuned, negatives {n}" for n, uri in models.items()}
    specs = [EmbedderSpec(model=uri) for uri in labels]
    table: dict[str, dict[str, tuple[float, float | None]]] = {}
    for name, qrels in (("test", test), ("unseen", unseen)):
        scored = replace(collection, qrels={"test": qrels, "tune": tuning})
        result = evaluate_strategies(
            scored, specs, bm25=True, hybrid=["convex"], split="test", tune_split="tune", cache=cache
        )
        for s in result.strategies:
            label = (
                s.name if s.kind == "bm25" else labels[s.model or ""] + ("" if s.kind == "dense" else " + BM25 convex")
            )
            table.setdefault(label, {})[name] = (s.metrics["ndcg@10"], s.alpha)
    for line in lines:
        print(line)
    print(
        f"SciFact test: {len(test)} queries, {len(unseen)} unseen; hybrid weight chosen on {len(tuning)} train queries"
    )
    print(f"{'nDCG@10':<48}{'test':>8}{'unseen':>8}{'alpha':>7}")
    for label, row in table.items():
        alpha = row["test"][1]
        print(f"{label:<48}{row['test'][0]:>8.4f}{row['unseen'][0]:>8.4f}{'-' if alpha is None else f'{alpha:.2f}':>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
