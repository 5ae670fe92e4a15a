"""Fine-tuning MiniLM on SciFact: from its train labels, and from its corpus alone; with BM25 hybrids.

    EMBEDTUNE_HOME=/tmp/etbench python benchmarks/adapt_scifact.py [--dataset PATH/TO/scifact]
        [--epochs 1] [--lr 5e-5] [--generated-pairs 500] [--hard-negatives] [--skip-generated] [--adapter]

Trains, under EMBEDTUNE_HOME/adapted/ (a folder that already holds a trained model is reused, so a
rerun only evaluates):

- ``labels``: all-MiniLM-L6-v2 on SciFact's train qrels, 10 % of the train queries held out as a dev
  split that picks the epoch (MNRL, batch 32, lr 5e-5, texts cut to 128 tokens in training only:
  the machine this was written on has 2 shared cores);
- ``generated``: the same, on queries generated from the corpus alone (titles and sentences,
  kept only when BM25 ranks their document in its top 10), subsampled to ``--generated-pairs``;
  no label is read.

Then prints nDCG@10 and Recall@100 on the 300 test queries for BM25, the base model, each
fine-tuned model, and the convex BM25 hybrid of each (its weight tuned on the held-out dev queries of
the train split, which no model was trained on), next to OpenAI's published figures.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

from embedtune.adaptation.finetune import CARD_FILE, dev_set, fine_tune, record_figures
from embedtune.adaptation.pairs import pairs_from_qrels, split_dev
from embedtune.cli import default_home
from embedtune.engine import OverLimit
from embedtune.errors import EmbedtuneError
from embedtune.evaluation import load_beir
from embedtune.evaluation.collections import Collection
from embedtune.evaluation.compare import evaluate_strategies
from embedtune.factory import EmbedderSpec

DEFAULT_SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "scifact"
BASE = "local:all-MiniLM-L6-v2"
PUBLISHED = {  # nDCG@10 on SciFact test (MTEB results)
    "bm25": 0.6874,
    BASE: 0.6451,
    "openai:text-embedding-3-small": 0.7337,
    "openai:text-embedding-3-large": 0.778,
}


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _progress():
    last: dict[str, float] = {}

    def report(task: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last.get(task, 0.0) > 30:
            last[task] = now
            _log(f"  {task}: {done}/{total}")

    return report


def _train(name: str, pairs, dev, args, note: dict) -> Path:
    out = default_home() / "adapted" / name
    if (out / CARD_FILE).is_file():
        _log(f"{name}: reusing {out}")
        return out
    _log(f"{name}: fine-tuning on {len(pairs)} pairs, dev {len(dev)} pairs")
    pool = {p.positive_id: p.positive for p in pairs if p.positive_id}
    dev_docs = dev_set(dev, documents=pool, max_documents=args.dev_documents, seed=0)
    result = fine_tune(
        BASE,
        pairs,
        out_dir=out,
        dev=dev_docs,
        epochs=args.epochs,
        batch_size=32,
        lr=args.lr,
        max_seq_length=args.max_seq_length,
        seed=0,
        on_progress=_progress(),
        data_note=note,
    )
    _log(
        f"{name}: {result.steps} steps in {result.train_seconds:.0f} s; dev nDCG@10 (step, figure) {result.checkpoints}, "
        f"kept step {result.best_step}; weights {result.weights_hash[:16]}"
    )
    return out


def _generated_pairs(collection: Collection, limit: int) -> tuple[list, dict]:
    from embedtune.adaptation.generate import filter_consistent, generate_pairs

    pairs, counts = [], {}
    for generator in ("title", "span"):
        made = generate_pairs(collection.corpus, generator, seed=0)
        kept = filter_consistent(made, collection.corpus, by="bm25", top_k=10)
        counts[generator] = {"generated": len(made), "consistent": len(kept)}
        pairs += kept
    random.Random(0).shuffle(pairs)
    return pairs[:limit], counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_SCIFACT)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-seq-length", type=int, default=128, help="training length (evaluation uses 256)")
    parser.add_argument("--dev-documents", type=int, default=300, help="documents the dev queries are ranked among")
    parser.add_argument("--generated-pairs", type=int, default=500)
    parser.add_argument("--hard-negatives", action="store_true", help="add 1 BM25 hard negative per labelled pair")
    parser.add_argument("--skip-generated", action="store_true")
    parser.add_argument("--adapter", action="store_true", help="also train and score a query adapter on frozen MiniLM")
    args = parser.parse_args(argv)
    cache = default_home() / "embeddings.sqlite"
    started = time.perf_counter()
    try:
        collection = load_beir(args.dataset, splits=["test", "train"])
        train_all, dev = split_dev(pairs_from_qrels(collection, "train"), 0.1, seed=0)
        name = "labels"
        if args.hard_negatives:
            from embedtune.adaptation.negatives import mine_hard_negatives

            train_all = mine_hard_negatives(train_all, collection.corpus, by="bm25", count=1)
            name = "labels-bm25neg"
        # The convex weight is tuned on the held-out dev queries of the train split: no model saw them.
        dev_qids = {qid for qid, text in collection.split("train")[0].items() if text in {p.query for p in dev}}
        tuning = {qid: j for qid, j in collection.qrels["train"].items() if qid in dev_qids}
        scored = replace(collection, qrels={"test": collection.qrels["test"], "dev": tuning})
        models = {name: _train(name, train_all, dev, args, {"collection": "scifact", "split": "train"})}
        _quick_test(scored, models[name], cache)
        if not args.skip_generated:
            generated, counts = _generated_pairs(collection, args.generated_pairs + args.generated_pairs // 10)
            gen_train, gen_dev = split_dev(generated, 1 / 11, seed=0)
            models["generated"] = _train(
                "generated",
                gen_train,
                gen_dev,
                args,
                {"collection": "scifact (corpus only, no labels)", "generators": counts},
            )
            _quick_test(scored, models["generated"], cache)
        specs = [EmbedderSpec(model=BASE)] + [EmbedderSpec(model=f"local:{path}") for path in models.values()]
        _log("evaluating on the test split")
        result = evaluate_strategies(
            scored,
            specs,
            bm25=True,
            hybrid=["convex"],
            split="test",
            tune_split="dev",
            cache=cache,
            on_progress=_progress(),
        )
        adapter_row = _adapter(collection, train_all, dev, scored, cache) if args.adapter else None
    except EmbedtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    labels = {BASE: "all-MiniLM-L6-v2 (base)"}
    for name, path in models.items():
        labels[f"local:{path}"] = f"MiniLM fine-tuned: {name}"
        card = json.loads((path / CARD_FILE).read_text(encoding="utf-8"))
        test = result.strategy(f"local:{path}").metrics
        record_figures(
            path, "test", {"ndcg@10": result.strategy(BASE).metrics["ndcg@10"]}, {"ndcg@10": test["ndcg@10"]}
        )
        print(
            f"{name}: {card['data']['train_pairs']} pairs, {card['steps']} steps, {card['train_seconds']:.0f} s "
            f"training, kept step {card['best_step']} (dev nDCG@10 {card['figures']['dev']['by_checkpoint']})"
        )
    print(
        f"SciFact test: {result.queries} queries, {result.documents} documents; convex weight tuned on "
        f"{len(tuning)} held-out train queries; {time.perf_counter() - started:.0f} s in all"
    )
    print(f"{'strategy':<52}{'nDCG@10':>8}{'vs base':>9}{'R@100':>8}{'alpha':>7}")
    base = result.strategy(BASE).metrics["ndcg@10"]
    rows = [
        (
            s.name if s.kind == "bm25" else labels[s.model or ""] + ("" if s.kind == "dense" else f" + BM25 {s.kind}"),
            s.metrics["ndcg@10"],
            s.metrics["recall@100"],
            s.alpha,
        )
        for s in result.strategies
    ]
    if adapter_row is not None:
        rows.append(adapter_row)
    for label, ndcg, recall, alpha in rows:
        alpha_text = "-" if alpha is None else f"{alpha:.2f}"
        print(f"{label:<52}{ndcg:>8.4f}{ndcg - base:>+9.4f}{recall:>8.4f}{alpha_text:>7}")
    for uri in ("openai:text-embedding-3-small", "openai:text-embedding-3-large"):
        print(f"{uri + ' (published)':<52}{PUBLISHED[uri]:>8.4f}{PUBLISHED[uri] - base:>+9.4f}{'-':>8}{'-':>7}")
    print(f"best here: {result.winner} (nDCG@10 {result.best.metrics['ndcg@10']:.4f})")
    return 0


def _quick_test(scored, path: Path, cache) -> None:
    """The model's test figure as soon as it is trained (its vectors land in the cache for the table)."""
    result = evaluate_strategies(
        scored, [EmbedderSpec(model=f"local:{path}")], bm25=False, split="test", cache=cache, on_progress=_progress()
    )
    _log(f"{path.name}: test nDCG@10 {result.strategies[0].metrics['ndcg@10']:.4f}")


def _adapter(collection, train, dev, scored, cache):
    from embedtune.adaptation.adapter import train_query_adapter
    from embedtune.factory import build_embedder

    embedder = build_embedder(EmbedderSpec(model=BASE, over_limit=OverLimit.TRUNCATE), cache=cache)
    adapter = train_query_adapter(embedder, train, dev_pairs=dev, seed=0)
    folder = default_home() / "adapted" / "adapter"
    if not folder.exists():
        adapter.save(folder)
    spec = EmbedderSpec(model=BASE, adapter=str(folder))
    result = evaluate_strategies(scored, [spec], bm25=False, split="test", cache=cache)
    metrics = result.strategies[0].metrics
    return ("query adapter on frozen MiniLM", metrics["ndcg@10"], metrics["recall@100"], None)


if __name__ == "__main__":
    sys.exit(main())
