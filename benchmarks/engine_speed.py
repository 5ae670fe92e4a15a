"""Local engines against sentence-transformers: tokens per second, the ratio, and the cosine to torch.

    EMBEDTUNE_HOME=/tmp/etbench python benchmarks/engine_speed.py [-n 1000] [--rounds 3]
        [--models local:all-MiniLM-L6-v2,local:all-mpnet-base-v2] [--dataset PATH/TO/scifact]

The texts are the same for every model and engine: ``n`` SciFact documents (title + " " + text)
and queries, mixed (7 documents to 3 queries), drawn with a fixed seed. For each model the
baseline is ``SentenceTransformer.encode(texts, batch_size=32)``; each engine embeds the same
texts through embedtune's usual stack (batches of 32 sorted by length, texts cut at the model's
limit, no cache), after an untimed warm-up call (which exports and checks the engine the first
time, under EMBEDTUNE_HOME). The baseline and the engines are then timed in turn, ``rounds``
times (baseline, each engine, baseline, each engine, ...), and each keeps its best round: load
from other jobs that comes and goes then slows every contender's worst rounds, not one
contender's only pass, so the ratios are not a measure of when the load came. Printed per engine:
texts/s, tokens/s (the model's own tokens, cut at its limit), the ratio to the baseline, and the
cosine of each vector to the baseline's (mean and minimum). ``auto`` is reported by the engine it
chose. Speeds on a shared machine are still noisy: read the ratios, measured in one process.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from embedtune.errors import EmbedtuneError
from embedtune.factory import EmbedderSpec, build_embedder, open_provider

DEFAULT_SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "scifact"
DEFAULT_MODELS = "local:all-MiniLM-L6-v2,local:all-mpnet-base-v2"
ENGINES = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8", "auto")


def mixed_texts(dataset: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` texts, 70 % SciFact documents and 30 % queries, shuffled with a fixed seed."""

    def read(name: str) -> list[dict]:
        with (dataset / name).open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle]

    rng = random.Random(seed)
    docs = [f"{d.get('title', '')} {d['text']}".strip() for d in read("corpus.jsonl")]
    queries = [q["text"] for q in read("queries.jsonl")]
    n_queries = min(len(queries), n * 3 // 10)
    texts = rng.sample(docs, n - n_queries) + rng.sample(queries, n_queries)
    rng.shuffle(texts)
    return texts


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def bench_model(
    model: str, texts: list[str], engines: list[str], rounds: int = 3
) -> list[tuple[str, float, float, float, float, float]]:
    """Rows of (engine, texts/s, tokens/s, ratio, mean cosine, min cosine); the first is the baseline.

    Every contender is timed once per round, in turn, and keeps its fastest round.
    """
    torch_provider = open_provider(EmbedderSpec(model=model, engine="torch"))
    st = torch_provider._load()  # the sentence-transformers model itself, for the baseline
    tokens = sum(min(torch_provider.count_tokens(t), torch_provider.max_tokens) for t in texts)
    st.encode(texts[:32], batch_size=32)  # warm-up
    baseline = "sentence-transformers encode"
    contenders: dict[str, Callable[[], np.ndarray]] = {
        baseline: lambda: st.encode(texts, batch_size=32, convert_to_numpy=True)
    }
    aliases: list[tuple[str, str]] = []  # (auto = X, X): auto chose an engine already timed
    for engine in engines:
        spec = EmbedderSpec(model=model, engine=engine, over_limit="truncate")
        try:
            provider = torch_provider if engine == "torch" else open_provider(spec)
            stack = build_embedder(spec, provider=provider)
            stack.embed(texts[:8])  # untimed: the first call exports and checks the engine
        except EmbedtuneError as exc:
            print(f"  {model} {engine}: {exc}", file=sys.stderr, flush=True)
            continue
        name = provider.engine  # auto resolved; OpenVINO with its precision (openvino-bf16)
        if engine == "auto":
            if name in contenders:  # the same engine again: say which, do not time it twice
                aliases.append((f"auto = {name}", name))
                continue
            name = f"auto = {name}"
        contenders[name] = lambda stack=stack: stack.embed(texts)

    best = dict.fromkeys(contenders, float("inf"))
    vectors: dict[str, np.ndarray] = {}
    for round_ in range(1, rounds + 1):
        for name, embed in contenders.items():
            start = time.perf_counter()
            out = embed()
            seconds = time.perf_counter() - start
            best[name] = min(best[name], seconds)
            vectors.setdefault(name, out)  # every round's vectors are the same; keep the first
            print(
                f"  {model} round {round_}/{rounds} {name}: {len(texts) / seconds:.1f} texts/s",
                file=sys.stderr,
                flush=True,
            )

    reference = vectors[baseline]
    rows = []
    for name, seconds in best.items():
        cos = _cosines(vectors[name], reference)
        rows.append(
            (
                name,
                len(texts) / seconds,
                tokens / seconds,
                best[baseline] / seconds,
                float(cos.mean()),
                float(cos.min()),
            )
        )
    timed = {row[0]: row for row in rows}
    rows += [(alias, *timed[name][1:]) for alias, name in aliases]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="texts per model (default 1000)")
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated local model URIs")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated engines")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_SCIFACT, help="SciFact in the BEIR layout")
    parser.add_argument("--rounds", type=int, default=3, help="rounds each contender is timed in turn (default 3)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")

    texts = mixed_texts(args.dataset, args.n)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        rows = bench_model(model, texts, engines, args.rounds)
        lengths = [len(t.split()) for t in texts]
        print(
            f"\n{model}: {len(texts)} mixed texts (words: median {int(np.median(lengths))}, max {max(lengths)}), "
            f"best of {args.rounds} rounds timed in turn"
        )
        print(f"{'engine':<30}{'texts/s':>9}{'tokens/s':>10}{'ratio':>7}{'mean cos':>10}{'min cos':>10}")
        for name, texts_s, tokens_s, ratio, mean_cos, min_cos in rows:
            print(f"{name:<30}{texts_s:>9.1f}{tokens_s:>10,.0f}{ratio:>6.2f}x{mean_cos:>10.5f}{min_cos:>10.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
