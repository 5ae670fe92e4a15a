"""Sustained throughput under a provider's rate limits: how much of the budget the client uses.

Starts the fault-injecting server on loopback enforcing requests- and tokens-per-minute budgets
(600 requests/min and 100,000 tokens/min by default), embeds enough texts to keep it busy for
--seconds through the openai: provider with the same budgets in its client-side limiter, batches
and concurrency, and prints the share of each budget used once the first window has passed (the
first window admits a burst), the 429s the server sent, and whether every text came back right.

    python benchmarks/http_throughput.py                       # the provider's minute: ~3 minutes
    python benchmarks/http_throughput.py --window 10 --seconds 40   # the same rates, in 10 s slices
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from embedtune.engine import BatchingEmbedder
from embedtune.engine.http import RateLimiter
from embedtune.factory import EmbedderSpec, open_provider
from embedtune.providers.fake import HashEmbedder
from embedtune.testing.fault_server import FaultConfig, FaultServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--tpm", type=int, default=100_000)
    parser.add_argument("--window", type=float, default=60.0, help="the budget window in seconds")
    parser.add_argument("--seconds", type=float, default=180.0, help="how long to keep the server busy")
    parser.add_argument("--batch", type=int, default=10, help="texts per request")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    words = 20  # the server counts words as tokens
    texts = [" ".join(f"w{i}x{j}" for j in range(words)) for i in range(int(args.tpm / 60 * args.seconds / words))]
    config = FaultConfig(rpm=args.rpm, tpm=args.tpm, window_s=args.window)
    with FaultServer(config) as server:
        provider = open_provider(EmbedderSpec(model="openai:budget-model", base_url=f"{server.url}/v1"))
        provider.limiter = RateLimiter(requests_per_minute=args.rpm, tokens_per_minute=args.tpm, window=args.window)
        batcher = BatchingEmbedder(
            provider, max_batch=args.batch, max_batch_tokens=1 << 30, concurrency=args.concurrency, sort_by_length=False
        )
        start = time.monotonic()
        vectors = batcher.embed(texts)
        end = time.monotonic()
        stats = server.stats
        provider.close()

    ok = np.array_equal(vectors, HashEmbedder(dim=64).embed(texts))
    steady = [(t, n) for t, n in stats.token_log if t >= start + args.window]
    span = end - (start + args.window)
    tokens_per_min = sum(n for _, n in steady) / span * 60
    requests_per_min = len(steady) / span * 60
    throttled = sum(n for (path, status), n in stats.requests.items() if status == 429)
    print(
        f"{len(texts)} texts of {words} tokens, {args.batch} per request, {args.concurrency} in flight; "
        f"budget {args.rpm} requests/min and {args.tpm} tokens/min over a {args.window:g} s window"
    )
    print(f"ran {end - start:.1f} s; steady state (after the first window) {span:.1f} s")
    print(f"tokens/min   {tokens_per_min:9.0f}  = {tokens_per_min / args.tpm:6.1%} of the budget")
    print(f"requests/min {requests_per_min:9.0f}  = {requests_per_min / args.rpm:6.1%} of the budget")
    print(
        f"429s from the server: {throttled}; client retries: {provider.retries}; every text embedded and in order: {ok}"
    )


if __name__ == "__main__":
    main()
