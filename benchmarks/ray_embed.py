"""A local two-worker Ray cluster against one process: equal output, a killed worker, scaling.

Builds N mixed-length texts from SciFact (titles, abstract windows of 10 to 120 words, queries)
and embeds them four times with the same model:

1. in this process through the usual stack (the reference);
2. on a local Ray cluster of two CPUs with two actors: min cosine to the reference, order check;
3. on the same cluster with one actor: texts/s, and the 2-against-1 ratio;
4. with two actors again, killing one actor's process a third of the way in: texts lost and
   texts returned twice (both must be 0), and min cosine to the reference.

Cluster times include starting the actors (each loads the model). On a machine with two cores
shared with other work, two actors cannot beat one process that already uses both cores: the
figures show what the cluster costs, and the same code scales on machines with more cores.

    python benchmarks/ray_embed.py [-n 20000] [--model local:all-MiniLM-L6-v2] [--collection DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import psutil

from embedtune.factory import EmbedderSpec, build_embedder, open_provider

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact"


def mixed_texts(folder: Path, n: int) -> list[str]:
    """Titles, abstract windows of varied length and queries, in a fixed interleaved order."""
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    with open(folder / "queries.jsonl", encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for line in f]
    pool: list[str] = []
    for j, doc in enumerate(docs):
        pool.append(doc["title"])
        words = doc["text"].split()
        width = 10 + (j * 37) % 111  # 10 to 120 words
        pool.extend(" ".join(words[s : s + width]) for s in range(0, max(len(words) - width, 1), 2 * width))
        if j < len(queries):
            pool.append(queries[j])
    pool = [t for t in pool if t.strip()]
    return [pool[i % len(pool)] for i in range(n)]  # repeats only past the pool's end


def our_actor_pids() -> list[int]:
    """Embedding actors started by this process's own cluster (never another's)."""
    return [
        p.pid for p in psutil.Process().children(recursive=True) if any("EmbedActor" in part for part in p.cmdline())
    ]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000, help="texts to embed")
    parser.add_argument("--model", default="local:all-MiniLM-L6-v2")
    parser.add_argument("--collection", type=Path, default=SCIFACT)
    args = parser.parse_args()

    import ray

    from embedtune.engine import close_stack
    from embedtune.engine.ray import RayEmbedder, RayOptions, quiet_core_log

    texts = mixed_texts(args.collection, args.n)
    spec = EmbedderSpec(model=args.model, over_limit="truncate")
    print(f"{len(texts)} texts ({len(set(texts))} distinct) from {args.collection.name}, model {args.model}")

    single = build_embedder(spec)
    single.embed(texts[:1])  # load the model before timing, as each actor does before its first batch
    start = time.perf_counter()
    reference = single.embed(texts)
    single_s = time.perf_counter() - start
    print(f"one process: {single_s:.1f} s, {len(texts) / single_s:.1f} texts/s")

    with quiet_core_log():  # Ray Data's per-job core warning, as embedtune's own init does
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        rates = {}
        for workers in (2, 1):
            stack = build_embedder(spec, ray=RayOptions(workers=workers))
            start = time.perf_counter()
            vectors = stack.embed(texts)
            seconds = time.perf_counter() - start
            close_stack(stack)
            rates[workers] = len(texts) / seconds
            print(f"Ray, {workers} worker(s): {seconds:.1f} s, {rates[workers]:.1f} texts/s (actor start-up included)")
            if workers == 2:
                c = cosines(vectors, reference)
                shifted = cosines(vectors[:-1], reference[1:]).min()
                print(
                    f"  2 workers against one process: min cosine {c.min():.7f}, mean {c.mean():.7f}; "
                    f"order: row i is text i for all {len(texts)} rows: {bool(c.min() >= 0.99999)} "
                    f"(shifted by one row, min cosine would be {shifted:.3f})"
                )
        print(
            f"throughput 2 workers / 1 worker: {rates[2] / rates[1]:.2f}x; "
            f"2 workers / one process: {rates[2] / (len(texts) / single_s):.2f}x"
        )

        killed: list[int] = []
        done = [0]

        def kill_once(count: int) -> None:
            done[0] += count
            if not killed and done[0] >= len(texts) // 3:
                pids = our_actor_pids()
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

        embedder = RayEmbedder(
            open_provider(spec),
            lambda: open_provider(spec),
            options=RayOptions(workers=2),
            on_progress=kill_once,
        )
        rows: list[np.ndarray] = []
        out = np.zeros_like(reference)
        start = time.perf_counter()
        try:
            # embed_parts itself raises on a row returned twice or missing; counted here too, to print
            for part_rows, part in embedder.embed_parts(texts):
                rows.append(part_rows)
                out[part_rows] = part
        finally:
            embedder.close()
        seconds = time.perf_counter() - start
        returned = np.concatenate(rows)
        distinct = len(np.unique(returned))
        print(
            f"Ray, 2 workers, actor pid {killed[0] if killed else '-'} killed after {len(texts) // 3} texts: "
            f"{seconds:.1f} s; lost {len(texts) - distinct}, duplicated {len(returned) - distinct}; "
            f"min cosine to one process {cosines(out, reference).min():.7f}"
        )
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
