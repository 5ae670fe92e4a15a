"""Query adapter on frozen all-MiniLM-L6-v2, trained on SciFact's train queries: test nDCG@10 before and after.

The adapter is trained on the train split's pairs (809 queries; 10 % of them held out as the dev
split that picks the epoch), full-rank and low-rank, with and without hard negatives mined by
BM25. Document vectors come from the embedding cache in EMBEDTUNE_HOME (embed SciFact once with
``embedtune eval`` first, or this script embeds it: about 10 minutes on two cores); only query
vectors are mapped, so nothing is re-embedded to evaluate an adapter. Also counts the pairs the
``title`` and ``span`` generators make from the corpus and how many the BM25 consistency filter keeps.

    EMBEDTUNE_HOME=/tmp/etbench python benchmarks/query_adapter_scifact.py
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

from embedtune.adaptation.adapter import train_query_adapter
from embedtune.adaptation.generate import filter_consistent, generate_pairs
from embedtune.adaptation.negatives import mine_hard_negatives
from embedtune.adaptation.pairs import pairs_from_qrels
from embedtune.engine import OverLimit, close_stack
from embedtune.evaluation import evaluate, load_beir
from embedtune.factory import EmbedderSpec, build_embedder
from embedtune.search import dense_run

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "scifact"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", type=Path, default=DATA)
    parser.add_argument("--model", default="local:all-MiniLM-L6-v2")
    parser.add_argument("--ranks", default="full,64,16", help="comma-separated: full, or a rank")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    home = Path(os.environ.get("EMBEDTUNE_HOME") or Path.home() / ".cache" / "embedtune")
    collection = load_beir(args.collection, splits=["train", "test"])
    # Truncating, as compare does: the cache holds the same vectors for both.
    spec = replace(EmbedderSpec(model=args.model), over_limit=OverLimit.TRUNCATE)
    embedder = build_embedder(spec, cache=home / "embeddings.sqlite")
    try:
        doc_ids = list(collection.corpus)
        doc_texts = [collection.documents_text(d) for d in doc_ids]
        start = time.perf_counter()
        documents = embedder.embed(doc_texts, "document")
        test_queries, test_qrels = collection.split("test")
        query_ids = list(test_queries)
        base_queries = embedder.embed([test_queries[q] for q in query_ids], "query")
        print(f"corpus and test queries embedded (or read from the cache) in {time.perf_counter() - start:.1f} s")

        pairs = pairs_from_qrels(collection, "train")
        # Many SciFact test claims cite an abstract that some train claim cites too; an adapter can
        # learn to favour those abstracts. The queries whose documents no train pair names show
        # what carries over to documents never seen in training.
        seen = {p.positive_id for p in pairs}
        unseen_qrels = {q: judged for q, judged in test_qrels.items() if not set(judged) & seen}

        def ndcg(query_vectors) -> tuple[float, float]:
            run = dense_run(query_ids, query_vectors, doc_ids, documents, 100)
            return (
                evaluate(test_qrels, run, ["ndcg@10"])["ndcg@10"],
                evaluate(unseen_qrels, {q: run[q] for q in unseen_qrels}, ["ndcg@10"])["ndcg@10"],
            )

        base, base_unseen = ndcg(base_queries)
        start = time.perf_counter()
        mined = mine_hard_negatives(pairs, collection.corpus, by="bm25", count=3)
        mine_seconds = time.perf_counter() - start
        print(
            f"{len(pairs)} train pairs ({len({p.query for p in pairs})} queries); BM25 hard negatives mined in "
            f"{mine_seconds:.1f} s ({sum(len(p.negatives) for p in mined)} negatives)"
        )
        print(
            f"\nSciFact test, {len(query_ids)} queries, {args.model} frozen; base nDCG@10 {base:.4f}; "
            f"on the {len(unseen_qrels)} queries whose documents no train pair names: {base_unseen:.4f}"
        )
        print(
            f"{'adapter':<26}{'nDCG@10':>9}{'change':>9}{'unseen':>9}{'change':>9}"
            f"{'dev MRR@10 base→kept':>24}{'epoch':>7}{'train s':>9}"
        )
        for rank_text in [r.strip() for r in args.ranks.split(",") if r.strip()]:
            rank = None if rank_text == "full" else int(rank_text)
            for label, data in (("", pairs), (" + BM25 negatives", mined)):
                adapter = train_query_adapter(
                    embedder, data, rank=rank, epochs=args.epochs, lr=args.lr, seed=args.seed, pool=doc_texts
                )
                score, unseen = ndcg(adapter.apply(base_queries))
                dev = adapter.info["dev"]
                name = ("full-rank" if rank is None else f"rank {rank}") + label
                print(
                    f"{name:<26}{score:>9.4f}{score - base:>+9.4f}{unseen:>9.4f}{unseen - base_unseen:>+9.4f}"
                    f"{dev['base']:>13.4f} → {dev['adapted']:.4f}{dev['best_epoch']:>7}"
                    f"{adapter.info['train_seconds']:>9.1f}"
                )
    finally:
        close_stack(embedder)

    print("\nPairs generated from the corpus alone:")
    for generator in ("title", "span"):
        start = time.perf_counter()
        generated = generate_pairs(collection.corpus, generator, seed=args.seed)
        kept = filter_consistent(generated, collection.corpus, by="bm25", top_k=10)
        print(
            f"  {generator:<6} {len(generated):>5} pairs, {len(kept):>5} kept by the BM25 top-10 consistency "
            f"filter ({len(generated) - len(kept)} dropped), {time.perf_counter() - start:.1f} s"
        )


if __name__ == "__main__":
    main()
