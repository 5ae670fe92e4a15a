"""SciFact's test queries whose documents no train query names: does adaptation generalise?

    EMBEDTUNE_HOME=/tmp/etbench python benchmarks/adapt_scifact_unseen.py [MODEL_DIR ...]

181 of the 283 documents relevant to SciFact's test queries are also train positives, so anything
trained on the train labels can learn which abstracts get cited. This scores BM25, the base MiniLM
and each given model folder (default: the two that ``adapt_scifact.py`` trains) on the test queries
none of whose relevant documents appears in the train qrels.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

HOME = Path(os.environ.setdefault("EMBEDTUNE_HOME", "/tmp/etbench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from embedtune.evaluation import load_beir
from embedtune.evaluation.collections import Collection
from embedtune.evaluation.compare import evaluate_strategies
from embedtune.factory import EmbedderSpec

SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "scifact"


def main(folders: list[str]) -> None:
    data = load_beir(SCIFACT)
    test = data.qrels["test"]
    unseen = {q: test[q] for q in data.unseen_queries("test", "train")}
    print(f"SciFact test queries whose relevant documents no train query names: {len(unseen)} of {len(test)}")
    subset = Collection(name="scifact-unseen", corpus=data.corpus, queries=data.queries, qrels={"test": unseen})
    models = ["local:all-MiniLM-L6-v2", *(f"local:{Path(f).resolve()}" for f in folders)]
    started = time.perf_counter()
    result = evaluate_strategies(
        subset,
        [EmbedderSpec(model=m) for m in models],
        bm25=True,
        hybrid=[],
        split="test",
        cache=HOME / "embeddings.sqlite",
    )
    base = result.strategy("local:all-MiniLM-L6-v2").metrics["ndcg@10"]
    for strategy in result.strategies:
        ndcg = strategy.metrics["ndcg@10"]
        print(f"{strategy.name:60s} nDCG@10 {ndcg:.4f}  vs base {ndcg - base:+.4f}")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main(sys.argv[1:] or [str(HOME / "adapted" / "labels"), str(HOME / "adapted" / "generated")])
