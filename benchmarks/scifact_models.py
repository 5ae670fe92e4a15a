"""Dense models, BM25 and their hybrids on SciFact, next to the published figures.

    python benchmarks/scifact_models.py [--models local:all-MiniLM-L6-v2,local:all-mpnet-base-v2]
                                        [--dataset PATH/TO/scifact] [--cache FILE] [--json FILE]

Embeds SciFact's 5,183 documents (title + " " + text, truncated at each model's limit, as the
published runs do) and its test and train queries with each model, through embedtune's cache (a
rerun embeds nothing), then prints nDCG@10 and Recall@100 on the 300 test queries for BM25, each
model, RRF (k = 60) and the convex hybrid whose weight is tuned on the train split, beside the
published figures, and the gain of each hybrid over the better of its two parts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from embedtune.cli import default_home
from embedtune.errors import EmbedtuneError
from embedtune.evaluation import load_beir
from embedtune.evaluation.compare import evaluate_strategies
from embedtune.evaluation.report import comparison_to_dict, recommendation_text
from embedtune.factory import EmbedderSpec

DEFAULT_SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "scifact"
DEFAULT_MODELS = "local:all-MiniLM-L6-v2,local:all-mpnet-base-v2"
# strategy -> (published nDCG@10, published Recall@100); None where none is published
PUBLISHED = {
    "bm25": (0.6874, 0.9127),
    "local:all-MiniLM-L6-v2": (0.6451, 0.9250),
    "local:all-mpnet-base-v2": (0.6557, None),
}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_SCIFACT, help="SciFact in the BEIR layout")
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated model URIs")
    parser.add_argument(
        "--cache", type=Path, default=None, help="embedding cache file (default: EMBEDTUNE_HOME/embeddings.sqlite)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the full comparison here")
    args = parser.parse_args(argv)

    cache = args.cache or default_home() / "embeddings.sqlite"
    if cache.is_dir():
        cache = cache / "embeddings.sqlite"
    last = {}

    def progress(task: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last.get(task, 0.0) > 15:
            last[task] = now
            print(f"  embedding {task}: {done}/{total}", file=sys.stderr, flush=True)

    try:
        collection = load_beir(args.dataset, splits=["test", "train"])
        specs = [EmbedderSpec(model=uri.strip()) for uri in args.models.split(",") if uri.strip()]
        start = time.perf_counter()
        result = evaluate_strategies(
            collection, specs, bm25=True, hybrid=["rrf", "convex"], cache=cache, on_progress=progress
        )
        seconds = time.perf_counter() - start
    except EmbedtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    print(
        f"SciFact test: {result.queries} queries over {result.documents} documents; "
        f"convex weight tuned on {result.tune_split}; cache {cache}; {seconds:.0f} s in all"
    )
    print(f"{'strategy':<46}{'nDCG@10':>8}{'pub.':>8}{'R@100':>8}{'pub.':>8}{'alpha':>7}{'texts/s':>9}")
    for strategy in result.strategies:
        published = PUBLISHED.get(strategy.name, (None, None))
        speed = strategy.texts_per_s
        speed_text = "-" if strategy.cost is None else ("cached" if speed is None else f"{speed:.1f}")
        alpha = "-" if strategy.alpha is None else f"{strategy.alpha:.2f}"
        print(
            f"{strategy.name:<46}{strategy.metrics['ndcg@10']:>8.4f}{_fmt(published[0]):>8}"
            f"{strategy.metrics['recall@100']:>8.4f}{_fmt(published[1]):>8}{alpha:>7}{speed_text:>9}"
        )
    bm25 = result.strategy("bm25").metrics["ndcg@10"]
    for strategy in result.strategies:
        if strategy.kind in ("rrf", "convex"):
            single = max(bm25, result.strategy(strategy.model).metrics["ndcg@10"])
            gain = strategy.metrics["ndcg@10"] - single
            print(f"gain of {strategy.name} over the better single one: {gain:+.4f} nDCG@10 ({gain / single:+.1%})")
    for note in result.notes:
        print(f"note: {note}")
    print(f"winner: {result.winner} (nDCG@10 {result.best.metrics['ndcg@10']:.4f})")
    print(f"recommended: {recommendation_text(result)}")
    if args.json:
        args.json.write_text(json.dumps(comparison_to_dict(result), indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
