"""First run against cached run: how much the embedding cache saves.

Embeds the sample collection embedtune ships (or --input) through the usual stack with a fresh
cache, then again with the same cache, in one process, and prints both times and their ratio.

    python benchmarks/cache_speed.py [--model local:all-MiniLM-L6-v2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from embedtune.bench import sample_texts
from embedtune.engine import CachingEmbedder, CountingEmbedder, find_layer
from embedtune.factory import EmbedderSpec, build_embedder, open_provider
from embedtune.textio import read_texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="local:all-MiniLM-L6-v2")
    parser.add_argument("--input", type=Path)
    parser.add_argument("--repeat", type=int, default=3, help="cached runs to time (the median is used)")
    args = parser.parse_args()

    texts = read_texts(args.input).texts if args.input else sample_texts()
    spec = EmbedderSpec(model=args.model, over_limit="truncate")
    provider = CountingEmbedder(open_provider(spec))
    provider.embed(texts[:1])  # load the model before timing
    with tempfile.TemporaryDirectory() as tmp:
        embedder = build_embedder(spec, cache=Path(tmp) / "cache.sqlite", provider=provider)
        start = time.perf_counter()
        first = embedder.embed(texts)
        first_s = time.perf_counter() - start
        calls_after_first = provider.calls
        cached_times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            again = embedder.embed(texts)
            cached_times.append(time.perf_counter() - start)
        cache = find_layer(embedder, CachingEmbedder)
        assert (again == first).all() and provider.calls == calls_after_first
        cached_s = sorted(cached_times)[len(cached_times) // 2]
        print(f"model {args.model}: {len(texts)} texts")
        print(f"first run (embeds {cache.stats.misses} texts): {first_s:.3f} s")
        print(f"cached run (median of {args.repeat}, 0 model calls): {cached_s * 1000:.1f} ms")
        print(f"ratio first / cached: {first_s / cached_s:.0f}x")


if __name__ == "__main__":
    main()
