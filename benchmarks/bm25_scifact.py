"""Reproduce the published BM25 figures before trusting any other number embedtune prints.

    python benchmarks/bm25_scifact.py [--dataset PATH/TO/scifact]

Builds BM25 (bm25s, Lucene variant, k1=1.5, b=0.75, English stemmer and stopwords, title + text)
on SciFact and prints nDCG@10 and Recall@100 on its test split next to the published 0.6874 /
0.9127 (MTEB results, bm25s); then the same on Cranfield and NPL (about 0.374 and 0.428 nDCG@10),
read from folders beside the SciFact one when they exist. Exits 1 when a figure is more than 0.01
away from its reference.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from embedtune.errors import InputError
from embedtune.evaluation import evaluate, load_beir
from embedtune.search import BM25Index

DEFAULT_SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "scifact"
# collection -> {metric: published figure (None: none published)}
REFERENCE = {
    "scifact": {"ndcg@10": 0.6874, "recall@100": 0.9127},
    "cranfield": {"ndcg@10": 0.374, "recall@100": None},
    "npl": {"ndcg@10": 0.428, "recall@100": None},
}
TOLERANCE = 0.01


def bm25_scores(folder: Path) -> tuple[dict[str, float], float]:
    """Mean nDCG@10 and Recall@100 of BM25 on the test split of ``folder``, and seconds taken."""
    start = time.perf_counter()
    collection = load_beir(folder, splits=["test"])
    ids = list(collection.corpus)
    index = BM25Index.build(ids, [collection.documents_text(doc_id) for doc_id in ids])
    queries, qrels = collection.split("test")
    scores = evaluate(qrels, index.search(queries, k=100), ["ndcg@10", "recall@100"])
    return scores, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_SCIFACT, help="SciFact in the BEIR layout")
    args = parser.parse_args(argv)

    folders = {"scifact": args.dataset}
    folders.update({name: args.dataset.parent / name for name in ("cranfield", "npl")})
    print(f"{'collection':<11}{'metric':<12}{'measured':>9}{'published':>10}{'diff':>8}{'seconds':>9}")
    off = []
    for name, folder in folders.items():
        if name != "scifact" and not folder.is_dir():
            print(f"{name:<11}(not found at {folder}; skipped)")
            continue
        try:
            scores, seconds = bm25_scores(folder)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for metric, measured in scores.items():
            published = REFERENCE[name][metric]
            if published is None:
                print(f"{name:<11}{metric:<12}{measured:>9.4f}{'-':>10}{'':>8}{seconds:>9.2f}")
                continue
            diff = measured - published
            if abs(diff) > TOLERANCE:
                off.append(f"{name} {metric}")
            print(f"{name:<11}{metric:<12}{measured:>9.4f}{published:>10.4f}{diff:>+8.4f}{seconds:>9.2f}")
    if off:
        print(f"more than {TOLERANCE} from the published figure: {', '.join(off)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
