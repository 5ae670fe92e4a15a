"""Chunkers compared on stitched collections (span recall, precision, IoU) and on the natural ones.

    python benchmarks/chunking.py [--collections cranfield,scifact] [--docs N] [--model URI]
                                  [--chunkers SPEC;SPEC;...] [--no-natural] [--share-docs N | --no-share]

For each collection (test queries):

1. Stitched: the documents are concatenated, 5 to a long text in a seeded shuffle
   (``embedtune.evaluation.stitched``); each chunker chunks the long texts, the chunks are
   embedded, and each query's top 5 chunks are judged against the character spans of its relevant
   documents (span recall, precision, IoU at k=5), and by document nDCG@10 after mapping chunks
   back to the documents they overlap.
2. Natural: each chunker chunks the original documents; documents are scored by their best chunk
   (chunked retrieval of ``evaluate_strategies``), nDCG@10 beside whole-document embedding.

Then semantic chunking of a whole collection (SciFact by default) without a cache, through a
wrapper that times the model's own calls: the share of the chunking time spent in the model.

Chunkers are capped at the model's limit (MiniLM: 256 tokens) except fixed 400 and 800, which run
over it on purpose: the model reads only their first 256 tokens, as uncapped chunkers suffer in
practice. Embeddings go through the cache in ``$EMBEDTUNE_HOME`` (default /tmp/etbench), so a
rerun embeds nothing; "model s" is the time in the model's own calls (cache misses only).
``--docs N`` keeps every document judged for a test query and fills up to N with others (seeded),
for a smaller, easier slice; the output says what was run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

HOME = Path(os.environ.setdefault("EMBEDTUNE_HOME", "/tmp/etbench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import random

from embedtune.chunking import make_chunker
from embedtune.engine import CachingEmbedder, OverLimit, find_layer
from embedtune.engine.wrapper import Wrapper
from embedtune.errors import EmbedtuneError
from embedtune.evaluation import Collection, load_beir
from embedtune.evaluation.compare import evaluate_strategies
from embedtune.evaluation.stitched import evaluate_stitched, stitch
from embedtune.factory import EmbedderSpec, build_embedder, open_provider

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
CHUNKERS = (
    "fixed:size=200,overlap=0",
    "fixed:size=200,overlap=50",
    "fixed:size=400,overlap=0",
    "fixed:size=400,overlap=50",
    "fixed:size=800,overlap=0",
    "fixed:size=800,overlap=50",
    "recursive",
    "sentence",
    "semantic:rule=percentile,threshold=95",
    "semantic:rule=gradient",
)
BIAS = (
    "stitch points are perfect topic boundaries (unrelated documents meet there), which real long "
    "documents lack: this favours semantic chunkers; see the natural-collection table too"
)


class ModelTimer(Wrapper):
    """Times and counts the model's own calls (it sits under the cache: misses only)."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.seconds = 0.0
        self.calls = 0
        self.texts = 0

    def embed(self, texts, kind="document"):
        start = time.perf_counter()
        vectors = self.inner.embed(texts, kind)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        self.texts += len(texts)
        return vectors

    def reset(self) -> None:
        self.seconds, self.calls, self.texts = 0.0, 0, 0


def slice_collection(collection: Collection, docs: int | None, seed: int = 0) -> Collection:
    """Every document judged in the test split, then others in a seeded order, up to ``docs``."""
    if docs is None or docs >= len(collection.corpus):
        return collection
    judged = sorted({d for judged in collection.qrels["test"].values() for d in judged})
    others = sorted(set(collection.corpus) - set(judged))
    random.Random(seed).shuffle(others)
    keep = set((judged + others)[:docs])
    qrels = {q: {d: r for d, r in j.items() if d in keep} for q, j in collection.qrels["test"].items()}
    qrels = {q: j for q, j in qrels.items() if j}
    return replace(
        collection, corpus={d: doc for d, doc in collection.corpus.items() if d in keep}, qrels={"test": qrels}
    )


def stitched_table(collection: Collection, spec: EmbedderSpec, provider, chunkers: Sequence[str]) -> None:
    timer = ModelTimer(provider)
    embedder = build_embedder(spec, cache=HOME / "embeddings.sqlite", provider=timer)
    stitched = stitch(collection, per_text=5, seed=0)
    evidence = sum(1 for q in stitched.queries if stitched.evidence(q))
    print(
        f"\n## {collection.name}, stitched: {len(stitched.placements)} documents in {len(stitched.texts)} "
        f"long texts (5 each, seed 0), {evidence} test queries with evidence; model {spec.model}"
    )
    print(f"note: {BIAS}")
    header = (
        f"{'chunker':<34}{'chunks':>8}{'mean tok':>9}{'recall@5':>9}{'prec@5':>8}{'IoU@5':>8}"
        f"{'nDCG@10':>9}{'chunk s':>9}{'embed s':>8}{'model s':>8}{'embedded':>9}"
    )
    print(header)
    print("-" * len(header))
    for chunker_spec in chunkers:
        chunker = make_chunker(chunker_spec, embedder, over_model_limit="allow")
        timer.reset()
        result = evaluate_stitched(stitched, chunker, embedder, k=5)
        print(
            f"{result.chunker:<34}{result.chunks:>8,}{result.mean_tokens:>9.1f}{result.recall:>9.4f}"
            f"{result.precision:>8.4f}{result.iou:>8.4f}{result.ndcg_at_10:>9.4f}{result.chunk_seconds:>9.1f}"
            f"{result.embed_seconds:>8.1f}{timer.seconds:>8.1f}{timer.texts:>9,}",
            flush=True,
        )
        for notice in chunker.notices:
            print(f"    {result.chunker}: {notice}")
    find_layer(embedder, CachingEmbedder).close()


def natural_table(collection: Collection, spec: EmbedderSpec, provider, chunkers: Sequence[str]) -> None:
    print(f"\n## {collection.name}, natural documents: chunked retrieval, a document scores its best chunk")
    result = evaluate_strategies(
        collection,
        [spec],
        bm25=True,
        chunkers=["none", *chunkers],
        chunk_over_limit="allow",
        cache=HOME / "embeddings.sqlite",
        providers={spec.model: provider},
    )
    header = f"{'strategy':<34}{'chunks':>8}{'nDCG@10':>9}{'R@100':>8}{'model s':>8}"
    print(header)
    print("-" * len(header))
    for strategy in result.strategies:
        name = strategy.chunker or ("whole documents" if strategy.kind == "dense" else strategy.name)
        chunks = "-" if strategy.chunks is None else f"{strategy.chunks:,}"
        seconds = "-" if strategy.cost is None else f"{strategy.cost.embed_seconds:.1f}"
        print(
            f"{name:<34}{chunks:>8}{strategy.metrics['ndcg@10']:>9.4f}{strategy.metrics['recall@100']:>8.4f}"
            f"{seconds:>8}"
        )
    for note in result.notes:
        print(f"note: {note}")


def model_share(collection: Collection, spec: EmbedderSpec, provider, chunker_spec: str) -> None:
    """Semantic chunking of every document with no cache: model seconds / chunking seconds."""
    timer = ModelTimer(provider)
    embedder = build_embedder(spec, cache=None, provider=timer)
    chunker = make_chunker(chunker_spec, embedder)
    texts = [collection.documents_text(d) for d in collection.corpus if collection.documents_text(d).strip()]
    provider.embed(texts[:1])  # loads the weights: not part of chunking
    start = time.perf_counter()
    chunks = chunker.chunk_many(texts)
    total = time.perf_counter() - start
    print(
        f"\n## semantic chunking of {collection.name}: {len(texts):,} documents -> "
        f"{sum(map(len, chunks)):,} chunks ({chunker.name}, no cache)"
    )
    print(
        f"model calls: {timer.calls:,} calls, {timer.texts:,} sentence windows, {timer.seconds:.1f} s; "
        f"chunking in all: {total:.1f} s; share of time in the model: {timer.seconds / total:.1%}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collections", default="cranfield,scifact", help="comma-separated names under --datasets")
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    parser.add_argument("--docs", type=int, default=None, help="a slice: judged documents first, up to N in all")
    parser.add_argument("--model", default="local:all-MiniLM-L6-v2")
    parser.add_argument("--chunkers", default=";".join(CHUNKERS), help="chunker specs separated by ';'")
    parser.add_argument("--no-natural", action="store_true", help="skip the natural-collection table")
    parser.add_argument("--no-stitched", action="store_true", help="skip the stitched table")
    parser.add_argument("--share", default="scifact", help="collection whose semantic chunking is timed ('' skips)")
    parser.add_argument("--share-docs", type=int, default=None, help="time the first N documents only")
    args = parser.parse_args(argv)

    spec = EmbedderSpec(model=args.model, over_limit=OverLimit.TRUNCATE)
    chunkers = [c.strip() for c in args.chunkers.split(";") if c.strip()]
    try:
        provider = open_provider(spec)
        print(
            f"embedtune chunking benchmark: model {spec.model} (max {provider.max_tokens} tokens), "
            f"cache {HOME / 'embeddings.sqlite'}, {os.cpu_count()} CPUs"
        )
        for name in [n.strip() for n in args.collections.split(",") if n.strip()]:
            full = load_beir(args.datasets / name, splits=["test"])
            collection = slice_collection(full, args.docs)
            if len(collection.corpus) < len(full.corpus):
                print(
                    f"\nslice of {name}: {len(collection.corpus):,} of {len(full.corpus):,} documents "
                    f"(every judged one, then others in a seeded order), {len(collection.qrels['test'])} "
                    "test queries"
                )
            started = time.perf_counter()
            if not args.no_stitched:
                stitched_table(collection, spec, provider, chunkers)
            if not args.no_natural:
                natural_table(collection, spec, provider, chunkers)
            print(f"({name}: {time.perf_counter() - started:.0f} s)")
        if args.share:
            full = load_beir(args.datasets / args.share, splits=["test"])
            if args.share_docs:
                full = replace(full, corpus=dict(list(full.corpus.items())[: args.share_docs]))
            model_share(full, spec, provider, next((c for c in chunkers if c.startswith("semantic")), "semantic"))
    except EmbedtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
