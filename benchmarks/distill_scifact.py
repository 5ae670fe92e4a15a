"""A static model distilled from MiniLM against MiniLM itself: time to distil, speed, SciFact quality.

    python benchmarks/distill_scifact.py [--static DIR] [--out DIR] [--texts 1000] [--speed-only]
                                         [--dataset PATH/TO/scifact] [--cache FILE]

1. Distils local:all-MiniLM-L6-v2 with ``embedtune distill``'s code (256 dims, the whole
   vocabulary) into ``--out`` and prints the seconds it took (wall and this process's CPU);
   ``--static DIR`` uses a model distilled before instead.
2. Embeds the same SciFact documents (the first ``--texts``, title + text, truncated at MiniLM's
   256 tokens) with each model, batches of 32, no cache, in this one process, and prints texts/s of
   each and their ratio (by wall time and by CPU time: on a shared machine the CPU ratio is the
   steadier one).
3. Scores both models on SciFact's test queries through compare's own path (the embedded store and
   the Retriever that ``search`` uses) and prints nDCG@10 and Recall@100 side by side. Vectors go
   through the embedding cache, so a rerun embeds nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from embedtune.cli import default_home
from embedtune.engine import BatchingEmbedder, LengthPolicy
from embedtune.errors import EmbedtuneError
from embedtune.evaluation import load_beir
from embedtune.evaluation.compare import evaluate_strategies
from embedtune.factory import EmbedderSpec, open_provider

DEFAULT_SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "scifact"
TEACHER = "local:all-MiniLM-L6-v2"


def _timed_embed(provider, texts: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to embed ``texts`` in batches of 32, no cache."""
    provider.embed(texts[:1])  # warm-up: lazy loading is not counted
    embedder = LengthPolicy(BatchingEmbedder(provider, max_batch=32, max_batch_tokens=1 << 30), "truncate")
    wall, cpu = time.perf_counter(), time.process_time()
    embedder.embed(texts)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_SCIFACT, help="SciFact in the BEIR layout")
    parser.add_argument("--static", type=Path, default=None, help="a static model distilled before (skip step 1)")
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write the static model (default: a temp folder)"
    )
    parser.add_argument("--texts", type=int, default=1000, help="documents embedded by both models for the speed ratio")
    parser.add_argument("--speed-only", action="store_true", help="skip step 3 (SciFact quality)")
    parser.add_argument(
        "--cache", type=Path, default=None, help="embedding cache file (default: EMBEDTUNE_HOME/embeddings.sqlite)"
    )
    args = parser.parse_args(argv)
    cache = args.cache or default_home() / "embeddings.sqlite"

    with tempfile.TemporaryDirectory() as scratch:
        try:
            if args.static is not None:
                static_dir = args.static
                print(f"static model: {static_dir} (distilled before)")
            else:
                from embedtune.adaptation.distill import distill

                wall, cpu = time.perf_counter(), time.process_time()
                outcome = distill(TEACHER, args.out or Path(scratch) / "static-minilm")
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                static_dir = outcome.out_dir
                print(
                    f"distilled {TEACHER} into {outcome.vocabulary} tokens × {outcome.dim} dims: "
                    f"{wall:.1f} s wall, {cpu:.1f} s CPU (model load included); wrote {static_dir}"
                )
            static_uri = f"local:{static_dir}"

            collection = load_beir(args.dataset, splits=["test", "train"])
            texts = [doc.full_text for doc in list(collection.corpus.values())[: args.texts]]
            teacher, static = open_provider(EmbedderSpec(model=TEACHER)), open_provider(EmbedderSpec(model=static_uri))
            timings = {
                name: _timed_embed(provider, texts) for name, provider in ((TEACHER, teacher), ("static", static))
            }
            (t_wall, t_cpu), (s_wall, s_cpu) = timings[TEACHER], timings["static"]
            n = len(texts)
            print(f"speed on {n} SciFact documents (batches of 32, no cache, same process):")
            print(f"  {TEACHER:<28}{n / t_wall:>10.1f} texts/s wall{n / t_cpu:>10.1f} texts/CPU-s")
            print(f"  {'static (distilled)':<28}{n / s_wall:>10.1f} texts/s wall{n / s_cpu:>10.1f} texts/CPU-s")
            print(f"  ratio static / MiniLM: {t_wall / s_wall:.0f}x by wall time, {t_cpu / s_cpu:.0f}x by CPU time")
            del teacher, static
            if args.speed_only:
                return 0

            start = time.perf_counter()
            result = evaluate_strategies(
                collection, [EmbedderSpec(model=static_uri), EmbedderSpec(model=TEACHER)], bm25=False, cache=cache
            )
            seconds = time.perf_counter() - start
        except EmbedtuneError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    print(f"SciFact test: {result.queries} queries over {result.documents} documents; {seconds:.0f} s; cache {cache}")
    print(f"  {'model':<28}{'nDCG@10':>9}{'R@100':>9}")
    figures = {}
    for strategy in result.strategies:
        label = "static (distilled)" if strategy.model == static_uri else strategy.name
        figures[label] = strategy.metrics["ndcg@10"]
        print(f"  {label:<28}{strategy.metrics['ndcg@10']:>9.4f}{strategy.metrics['recall@100']:>9.4f}")
    kept = figures["static (distilled)"] / figures[TEACHER]
    print(f"  the static model keeps {kept:.1%} of MiniLM's nDCG@10")
    return 0


if __name__ == "__main__":
    sys.exit(main())
