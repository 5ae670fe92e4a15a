"""Fine-tuning on a training set too big for the time given: does ``--max-minutes`` stop in time?

    EMBEDTUNE_HOME=/tmp/etbench python benchmarks/adapt_budget.py [--max-minutes 20] [--span-per-doc 4]

Generates queries from the SciFact and NPL corpora together (SciFact titles, sentences of both;
NPL's unpunctuated abstracts give runs of words), keeps those BM25 ranks their document for in its
top 10, and fine-tunes all-MiniLM-L6-v2 on at least 20,000 of them within ``--max-minutes``,
counted from the first pair generated, as ``embedtune adapt --max-minutes`` counts. The dev split
is the workflow's own (``honest_dev``): queries on documents never trained on, so generated and
unverified. Prints the wall time of the budgeted part, the steps done, the dev checkpoints and the
one kept, and nDCG@10 before and after on the dev split and on SciFact's and NPL's test queries.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from embedtune.adaptation.devsplit import honest_dev
from embedtune.adaptation.finetune import dev_set, fine_tune
from embedtune.adaptation.generate import filter_consistent, generate_pairs
from embedtune.cli import default_home
from embedtune.evaluation import load_beir
from embedtune.evaluation.collections import Collection
from embedtune.evaluation.compare import evaluate_strategies
from embedtune.factory import EmbedderSpec

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
BASE = "local:all-MiniLM-L6-v2"
MIN_PAIRS = 20_000


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _pairs(collections: dict[str, Collection], span_per_doc: int) -> tuple[list, dict[str, int]]:
    """Generated, consistent pairs of every collection, their document ids prefixed by its name."""
    from dataclasses import replace

    pairs, counts = [], {}
    for name, collection in collections.items():
        for generator, per_doc in (("title", 1), ("span", span_per_doc)):
            made = generate_pairs(collection.corpus, generator, per_doc=per_doc, seed=0)
            kept = filter_consistent(made, collection.corpus, by="bm25", top_k=10) if made else []
            counts[f"{name} {generator}"] = len(kept)
            pairs += [replace(p, positive_id=f"{name}/{p.positive_id}") for p in kept]
    return pairs, counts


def _ndcg(collection: Collection, model: str, cache: Path) -> float:
    result = evaluate_strategies(collection, [EmbedderSpec(model=model)], bm25=False, split="test", cache=cache)
    return result.strategies[0].metrics["ndcg@10"]


def _row(label: str, before: float, after: float) -> None:
    print(f"{label:<28}{before:>8.4f}{after:>8.4f}{after - before:>+8.4f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-minutes", type=float, default=20.0)
    parser.add_argument("--span-per-doc", type=int, default=4)
    parser.add_argument("--max-seq-length", type=int, default=128, help="training length (evaluation uses 256)")
    parser.add_argument("--dev-queries", type=int, default=200, help="dev queries scored at each checkpoint")
    parser.add_argument("--dev-documents", type=int, default=300, help="documents the dev queries are ranked among")
    args = parser.parse_args(argv)
    home = default_home()
    cache = home / "embeddings.sqlite"
    out = home / "adapted" / f"budget-{int(time.time())}"
    collections = {name: load_beir(DATASETS / name, splits=["test"]) for name in ("scifact", "npl")}

    started = time.monotonic()  # the budget's clock, as adapt's: generating and filtering count
    pairs, counts = _pairs(collections, args.span_per_doc)
    corpus = {f"{n}/{i}": d for n, c in collections.items() for i, d in c.corpus.items()}
    merged = Collection(name="scifact+npl", corpus=corpus, queries={}, qrels={})
    held = honest_dev(pairs, collection=merged, max_queries=args.dev_queries, seed=0)
    _log(f"{len(pairs)} consistent pairs {counts}; train {len(held.train)}, dev {len(held.dev)} ({held.kind})")
    if len(held.train) < MIN_PAIRS:
        print(f"error: only {len(held.train)} training pairs; raise --span-per-doc", file=sys.stderr)
        return 2
    documents = {doc_id: doc.full_text for doc_id, doc in corpus.items()}
    dev = dev_set(held.dev, documents=documents, max_documents=args.dev_documents, seed=0)
    prepared = time.monotonic() - started
    last = [0.0]

    def progress(task: str, done: int, total: int) -> None:
        if time.monotonic() - last[0] > 60:
            last[0] = time.monotonic()
            _log(f"  {task}: {done}/{total}")

    result = fine_tune(
        BASE,
        held.train,
        out_dir=out,
        dev=dev,
        max_seq_length=args.max_seq_length,
        max_minutes=args.max_minutes - prepared / 60,
        seed=0,
        on_progress=progress,
        data_note={"collections": "scifact+npl corpora, generated", "generators": counts},
    )
    wall = time.monotonic() - started
    card = result.card
    print(
        f"pairs: {len(pairs)} generated and consistent ({counts}); trained on {len(held.train)}, "
        f"dev {len(dev.qrels)} queries among {len(dev.documents)} documents ({held.kind}, unverified)"
    )
    print(
        f"budget {args.max_minutes:g} min: wall {wall / 60:.2f} min (pairs {prepared / 60:.2f}, then "
        f"training with its checkpoints, saving included); {result.steps} of {card['planned_steps']} steps, "
        f"time up: {result.time_up}"
    )
    print(f"dev checkpoints every {card['settings']['eval_every']} steps (step, nDCG@10): {list(result.checkpoints)}")
    print(f"kept: {card['kept']}; weights sha256 {result.weights_hash}")
    print(f"{'nDCG@10':<28}{'before':>8}{'after':>8}{'change':>8}")
    assert result.dev_before is not None and result.dev_after is not None
    _row("dev (generated, unverified)", result.dev_before, result.dev_after)
    for name, collection in collections.items():  # printed as each is done: these take long on a busy machine
        before = _ndcg(collection, BASE, cache)
        _row(f"{name} test", before, before if result.kept_base else _ndcg(collection, result.uri, cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
