"""Load on `embedtune serve`: many clients, one text per request, with micro-batching on and off.

Takes 1,000 SciFact passages cut to mixed lengths (every text distinct; the server runs with
--no-cache, so nothing is served from a cache), and in one run measures:

1. the offline batched throughput: the library's `embed` over all texts (length-sorted batches
   of 32), before the servers run and again after;
2. `embedtune serve` (MiniLM) with micro-batching on, then off, each in its own process, under
   --clients concurrent clients sending one text per request as fast as answers come back:
   throughput, p50 and p99 latency, and the mean batch the server formed (from /metrics);
3. for reference, the offline throughput of one model call per text (the ceiling of any server
   that does not batch across requests).

It prints the ratios the service is held to: on >= 70% of offline batched, on >= 5x off.

    python benchmarks/serve_load.py [--texts 1000] [--clients 64] [--model local:all-MiniLM-L6-v2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

from embedtune.factory import EmbedderSpec, build_embedder, open_provider

SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "scifact" / "corpus.jsonl"


def mixed_texts(n: int, seed: int) -> list[str]:
    """``n`` distinct texts of 5 to 200 words from SciFact's passages (about a third short)."""
    rng = random.Random(seed)
    words: list[list[str]] = []
    with SCIFACT.open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            words.append(f"{row['title']} {row['text']}".split())
            if len(words) >= n:
                break
    texts = []
    for i, doc in enumerate(words):
        length = rng.choice([rng.randint(5, 20), rng.randint(20, 80), rng.randint(80, 200)])
        start = rng.randint(0, max(0, len(doc) - length))
        texts.append(f"{i}. " + " ".join(doc[start : start + length]))
    return texts


def offline_batched(stack, texts: list[str]) -> float:
    start = time.perf_counter()
    stack.embed(texts)
    return len(texts) / (time.perf_counter() - start)


def offline_one_by_one(provider, texts: list[str]) -> float:
    start = time.perf_counter()
    for text in texts:
        provider.embed([text])
    return len(texts) / (time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str, port: int, micro_batching: bool) -> subprocess.Popen:
    args = [sys.executable, "-m", "embedtune.cli", "serve", "--model", model, "--port", str(port)]
    args += ["--no-cache", "--no-access-log", "--over-limit", "truncate"]
    args += ["--micro-batching" if micro_batching else "--no-micro-batching"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("EMBEDTUNE_API_KEYS", None)
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"the server did not start: {process.communicate()[1][-2000:]}")
        time.sleep(0.2)


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Connection:
    """A keep-alive HTTP/1.1 connection on asyncio streams: the load generator's client.

    httpx's AsyncClient spent about 5 ms of CPU per request here (three times the server's own
    share), on the same two cores the server needs; this spends a fraction of a millisecond, so
    the figures measure the server, not the client.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def load(url: str, model: str, texts: list[str], clients: int) -> tuple[float, np.ndarray]:
    """Texts per second and each request's latency, ``clients`` requests always in flight."""
    parts = urlsplit(url)
    queue = list(reversed(texts))
    latencies: list[float] = []
    connections = [Connection(parts.hostname or "127.0.0.1", parts.port or 80) for _ in range(clients)]

    def body(text: str) -> bytes:
        return json.dumps({"model": model, "input": text, "encoding_format": "base64"}).encode()

    async def one_client(connection: Connection) -> None:
        while queue:
            text = queue.pop()
            sent = time.perf_counter()
            status, answer = await connection.post("/v1/embeddings", body(text))
            latencies.append(time.perf_counter() - sent)
            if status != 200:
                raise SystemExit(f"HTTP {status}: {answer[:300]!r}")

    for connection in connections:  # open the connections and warm the model's first batches
        status, answer = await connection.post("/v1/embeddings", body(texts[0]))
        if status != 200 or len(json.loads(answer)["data"]) != 1:
            raise SystemExit(f"HTTP {status}: {answer[:300]!r}")
    start = time.perf_counter()
    await asyncio.gather(*(one_client(connection) for connection in connections))
    elapsed = time.perf_counter() - start
    for connection in connections:
        connection.close()
    return len(texts) / elapsed, np.array(latencies)


def mean_batch(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    total = float(re.search(r"^embedtune_batch_texts_sum (\S+)$", text, re.M).group(1))
    count = float(re.search(r"^embedtune_batch_texts_count (\S+)$", text, re.M).group(1))
    return total / count


def serve_and_load(model: str, texts: list[str], clients: int, micro_batching: bool) -> dict:
    port = free_port()
    process = start_server(model, port, micro_batching)
    url = f"http://127.0.0.1:{port}"
    try:
        rate, latencies = asyncio.run(load(url, model, texts, clients))
        batch = mean_batch(url)
    finally:
        stop_server(process)
    return {
        "rate": rate,
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
        "batch": batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="local:all-MiniLM-L6-v2")
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--one-by-one", type=int, default=200, help="texts for the one-call-per-text reference")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    texts = mixed_texts(args.texts, args.seed)
    spec = EmbedderSpec(model=args.model, over_limit="truncate")
    provider = open_provider(spec)
    stack = build_embedder(spec, provider=provider)  # no cache: every text goes to the model
    stack.embed(texts[:32])  # load the weights before timing
    tokens = sum(min(stack.count_tokens(t), stack.max_tokens) for t in texts)
    print(
        f"{len(texts)} distinct SciFact texts of 5-200 words ({tokens} {args.model} tokens, "
        f"{tokens / len(texts):.0f} per text); {args.clients} clients, one text per request; no cache",
        flush=True,
    )
    before = offline_batched(stack, texts)
    print(f"offline batched embed (before):    {before:7.1f} texts/s", flush=True)
    on = serve_and_load(args.model, texts, args.clients, micro_batching=True)
    print(
        f"server, micro-batching on:         {on['rate']:7.1f} texts/s   p50 {on['p50'] * 1000:6.0f} ms   "
        f"p99 {on['p99'] * 1000:6.0f} ms   mean batch {on['batch']:.1f} texts",
        flush=True,
    )
    off = serve_and_load(args.model, texts, args.clients, micro_batching=False)
    print(
        f"server, micro-batching off:        {off['rate']:7.1f} texts/s   p50 {off['p50'] * 1000:6.0f} ms   "
        f"p99 {off['p99'] * 1000:6.0f} ms   mean batch {off['batch']:.1f} texts",
        flush=True,
    )
    after = offline_batched(stack, texts)
    print(f"offline batched embed (after):     {after:7.1f} texts/s", flush=True)
    single = offline_one_by_one(provider, texts[: args.one_by_one])
    print(
        f"offline, one model call per text:  {single:7.1f} texts/s ({args.one_by_one} texts; no server can beat this without batching)"
    )
    offline = (before + after) / 2
    print(
        f"on / offline batched (mean {offline:.1f}): {on['rate'] / offline:.2f}   (target >= 0.70: "
        f"{'met' if on['rate'] / offline >= 0.70 else 'NOT met'})"
    )
    print(
        f"on / off: {on['rate'] / off['rate']:.2f}x   (target >= 5x: {'met' if on['rate'] / off['rate'] >= 5 else 'NOT met'}); "
        f"offline batched / one call per text: {offline / single:.2f}x"
    )


if __name__ == "__main__":
    main()
