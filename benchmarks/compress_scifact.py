"""Vector compression on SciFact: quality against index size for each vector size and precision.

    python benchmarks/compress_scifact.py [--model local:all-MiniLM-L6-v2] [--dataset PATH/TO/scifact]
                                          [--cache FILE] [--vectors float32,float16,...]

Builds one model's dense strategy over SciFact's 5,183 documents once per vector setting, every
setting from the same cached float32 vectors (the corpus is embedded once; a rerun embeds
nothing), through ``compare``'s own code: the stores ``index`` builds, searched by the Retriever
``search`` and ``serve`` use. Prints nDCG@10 on the 300 test queries and on the train queries,
each store's index size (vectors as stored, plus any fitted projection or calibration) as MB and as
a share of float32's, and marks the settings that take at most a quarter of float32's size while
staying within 0.01 nDCG@10 of it: judged on train (where a choice would be made) and, as a
report, on test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from embedtune.cli import default_home
from embedtune.errors import EmbedtuneError
from embedtune.evaluation import load_beir
from embedtune.evaluation.compare import evaluate_strategies
from embedtune.factory import EmbedderSpec

DEFAULT_SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "scifact"
DEFAULT_VECTORS = (
    "float32,float16,int8,binary,binary+rescore=10,dims=256,dims=128,pca=128,pca=64,"
    "pca=256+int8,pca=128+int8,dims=256+int8"
)
QUARTER = 0.25
WITHIN = 0.01
_MB = 1024 * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_SCIFACT, help="SciFact in the BEIR layout")
    parser.add_argument("--model", default="local:all-MiniLM-L6-v2", help="the model URI")
    parser.add_argument("--vectors", default=DEFAULT_VECTORS, help="comma-separated vector settings")
    parser.add_argument(
        "--cache", type=Path, default=None, help="embedding cache file (default: EMBEDTUNE_HOME/embeddings.sqlite)"
    )
    args = parser.parse_args(argv)
    cache = args.cache or default_home() / "embeddings.sqlite"
    last: dict[str, float] = {}

    def progress(task: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last.get(task, 0.0) > 30:
            last[task] = now
            print(f"  {task}: {done}/{total}", file=sys.stderr, flush=True)

    try:
        collection = load_beir(args.dataset, splits=["test", "train"])
        start = time.perf_counter()
        result = evaluate_strategies(
            collection,
            [EmbedderSpec(model=args.model)],
            bm25=False,
            cache=cache,
            on_progress=progress,
            vectors=[v.strip() for v in args.vectors.split(",") if v.strip()],
        )
        seconds = time.perf_counter() - start
    except EmbedtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    rows = [(s.strategy.vectors_label if s.strategy else s.name, s) for s in result.strategies]
    base = next((s for label, s in rows if label == "float32"), rows[0][1])
    base_test, base_train = base.metrics["ndcg@10"], base.selection_score
    embedded = sum(s.cost.texts_embedded for _, s in rows if s.cost is not None)
    print(
        f"{args.model} on SciFact: {result.documents} documents, {result.queries} test queries, "
        f"selection on {result.tune_split}; {embedded} texts embedded in this run; {seconds:.0f} s in all"
    )
    print(
        f"{'vectors':<20}{'index MB':>9}{'x f32':>8}{'nDCG@10 test':>13}{'Δ':>8}{'train':>8}{'Δ':>8}"
        f"  {'≤1/4 and within 0.01 (train / test)'}"
    )
    for label, s in rows:
        share = s.index_bytes / base.index_bytes
        test, train = s.metrics["ndcg@10"], s.selection_score
        fits = [
            share <= QUARTER and base_value - value <= WITHIN
            for value, base_value in ((train, base_train), (test, base_test))
        ]
        print(
            f"{label:<20}{s.index_bytes / _MB:>9.3f}{share:>8.4f}{test:>13.4f}{test - base_test:>+8.4f}"
            f"{train:>8.4f}{train - base_train:>+8.4f}  {' / '.join('yes' if f else 'no' for f in fits)}"
        )
    chosen = [
        label
        for label, s in rows
        if s.index_bytes <= QUARTER * base.index_bytes and base_train - s.selection_score <= WITHIN
    ]
    print(f"fit in a quarter of float32's index within {WITHIN} nDCG@10 on train: {', '.join(chosen) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
